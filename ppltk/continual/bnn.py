r"""A Bayesian neural network over one flat parameter vector.

A :class:`torch.nn.Module` with parameters :math:`W_1, \dots, W_m` is viewed as a function
:math:`f_\theta(x)` of the flat vector :math:`\theta = (\operatorname{vec} W_1, \dots) \in
\mathbb R^D`. :meth:`FlatBNN.logits` evaluates it for a batch of parameter vectors at once
(``torch.func.vmap`` over ``torch.func.functional_call``), so every HMC chain's likelihood and
gradient come from one call. The classification likelihood is

.. math:: \log p(y_{1:n} \mid x_{1:n}, \theta) = \sum_i \log \operatorname{softmax}
          (f_\theta(x_i)_{0:K})_{y_i},

with :math:`K` the number of classes seen so far (outputs of unseen classes are masked out).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch.func import functional_call, vmap

from ppltk.errors import ArgumentError, ShapeError

__all__ = ["FlatBNN", "make_logdensity_and_grad", "check_task_data"]


def check_task_data(
    X: torch.Tensor, y: torch.Tensor, in_features: int | None = None, integer_labels: bool = True
) -> None:
    """Raise ``ShapeError`` unless ``X`` is ``[n, d]`` and ``y`` is ``[n]`` (integer labels)."""
    if not isinstance(X, torch.Tensor) or X.ndim != 2:
        raise ShapeError(f"Expected `X` to be a tensor [n, d], but found {getattr(X, 'shape', X)}")
    if in_features is not None and X.shape[1] != in_features:
        raise ShapeError(f"Expected `X` of shape [n, {in_features}], but found {tuple(X.shape)}")
    if not isinstance(y, torch.Tensor) or y.shape != X.shape[:1]:
        raise ShapeError(
            f"Expected `y` of shape [{X.shape[0]}] (one label per row of X), "
            f"but found {tuple(getattr(y, 'shape', ()))}"
        )
    if X.shape[0] == 0:
        raise ShapeError(f"Expected at least one data point in `X`, but found {tuple(X.shape)}")
    if integer_labels and (y.dtype.is_floating_point or y.dtype.is_complex or (y < 0).any()):
        raise ArgumentError(f"Expected non-negative integer labels `y`, but found dtype {y.dtype}")


class FlatBNN:
    """View ``network`` as :math:`f_\\theta(x)` with a flat parameter vector ``theta [B, D]``.

    Parameters
    ----------
    network
        Any module; it is deep-copied and cast to ``dtype`` (its own weights are untouched).
    dtype
        Floating dtype of parameters and inputs (``None``: keep the network's).
    """

    def __init__(self, network: torch.nn.Module, dtype: torch.dtype | None = None):
        if not isinstance(network, torch.nn.Module):
            raise ArgumentError(
                f"Expected `network` to be a torch.nn.Module, but found {type(network)}"
            )
        self.network = copy.deepcopy(network)
        if dtype is not None:
            self.network = self.network.to(dtype)
        params = dict(self.network.named_parameters())
        if not params:
            raise ArgumentError("Expected `network` to have parameters, but found none")
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.dim = sum(self.sizes)
        first = next(iter(params.values()))
        self.dtype, self.device = first.dtype, first.device
        self.num_outputs = None

    def initial_vector(self) -> torch.Tensor:
        """The copied network's current weights as one vector ``[D]``."""
        return torch.cat([p.detach().reshape(-1) for p in self.network.parameters()])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``theta [B, D]`` -> ``{name: [B, *shape]}``."""
        if theta.ndim != 2 or theta.shape[-1] != self.dim:
            raise ShapeError(
                f"Expected `theta` of shape [B, {self.dim}], but found {tuple(theta.shape)}"
            )
        chunks = theta.split(self.sizes, dim=-1)
        return {
            n: c.reshape(theta.shape[0], *s) for n, c, s in zip(self.names, chunks, self.shapes)
        }

    def logits(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Network outputs for every parameter vector: ``theta [B, D]``, ``X [n, d]`` -> ``[B, n, out]``."""
        X = X.to(dtype=self.dtype, device=self.device)
        call = lambda params: functional_call(self.network, params, (X,))  # noqa: E731
        return vmap(call)(self.unflatten(theta))

    def log_likelihood(
        self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, num_classes: int
    ) -> torch.Tensor:
        """Categorical log-likelihood summed over data, masked to ``num_classes``: ``[B]``."""
        logits = self.logits(theta, X)
        if logits.shape[-1] < num_classes:
            raise ShapeError(
                f"Expected the network to have >= {num_classes} outputs (classes seen), "
                f"but found {logits.shape[-1]}"
            )
        logp = logits[..., :num_classes].log_softmax(-1)
        return (
            logp.gather(-1, y.to(logp.device).expand(logp.shape[:-1])[..., None])
            .squeeze(-1)
            .sum(-1)
        )

    def predict_proba(self, theta: torch.Tensor, X: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Bayesian model average :math:`\\frac1B \\sum_b \\operatorname{softmax}(f_{\\theta_b}(x))`."""
        with torch.no_grad():
            return self.logits(theta, X)[..., :num_classes].softmax(-1).mean(0)

    def standard_prior(self, scale: float = 1.0) -> dist.Distribution:
        """Isotropic :math:`\\mathcal N(0, \\text{scale}^2 I_D)` as an event-shape ``[D]`` distribution."""
        loc = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        return dist.Normal(loc, scale).to_event(1)


def make_logdensity_and_grad(
    prior: dist.Distribution,
    log_likelihood: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Batched :math:`\\log p(\\theta) + \\log p(\\mathcal D\\mid\\theta)` and its gradient.

    Returns ``f(z [C, D]) -> (lp [C], grad [C, D])``; chains are independent, so the gradient
    of the summed log-density is every chain's own gradient.
    """

    def logdensity_and_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lp = prior.log_prob(z) + log_likelihood(z)
            (grad,) = torch.autograd.grad(lp.sum(), z)
        return lp.detach(), grad

    return logdensity_and_grad
