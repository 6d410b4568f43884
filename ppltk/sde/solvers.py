r"""Fractional SDEs on the augmented Markov state and their solvers.

A fractional SDE :math:`dX = b(t,X)dt + \sigma(t,X) \circ dB_H` with the MA-fBM
:math:`\hat B_H = \sum_k \omega_k Z_k` becomes the Markov system (one Brownian motion per
coordinate of :math:`X`, diagonal :math:`\sigma`)

.. math::
    dX = \Big[b(t,X) + \sigma(t,X)\big(\bar\omega u - \textstyle\sum_k \omega_k\gamma_k Y_k\big)\Big]dt
         + \sigma(t,X)\,\bar\omega\, dW, \qquad
    dY_k = (-\gamma_k Y_k + u)\,dt + dW,

with :math:`\bar\omega = \sum_k\omega_k` and a control :math:`u(t, X, Y)` (zero under the
prior). By Girsanov the path KL of the controlled law to the prior is
:math:`E\int_0^T \tfrac12\|u\|^2 dt`, accumulated by every solver. Brownian motion is the
special case :math:`K=1, \gamma=0, \omega=1`.

Solvers: ``"euler"`` (Euler--Maruyama), ``"heun"`` (stochastic Heun; it agrees with Itô here
because the noise of Y is additive and the one of X is additive when :math:`\sigma` does not
depend on X) -- both need :math:`\gamma_{\max}\,dt < 0.5` -- and ``"exact"``: exact OU
transitions of Y under a control held constant over the step, with
:math:`X_{n+1} = X_n + b\,h + \sigma \sum_k \omega_k (Y_{k,n+1} - Y_{k,n})`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ppltk._rng import make_generator
from ppltk.errors import ArgumentError, ShapeError
from ppltk.gaussian import psd_sqrt
from ppltk.sde.markov_fbm import (
    _check_options,
    _default_gammas,
    optimal_omega,
    ou_increment_covariance,
)

__all__ = ["FractionalSDE", "SolveOutput", "sdeint_fractional", "time_grid"]

_METHODS = ("euler", "heun", "exact")


def _as_callable(fn) -> Callable:
    """``fn`` itself, or a constant ``(t, x) -> fn`` cast to ``x``'s dtype and device."""
    if callable(fn):
        return fn
    value = torch.as_tensor(fn)
    return lambda t, x: value.to(x)


