r"""Prototypical Bayesian continual learning (ProtoCL; Kessler et al., Entropy 2023, §6).

An encoder :math:`z = g_\phi(x) \in \mathbb R^h` embeds inputs. Class :math:`c` has a prototype
:math:`\mu_c \sim \mathcal N(m_c, s_c^2 I)`, embeddings :math:`z \mid y = c \sim
\mathcal N(\mu_c, \sigma^2 I)` (isotropic noise) and class probabilities
:math:`\pi \sim \operatorname{Dir}(\alpha)`. Conjugacy gives closed-form updates with the
:math:`n_c` embeddings of class :math:`c`,

.. math:: s_c'^{-2} = s_c^{-2} + n_c \sigma^{-2}, \qquad
          m_c' = s_c'^2 \Big(s_c^{-2} m_c + \sigma^{-2} \sum_{i: y_i = c} z_i\Big), \qquad
          \alpha_c' = \alpha_c + n_c,

which are exact Bayesian updates, so updating in chunks equals one batch update. The
posterior predictive classifier is

.. math:: p(y = c \mid x) \propto \frac{\alpha_c}{\sum_k \alpha_k}\,
          \mathcal N\big(g_\phi(x);\, m_c, (s_c^2 + \sigma^2) I\big).

The encoder is trained by maximising this predictive log-probability of labelled query points
given prototypes updated on support points (current task plus a small replay memory of earlier
classes). Only training labels ever enter an update; ``predict_proba`` takes no labels.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from ppltk.continual._learner import ContinualLearner, training_steps
from ppltk.errors import ArgumentError, ShapeError

__all__ = ["PrototypeState", "prior_state", "conjugate_update", "predictive_log_proba", "ProtoCL"]


@dataclass(frozen=True)
class PrototypeState:
    """Posterior of the class prototypes: means ``[K, h]``, variances ``[K]``, Dirichlet ``[K]``."""

    mean: torch.Tensor
    var: torch.Tensor
    alpha: torch.Tensor


def prior_state(
    num_classes: int,
    embed_dim: int,
    prior_var: float = 1.0,
    alpha0: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> PrototypeState:
    """Prior :math:`m_c = 0`, :math:`s_c^2 =` ``prior_var``, :math:`\\alpha_c =` ``alpha0``."""
    if not prior_var > 0 or not alpha0 > 0:
        raise ArgumentError(
            f"Expected `prior_var` > 0 and `alpha0` > 0, but found {prior_var}, {alpha0}"
        )
    kw = dict(dtype=dtype, device=device)
    return PrototypeState(
        torch.zeros(num_classes, embed_dim, **kw),
        torch.full((num_classes,), float(prior_var), **kw),
        torch.full((num_classes,), float(alpha0), **kw),
    )


def conjugate_update(
    state: PrototypeState, z: torch.Tensor, y: torch.Tensor, noise_var: float | torch.Tensor
) -> PrototypeState:
    """Exact Normal-Normal / Dirichlet-categorical update with embeddings ``z [n, h]``, labels ``y [n]``."""
    k, h = state.mean.shape
    if z.ndim != 2 or z.shape[1] != h or y.shape != z.shape[:1]:
        raise ShapeError(
            f"Expected `z` [n, {h}] and `y` [n], but found {tuple(z.shape)}, {tuple(y.shape)}"
        )
    if len(y) and int(y.max()) >= k:
        raise ShapeError(f"Expected labels < {k} (classes in `state`), but found {int(y.max())}")
    onehot = torch.nn.functional.one_hot(y, k).to(z.dtype)  # [n, K]
    counts = onehot.sum(0)
    sums = onehot.T @ z  # [K, h]
    # s'^{-2} = s^{-2} + n_c / sigma^2;  m' = s'^2 (m / s^2 + sum_c z / sigma^2)
    precision = 1.0 / state.var + counts / noise_var
    var = 1.0 / precision
    mean = var[:, None] * (state.mean / state.var[:, None] + sums / noise_var)
    return PrototypeState(mean, var, state.alpha + counts)


def predictive_log_proba(state: PrototypeState, z: torch.Tensor, noise_var) -> torch.Tensor:
    """``log p(y = c | z)`` ``[n, K]``: Dirichlet mean times Gaussian posterior predictive."""
    h = z.shape[-1]
    pred_var = state.var + noise_var  # [K]
    sq = torch.cdist(z, state.mean).pow(2)  # [n, K]
    log_lik = -0.5 * sq / pred_var - 0.5 * h * torch.log(2 * math.pi * pred_var)
    log_prior = state.alpha.log() - state.alpha.sum().log()
    return (log_lik + log_prior).log_softmax(-1)


class ProtoCL(ContinualLearner):
    """ProtoCL: Gaussian class prototypes on a trained encoder, with a small replay memory.

    Parameters
    ----------
    encoder
        Module mapping ``[n, d]`` to embeddings ``[n, h]`` (deep-copied, trained here).
    noise_var, prior_var, alpha0
        :math:`\\sigma^2`, prior :math:`s^2` of every prototype, prior Dirichlet concentration.
    memory_per_class
        Training points kept per class for replay (drawn at random from that class).
    num_steps, lr
        Adam steps per task on the encoder and learning rate (0 steps: frozen encoder).
    seed
        Seed or generator (support/query splits, memory selection).

    Attributes
    ----------
    state
        :class:`PrototypeState` after the latest task. After each task the Dirichlet counts
        keep every training label seen; the prototype means of earlier classes are
        recomputed from the replay memory with the updated encoder, those of the new classes
        from all of the task's training points.
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        noise_var: float = 1.0,
        prior_var: float = 1.0,
        alpha0: float = 1.0,
        memory_per_class: int = 10,
        num_steps: int = 200,
        lr: float = 1e-3,
        seed: int | torch.Generator = 0,
        progress: bool = False,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__(seed=seed, dtype=dtype)
        if not isinstance(encoder, torch.nn.Module):
            raise ArgumentError(
                f"Expected `encoder` to be a torch.nn.Module, but found {type(encoder)}"
            )
        if not isinstance(num_steps, int) or num_steps < 0:
            raise ArgumentError(f"Expected `num_steps` to be an int >= 0, but found {num_steps!r}")
        if not isinstance(memory_per_class, int) or memory_per_class < 0:
            raise ArgumentError(f"Expected `memory_per_class` >= 0, but found {memory_per_class!r}")
        self.encoder = copy.deepcopy(encoder).to(dtype)
        self.noise_var, self.prior_var, self.alpha0 = (
            float(noise_var),
            float(prior_var),
            float(alpha0),
        )
        self.memory_per_class, self.num_steps, self.lr = memory_per_class, num_steps, lr
        self.progress = progress
        self.state: PrototypeState | None = None
        self.counts: torch.Tensor | None = None  # training labels seen per class
        self.memory_X = torch.zeros(0, 0, dtype=dtype)
        self.memory_y = torch.zeros(0, dtype=torch.long)

    def _prior(self, z: torch.Tensor) -> PrototypeState:
        k, h = self.num_classes, z.shape[1]
        return prior_state(k, h, self.prior_var, self.alpha0, self.dtype, z.device)

    def _train_encoder(self, X, y):
        opt = torch.optim.Adam(self.encoder.parameters(), lr=self.lr)
        n = X.shape[0]
        for _ in training_steps(self.num_steps, "ProtoCL", self.progress):
            # random support/query split: prototypes from support, predictive loss on query
            perm = torch.randperm(n, generator=self.generator)
            sup, qry = perm[: n // 2], perm[n // 2 :]
            z = self.encoder(X)
            state = conjugate_update(self._prior(z), z[sup], y[sup], self.noise_var)
            loss = -predictive_log_proba(state, z[qry], self.noise_var)[
                torch.arange(len(qry)), y[qry]
            ]
            opt.zero_grad()
            loss.mean().backward()
            opt.step()

    def _update_memory(self, X, y):
        keep_X, keep_y = [self.memory_X], [self.memory_y]
        for c in y.unique():
            idx = torch.nonzero(y == c).squeeze(-1)
            idx = idx[torch.randperm(len(idx), generator=self.generator)[: self.memory_per_class]]
            keep_X.append(X[idx])
            keep_y.append(y[idx])
        self.memory_X, self.memory_y = torch.cat(keep_X), torch.cat(keep_y)

    def _observe(self, X, y):
        if self.memory_X.numel() == 0:
            self.memory_X, self.memory_y = X.new_zeros(0, X.shape[1]), y.new_zeros(0)
        Xs, ys = torch.cat([X, self.memory_X]), torch.cat([y, self.memory_y])
        if self.num_steps > 0:
            self.encoder.train()
            self._train_encoder(Xs, ys)
        self.encoder.eval()
        with torch.no_grad():
            z = self.encoder(Xs)
            state = conjugate_update(self._prior(z), z, ys, self.noise_var)
        counts = torch.bincount(y, minlength=self.num_classes).to(z)
        if self.counts is not None:  # earlier classes; the new task may add classes
            counts[: len(self.counts)] += self.counts
        self.counts = counts
        self.state = PrototypeState(state.mean, state.var, self.alpha0 + self.counts)
        self._update_memory(X, y)

    def _predict_proba(self, X):
        z = self.encoder(X)
        return predictive_log_proba(self.state, z, self.noise_var).exp()
