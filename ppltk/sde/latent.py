r"""Latent fractional SDE for multi-dimensional time series (encoder, SDE, decoder).

.. math::
    x_0 \sim q(x_0 \mid y) = N(\mu_\phi(c_0), \operatorname{diag} s_\phi(c_0)^2), \quad
    dX = h_\theta(X)dt + \sigma \circ d\hat B_H \ (\text{prior}), \quad
    y_i \sim N(\mathrm{dec}(X(t_i)), \varepsilon^2 I),

with the context :math:`c_t` of a GRU run backwards over the observations, and the posterior
control :math:`u(t, X) = u_\phi(X, c_t)` in the drift of the driving Brownian motion (the path KL
is :math:`E\int\frac12\|u\|^2dt`; the net's last layer is zero-initialised). With
``brownian=True`` it is the latent SDE of Li et al. (2020).
"""

from __future__ import annotations

import torch
from torch import nn

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.errors import ArgumentError
from ppltk.sde.solvers import FractionalSDE, sdeint_fractional
from ppltk.sde.variational import ControlNet, check_series

__all__ = ["LatentFractionalSDE"]


def _mlp(n_in: int, n_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Softplus(), nn.Linear(hidden, n_out))


class LatentFractionalSDE(nn.Module):
    """Encoder -> initial state, fractional SDE, decoder -> observations; fitted by the ELBO.

    Parameters
    ----------
    obs_dim, latent_dim, context_dim, hidden
        Sizes of the observations, the latent state, the GRU context and the MLPs.
    num_processes, hurst, kind, brownian, gamma_min, gamma_max, horizon
        The driving noise (see :class:`~ppltk.sde.FractionalSDE`); H is learned.
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int = 4,
        context_dim: int = 16,
        hidden: int = 32,
        num_processes: int = 5,
        hurst: float = 0.5,
        kind: str = "II",
        brownian: bool = False,
        gamma_min: float | None = None,
        gamma_max: float | None = None,
        horizon: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = nn.GRU(obs_dim, context_dim, batch_first=True)
        self.qz0 = nn.Linear(context_dim, 2 * latent_dim)
        self.prior_drift = _mlp(latent_dim, latent_dim, hidden)
        self.log_sigma = nn.Parameter(torch.full((latent_dim,), -1.0))
        self.control = ControlNet(latent_dim + context_dim, latent_dim, hidden)
        self.decoder = nn.Linear(latent_dim, obs_dim)
        self.log_obs_noise = nn.Parameter(torch.tensor(-1.0))
        self.sde = FractionalSDE(
            lambda t, x: self.prior_drift(x), lambda t, x: self._sigma,
            hurst=hurst, num_processes=num_processes, gamma_min=gamma_min, gamma_max=gamma_max,
            horizon=horizon, kind=kind, learn_hurst=not brownian, brownian=brownian,
        )  # fmt: skip
        self.elbo_history: list[float] = []
        self._sigma = self.log_sigma.detach().exp()

    def encode(self, ys: torch.Tensor) -> torch.Tensor:
        """Context ``[batch, T, context_dim]``: a GRU over the reversed series, re-reversed."""
        ctx, _ = self.encoder(ys.flip(1))
        return ctx.flip(1)

    def _hoisted_control(self, ctx: torch.Tensor, latent_dim: int):
        r"""``u(x, c_i) = \mathrm{net}([x, c_i])`` with :math:`W_c c_i + b` computed once per series.

        The first layer is split, :math:`W[x; c] + b = W_x x + (W_c c + b)`, so the context part
        leaves the time loop (same values as calling the net on the concatenation).
        """
        first, rest = self.control.net[0], self.control.net[1:]
        w_x_t = first.weight[:, :latent_dim].T
        cols = nn.functional.linear(ctx, first.weight[:, latent_dim:], first.bias).unbind(1)

        def control(t, x, y, tau, nxt):
            return rest(torch.addmm(cols[nxt - 1], x, w_x_t))

        return control

    def elbo(self, ts, ys, dt: float | None = None, method: str = "euler", seed=None):
        """ELBO per series and time point, ``ys`` ``[batch, T, obs_dim]`` (model dtype)."""
        gen = make_generator(seed, ys.device)
        self._sigma = self.log_sigma.exp()  # state-independent: computed once per solve
        ctx = self.encode(ys)
        loc, log_scale = self.qz0(ctx[:, 0]).chunk(2, -1)
        eps = torch.randn(loc.shape, generator=gen, dtype=loc.dtype, device=loc.device)
        x0 = loc + log_scale.exp() * eps

        control = self._hoisted_control(ctx, x0.shape[-1])

        out = sdeint_fractional(self.sde, x0, ts, dt=dt, method=method, control=control, seed=gen)
        pred = self.decoder(out.xs.transpose(0, 1))
        noise = self.log_obs_noise.exp()
        loglik = torch.distributions.Normal(pred, noise).log_prob(ys).sum((1, 2))
        q0 = torch.distributions.Normal(loc, log_scale.exp())
        p0 = torch.distributions.Normal(torch.zeros_like(loc), torch.ones_like(loc))
        kl0 = torch.distributions.kl_divergence(q0, p0).sum(-1)
        return (loglik - kl0 - out.path_kl).mean() / ys.shape[1]

    def fit(self, ts, ys, num_steps: int = 200, lr: float = 1e-2, dt=None, seed=0,
            method: str = "euler", progress: bool = True):  # fmt: skip
        """Maximise the ELBO with Adam; returns ``self``."""
        ts, ys = check_series(ts, ys)
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ArgumentError(f"Expected `num_steps` >= 1, but found {num_steps!r}")
        param = next(self.parameters())  # data follow the model's dtype and device
        ts, ys = ts.to(param), ys.to(param)
        gen = make_generator(seed, ys.device)
        opt = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=lr)
        with progress_bar(num_steps, "latent fractional SDE", progress) as bar:
            for _ in range(num_steps):
                opt.zero_grad()
                loss = -self.elbo(ts, ys, dt=dt, method=method, seed=gen)
                loss.backward()
                opt.step()
                self.elbo_history.append(-float(loss.detach()))
                bar.update()
        return self

    @property
    def hurst(self) -> float:
        """The learned Hurst index."""
        return float(self.sde.hurst.detach())
