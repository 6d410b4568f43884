"""ChEES-HMC: jittered HMC whose trajectory length, step size and metric are tuned across chains.

Hoffman, Radul & Sountsov (AISTATS 2021), "An adaptive MCMC scheme for setting trajectory
lengths in Hamiltonian Monte Carlo".  Every chain does the *same* number of leapfrog steps in a
transition, so ``C`` chains are one fixed-shape batched computation (no per-chain tree
building as in NUTS, where the batch pays for its deepest tree); many chains are what the
warm-up feeds on.

Transition (all chains share :math:`\\epsilon`, :math:`T` and the diagonal metric
:math:`M^{-1}`): draw one jitter :math:`u_t \\sim U(1-j, 1)` for the iteration, momenta
:math:`p \\sim \\mathcal N(0, M)`, run :math:`L_t = \\lceil u_t T / \\epsilon \\rceil` leapfrog
steps and accept the end point with probability
:math:`\\alpha = \\min(1, e^{-(H(q', p') - H(q, p))})`.  The number of steps depends only on
the (frozen) parameters and an independent draw, never on the state, so the Metropolis
correction of the reversible, volume-preserving leapfrog map leaves :math:`\\pi` invariant.
A chain whose energy error exceeds ``max_delta_energy`` (or is NaN, e.g. at a point where the
log-density is not finite, :class:`~ppltk.mcmc.GuardedDensity`) diverges: it stops where it
is and is rejected.  Rejecting on the whole path keeps detailed balance because the reverse
path visits the same points.

Warm-up (:class:`ChEESAdapter`, one adapter for all chains):

- *Step size*: dual averaging (:class:`~ppltk.mcmc.DualAveraging`) drives the harmonic mean of
  the non-divergent chains' acceptance probabilities,
  :math:`\\bar\\alpha_H = n / \\sum_c \\alpha_c^{-1}`, to the target :math:`\\delta = 0.651`
  (the optimum for HMC, Beskos et al. 2013); the harmonic mean is dominated by the worst chains.
- *Trajectory length*: Adam ascent on :math:`\\log T` of the ChEES criterion
  (change in the estimator of the expected square),

  .. math::
      \\mathrm{ChEES}(T) = \\tfrac14\\,\\mathbb E\\big[(\\lVert q' - \\mathbb E q'\\rVert^2
      - \\lVert q - \\mathbb E q\\rVert^2)^2\\big],

  measured in the metric's preconditioned coordinates
  (:math:`\\lVert x\\rVert^2 = x^\\top M x`).  With :math:`t_c = u_t T` the per-chain
  gradient with respect to :math:`\\log T` is

  .. math::
      g_c = t_c\\,\\big(\\lVert q'_c - \\bar q'\\rVert^2_M - \\lVert q_c - \\bar q\\rVert^2_M\\big)
      \\,(q'_c - \\bar q')^\\top p'_c ,

  (because :math:`\\tfrac{d}{dt}\\lVert q'(t)\\rVert_M^2 = 2 (q'-\\bar q')^\\top M M^{-1} p'`),
  and the step uses :math:`g = \\sum_c \\alpha_c g_c / \\sum_c \\alpha_c` over non-divergent
  chains, with :math:`\\bar q'` the :math:`\\alpha`-weighted proposal mean.  Adam
  (:math:`\\beta_1 = 0`, :math:`\\beta_2 = 0.95`) updates are clipped to :math:`\\pm 0.35`;
  the trajectory used is :math:`\\exp` of a moving average of :math:`\\log T` with weight
  :math:`t^{-1/2}`, kept in :math:`[\\epsilon, L_{\\max}\\epsilon]`.
- *Metric*: the diagonal :math:`M^{-1}` is a moving average (weight
  :math:`\\max(1/t, 0.05)`) of the cross-chain variance of the current positions, regularised
  as Stan does with :math:`n = C` draws,
  :math:`\\tfrac{C}{C+5}\\hat\\sigma^2 + 10^{-3}\\tfrac{5}{C+5}`; it is frozen after the first
  75% of warm-up and dual averaging restarts then, so the final step size is tuned to the
  final metric.

After warm-up the step size is dual averaging's :math:`\\bar\\epsilon`, and the step size,
trajectory length and metric are frozen: the kept draws come from a fixed,
:math:`\\pi`-invariant kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ppltk.errors import ArgumentError
from ppltk.mcmc._base import LogDensityFn, MCMCState, Params, default_params
from ppltk.mcmc.adaptation import Adam, DualAveraging, EnsembleAdapter
from ppltk.mcmc.hmc import HamiltonianKernel
from ppltk.mcmc.integrators import (
    find_reasonable_step_size,
    kinetic_energy,
    leapfrog,
    sample_momentum,
)

__all__ = ["ChEES", "ChEESParams", "ChEESAdapter", "chees_gradient", "harmonic_mean_accept"]

OPTIMAL_TARGET_ACCEPT = 0.651
"""Target harmonic-mean acceptance of ChEES's dual averaging (optimal for HMC)."""
LOG_UPDATE_CLIP = 0.35
"""Largest change of :math:`\\log T` in one Adam step (about :math:`\\log 2 / 2`)."""
METRIC_FRACTION = 0.75
"""Fraction of warm-up during which the metric follows the cross-chain variance."""
METRIC_RATE = 0.05
"""Smallest weight of the newest cross-chain variance in the metric's moving average."""


