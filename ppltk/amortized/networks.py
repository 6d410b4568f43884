r"""Networks of an amortized posterior: a permutation-invariant set encoder and a density head.

The encoder is a DeepSets network (Zaheer et al., 2017),

.. math::

    c(y) = \rho\Big(\frac1n \sum_{i=1}^n \phi(y_i),\ g\Big),

over the ``n`` exchangeable observations :math:`y_i` (each a feature row: the data points'
values, with fixed covariates appended) and the global features :math:`g` (scalar data
sites). The mean makes :math:`c` invariant to permutations of the observations -- the
symmetry of the exact posterior of an exchangeable model -- and it contains the sufficient
statistics :math:`\frac1n\sum_i t(y_i)` of exponential families when :math:`\phi` can represent
:math:`t`.

The head maps :math:`c` to a mixture of :math:`K` full-covariance Gaussians over the
(standardised) unconstrained latent vector,

.. math::

    q(z \mid y) = \sum_{k=1}^K \pi_k(c)\, \mathcal N\big(z;\ m_k(c),\ L_k(c) L_k(c)^\top\big),

:math:`L_k` lower triangular with a positive diagonal (softplus); :math:`K = 1` is the
full-covariance Gaussian head.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["DeepSetEncoder", "MixtureHead"]


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class DeepSetEncoder(nn.Module):
    """``c = rho(mean_i phi(points_i), globals)``: a permutation-invariant summary of a set.

    Parameters
    ----------
    point_dim
        Features per observation (0: no set-valued data).
    global_dim
        Features of the data set as a whole (0: none).
    hidden, context_dim, depth
        Width of ``phi`` and ``rho``, size of the summary ``c``, hidden layers of each.
    """

    def __init__(
        self, point_dim: int, global_dim: int, hidden: int, context_dim: int, depth: int = 2
    ) -> None:
        super().__init__()
        self.point_dim, self.global_dim = point_dim, global_dim
        self.phi = _mlp([point_dim] + [hidden] * depth) if point_dim else None
        pooled = hidden if point_dim else 0
        self.rho = _mlp([pooled + global_dim] + [hidden] * (depth - 1) + [context_dim])

    def forward(self, points: torch.Tensor | None, globals_: torch.Tensor | None) -> torch.Tensor:
        """``points [B, n, point_dim]``, ``globals_ [B, global_dim]`` -> ``[B, context_dim]``."""
        parts = []
        if self.phi is not None:
            parts.append(self.phi(points).mean(-2))
        if self.global_dim:
            parts.append(globals_)
        return self.rho(torch.cat(parts, -1))


class MixtureHead(nn.Module):
    """A mixture of ``components`` full-covariance Gaussians over ``dim`` coordinates given a
    context vector (``components=1``: one full-covariance Gaussian).

    Parameters
    ----------
    context_dim, dim, components
        Input size, event size ``D``, mixture size ``K``.
    """

    def __init__(self, context_dim: int, dim: int, components: int = 1) -> None:
        super().__init__()
        self.dim, self.components = dim, components
        self.num_tril = dim * (dim + 1) // 2
        self.out = nn.Linear(context_dim, components * (1 + dim + self.num_tril))
        with torch.no_grad():  # start near N(0, I) for every context
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
        rows, cols = torch.tril_indices(dim, dim)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        # softplus(0.5413) = 1: unit scale at initialisation
        self._diag_shift = math.log(math.e - 1.0)

    def parameters_for(
        self, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixture log-weights ``[B, K]``, means ``[B, K, D]``, Cholesky factors ``[B, K, D, D]``."""
        b, k, d = context.shape[0], self.components, self.dim
        raw = self.out(context).reshape(b, k, 1 + d + self.num_tril)
        logits = torch.log_softmax(raw[..., 0], -1)
        loc = raw[..., 1 : 1 + d]
        flat = raw[..., 1 + d :]
        tril = flat.new_zeros(b, k, d, d)
        tril[..., self._rows, self._cols] = flat
        diag = torch.nn.functional.softplus(tril.diagonal(dim1=-2, dim2=-1) + self._diag_shift)
        tril = torch.tril(tril, -1) + torch.diag_embed(diag + 1e-4)
        return logits, loc, tril

    def distribution(self, context: torch.Tensor) -> dist.Distribution:
        """``q(. | c)`` as a Pyro distribution, batch ``[B]``, event ``[D]``."""
        logits, loc, tril = self.parameters_for(context)
        components = dist.MultivariateNormal(loc, scale_tril=tril)
        if self.components == 1:
            return dist.MultivariateNormal(loc[:, 0], scale_tril=tril[:, 0])
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)

    def log_prob(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``log q(x | c)`` for ``x [B, D]`` -> ``[B]`` or ``x [B, S, D]`` -> ``[B, S]``."""
        logits, loc, tril = self.parameters_for(context)
        squeeze = x.dim() == 2
        if squeeze:
            x = x[:, None]
        comp = dist.MultivariateNormal(loc[:, None], scale_tril=tril[:, None])
        lp = torch.logsumexp(comp.log_prob(x[:, :, None]) + logits[:, None], -1)
        return lp[:, 0] if squeeze else lp

    def sample(self, context: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
        """``num`` draws per context, ``[B, num, D]``, from ``generator``."""
        logits, loc, tril = self.parameters_for(context)
        b = context.shape[0]
        if self.components == 1:
            index = torch.zeros(b, num, dtype=torch.long, device=context.device)
        else:
            index = torch.multinomial(logits.exp(), num, replacement=True, generator=generator)
        eps = torch.randn(
            b, num, self.dim, generator=generator, device=context.device, dtype=context.dtype
        )
        rows = torch.arange(b, device=context.device)[:, None]
        chosen_loc, chosen_tril = loc[rows, index], tril[rows, index]
        return chosen_loc + (chosen_tril @ eps[..., None])[..., 0]
