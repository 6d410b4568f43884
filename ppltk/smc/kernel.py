r"""The public SMC kernel: a Feynman–Kac model, a carried :class:`SMCState` and one ``step``.

A Feynman–Kac model (Del Moral 2004; Chopin & Papaspiliopoulos 2020, ch. 5) owns its data and
gives, for :math:`t = 0, \dots, T-1`,

.. math:: X_0 \sim M_0,\qquad X_t \sim M_t(X_{t-1}, \cdot),\qquad
          G_t(X_{t-1}, X_t) \ge 0,

and targets :math:`\mathbb Q_t(dx_{0:t}) \propto M_0(dx_0) G_0(x_0) \prod_{s \le t}
M_s(x_{s-1}, dx_s) G_s(x_{s-1}, x_s)` with normalising constant :math:`Z_t`. One
:func:`step` is the whole generic SMC algorithm:

.. math:: \text{if } \mathrm{ESS}/N < \tau:\ a^{1:N} \sim r(W),\
          \log\hat Z \mathrel{+}= \mathrm{lse}(\log w) - \log N,\ \log w \leftarrow 0;\qquad
          X_t^i \sim M_t(X_{t-1}^{a^i}, \cdot),\quad
          \log w^i \mathrel{+}= \log G_t(X_{t-1}^{a^i}, X_t^i),

and :math:`\hat Z_t = \hat Z_{\mathrm{past}}\frac1N\sum_i w^i_t` is unbiased for :math:`Z_t`.
Particle filters (any proposal: :math:`M_t = q_t`, :math:`G_t = f_t g_t / q_t`), a Pyro
program suspended at its observations, and tempering sequences are all Feynman–Kac models;
algorithms are loops over :func:`step` (see ``docs/blocks.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ppltk.errors import ArgumentError
from ppltk.smc.population import Population, check_log_weights
from ppltk.smc.resampling import Resampler, resample

__all__ = ["FeynmanKac", "SMCState", "SMCInfo", "init", "step"]


class FeynmanKac:
    r"""Base class of Feynman–Kac models: override ``M0``, ``M``, ``logG`` (as in
    ``particles``), or ``advance`` when moving and weighting come from one computation.

    Particles are tensors ``[*batch, N, ...]`` or pytrees of them (or an object with a
    ``reindex(ancestors)`` method). ``num_steps`` is :math:`T` (``None`` when unknown).
    """

    num_steps: int | None = None

    def M0(self, shape: tuple[int, ...], generator: torch.Generator) -> Any:
        """Draw :math:`X_0 \\sim M_0` with leading dims ``shape = (*batch, N)``."""
        raise NotImplementedError

    def M(self, t: int, xp: Any, generator: torch.Generator) -> Any:
        """Draw :math:`X_t \\sim M_t(X_{t-1} = xp, \\cdot)`."""
        raise NotImplementedError

    def logG(self, t: int, xp: Any, x: Any) -> torch.Tensor:
        """:math:`\\log G_t(x_{t-1}, x_t)` ``[*batch, N]`` (``xp`` is ``None`` at ``t = 0``)."""
        raise NotImplementedError

    def advance(self, t: int, xp: Any, shape: tuple[int, ...], generator: torch.Generator):
        """``(X_t, log G_t)``: move then weight (the default composes ``M0``/``M``/``logG``)."""
        x = self.M0(shape, generator) if xp is None else self.M(t, xp, generator)
        return x, self.logG(t, xp, x)

    def done(self, t: int) -> bool:
        """Whether ``t`` potentials have been folded in and nothing is left."""
        return self.num_steps is not None and t >= self.num_steps


@dataclass(frozen=True)
class SMCState:
    """What :func:`step` carries: the weighted population and the number of steps done."""

    population: Population
    t: int

    @property
    def log_evidence(self) -> torch.Tensor:
        """``[*batch]`` float64 :math:`\\log \\hat Z_{t}` (see :class:`Population`)."""
        return self.population.log_evidence_estimate()


@dataclass(frozen=True)
class SMCInfo:
    """Diagnostics of one step (not carried): evidence increment, ESS after reweighting,
    whether the step resampled first, and the ancestors used (identity when it did not)."""

    log_evidence_increment: torch.Tensor
    ess: torch.Tensor
    resampled: torch.Tensor
    ancestors: torch.Tensor


def _check(num_particles: int, ess_threshold: float) -> None:
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ArgumentError(f"Expected `num_particles` a positive int, but found {num_particles!r}")
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ArgumentError(f"Expected `ess_threshold` in [0, 1], but found {ess_threshold!r}")


def init(
    fk: FeynmanKac,
    num_particles: int,
    generator: torch.Generator,
    batch_shape: tuple[int, ...] = (),
) -> tuple[SMCState, SMCInfo]:
    """Draw :math:`X_0 \\sim M_0` for ``(*batch_shape, num_particles)`` and weight by
    :math:`G_0`."""
    _check(num_particles, 0.0)
    shape = tuple(batch_shape) + (num_particles,)
    x, log_g = fk.advance(0, None, shape, generator)
    log_g = torch.as_tensor(log_g).expand(shape)
    pop = Population.uniform(x, log_g)
    lse = _checked_lse(pop, 0)
    device = log_g.device
    identity = torch.arange(num_particles, device=device).expand(shape)
    info = SMCInfo(
        lse - math.log(num_particles),
        pop.ess,
        torch.zeros(shape[:-1], dtype=torch.bool, device=device),
        identity,
    )
    return SMCState(pop, 1), info


def step(
    fk: FeynmanKac,
    state: SMCState,
    generator: torch.Generator,
    *,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
) -> tuple[SMCState, SMCInfo]:
    r"""One SMC step: adaptive resampling (evidence folded in), move by :math:`M_t`, weight by
    :math:`G_t` (see the module docs). ``ess_threshold=1`` resamples every step, ``0`` never.

    Preserves: if ``state`` is an unbiased weighted approximation of :math:`\gamma_{t-1}`, the
    result is one of :math:`\gamma_t` (and :math:`E[\hat Z_t] = Z_t`).
    """
    _check(state.population.num_particles, ess_threshold)
    pop, t = state.population, state.t
    prev_lse = pop.log_weight_sum
    pop, resampled, ancestors = resample(
        pop, resampling, generator, ess_threshold, f"observation t={t - 1}"
    )
    before = torch.where(resampled, math.log(pop.num_particles), prev_lse)
    x, log_g = fk.advance(t, pop.particles, pop.log_weights.shape, generator)
    new = Population(x, pop.log_weights + log_g, pop.log_evidence)
    lse = _checked_lse(new, t)
    return SMCState(new, t + 1), SMCInfo(lse - before, new.ess, resampled, ancestors)


def _checked_lse(pop: Population, t: int) -> torch.Tensor:
    r"""Log-sum of the weights; raises on NaN/+inf, and on zero total weight unless the filter
    is batched and some row is alive (a dead row, e.g. a PMMH proposal with zero likelihood,
    keeps :math:`\log\hat Z = -\infty`)."""
    log_w, lse = pop.log_weights, pop.log_weight_sum
    if bool(torch.isfinite(lse).all()):
        return lse
    bad = torch.isnan(log_w).any() | (log_w == math.inf).any()
    if bool(bad) or log_w.ndim == 1 or bool(torch.isneginf(lse).all()):
        check_log_weights(log_w, f"observation t={t}")
    return lse
