r"""Variational inference for fractional SDEs and learning the Hurst index.

Posterior: the prior augmented system (:mod:`ppltk.sde.solvers`) with a control :math:`u` in the
drift of the driving Brownian motion, so by Girsanov

.. math::
    \mathrm{ELBO} = E_q\Big[\sum_i \log p(y_i \mid X(t_i))\Big]
    - \mathrm{KL}\big(q(X_0)\,\|\,p(X_0)\big) - E_q \int_0^T \tfrac12 \|u(t, X, Y)\|^2 dt .

Each observation interval is covered by ``substeps`` exact OU steps; the last one is the exact
Doob h-transform towards the next observation (:mod:`ppltk.sde.guided`), which pins the path
to the data with a closed-form step KL, so the bound is tight from the first iteration. The
control is ``guide + net`` on the free steps and ``net`` on the bridge step, where the guide
is the h-transform control for the driftless linear system,

.. math::
    u_{\text{guide}} = \frac{k(\tau)\,(y_{\text{next}} - m)}{v(\tau) + s^2}, \quad
    k(\tau) = \sigma\sum_k \omega_k e^{-\gamma_k \tau}, \quad
    m = X + b\tau + \sigma\sum_k \omega_k (e^{-\gamma_k\tau} - 1) Y_k, \quad
    v(\tau) = \sigma^2 \omega^\top C(\tau)\omega,

(:math:`\tau` the time to the next observation, :math:`C` the OU increment covariance, ``s``
the observation noise), and the net is an MLP of :math:`(t, X, Y, y_{\text{next}} - m)` whose
last layer is zero-initialised (it learns what one-step-ahead guidance misses, e.g. the pull of
later observations through the memory in Y). The ELBO is maximised with Adam jointly in the
control, the initial-state posterior, the drift, the diffusion scale and H (through a sigmoid).
"""

from __future__ import annotations

import torch
from torch import nn

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.errors import ArgumentError, NotFittedError, ShapeError
from ppltk.sde.guided import guided_rollout
from ppltk.sde.markov_fbm import ou_increment_covariance
from ppltk.sde.solvers import FractionalSDE

__all__ = ["ControlNet", "VariationalFractionalSDE", "fit_hurst", "check_series"]


class ControlNet(nn.Module):
    """MLP control ``u(features) -> [batch, d]`` with a zero-initialised output layer."""

    def __init__(self, in_features: int, out_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, out_features)
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class LinearDrift(nn.Module):
    r"""Ornstein--Uhlenbeck drift :math:`b(x) = -\theta (x - \mu)`, :math:`\theta \ge 0`."""

    def __init__(self, dim: int, mean: torch.Tensor) -> None:
        super().__init__()
        self.raw_theta = nn.Parameter(torch.full((dim,), -4.0, dtype=mean.dtype))
        self.mu = nn.Parameter(mean.clone())

    def forward(self, t: float, x: torch.Tensor) -> torch.Tensor:
        return -nn.functional.softplus(self.raw_theta) * (x - self.mu)


