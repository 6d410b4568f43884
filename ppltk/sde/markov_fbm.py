r"""Markov approximation of fractional Brownian motion (MA-fBM).

Daems, Opper, Crevecoeur, Birdal, "Variational Inference for SDEs Driven by Fractional Noise",
ICLR 2024; Harms and Stefanovits (2019). fBM is approximated by a weighted sum of
Ornstein--Uhlenbeck processes driven by one Brownian motion :math:`W`:

.. math::
    \hat B_H(t) = \sum_{k=1}^K \omega_k Z_k(t), \qquad dY_k = -\gamma_k Y_k\,dt + dW,

with :math:`Z_k = Y_k` and :math:`Y_k(0) = 0` (Type II, Riemann--Liouville) or
:math:`Z_k = Y_k(t) - Y_k(0)` with :math:`Y(0)` stationary (Type I, Mandelbrot--van Ness).
The weights minimise :math:`\int_0^T E[(B_H(t) - \hat B_H(t))^2] dt`, i.e. solve
:math:`A\omega = b` with :math:`A_{ij} = \int_0^T E[Z_i Z_j] dt` and
:math:`b_k = \int_0^T E[B_H Z_k] dt`.

Normalisation. The target is
:math:`B_H(t) = c_H \int (t-s)_+^{H-1/2} - (-s)_+^{H-1/2}\,dW(s)` (Type I; the second term is
absent for Type II, which integrates from 0). ``"riemann_liouville"`` takes
:math:`c_H = 1/\Gamma(H+\tfrac12)` (what the Laplace-transform construction reproduces);
``"standard"`` (the default) takes :math:`c_H` so that :math:`\operatorname{Var} B_H(t) = t^{2H}`:
:math:`c_H = \sqrt{2H}` for Type II and
:math:`c_H = \sqrt{2H\,\Gamma(3/2-H) / (\Gamma(H+1/2)\,\Gamma(2-2H))}` for Type I.

Closed forms (:math:`a = H + \tfrac12`, :math:`P, Q` the regularised incomplete gamma
functions, :math:`z = \gamma_k T`, :math:`s = \gamma_i + \gamma_j`):

Type II: :math:`E[Y_iY_j](t) = (1-e^{-st})/s`, so
:math:`A_{ij} = T/s - (1-e^{-sT})/s^2`; :math:`E[B_H Y_k](t) = c\,\Gamma(a)\gamma^{-a} P(a,\gamma t)`
and, using :math:`\int_0^z P(a,x)dx = zP(a,z) - aP(a+1,z)`,
:math:`b_k = c\,\Gamma(a)\gamma_k^{-a}\,[T P(a,z) - \tfrac{a}{\gamma_k} P(a+1,z)]`.

Type I: :math:`E[Z_iZ_j](t) = (2 - e^{-\gamma_i t} - e^{-\gamma_j t})/s`, so
:math:`A_{ij} = [2T - (1-e^{-\gamma_iT})/\gamma_i - (1-e^{-\gamma_jT})/\gamma_j]/s`;
:math:`E[B_H Z_k](t) = c\,\Gamma(a)\gamma^{-a}[2 - e^{-\gamma t} - e^{\gamma t} Q(a, \gamma t)]` and,
using :math:`\int_0^z e^x Q(a,x) dx = e^z Q(a,z) - 1 + z^a/\Gamma(a+1)`,
:math:`b_k = c\,\Gamma(a)\gamma_k^{-a}[2T - \tfrac{1-e^{-z}}{\gamma_k}
- \tfrac{1}{\gamma_k}(e^zQ(a,z) - 1 + \tfrac{z^a}{\Gamma(a+1)})]`.
"""

from __future__ import annotations

import math

import torch

from ppltk._rng import make_generator
from ppltk.errors import ArgumentError
from ppltk.gaussian import psd_sqrt
from ppltk.sde._gamma import gammainc, scaled_gammaincc

__all__ = [
    "MarkovFBM",
    "OmegaFunction",
    "geometric_gammas",
    "omega_system",
    "optimal_omega",
    "fbm_scale",
    "ou_increment_covariance",
]

