"""Warm-up adaptation: per-chain dual-averaging step size and windowed metric estimation.

Dual averaging (Hoffman & Gelman 2014, Nesterov 2009) drives the mean acceptance statistic
:math:`\\alpha_t` to the target :math:`\\delta`:

.. math::
    \\bar H_t = (1 - \\tfrac{1}{t + t_0}) \\bar H_{t-1} + \\tfrac{1}{t + t_0}(\\delta - \\alpha_t),
    \\quad \\log\\epsilon_t = \\mu - \\tfrac{\\sqrt t}{\\gamma} \\bar H_t, \\quad
    \\log\\bar\\epsilon_t = t^{-\\kappa}\\log\\epsilon_t + (1 - t^{-\\kappa})\\log\\bar\\epsilon_{t-1},

with :math:`\\mu = \\log(10\\epsilon_0)`, :math:`\\gamma = 0.05`, :math:`t_0 = 10`,
:math:`\\kappa = 0.75`; after warm-up the step size is :math:`\\bar\\epsilon`.

The metric (inverse mass matrix) is the regularised sample (co)variance of the draws in each
slow window of Stan's schedule (75 iterations fast, then windows 25, 50, 100, ... with the last
stretched to end 50 iterations before the end of warm-up, then 50 fast):

.. math::
    M^{-1} = \\tfrac{n}{n + 5}\\hat\\Sigma + 10^{-3}\\tfrac{5}{n + 5} I.

Warm-up only changes the kernel's parameters; draws kept after warm-up come from a fixed,
:math:`\\pi`-invariant kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ppltk.mcmc._base import MCMCState, Params

__all__ = [
    "window_schedule",
    "DualAveraging",
    "WelfordCovariance",
    "WarmupAdapter",
    "StuckChainMonitor",
    "EnsembleAdapter",
    "Adam",
]


def window_schedule(
    num_warmup: int, init_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> list[tuple[int, int]]:
    """Stan's slow adaptation windows ``[(start, end), ...]`` (end exclusive).

    >>> window_schedule(1000)
    [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    """
    if num_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - init_buffer - term_buffer
    end_slow = num_warmup - term_buffer
    windows, start, size = [], init_buffer, base_window
    while start < end_slow:
        end = start + size
        if end + 2 * size > end_slow:
            end = end_slow
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


@dataclass
class DualAveraging:
    """Per-chain dual-averaging state (tensor fields ``[C]``; ``t`` is the number of updates,
    the same for every chain, so the coefficients are Python scalars)."""

    log_eps: torch.Tensor
    log_eps_bar: torch.Tensor
    h_bar: torch.Tensor
    mu: torch.Tensor
    t: int = 0
    target: float = 0.8
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75

    @classmethod
    def start(cls, step_size: torch.Tensor, target: float) -> DualAveraging:
        zeros = torch.zeros_like(step_size)
        return cls(step_size.log(), zeros, zeros, torch.log(10.0 * step_size), 0, target)

    def update(self, accept_prob: torch.Tensor) -> None:
        """One dual-averaging step with acceptance statistics ``accept_prob [C]``."""
        alpha = torch.nan_to_num(accept_prob.to(self.h_bar.dtype), nan=0.0).clamp(0.0, 1.0)
        self.t += 1
        t = float(self.t)
        eta = 1.0 / (t + self.t0)
        # h_bar <- (1 - eta) h_bar + eta (target - alpha)
        self.h_bar = torch.add(self.h_bar * (1.0 - eta), alpha, alpha=-eta).add_(eta * self.target)
        self.log_eps = torch.add(self.mu, self.h_bar, alpha=-math.sqrt(t) / self.gamma)
        x = t ** (-self.kappa)
        self.log_eps_bar = torch.add(self.log_eps_bar * (1.0 - x), self.log_eps, alpha=x)

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("log_eps", "log_eps_bar", "h_bar", "mu", "t")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class WelfordCovariance:
    """Streaming per-chain mean and (co)variance of positions ``[C, D]``."""

    n: int
    mean: torch.Tensor
    m2: torch.Tensor

    @classmethod
    def start(cls, like: torch.Tensor, dense: bool) -> WelfordCovariance:
        chains, dim = like.shape
        m2 = like.new_zeros((chains, dim, dim) if dense else (chains, dim))
        return cls(0, like.new_zeros(chains, dim), m2)

    def update(self, x: torch.Tensor) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.n
        if self.m2.dim() == 3:
            self.m2 = self.m2 + delta.unsqueeze(-1) * (x - self.mean).unsqueeze(-2)
        else:
            self.m2 = self.m2 + delta * (x - self.mean)

    def inverse_mass(self) -> torch.Tensor:
        """Regularised (co)variance, Stan's shrinkage towards :math:`10^{-3} I`."""
        n = self.n
        cov = self.m2 / max(n - 1, 1)
        shrink = 1e-3 * 5.0 / (n + 5.0)
        if cov.dim() == 3:
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
            cov = 0.5 * (cov + cov.transpose(-1, -2))
            return (n / (n + 5.0)) * cov + shrink * eye
        return (n / (n + 5.0)) * cov + shrink

    def state_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}