class FractionalSDE(nn.Module):
    r"""An SDE driven by MA-fBM: drift :math:`b(t,x)`, diagonal diffusion :math:`\sigma(t,x)`.

    Parameters
    ----------
    drift, diffusion
        Callables ``(t: float, x: [batch, d]) -> [batch, d]`` (``nn.Module`` s are registered) or
        constants.
    hurst
        Initial Hurst index in (0, 1); learned through a sigmoid when ``learn_hurst``.
    num_processes, gamma_min, gamma_max, horizon, kind, normalisation
        As in :class:`~ppltk.sde.MarkovFBM`.
    brownian
        Use Brownian motion (:math:`K=1, \gamma=0, \omega=1`) instead of MA-fBM.
    """

    def __init__(
        self,
        drift,
        diffusion,
        hurst: float = 0.5,
        num_processes: int = 5,
        gamma_min: float | None = None,
        gamma_max: float | None = None,
        horizon: float = 1.0,
        kind: str = "II",
        normalisation: str = "standard",
        learn_hurst: bool = False,
        brownian: bool = False,
    ) -> None:
        super().__init__()
        if not 0 < float(hurst) < 1:
            raise ArgumentError(f"Expected `hurst` in (0, 1), but found {hurst!r}")
        _check_options(kind, normalisation)
        self.drift = drift if isinstance(drift, nn.Module) else None
        self._drift = _as_callable(drift)
        self.diffusion = diffusion if isinstance(diffusion, nn.Module) else None
        self._diffusion = _as_callable(diffusion)
        self.kind, self.normalisation, self.horizon = kind, normalisation, float(horizon)
        self.brownian = bool(brownian)
        if brownian:
            gammas = torch.zeros(1, dtype=torch.float64)
        else:
            gammas = _default_gammas(num_processes, gamma_min, gamma_max, horizon)
        self.register_buffer("gammas", gammas)
        logit = torch.logit(torch.tensor(float(hurst), dtype=torch.float64))
        self.hurst_logit = nn.Parameter(logit, requires_grad=bool(learn_hurst) and not brownian)

    @property
    def hurst(self) -> torch.Tensor:
        """The Hurst index :math:`\\sigma(\\text{logit})` in (0, 1) (0.5 in the Brownian case)."""
        if self.brownian:
            return torch.tensor(0.5, dtype=torch.float64, device=self.gammas.device)
        return torch.sigmoid(self.hurst_logit)

    def omega(self) -> torch.Tensor:
        """The weights :math:`\\omega(H)`, float64, differentiable in H."""
        if self.brownian:
            return torch.ones(1, dtype=torch.float64, device=self.gammas.device)
        return optimal_omega(self.hurst, self.gammas, self.horizon, self.kind, self.normalisation)

    def b(self, t: float, x: torch.Tensor) -> torch.Tensor:
        return self._drift(t, x)

    def sigma(self, t: float, x: torch.Tensor) -> torch.Tensor:
        return self._diffusion(t, x)

    def initial_y(self, batch_shape, like: torch.Tensor, generator) -> torch.Tensor:
        """:math:`Y(0)`: zeros (Type II) or a stationary draw (Type I), ``[*batch, K]``."""
        g = self.gammas.to(like)
        shape = (*batch_shape, g.numel())
        if self.kind == "II" or self.brownian:
            return torch.zeros(shape, dtype=like.dtype, device=like.device)
        root = psd_sqrt(1.0 / (g[:, None] + g[None, :]))
        eps = torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
        return eps @ root.T


@dataclass
class SolveOutput:
    """Solution of :func:`sdeint_fractional`.

    ``xs`` ``[len(ts), batch, d]`` at the requested times, ``path_kl`` ``[batch]`` (the
    Girsanov term :math:`\\int \\frac12 \\|u\\|^2 dt`), ``ys`` the OU states at ``ts``
    ``[len(ts), batch, d, K]``.
    """

    xs: torch.Tensor
    path_kl: torch.Tensor
    ys: torch.Tensor


def time_grid(ts: torch.Tensor, dt: float | None) -> list[tuple[float, float, int]]:
    """Solver steps ``(t, h, next_obs)`` with ``ceil(Δ/dt)`` equal substeps per interval."""
    out = []
    tl = ts.tolist()
    for i in range(len(tl) - 1):
        span = tl[i + 1] - tl[i]
        m = 1 if dt is None else max(1, math.ceil(span / dt * (1 - 1e-6)))
        out += [(tl[i] + j * span / m, span / m, i + 1) for j in range(m)]
    return out