_KINDS = ("I", "II")
_NORMALISATIONS = ("standard", "riemann_liouville")


def _check_options(kind: str, normalisation: str) -> None:
    if kind not in _KINDS:
        raise ArgumentError(f"Expected `kind` in {_KINDS}, but found {kind!r}")
    if normalisation not in _NORMALISATIONS:
        raise ArgumentError(
            f"Expected `normalisation` in {_NORMALISATIONS}, but found {normalisation!r}"
        )


def geometric_gammas(
    num_processes: int, gamma_min: float, gamma_max: float, dtype=torch.float64, device=None
) -> torch.Tensor:
    r"""Speeds on a geometric grid :math:`\gamma_k = \gamma_{\min} r^{k-1}`, from min to max.

    Equivalent to :math:`\gamma_k = \bar\gamma\, r^{k-(K+1)/2}` with
    :math:`\bar\gamma = \sqrt{\gamma_{\min}\gamma_{\max}}`.
    """
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ArgumentError(f"Expected `num_processes` >= 1, but found {num_processes!r}")
    if not 0 < gamma_min <= gamma_max:
        raise ArgumentError(
            "Expected 0 < `gamma_min` <= `gamma_max`, but found "
            f"gamma_min={gamma_min}, gamma_max={gamma_max}"
        )
    if num_processes == 1:
        return torch.tensor([math.sqrt(gamma_min * gamma_max)], dtype=dtype, device=device)
    exps = torch.linspace(math.log(gamma_min), math.log(gamma_max), num_processes, dtype=dtype)
    return exps.exp().to(device)


def _default_gammas(num_processes, gamma_min, gamma_max, horizon: float) -> torch.Tensor:
    """:func:`geometric_gammas` with the default range ``[0.1, 100] / horizon`` where unset."""
    gmin = 0.1 / horizon if gamma_min is None else gamma_min
    gmax = 100.0 / horizon if gamma_max is None else gamma_max
    return geometric_gammas(num_processes, gmin, gmax)


def _norm_const(hurst: torch.Tensor, kind: str, normalisation: str) -> torch.Tensor:
    """The constant :math:`c_H` in front of the fBM kernel (see the module docstring)."""
    a = hurst + 0.5
    if normalisation == "riemann_liouville":
        return torch.exp(-torch.lgamma(a))
    if kind == "II":
        return torch.sqrt(2 * hurst)
    log_c2 = torch.log(2 * hurst) + torch.lgamma(1.5 - hurst) - torch.lgamma(a)
    return torch.exp(0.5 * (log_c2 - torch.lgamma(2 - 2 * hurst)))


def fbm_scale(hurst: torch.Tensor, kind: str = "II", normalisation: str = "standard"):
    r"""Return :math:`\kappa` with :math:`\operatorname{Var} B_H(t) = \kappa\, t^{2H}` for the target."""
    _check_options(kind, normalisation)
    hurst = torch.as_tensor(hurst, dtype=torch.float64)
    c = _norm_const(hurst, kind, normalisation)
    if kind == "II":
        return c**2 / (2 * hurst)
    return (c / _norm_const(hurst, "I", "standard")) ** 2


def _pair_sum(gammas: torch.Tensor) -> torch.Tensor:
    return gammas[:, None] + gammas[None, :]


