"""The weighted particle population: the carried state of every SMC algorithm."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ppltk.errors import DegenerateWeightsError

__all__ = ["Population", "ess", "normalized_weights", "reindex", "check_log_weights"]


def normalized_weights(log_weights: torch.Tensor) -> torch.Tensor:
    r"""Self-normalised weights :math:`W^i = w^i / \sum_j w^j` along the last (particle) dim."""
    return torch.softmax(log_weights, dim=-1)


def ess(log_weights: torch.Tensor) -> torch.Tensor:
    r"""Effective sample size :math:`1 / \sum_i (W^i)^2` along the last dim (Kong, 1992).

    Computed in log space from normalised log-weights,
    :math:`\exp(-\mathrm{lse}_i(2 \log W^i))`, so it is accurate for weights that differ by
    hundreds of nats (and for log-weights of large magnitude). Shape ``[*batch]``.
    """
    return torch.exp(-torch.logsumexp(2 * torch.log_softmax(log_weights, dim=-1), dim=-1))


def reindex(particles: Any, ancestors: torch.Tensor) -> Any:
    r"""Select particles by ancestor index: :math:`x^i \leftarrow x^{a^i}`.

    ``particles`` is a tensor shaped ``[*batch, N, ...]`` or a (nested) dict/tuple/list of them
    (a pytree); ``ancestors`` is ``[*batch, N]``. Non-tensor leaves are passed through. Each
    tensor is gathered along dim ``ancestors.ndim - 1``; cost is linear in its size. A tensor
    whose leading dims are not ``[*batch, N]`` is shared by all particles and returned as is.
    An object with a ``reindex(ancestors)`` method (e.g. a suspended program's particles)
    re-indexes itself.
    """
    if hasattr(particles, "reindex") and not isinstance(particles, torch.Tensor):
        return particles.reindex(ancestors)
    if isinstance(particles, torch.Tensor):
        if particles.shape[: ancestors.ndim] != ancestors.shape:
            return particles  # no particle dim: shared by all particles
        dim = ancestors.ndim - 1
        index = ancestors.reshape(ancestors.shape + (1,) * (particles.ndim - ancestors.ndim))
        return torch.gather(
            particles, dim, index.expand(ancestors.shape + particles.shape[dim + 1 :])
        )
    if isinstance(particles, Population):
        return Population(
            *(
                reindex(v, ancestors)
                for v in (particles.particles, particles.log_weights, particles.log_evidence)
            )
        )
    if isinstance(particles, dict):
        return {k: reindex(v, ancestors) for k, v in particles.items()}
    if isinstance(particles, (tuple, list)):
        return type(particles)(reindex(v, ancestors) for v in particles)
    return particles


def check_log_weights(log_weights: torch.Tensor, where: str) -> None:
    """Raise :class:`DegenerateWeightsError` when a batch row has no finite log-weight, or a NaN/+inf.

    ``where`` names the step (e.g. ``"observation t=17"``) and is put in the message.
    """
    if bool(torch.isfinite(torch.logsumexp(log_weights, -1)).all()):
        return  # fast path: lse is finite iff some weight is finite and none is NaN/+inf
    nan = torch.isnan(log_weights).any(dim=-1) | (log_weights == math.inf).any(dim=-1)
    bad = ~torch.isfinite(log_weights).any(dim=-1) | nan
    if bool(bad.any()):
        row = tuple(int(i) for i in bad.nonzero()[0]) if log_weights.ndim > 1 else ()
        kind = "NaN or +inf" if bool(nan.any()) else "-inf (zero likelihood)"
        raise DegenerateWeightsError(
            f"Expected at least one finite log-weight at {where}, but found every particle's "
            f"log-weight {kind}"
            + (f" in batch row {row}" if row else "")
            + f" (log-weights shape {list(log_weights.shape)}). Check the observation's "
            "likelihood (a zero observation variance?) or use more particles / a guided proposal."
        )


@dataclass(frozen=True)
class Population:
    r"""A weighted particle system :math:`\{(x^i, w^i)\}_{i=1}^N` and its running evidence.

    Represents the unnormalised measure :math:`\hat\gamma(f) = \hat Z_{\mathrm{past}}\,
    \frac1N\sum_i w^i f(x^i)` whose expectation (over the algorithm's randomness) is the target's
    unnormalised measure :math:`\gamma(f) = Z\,\pi(f)`; so :meth:`log_evidence_estimate` is an
    unbiased (in :math:`\hat Z`, not in :math:`\log\hat Z`) estimate of :math:`\log Z`.

    Attributes
    ----------
    particles
        Tensor ``[*batch, N, ...]`` or a pytree (dict/tuple) of them.
    log_weights
        ``[*batch, N]`` unnormalised log-weights :math:`\log w^i` (since the last resampling).
    log_evidence
        ``[*batch]`` float64 :math:`\log \hat Z_{\mathrm{past}}`, the evidence folded in at the
        resampling steps so far.
    """

    particles: Any
    log_weights: torch.Tensor
    log_evidence: torch.Tensor
    # caches of functions of log_weights (a new population, e.g. from replace(), starts empty)
    _lse: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _ess: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def uniform(cls, particles: Any, log_weights: torch.Tensor) -> Population:
        """A population with log-weights given (e.g. zeros) and no evidence folded in yet."""
        zero = torch.zeros(log_weights.shape[:-1], dtype=torch.float64, device=log_weights.device)
        return cls(particles, log_weights, zero)

    @property
    def num_particles(self) -> int:
        return self.log_weights.shape[-1]

    @property
    def log_weight_sum(self) -> torch.Tensor:
        r"""``[*batch]`` float64 :math:`\mathrm{lse}_i(\log w^i)` (computed once)."""
        if self._lse is None:
            object.__setattr__(self, "_lse", torch.logsumexp(self.log_weights, -1).double())
        return self._lse

    @property
    def ess(self) -> torch.Tensor:
        """Effective sample size ``[*batch]`` (see :func:`ess`; computed once)."""
        if self._ess is None:
            lse = self.log_weight_sum.to(self.log_weights.dtype).unsqueeze(-1)
            value = torch.exp(-torch.logsumexp(2 * (self.log_weights - lse), dim=-1))
            object.__setattr__(self, "_ess", value)
        return self._ess

    @property
    def weights(self) -> torch.Tensor:
        """Normalised weights ``[*batch, N]``."""
        return normalized_weights(self.log_weights)

    def log_evidence_estimate(self) -> torch.Tensor:
        r""":math:`\log\hat Z = \log\hat Z_{\mathrm{past}} + \mathrm{lse}_i(\log w^i) - \log N` (float64)."""
        return self.log_evidence + self.log_weight_sum - math.log(self.num_particles)

    def reweight(self, log_increment: torch.Tensor) -> Population:
        r"""Multiply in a potential: :math:`w^i \leftarrow w^i\, G(x^i)`.

        Preserves: if the population targets :math:`\gamma`, it now targets :math:`G\gamma`
        (unbiased unnormalised measure).
        """
        return replace(self, log_weights=self.log_weights + log_increment)

    def with_particles(self, particles: Any) -> Population:
        """Same weights, new particles (after a move or a proposal)."""
        return replace(self, particles=particles)

    def mean(self, fn=None) -> torch.Tensor:
        r"""Self-normalised estimate :math:`\sum_i W^i f(x^i)` (``fn`` defaults to identity).

        ``f(x)`` must be shaped ``[*batch, N, ...]``.
        """
        values = self.particles if fn is None else fn(self.particles)
        w = self.weights.to(values.dtype)
        return (w.reshape(w.shape + (1,) * (values.ndim - w.ndim)) * values).sum(w.ndim - 1)