class _Diffusion(nn.Module):
    def __init__(self, scale: torch.Tensor, learn: bool) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(scale.log(), requires_grad=learn)

    def forward(self, t: float, x: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp().expand_as(x)


def check_series(ts, ys) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``ts`` ``[T]`` and ``ys`` ``[num_paths, T, dim]`` or ``[T, dim]`` (float64)."""
    ts = torch.as_tensor(ts, dtype=torch.float64)
    ys = torch.as_tensor(ys, dtype=torch.float64)
    if ys.dim() == 2:
        ys = ys[None]
    if ts.dim() != 1 or ts.numel() < 3:
        raise ShapeError(f"Expected `ts` of shape [T] with T >= 3, but found {tuple(ts.shape)}")
    if ys.dim() != 3 or ys.shape[1] != ts.numel():
        raise ShapeError(
            f"Expected `ys` of shape [num_paths, {ts.numel()}, dim] or [{ts.numel()}, dim], "
            f"but found {tuple(ys.shape)}"
        )
    if bool((torch.diff(ts) <= 0).any()):
        raise ArgumentError("Expected strictly increasing `ts`, but found a non-increasing step")
    if not bool(torch.isfinite(ys).all()):
        raise ArgumentError("Expected finite `ys`, but found NaN or inf")
    return ts, ys


class VariationalFractionalSDE(nn.Module):
    r"""Fractional SDE with an observation model :math:`y_i \sim N(X(t_i), s^2)` fitted by VI.

    Parameters
    ----------
    num_processes
        ``K`` OU processes of the MA-fBM.
    kind
        ``"II"`` or ``"I"`` (see :class:`~ppltk.sde.MarkovFBM`).
    hurst_init
        Initial H; H is learned unless ``learn_hurst=False``.
    drift
        ``"ou"`` (learned :math:`-\theta(x-\mu)`), ``"zero"``, or an ``nn.Module`` ``(t, x)``.
    obs_noise
        Observation standard deviation ``s`` (default: 0.1 x the std of the increments).
    substeps
        Exact OU steps per observation interval (the last one is the h-transform bridge step).
    num_particles
        Posterior paths per observed path in each ELBO estimate.
    gamma_min, gamma_max
        Speed grid (default: ``0.2 / T`` and ``2 / Δt`` from the data).
    hidden, lr, brownian
        Width of the control MLP, Adam step size, Brownian special case.
    """

    def __init__(
        self,
        num_processes: int = 5,
        kind: str = "II",
        hurst_init: float = 0.5,
        learn_hurst: bool = True,
        drift="zero",
        obs_noise: float | None = None,
        substeps: int = 1,
        num_particles: int = 4,
        gamma_min: float | None = None,
        gamma_max: float | None = None,
        hidden: int = 32,
        lr: float = 0.05,
        brownian: bool = False,
    ) -> None:
        super().__init__()
        self.options = dict(
            num_processes=num_processes, kind=kind, hurst_init=hurst_init, drift=drift,
            obs_noise=obs_noise, substeps=substeps, gamma_min=gamma_min,
            gamma_max=gamma_max, hidden=hidden, learn_hurst=learn_hurst, brownian=brownian,
        )  # fmt: skip
        self.num_particles, self.lr = int(num_particles), float(lr)
        self.elbo_history: list[float] = []
        self.sde: FractionalSDE | None = None

    # ----------------------------------------------------------------- construction
    def _build(self, ts: torch.Tensor, ys: torch.Tensor, gen: torch.Generator) -> None:
        o = self.options
        horizon = float(ts[-1] - ts[0])
        dt_obs = float(torch.diff(ts).min())
        incs = torch.diff(ys, dim=1)
        inc_std = incs.reshape(-1, ys.shape[-1]).std(0).clamp_min(1e-8)
        drift = o["drift"]
        if drift == "ou":
            drift = LinearDrift(ys.shape[-1], ys.mean((0, 1)))
        elif drift == "zero":
            drift = 0.0
        elif not isinstance(drift, nn.Module):
            raise ArgumentError(f"Expected `drift` 'ou', 'zero' or an nn.Module, found {drift!r}")
        # sigma^2 dt^(2H) ~ Var(increment): initial scale from the data at H = hurst_init
        scale = inc_std / dt_obs ** o["hurst_init"]
        self.sde = FractionalSDE(
            drift, _Diffusion(scale, True), hurst=o["hurst_init"],
            num_processes=o["num_processes"], horizon=horizon, kind=o["kind"],
            gamma_min=o["gamma_min"] or 0.2 / horizon, gamma_max=o["gamma_max"] or 2.0 / dt_obs,
            learn_hurst=o["learn_hurst"], brownian=o["brownian"],
        )  # fmt: skip
        noise = o["obs_noise"] if o["obs_noise"] is not None else 0.1 * inc_std
        noise = torch.as_tensor(noise, dtype=torch.float64).expand_as(scale).clone()
        self.register_buffer("obs_noise", noise)
        P, d, K = ys.shape[0], ys.shape[-1], self.sde.gammas.numel()
        self.x0_loc = nn.Parameter(ys[:, 0].clone())
        self.x0_log_scale = nn.Parameter((0.5 * self.obs_noise).log().expand(P, d).clone())
        self.register_buffer("x0_prior_loc", ys[:, 0].mean(0))
        self.register_buffer("x0_prior_scale", ys[:, 0].std(0, unbiased=False) + 10 * inc_std)
        with torch.random.fork_rng(devices=[]):  # seed the hidden-layer init from `gen`
            torch.manual_seed(int(torch.randint(0, 2**31, (), generator=gen, device=gen.device)))
            self.net = ControlNet(1 + 2 * d + d * K, d, o["hidden"]).double()
        self.sde.to(ys.device)
        self.net.to(ys.device)
        self._data = (ts, ys)

    # ----------------------------------------------------------------- control
    def _guide_terms(self, tau: float, w: torch.Tensor, g: torch.Tensor):
        decay = torch.exp(-g * tau)
        v = w @ ou_increment_covariance(g, tau).to(w) @ w
        return w * decay, w * (decay - 1), v

    def _make_control(self, obs_ts, ys_rep, w, g):
        sde, s2, t_end = self.sde, self.obs_noise**2, float(obs_ts[-1])
        cache: dict = {}

        def control(t, x, y, tau, nxt):
            if tau not in cache:
                cache[tau] = self._guide_terms(tau, w, g)
            k_w, m_w, v = cache[tau]
            sig = sde.sigma(t, x)
            mean = x + sde.b(t, x) * tau + sig * (y * m_w).sum(-1)
            gap = ys_rep[:, nxt] - mean
            guide = sig * k_w.sum() * gap / (sig**2 * v + s2)
            tt = torch.full_like(x[:, :1], t / t_end)
            feats = torch.cat([tt, x, y.flatten(1), gap / torch.sqrt(s2 + sig**2 * v)], -1)
            return guide, self.net(feats)

        def full(t, x, y, tau, nxt):
            guide, net = control(t, x, y, tau, nxt)
            return guide + net

        def net_only(t, x, y, tau, nxt):
            return control(t, x, y, tau, nxt)[1]

        return full, net_only

    # ----------------------------------------------------------------- ELBO
    def _generator(self, seed) -> torch.Generator:
        return make_generator(seed, self._data[1].device)

    def _rollout(self, num_particles: int, gen, keep_path: bool = False, substeps=None):
        ts, ys = self._data
        P, T, d = ys.shape
        ys_rep = ys.repeat(num_particles, 1, 1)
        scale0 = self.x0_log_scale.exp()
        eps = torch.randn((num_particles, P, d), generator=gen, dtype=ys.dtype, device=ys.device)
        x0 = (self.x0_loc + scale0 * eps).reshape(num_particles * P, d)
        full, net_only = self._make_control(ts, ys_rep, self.sde.omega(), self.sde.gammas)
        xs, loglik, kl = guided_rollout(
            self.sde, x0, ts, ys_rep, self.obs_noise, substeps or self.options["substeps"], full, gen,
            keep_path, bridge_control=net_only,
        )  # fmt: skip
        return xs, loglik, kl

    def elbo(self, num_particles: int | None = None, seed=None) -> torch.Tensor:
        r"""Monte Carlo ELBO per observation (averaged over paths and particles).

        :math:`E_q \log p(y_0 \mid X_0)` and the initial KL are in closed form; the rest comes
        from :func:`~ppltk.sde.guided.guided_rollout`.
        """
        if self.sde is None:
            raise NotFittedError("Expected a fitted model (call `fit` first), but found none")
        ts, ys = self._data
        P, T, d = ys.shape
        _, loglik, kl = self._rollout(num_particles or self.num_particles, self._generator(seed))
        s2, scale0 = self.obs_noise**2, self.x0_log_scale.exp()
        ll0 = -0.5 * (
            torch.log(2 * torch.pi * s2) + ((ys[:, 0] - self.x0_loc) ** 2 + scale0**2) / s2
        )
        q0 = torch.distributions.Normal(self.x0_loc, scale0)
        p0 = torch.distributions.Normal(self.x0_prior_loc, self.x0_prior_scale)
        kl0 = torch.distributions.kl_divergence(q0, p0).sum()
        total = (loglik - kl).mean() * P + ll0.sum() - kl0
        return total / (P * T)

    # ----------------------------------------------------------------- fitting
    def fit(self, ts, ys, num_steps: int = 300, seed=0, progress: bool = True):
        """Maximise the ELBO with Adam; returns ``self`` (``.hurst``, ``.elbo_history``)."""
        ts, ys = check_series(ts, ys)
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ArgumentError(f"Expected `num_steps` >= 1, but found {num_steps!r}")
        gen = make_generator(seed, ys.device)
        self._build(ts, ys, gen)
        opt = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, num_steps, eta_min=self.lr / 10)
        self.elbo_history = []
        with progress_bar(num_steps, "fractional SDE VI", progress) as bar:
            for _ in range(num_steps):
                opt.zero_grad()
                loss = -self.elbo(seed=gen)
                loss.backward()
                opt.step()
                sched.step()
                self.elbo_history.append(-float(loss.detach()))
                bar.set_postfix(elbo=f"{self.elbo_history[-1]:.3f}", H=f"{self.hurst:.3f}")
                bar.update()
        return self

    @property
    def hurst(self) -> float:
        """The learned Hurst index."""
        if self.sde is None:
            raise NotFittedError("Expected a fitted model (call `fit` first), but found none")
        return float(self.sde.hurst.detach())

    @torch.no_grad()
    def sample_posterior_paths(self, num_samples: int = 16, substeps: int = 4, seed=0):
        """Posterior paths ``[num_samples, num_paths, len(grid), dim]`` and the grid.

        The grid refines the observation times ``substeps`` times; between observations the
        paths follow the guided control plus the learned net, the last step of each interval
        is the h-transform bridge (see :func:`~ppltk.sde.guided.guided_rollout`).
        """
        if self.sde is None:
            raise NotFittedError("Expected a fitted model (call `fit` first), but found none")
        ts, ys = self._data
        P, T, d = ys.shape
        m = int(substeps)
        if m < 1:
            raise ArgumentError(f"Expected `substeps` >= 1, but found {substeps!r}")
        xs, _, _ = self._rollout(num_samples, self._generator(seed), keep_path=True, substeps=m)
        grid = torch.cat(
            [torch.linspace(float(a), float(b), m + 1, dtype=ys.dtype, device=ys.device)[:-1]
             for a, b in zip(ts[:-1], ts[1:])] + [ts[-1:]]
        )  # fmt: skip
        return xs.transpose(0, 1).reshape(num_samples, P, len(grid), d), grid


def fit_hurst(ts, ys, seed=0, num_steps: int = 300, progress: bool = False, **options) -> float:
    """Learn H from observed paths with :class:`VariationalFractionalSDE`; returns H.

    ``ts`` ``[T]``, ``ys`` ``[num_paths, T, dim]`` or ``[T, dim]``; ``options`` go to the model.
    """
    model = VariationalFractionalSDE(**options)
    model.fit(ts, ys, num_steps=num_steps, seed=seed, progress=progress)
    return model.hurst