def _expm1_ratio(s: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    r""":math:`(1 - e^{-st})/s`, equal to :math:`t` at :math:`s = 0`."""
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return torch.where(s > 0, -torch.expm1(-safe * t) / safe, torch.zeros_like(s) + t)


def _matrix_a(gammas: torch.Tensor, horizon: float, kind: str) -> torch.Tensor:
    T = horizon
    s = _pair_sum(gammas)
    if kind == "II":
        safe = torch.where(s > 0, s, torch.ones_like(s))
        a_pos = T / safe - (-torch.expm1(-safe * T)) / safe**2
        return torch.where(s > 0, a_pos, torch.full_like(s, T * T / 2))
    r = _expm1_ratio(gammas, T)
    return (2 * T - r[:, None] - r[None, :]) / s


def _vector_b(hurst: torch.Tensor, gammas: torch.Tensor, horizon: float, kind: str, c):
    T = horizon
    a = hurst + 0.5
    safe = torch.where(gammas > 0, gammas, torch.ones_like(gammas))
    z = safe * T
    scale = c * torch.exp(torch.lgamma(a) - a * torch.log(safe))
    if kind == "II":
        bracket = T * gammainc(a, z) - a / safe * gammainc(a + 1, z)
        brownian = c * T ** (a + 1) / (a * (a + 1))
        return torch.where(gammas > 0, scale * bracket, brownian)
    ez_q = scaled_gammaincc(a, z)
    tail = ez_q - 1 + torch.exp(a * torch.log(z) - torch.lgamma(a + 1))
    return scale * (2 * T + torch.expm1(-z) / safe - tail / safe)


def omega_system(
    hurst, gammas: torch.Tensor, horizon: float, kind: str = "II", normalisation: str = "standard"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(A, b)`` of the L2-optimality system :math:`A\\omega = b` (float64).

    ``b`` is differentiable in ``hurst`` (through :class:`~ppltk.sde._gamma.RegularizedGammaP`).
    """
    _check_options(kind, normalisation)
    gammas = torch.as_tensor(gammas, dtype=torch.float64)
    hurst = torch.as_tensor(hurst, dtype=torch.float64, device=gammas.device)
    if kind == "I" and bool((gammas <= 0).any()):
        raise ArgumentError(f"Expected all `gammas` > 0 for Type I, but found {gammas.tolist()}")
    c = _norm_const(hurst, kind, normalisation)
    return _matrix_a(gammas, horizon, kind), _vector_b(hurst, gammas, horizon, kind, c)


def optimal_omega(
    hurst, gammas: torch.Tensor, horizon: float, kind: str = "II", normalisation: str = "standard"
) -> torch.Tensor:
    r"""The L2-optimal weights :math:`\omega(H) = A^{-1} b(H)` (float64, differentiable in H).

    ``A`` is a Cauchy-like matrix and badly conditioned; it is symmetric positive definite, so
    the solve uses a Cholesky factor in float64. The gradient comes from :class:`OmegaFunction`.
    """
    _check_options(kind, normalisation)
    gammas = torch.as_tensor(gammas, dtype=torch.float64)
    hurst = torch.as_tensor(hurst, dtype=torch.float64, device=gammas.device)
    if kind == "I" and bool((gammas <= 0).any()):
        raise ArgumentError(f"Expected all `gammas` > 0 for Type I, but found {gammas.tolist()}")
    return OmegaFunction.apply(hurst, gammas, float(horizon), kind, normalisation)


class OmegaFunction(torch.autograd.Function):
    r""":math:`H \mapsto \omega(H) = A^{-1} b(H)` with an adjoint backward pass.

    Since :math:`A` does not depend on H and is symmetric,
    :math:`\bar H = \lambda^\top \partial_H b` with :math:`\lambda = A^{-1}\bar\omega` (one
    Cholesky solve, reusing the forward factor); :math:`\partial_H b` involves
    :math:`\partial_a P(a, x)` from :class:`~ppltk.sde._gamma.RegularizedGammaP`.
    """

    @staticmethod
    def forward(ctx, hurst, gammas, horizon, kind, normalisation):
        with torch.no_grad():
            c = _norm_const(hurst, kind, normalisation)
            A = _matrix_a(gammas, horizon, kind)
            b = _vector_b(hurst, gammas, horizon, kind, c)
            chol = torch.linalg.cholesky(A)
            omega = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
        ctx.save_for_backward(hurst, gammas, chol)
        ctx.config = (horizon, kind, normalisation)
        return omega

    @staticmethod
    def backward(ctx, grad_omega):
        hurst, gammas, chol = ctx.saved_tensors
        horizon, kind, normalisation = ctx.config
        lam = torch.cholesky_solve(grad_omega.unsqueeze(-1), chol).squeeze(-1)
        with torch.enable_grad():
            h = hurst.detach().requires_grad_(True)
            b = _vector_b(h, gammas, horizon, kind, _norm_const(h, kind, normalisation))
            (grad_h,) = torch.autograd.grad(b, h, lam)
        return grad_h, None, None, None, None


def ou_increment_covariance(gammas: torch.Tensor, dt: float | torch.Tensor) -> torch.Tensor:
    r"""Covariance of :math:`\xi_k = \int_0^{dt} e^{-\gamma_k(dt-s)} dW(s)`: :math:`(1-e^{-s\,dt})/s`.

    A tensor ``dt [..., 1, 1]`` gives a batch ``[..., K, K]``.
    """
    return _expm1_ratio(_pair_sum(gammas), dt)


class MarkovFBM:
    r"""Markov approximation of fBM by ``num_processes`` OU processes (see module docstring).

    Parameters
    ----------
    hurst
        Hurst index in (0, 1) (float or 0-d tensor; a tensor with ``requires_grad`` keeps
        ``omega`` differentiable).
    num_processes
        Number ``K`` of OU processes.
    gamma_min, gamma_max
        Ends of the geometric grid of speeds (defaults ``0.1 / horizon`` and ``100 / horizon``:
        H is only identifiable on time scales between :math:`1/\gamma_{\max}` and
        :math:`1/\gamma_{\min}`).
    horizon
        ``T``, the end of the interval on which the L2 error is minimised.
    kind
        ``"II"`` (Riemann--Liouville, :math:`Y(0) = 0`) or ``"I"`` (Mandelbrot--van Ness).
    normalisation
        ``"standard"`` (:math:`\operatorname{Var} B_H(t) = t^{2H}`) or ``"riemann_liouville"``.
    gammas
        Explicit speeds (overrides the grid); a zero speed is allowed for Type II.

    Attributes
    ----------
    gammas, omega : torch.Tensor
        float64 tensors of shape ``[K]``.

    Examples
    --------
    >>> m = MarkovFBM(0.5, num_processes=5, horizon=1.0)
    >>> m.gammas.shape, m.omega.dtype
    (torch.Size([5]), torch.float64)
    >>> float(m.approximation_error(relative=True)) < 1e-6  # Type II reproduces W at H = 1/2
    True
    """

    def __init__(
        self,
        hurst,
        num_processes: int = 5,
        gamma_min: float | None = None,
        gamma_max: float | None = None,
        horizon: float = 1.0,
        kind: str = "II",
        normalisation: str = "standard",
        gammas=None,
    ) -> None:
        _check_options(kind, normalisation)
        if not horizon > 0:
            raise ArgumentError(f"Expected `horizon` > 0, but found {horizon!r}")
        self.hurst = torch.as_tensor(hurst, dtype=torch.float64)
        if self.hurst.dim() != 0 or not 0 < float(self.hurst.detach()) < 1:
            raise ArgumentError(f"Expected a scalar `hurst` in (0, 1), but found {hurst!r}")
        self.horizon, self.kind, self.normalisation = float(horizon), kind, normalisation
        if gammas is None:
            gammas = _default_gammas(num_processes, gamma_min, gamma_max, horizon)
        self.gammas = torch.as_tensor(gammas, dtype=torch.float64).reshape(-1)
        self.omega = optimal_omega(self.hurst, self.gammas, self.horizon, kind, normalisation)

    @property
    def num_processes(self) -> int:
        """The number :math:`K` of OU processes (``len(gammas)``)."""
        return self.gammas.numel()

    def system(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear system ``(A, b)`` whose solution is :attr:`omega`."""
        return omega_system(self.hurst, self.gammas, self.horizon, self.kind, self.normalisation)

    def _z_covariance(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r""":math:`E[Z_i(s) Z_j(t)]` for :math:`s \le t`, shape ``[..., K, K]``."""
        g, s, t = self.gammas, s[..., None, None], t[..., None, None]
        gs = _pair_sum(g)
        lag = torch.exp(-g[None, :] * (t - s))
        if self.kind == "II":
            return lag * _expm1_ratio(gs, s)
        return (lag - torch.exp(-g[:, None] * s) - torch.exp(-g[None, :] * t) + 1) / gs

    def covariance(self, ts) -> torch.Tensor:
        r"""Covariance :math:`\operatorname{Cov}(\hat B_H(t_m), \hat B_H(t_n))`, shape ``[n, n]``."""
        ts = torch.as_tensor(ts, dtype=torch.float64)
        s, t = torch.minimum(ts[:, None], ts[None, :]), torch.maximum(ts[:, None], ts[None, :])
        cov = self._z_covariance(s, t)
        return torch.einsum("i,mnij,j->mn", self.omega, cov, self.omega)

    def variance(self, ts) -> torch.Tensor:
        r""":math:`\operatorname{Var}\hat B_H(t) = \omega^\top E[Z(t)Z(t)^\top]\omega`."""
        ts = torch.as_tensor(ts, dtype=torch.float64)
        cov = self._z_covariance(ts, ts)
        return torch.einsum("i,nij,j->n", self.omega, cov, self.omega)

    def target_variance(self, ts) -> torch.Tensor:
        r"""Variance of the approximated fBM: :math:`\kappa\, t^{2H}`."""
        ts = torch.as_tensor(ts, dtype=torch.float64)
        return fbm_scale(self.hurst, self.kind, self.normalisation) * ts ** (2 * self.hurst)

    def approximation_error(self, relative: bool = False) -> torch.Tensor:
        r"""The L2 error :math:`\int_0^T E[(B_H - \hat B_H)^2] dt = \int_0^T E B_H^2 - \omega^\top b`.

        With ``relative=True`` it is divided by :math:`\int_0^T E B_H^2 dt`
        :math:`= \kappa T^{2H+1}/(2H+1)`.
        """
        A, b = self.system()
        T, h = self.horizon, self.hurst
        total = fbm_scale(h, self.kind, self.normalisation) * T ** (2 * h + 1) / (2 * h + 1)
        err = total - 2 * self.omega @ b + self.omega @ A @ self.omega
        return err / total if relative else err

    def sample(self, ts, num_paths: int, seed=None, return_state: bool = False):
        r"""Sample :math:`\hat B_H` on the grid ``ts`` (starting at 0) by exact OU transitions.

        The step noise :math:`(\Delta W, \xi_1..\xi_K)` is jointly Gaussian with covariance
        :func:`ou_increment_covariance` of the speeds :math:`(0, \gamma_1..\gamma_K)`.
        Returns ``[num_paths, n]`` (and the OU states ``[num_paths, n, K]`` if asked).
        """
        ts = torch.as_tensor(ts, dtype=torch.float64)
        gen = make_generator(seed)
        g = self.gammas
        K = g.numel()
        if self.kind == "I":
            y = torch.randn(num_paths, K, generator=gen, dtype=torch.float64)
            y = y @ psd_sqrt(1.0 / _pair_sum(g)).T
        else:
            y = torch.zeros(num_paths, K, dtype=torch.float64)
        y0, states = y.clone(), [y]
        dts = torch.diff(ts)
        roots = psd_sqrt(ou_increment_covariance(g, dts[:, None, None]))  # one batched eigh
        for root, decay in zip(roots, torch.exp(-g * dts[:, None])):
            noise = torch.randn(num_paths, K, generator=gen, dtype=torch.float64) @ root.T
            y = decay * y + noise
            states.append(y)
        ys = torch.stack(states, 1)
        paths = (ys - y0[:, None, :]) @ self.omega if self.kind == "I" else ys @ self.omega
        return (paths, ys) if return_state else paths

    def __repr__(self) -> str:
        return (
            f"MarkovFBM(hurst={float(self.hurst.detach()):.4g}, num_processes={self.num_processes}, "
            f"horizon={self.horizon:g}, kind={self.kind!r}, normalisation={self.normalisation!r})"
        )