def _check_times(x0, ts, dt) -> torch.Tensor:
    """Check ``x0`` (a float32/64 tensor), ``dt`` and ``ts``; return ``ts`` like ``x0``."""
    if not isinstance(x0, torch.Tensor) or x0.dtype not in (torch.float32, torch.float64):
        found = x0.dtype if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ArgumentError(f"Expected `x0` a float32 or float64 tensor, but found {found}")
    if not bool(torch.isfinite(x0).all()):
        raise ArgumentError("Expected `x0` finite, but found NaN or inf entries")
    if dt is not None and (
        isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not math.isfinite(dt) or dt <= 0
    ):
        raise ArgumentError(f"Expected `dt` None or a finite number > 0, but found {dt!r}")
    try:
        ts = torch.as_tensor(ts, dtype=x0.dtype, device=x0.device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ArgumentError(f"Expected `ts` a 1-D tensor of times, but found {ts!r}") from error
    if ts.dim() != 1 or ts.numel() < 2:
        raise ShapeError(f"Expected `ts` of shape [T>=2], but found {tuple(ts.shape)}")
    if not bool(torch.isfinite(ts).all()):
        raise ArgumentError(f"Expected finite `ts`, but found NaN or inf in {ts.tolist()}")
    if bool((torch.diff(ts) <= 0).any()):
        raise ArgumentError(f"Expected strictly increasing `ts`, but found {ts.tolist()}")
    return ts


def _check_inputs(sde, x0, ts, method, dt, dW, grid) -> None:
    if method not in _METHODS:
        raise ArgumentError(f"Expected `method` in {_METHODS}, but found {method!r}")
    if x0.dim() != 2:
        raise ShapeError(f"Expected `x0` of shape [batch, d], but found {tuple(x0.shape)}")
    if ts.dim() != 1 or ts.numel() < 2 or bool((torch.diff(ts) <= 0).any()):
        raise ShapeError(f"Expected strictly increasing `ts` of shape [T>=2], found {ts.shape}")
    gmax = float(sde.gammas.max())
    hmax = max(h for _, h, _ in grid)
    if method != "exact" and gmax * hmax >= 0.5:
        raise ArgumentError(
            f"Expected gamma_max * dt < 0.5 for method={method!r} (stability), but found "
            f"{gmax:.4g} * {hmax:.4g} = {gmax * hmax:.4g}; pass a smaller `dt` or method='exact'"
        )
    if dW is not None and tuple(dW.shape) != (len(grid), *x0.shape):
        raise ShapeError(
            f"Expected `dW` of shape {(len(grid), *x0.shape)}, but found {tuple(dW.shape)}"
        )
    if dW is not None and method == "exact":
        raise ArgumentError("Expected `dW=None` with method='exact' (it draws joint OU noise)")


def sdeint_fractional(
    sde: FractionalSDE,
    x0: torch.Tensor,
    ts: torch.Tensor,
    *,
    dt: float | None = None,
    method: str = "exact",
    control: Callable | None = None,
    seed=None,
    dW: torch.Tensor | None = None,
    y0: torch.Tensor | None = None,
) -> SolveOutput:
    """Integrate the augmented system from ``x0`` ``[batch, d]`` over ``ts``, batched over paths.

    ``control(t, x, y, tau, next_obs) -> [batch, d]`` (``tau`` the time left to ``ts[next_obs]``);
    ``dW`` ``[num_steps, batch, d]`` fixes the Brownian increments (Euler/Heun), e.g. to share a
    path with another solver. See the module docstring for the schemes.
    """
    ts = _check_times(x0, ts, dt)
    grid = time_grid(ts, dt)
    _check_inputs(sde, x0, ts, method, dt, dW, grid)
    gen = make_generator(seed, x0.device) if dW is None else None
    co = _coefficients(sde, x0)
    if dW is None and method != "exact":
        root_h = torch.tensor([h for _, h, _ in grid], dtype=x0.dtype, device=x0.device).sqrt()
        dW = torch.randn((len(grid), *x0.shape), generator=gen, dtype=x0.dtype, device=x0.device)
        dW = dW * root_h[:, None, None]
    x = x0
    y = sde.initial_y(x0.shape, x0, gen) if y0 is None else y0
    xs, ys, us, weights = [x], [y], [], []
    step = {"euler": _euler_step, "heun": _heun_step, "exact": _exact_step}[method]
    cache: dict = {}
    for n, (t, h, nxt) in enumerate(grid):
        noise = dW[n] if dW is not None else None
        tau = float(ts[nxt]) - t
        x, y, kl_terms = step(sde, co, t, h, x, y, control, tau, nxt, noise, gen, cache)
        for u, weight in kl_terms:
            us.append(u)
            weights.append(weight)
        if n + 1 == len(grid) or grid[n + 1][2] != nxt:
            xs.append(x)
            ys.append(y)
    return SolveOutput(torch.stack(xs), _path_kl(us, weights, x0), torch.stack(ys))


def _coefficients(sde: FractionalSDE, like: torch.Tensor) -> dict:
    """Per-solve constants: speeds, weights, their sum and product (model dtype)."""
    g, w = sde.gammas.to(like), sde.omega().to(like)
    return {"g": g, "w": w, "wbar": w.sum(), "wg": w * g, "brownian": sde.brownian}


def _path_kl(us: list, weights: list, like: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_n \tfrac12 \|u_n\|^2 h_n` from the controls of every step (one reduction)."""
    if not us:
        return torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)
    w = torch.tensor(weights, dtype=like.dtype, device=like.device)
    return 0.5 * ((torch.stack(us) ** 2).sum(-1) * w[:, None]).sum(0)


def _u(control, t, x, y, tau, nxt):
    return torch.zeros_like(x) if control is None else control(t, x, y, tau, nxt)


def _fields(sde, co, t, x, y, u):
    """Drift of X and Y (None in the Brownian case) and the noise coefficient of X."""
    sig = sde.sigma(t, x)
    if co["brownian"]:  # K = 1, gamma = 0, omega = 1: Y = W plays no role in the drift
        return torch.addcmul(sde.b(t, x), sig, u), None, sig
    fx = sde.b(t, x) + sig * (co["wbar"] * u - (y * co["wg"]).sum(-1))
    fy = -co["g"] * y + u[..., None]
    return fx, fy, sig * co["wbar"]


def _euler_step(sde, co, t, h, x, y, control, tau, nxt, noise, gen, cache):
    u = _u(control, t, x, y, tau, nxt)
    fx, fy, gx = _fields(sde, co, t, x, y, u)
    x_new = torch.addcmul(torch.add(x, fx, alpha=h), gx, noise)  # x + f h + g dW
    y_new = y if fy is None else torch.add(y, fy, alpha=h) + noise[..., None]
    return x_new, y_new, [(u, h)]


def _heun_step(sde, co, t, h, x, y, control, tau, nxt, noise, gen, cache):
    u = _u(control, t, x, y, tau, nxt)
    fx, fy, gx = _fields(sde, co, t, x, y, u)
    xp = x + fx * h + gx * noise
    yp = y if fy is None else y + fy * h + noise[..., None]
    up = _u(control, t + h, xp, yp, tau - h, nxt)
    fxp, fyp, gxp = _fields(sde, co, t + h, xp, yp, up)
    x_new = x + 0.5 * (fx + fxp) * h + 0.5 * (gx + gxp) * noise
    y_new = y if fy is None else y + 0.5 * (fy + fyp) * h + noise[..., None]
    return x_new, y_new, [(u, h / 2), (up, h / 2)]


def _exact_step(sde, co, t, h, x, y, control, tau, nxt, noise, gen, cache):
    g, w = co["g"], co["w"]
    key = round(h, 14)
    if key not in cache:
        gam = torch.cat([torch.zeros(1, dtype=g.dtype, device=g.device), g])
        phi = -torch.expm1(-g * h) / torch.where(g > 0, g, torch.ones_like(g))
        phi = torch.where(g > 0, phi, torch.full_like(g, h))
        cache[key] = (psd_sqrt(ou_increment_covariance(gam, h))[1:], torch.exp(-g * h), phi)
    root, decay, phi = cache[key]
    u = _u(control, t, x, y, tau, nxt)
    eps = torch.randn((*x.shape, root.shape[1]), generator=gen, dtype=x.dtype, device=x.device)
    y_new = decay * y + phi * u[..., None] + eps @ root.T
    x_new = x + sde.b(t, x) * h + sde.sigma(t, x) * ((y_new - y) * w).sum(-1)
    return x_new, y_new, [(u, h)]