@dataclass
class ChEESParams(Params):
    """:class:`~ppltk.mcmc.Params` plus the trajectory length.

    Attributes
    ----------
    trajectory_length
        ``[C]`` integration time :math:`T` before jitter (the same for every chain after
        ChEES warm-up); a transition runs :math:`\\lceil u T / \\epsilon\\rceil` steps.
    """

    trajectory_length: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {**super().as_dict(), "trajectory_length": self.trajectory_length}


class ChEES(HamiltonianKernel):
    """ChEES-HMC: jittered-trajectory HMC, all chains in lock-step, tuned across chains.

    Use it with many chains (tens to thousands): its warm-up estimates the metric, the
    step size and the trajectory length from the population of chains (see the module
    docstring for the maths).  ``sample_flat(ld, init, kernel="chees")`` or
    ``ppltk.mcmc.sample(model, kernel="chees", num_chains=256)``.

    Parameters
    ----------
    trajectory_length
        Initial :math:`T` (``None``: the initial step size, i.e. one leapfrog step, as in
        BlackJAX); also the :math:`T` used when ``params`` carry none.
    jitter
        Jitter amount :math:`j \\in (0, 1]`: :math:`u_t \\sim U(1 - j, 1)`, one draw per
        iteration shared by all chains (1: uniform on :math:`(0, 1)`, as in the paper).
    learning_rate
        Adam's learning rate for :math:`\\log T`.
    decay_rate
        Exponent :math:`\\kappa` of the moving-average weight :math:`t^{-\\kappa}` of
        :math:`\\log T` (0: no averaging, 1: the plain mean of all iterates).
    max_leapfrog_steps
        Upper bound of :math:`T / \\epsilon`.
    max_delta_energy
        Energy error above which a chain's transition diverges (and is rejected).

    Examples
    --------
    >>> import torch
    >>> from ppltk.mcmc import sample_flat
    >>> f = lambda z: (-0.5 * (z**2).sum(-1), -z)
    >>> out = sample_flat(f, torch.zeros(64, 3), kernel="chees", num_warmup=100,
    ...                   num_samples=50, progress=False)
    >>> out.positions.shape, sorted(out.stats)[:3]
    (torch.Size([64, 50, 3]), ['accept_prob', 'diverging', 'energy'])
    """

    name = "chees"
    target_accept = OPTIMAL_TARGET_ACCEPT
    stat_names = (
        "lp", "accept_prob", "step_size", "trajectory_length", "n_steps", "diverging", "energy",
    )  # fmt: skip

    def __init__(
        self,
        trajectory_length: float | None = None,
        jitter: float = 1.0,
        learning_rate: float = 0.025,
        decay_rate: float = 0.5,
        max_leapfrog_steps: int = 1000,
        max_delta_energy: float = 1000.0,
    ):
        if trajectory_length is not None and not (
            isinstance(trajectory_length, (int, float)) and 0 < trajectory_length < math.inf
        ):
            raise ArgumentError(
                f"Expected `trajectory_length` to be None or a finite float > 0, but found "
                f"{trajectory_length!r}"
            )
        if not (isinstance(jitter, (int, float)) and 0.0 < jitter <= 1.0):
            raise ArgumentError(f"Expected `jitter` in (0, 1], but found {jitter!r}")
        if not (isinstance(learning_rate, (int, float)) and 0.0 < learning_rate < math.inf):
            raise ArgumentError(
                f"Expected `learning_rate` to be a finite float > 0, but found {learning_rate!r}"
            )
        if not (isinstance(decay_rate, (int, float)) and 0.0 <= decay_rate <= 1.0):
            raise ArgumentError(f"Expected `decay_rate` in [0, 1], but found {decay_rate!r}")
        if (
            not isinstance(max_leapfrog_steps, int)
            or isinstance(max_leapfrog_steps, bool)
            or max_leapfrog_steps < 1
        ):
            raise ArgumentError(
                f"Expected `max_leapfrog_steps` to be a positive int, but found "
                f"{max_leapfrog_steps!r}"
            )
        if not (isinstance(max_delta_energy, (int, float)) and max_delta_energy > 0):
            raise ArgumentError(f"Expected `max_delta_energy` > 0, but found {max_delta_energy!r}")
        self.trajectory_length = None if trajectory_length is None else float(trajectory_length)
        self.jitter = float(jitter)
        self.learning_rate = float(learning_rate)
        self.decay_rate = float(decay_rate)
        self.max_leapfrog_steps = max_leapfrog_steps
        self.max_delta_energy = float(max_delta_energy)

    def __repr__(self) -> str:
        return (
            f"ChEES(jitter={self.jitter}, learning_rate={self.learning_rate}, "
            f"max_leapfrog_steps={self.max_leapfrog_steps})"
        )

    # -- parameters ----------------------------------------------------------------------
    def as_params(self, params: Params) -> ChEESParams:
        """``params`` as :class:`ChEESParams` (a plain ``Params`` gets the kernel's initial
        trajectory length, or its step size)."""
        if isinstance(params, ChEESParams):
            return params
        if self.trajectory_length is None:
            length = params.step_size
        else:
            length = torch.full_like(params.step_size, self.trajectory_length)
        return ChEESParams(params.step_size, params.inverse_mass, length)

    def default_params(self, position: torch.Tensor, dense: bool = False) -> ChEESParams:
        """Step size 1, unit diagonal metric, :math:`T` = ``trajectory_length`` (or 1)."""
        if dense:
            raise ArgumentError(
                "Expected `dense_mass` False for ChEES (its metric is the diagonal cross-chain "
                "variance), but found True"
            )
        return self.as_params(default_params(position))

    def tune_step_size(self, state, logdensity_and_grad, params, generator) -> ChEESParams:
        """Stan's heuristic per chain, then the median over chains for every chain (ChEES
        shares one step size); the initial trajectory is one step unless set."""
        eps = find_reasonable_step_size(state, params, logdensity_and_grad, generator)
        eps = eps.median().expand(eps.shape)
        length = (
            eps if self.trajectory_length is None else torch.full_like(eps, self.trajectory_length)
        )
        return ChEESParams(eps, params.inverse_mass, length)

    def make_adapters(
        self,
        num_warmup: int,
        params: Params,
        target_accept: float,
        adapt_step_size: bool = True,
        adapt_mass: bool = True,
    ) -> list[ChEESAdapter]:
        """One :class:`ChEESAdapter` for all chains (cross-chain warm-up)."""
        if params.dense:
            raise ArgumentError(
                "Expected `params` with a diagonal [chains, dim] inverse mass for ChEES, but "
                f"found shape {list(params.inverse_mass.shape)}"
            )
        chains = params.step_size.shape[0]
        if num_warmup > 0 and chains < 2:
            raise ArgumentError(
                "Expected at least 2 chains (rows of `init_position`) for ChEES's cross-chain "
                f"warm-up, but found {chains}"
            )
        return [
            ChEESAdapter(self, num_warmup, self.as_params(params), target_accept,
                         adapt_step_size, adapt_mass)
        ]  # fmt: skip

    # -- transition ----------------------------------------------------------------------
    def step(
        self,
        state: MCMCState,
        logdensity_and_grad: LogDensityFn,
        params: Params,
        generator: torch.Generator,
    ) -> tuple[MCMCState, dict[str, torch.Tensor]]:
        """One jittered-HMC transition of every chain.

        ``info`` has the statistics in :attr:`stat_names` and, for the warm-up,
        ``proposal_position [C, D]``, ``proposal_momentum [C, D]`` (the end of the trajectory,
        before the accept/reject step) and ``jitter [C]`` (:math:`u_t`).
        """
        params = self.as_params(params)
        minv, eps, length = params.inverse_mass, params.step_size, params.trajectory_length
        lp0 = state.lp
        u = torch.rand((1,), generator=generator, dtype=lp0.dtype, device=lp0.device)
        u = (1.0 - self.jitter) + self.jitter * u
        n_steps = torch.ceil(u * length / eps).clamp(1, self.max_leapfrog_steps)
        n_steps = torch.nan_to_num(n_steps, nan=1.0).long()
        p = sample_momentum(params, state.position, generator)
        h0 = -lp0 + kinetic_energy(p, minv)
        new = state
        diverging = torch.zeros_like(lp0, dtype=torch.bool)
        delta = torch.zeros_like(lp0)
        for k in range(int(n_steps.max())):  # one host sync per transition
            # chains that are done or diverged idle with a zero step (the batch keeps its shape)
            moving = (n_steps > k) & ~diverging
            new, p = leapfrog(new, p, torch.where(moving, eps, 0.0), minv, logdensity_and_grad)
            delta = torch.where(moving, -new.lp + kinetic_energy(p, minv) - h0, delta)
            delta = torch.nan_to_num(delta, nan=math.inf)
            diverging = diverging | (delta > self.max_delta_energy)
        accept_prob = torch.exp(-delta).clamp(max=1.0)
        log_u = torch.rand(lp0.shape, generator=generator, dtype=lp0.dtype, device=lp0.device)
        accept = (torch.log(log_u) < -delta) & ~diverging
        out = new.select(accept, state)
        info = {
            "lp": out.lp,
            "accept_prob": accept_prob,
            "step_size": eps,
            "trajectory_length": length,
            "n_steps": n_steps,
            "diverging": diverging,
            "energy": h0,
            "proposal_position": new.position,
            "proposal_momentum": p,
            "jitter": u.expand(lp0.shape),
        }
        return out, info