class WarmupAdapter:
    """Adapts one block of parameters (step size and metric) over ``num_warmup`` iterations.

    Parameters
    ----------
    num_warmup
        Number of warm-up iterations.
    params
        Initial parameters of the block (step size already tuned).
    target_accept
        Dual-averaging target :math:`\\delta`.
    adapt_step_size, adapt_mass
        Switch the two adaptations on/off.
    """

    def __init__(
        self,
        num_warmup: int,
        params: Params,
        target_accept: float = 0.8,
        adapt_step_size: bool = True,
        adapt_mass: bool = True,
    ):
        self.num_warmup = num_warmup
        self.adapt_step_size = adapt_step_size
        self.windows = window_schedule(num_warmup) if adapt_mass else []
        self.target = target_accept
        self.averaging = DualAveraging.start(params.step_size, target_accept)
        self.welford = WelfordCovariance.start(
            params.inverse_mass[..., 0] if params.dense else params.inverse_mass, params.dense
        )
        self.metric_updated = False

    def window_end(self, iteration: int) -> bool:
        """True when a slow window closes after ``iteration``."""
        return any(end == iteration + 1 for _, end in self.windows)

    def _enough_draws(self, dim: int) -> bool:
        """A dense estimate needs more draws than dimensions; a window with fewer is merged
        into the next one (diagonal estimates are always used)."""
        return self.welford.m2.dim() == 2 or self.welford.n > dim

    def update(
        self, iteration: int, position: torch.Tensor, accept_prob: torch.Tensor, params: Params
    ) -> Params:
        """Parameters after warm-up ``iteration`` (0-based). At a window end the caller must
        re-tune the step size and call :meth:`restart` when ``metric_updated`` is set."""
        step_size = params.step_size
        self.metric_updated = False
        if self.adapt_step_size:
            self.averaging.update(accept_prob)
            step_size = self.averaging.log_eps.exp()
        inverse_mass = params.inverse_mass
        if any(start <= iteration < end for start, end in self.windows):
            self.welford.update(position)
        if self.window_end(iteration) and self._enough_draws(position.shape[-1]):
            inverse_mass = self.welford.inverse_mass()
            self.welford = WelfordCovariance.start(position, self.welford.m2.dim() == 3)
            self.metric_updated = True
        if iteration + 1 == self.num_warmup and self.adapt_step_size:
            step_size = self.averaging.log_eps_bar.exp()
        return Params(_finite_step(step_size, params.step_size), inverse_mass)

    def take_rows(self, index: torch.Tensor) -> None:
        """Chain ``c`` takes over the adaptation state of chain ``index[c]`` (a restart)."""
        da = self.averaging
        for key in ("log_eps", "log_eps_bar", "h_bar", "mu"):
            setattr(da, key, getattr(da, key)[index])
        self.welford = WelfordCovariance(
            self.welford.n, self.welford.mean[index], self.welford.m2[index]
        )

    def restart(self, step_size: torch.Tensor) -> None:
        """Restart dual averaging around a freshly tuned step size (after a metric update)."""
        self.averaging = DualAveraging.start(step_size, self.target)

    def state_dict(self) -> dict:
        return {"averaging": self.averaging.state_dict(), "welford": self.welford.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.averaging.load_state_dict(state["averaging"])
        self.welford = WelfordCovariance(**state["welford"])


def _finite_step(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    ok = torch.isfinite(new) & (new > 0)
    # no lower floor (a floor strands chains that start where the density is steep)
    return torch.where(ok, new, old).clamp(max=math.exp(10))


class StuckChainMonitor:
    """Finds chains that are stuck during warm-up, so the runner can restart them.

    Over each check interval (``max(25, num_warmup // 10)`` iterations, checked up to 80% of
    warm-up so that a restarted chain has time to adapt and decorrelate) it records every
    chain's mean acceptance statistic and its mean and highest log-density. A chain is stuck
    when, with at least one other chain healthy,

    - its mean acceptance is below ``min_accept`` (1%), or
    - its step size is below ``step_ratio`` (1e-3) times the healthy chains' median, or
    - its highest log-density in the interval is more than ``25 + 5 sqrt(D)`` below the
      median of the chains' mean log-densities (a chain in the typical set is within a few
      :math:`\\sqrt{D/2}` of it).

    A stuck chain is restarted from the current state of a healthy chain chosen uniformly
    at random (its position, step size, metric and adaptation state are copied). This only
    changes warm-up: the kept draws still come from a fixed, :math:`\\pi`-invariant kernel.
    """

    min_accept = 0.01
    step_ratio = 1e-3

    def __init__(self, num_warmup: int, like: torch.Tensor):
        chains, self.dim = like.shape
        self.interval = max(25, num_warmup // 10)
        self.last = int(0.8 * num_warmup)
        self.active = chains >= 2 and num_warmup >= 2 * self.interval
        self._reset(like.new_zeros(chains))

    def _reset(self, zeros: torch.Tensor) -> None:
        self.n = 0
        self.accept = zeros.clone()
        self.lp_sum = zeros.clone()
        self.lp_max = torch.full_like(zeros, -math.inf)

    def update(self, iteration: int, lp: torch.Tensor, accept: torch.Tensor) -> bool:
        """Record one warm-up iteration; True when a check is due after it."""
        if not self.active:
            return False
        accept = torch.nan_to_num(accept.to(self.accept.dtype), nan=0.0)
        self.n += 1
        self.accept = self.accept + accept
        self.lp_sum = self.lp_sum + torch.nan_to_num(lp, nan=-math.inf, posinf=-math.inf)
        self.lp_max = torch.maximum(self.lp_max, torch.nan_to_num(lp, nan=-math.inf))
        return (iteration + 1) % self.interval == 0 and iteration + 1 <= self.last

    def stuck(self, step_size: torch.Tensor) -> torch.Tensor:
        """Chains ``[C]`` (bool) judged stuck over the interval just ended; resets the window."""
        n = max(self.n, 1)
        accept, lp_mean = self.accept / n, self.lp_sum / n
        finite = torch.isfinite(lp_mean)
        centre = lp_mean[finite].median() if bool(finite.any()) else lp_mean.new_tensor(0.0)
        low_lp = self.lp_max < centre - (25.0 + 5.0 * math.sqrt(self.dim))
        bad = (accept < self.min_accept) | low_lp | ~torch.isfinite(step_size) | (step_size <= 0)
        healthy_steps = step_size[~bad]
        if healthy_steps.numel() > 0:
            bad = bad | (step_size < self.step_ratio * healthy_steps.median())
        self._reset(torch.zeros_like(self.accept))
        if bool(bad.all()):
            return torch.zeros_like(bad)  # no healthy chain to restart from
        return bad

    def state_dict(self) -> dict:
        return {"n": self.n, "accept": self.accept, "lp_sum": self.lp_sum, "lp_max": self.lp_max}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class EnsembleAdapter:
    """Base of warm-up adapters that pool every chain (ChEES): one set of parameters, shared by
    all chains, is tuned from cross-chain statistics.

    :func:`~ppltk.mcmc.sample_flat` uses one such adapter in place of the per-block
    :class:`WarmupAdapter` list when the kernel's ``make_adapters`` returns it, and calls
    :meth:`update` once per warm-up iteration with the chains' states before and after the
    transition and the kernel's ``info``.  Like :class:`WarmupAdapter` it only changes warm-up:
    the kept draws come from the frozen kernel.

    Attributes
    ----------
    params
        The parameters in force (restored with :meth:`load_state_dict`, so a resumed run gets
        back also the fields that a plain :class:`~ppltk.mcmc.Params` does not carry).
    """

    params: Params

    def update(
        self,
        iteration: int,
        before: MCMCState,
        after: MCMCState,
        info: dict[str, torch.Tensor],
        params: Params,
    ) -> Params:  # pragma: no cover - interface
        raise NotImplementedError

    def take_rows(self, index: torch.Tensor) -> None:
        """Chain ``c`` takes over the parameters of chain ``index[c]`` (a stuck-chain restart;
        the pooled adaptation state is shared and stays as it is)."""
        self.params = self.params.take(index)

    def state_dict(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Adam:
    """Adam (Kingma & Ba 2015) *ascent* on a tensor parameter :math:`\\theta`:

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\quad
        \\Delta_t = \\eta\\,\\frac{m_t / (1-\\beta_1^t)}{\\sqrt{v_t / (1-\\beta_2^t)} + \\varepsilon}.

    :meth:`step` returns :math:`\\Delta_t` (to be added to :math:`\\theta`); state tensors are
    replaced, never changed in place (snapshots of the warm-up stay valid).
    """

    m: torch.Tensor
    v: torch.Tensor
    t: int = 0
    lr: float = 0.025
    beta1: float = 0.0
    beta2: float = 0.95
    eps: float = 1e-8

    @classmethod
    def start(cls, like: torch.Tensor, **options) -> Adam:
        zeros = torch.zeros_like(like)
        return cls(zeros, zeros, 0, **options)

    def step(self, grad: torch.Tensor) -> torch.Tensor:
        self.t += 1
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * grad * grad
        m_hat = self.m / (1.0 - self.beta1**self.t)
        v_hat = self.v / (1.0 - self.beta2**self.t)
        return self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