def harmonic_mean_accept(accept_prob: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """:math:`n / \\sum_c \\alpha_c^{-1}` over the chains with ``ok`` (0 when none is ok or a
    chain's acceptance is 0), shape ``[1]``."""
    alpha = torch.where(ok, accept_prob, 1.0).clamp(min=1e-10)
    count = ok.sum().to(alpha.dtype)
    inv = torch.where(ok, 1.0 / alpha, 0.0).sum()
    return torch.where(count > 0, count / inv.clamp(min=1e-300), 0.0).reshape(1)


def chees_gradient(
    before: torch.Tensor,
    proposal: torch.Tensor,
    momentum: torch.Tensor,
    accept_prob: torch.Tensor,
    ok: torch.Tensor,
    inverse_mass: torch.Tensor,
    time: torch.Tensor,
) -> torch.Tensor:
    """Acceptance-weighted ChEES gradient with respect to :math:`\\log T`, shape ``[1]``.

    .. math::
        g = \\frac{\\sum_c \\alpha_c g_c}{\\sum_c \\alpha_c}, \\quad
        g_c = t_c\\,\\big(\\lVert q'_c - \\bar q'\\rVert^2_M - \\lVert q_c - \\bar q\\rVert^2_M
        \\big)\\,(q'_c - \\bar q')^\\top p'_c,

    over the chains with ``ok`` (non-divergent, finite), :math:`\\bar q'` the
    :math:`\\alpha`-weighted mean of the proposals, :math:`\\bar q` the mean of the starting
    points and :math:`\\lVert x\\rVert^2_M = \\sum_d x_d^2 / M^{-1}_{dd}`.

    Parameters
    ----------
    before, proposal, momentum
        ``[C, D]`` starting points :math:`q`, trajectory ends :math:`q'` and momenta :math:`p'`.
    accept_prob, ok
        ``[C]`` acceptance probabilities and the chains that count.
    inverse_mass
        ``[C, D]`` diagonal metric of the transition.
    time
        ``[C]`` jittered integration time :math:`t_c = u_t T` (the factor
        :math:`dt/d\\log T`).
    """
    col = ok.unsqueeze(-1)
    w = torch.where(ok, accept_prob, 0.0)
    q1 = torch.where(col, proposal, 0.0)
    p1 = torch.where(col, momentum, 0.0)
    wsum = w.sum()
    m1 = (w.unsqueeze(-1) * q1).sum(0) / (wsum + 1e-20)
    d1 = q1 - m1
    d0 = before - before.mean(0)
    change = (d1 * d1 / inverse_mass).sum(-1) - (d0 * d0 / inverse_mass).sum(-1)
    per_chain = time * change * torch.linalg.vecdot(d1, p1)
    per_chain = torch.where(ok, per_chain, 0.0)
    return ((w * per_chain).sum() / (wsum + 1e-20)).reshape(1)


class ChEESAdapter(EnsembleAdapter):
    """Cross-chain warm-up of :class:`ChEES`: one step size, trajectory length and diagonal
    metric for all chains (maths in :mod:`ppltk.mcmc.chees`).

    Parameters
    ----------
    kernel
        The :class:`ChEES` kernel (learning rate, decay, step bounds).
    num_warmup
        Warm-up iterations.
    params
        Initial parameters (the median step size over chains starts dual averaging).
    target_accept
        Target :math:`\\delta` of the harmonic-mean acceptance.
    adapt_step_size, adapt_mass
        Switch step-size and metric adaptation on/off (the trajectory is always adapted).
    """

    def __init__(
        self,
        kernel: ChEES,
        num_warmup: int,
        params: ChEESParams,
        target_accept: float = OPTIMAL_TARGET_ACCEPT,
        adapt_step_size: bool = True,
        adapt_mass: bool = True,
    ):
        self.num_warmup = num_warmup
        self.target = target_accept
        self.adapt_step_size = adapt_step_size
        self.decay_rate = kernel.decay_rate
        self.max_leapfrog_steps = kernel.max_leapfrog_steps
        self.metric_end = int(METRIC_FRACTION * num_warmup) if adapt_mass else 0
        self.as_params = kernel.as_params
        self.params = params
        eps = params.step_size.median().reshape(1)
        self.averaging = DualAveraging.start(eps, target_accept)
        self.log_eps = eps.log()
        log_t = params.trajectory_length.median().reshape(1).log()
        self.log_length = log_t
        self.log_length_avg = log_t
        self.adam = Adam.start(log_t, lr=kernel.learning_rate)
        self.metric = params.inverse_mass[0]
        self.t = 0

    def update(
        self,
        iteration: int,
        before: MCMCState,
        after: MCMCState,
        info: dict[str, torch.Tensor],
        params: Params,
    ) -> ChEESParams:
        """Parameters after warm-up ``iteration`` (0-based) from every chain's transition."""
        chains, dim = after.position.shape
        params = self.as_params(params)
        self.t += 1
        accept, proposal = info["accept_prob"], info["proposal_position"]
        momentum = info["proposal_momentum"]
        ok = ~info["diverging"] & torch.isfinite(accept)
        ok = ok & torch.isfinite(proposal).all(-1) & torch.isfinite(momentum).all(-1)
        # step size: dual averaging on the harmonic-mean acceptance
        if self.adapt_step_size:
            self.averaging.update(harmonic_mean_accept(accept, ok))
            log_eps = self.averaging.log_eps
            self.log_eps = torch.where(torch.isfinite(log_eps), log_eps, self.log_eps)
        # trajectory length: Adam ascent on ChEES in log T, then a t^-kappa moving average
        time = info["jitter"] * params.trajectory_length
        grad = chees_gradient(
            before.position, proposal, momentum, accept, ok, params.inverse_mass, time
        )
        step = self.adam.step(grad).clamp(-LOG_UPDATE_CLIP, LOG_UPDATE_CLIP)
        low, high = self.log_eps, self.log_eps + math.log(self.max_leapfrog_steps)
        new = torch.where(torch.isfinite(step), self.log_length + step, self.log_length)
        self.log_length = torch.minimum(torch.maximum(new, low), high)
        weight = self.t ** (-self.decay_rate)
        self.log_length_avg = (1.0 - weight) * self.log_length_avg + weight * self.log_length
        # metric: moving average of the regularised cross-chain variance
        if iteration < self.metric_end:
            var = after.position.var(0)
            var = (chains / (chains + 5.0)) * var + 1e-3 * 5.0 / (chains + 5.0)
            rate = max(1.0 / (iteration + 1), METRIC_RATE)
            new_metric = (1.0 - rate) * self.metric + rate * var
            good = torch.isfinite(new_metric) & (new_metric > 0)
            self.metric = torch.where(good, new_metric, self.metric)
            if iteration + 1 == self.metric_end and self.adapt_step_size:
                # the metric is frozen from here: tune the final step size to it
                self.averaging = DualAveraging.start(self.log_eps.exp(), self.target)
        log_eps = self.log_eps
        if iteration + 1 == self.num_warmup and self.adapt_step_size:
            log_eps = self.averaging.log_eps_bar
        eps = log_eps.exp().clamp(max=math.exp(10))
        length = self.log_length_avg.exp()
        length = torch.minimum(torch.maximum(length, eps), eps * self.max_leapfrog_steps)
        self.params = ChEESParams(
            eps.expand(chains), self.metric.expand(chains, dim), length.expand(chains)
        )
        return self.params

    def state_dict(self) -> dict:
        return {
            "averaging": self.averaging.state_dict(),
            "adam": self.adam.state_dict(),
            "log_eps": self.log_eps,
            "log_length": self.log_length,
            "log_length_avg": self.log_length_avg,
            "metric": self.metric,
            "t": self.t,
            "params": self.params.as_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.averaging = DualAveraging(**state["averaging"], target=self.target)
        self.adam.load_state_dict(state["adam"])
        self.log_eps, self.log_length = state["log_eps"], state["log_length"]
        self.log_length_avg, self.metric, self.t = (
            state["log_length_avg"], state["metric"], state["t"],
        )  # fmt: skip
        self.params = ChEESParams(**state["params"])
