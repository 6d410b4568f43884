r"""Posterior rollout of the augmented system between Gaussian observations.

Each observation interval :math:`[t_i, t_{i+1}]` is split into ``substeps`` equal steps. The first
``substeps - 1`` are exact OU steps under the control :math:`u` (path KL
:math:`\tfrac12\|u\|^2 h`, :func:`ppltk.sde.solvers._exact_step`). A piecewise-constant control
cannot pin the path to an observation (the noise of the last step remains), so the last step is
the exact Doob h-transform towards :math:`y_{i+1} \sim N(X(t_{i+1}), s^2)`: with the prior step
noise :math:`\xi \sim N(0, C(\tau))` (the OU increment covariance),
:math:`X(t_{i+1}) = m + \sigma\omega^\top\xi` and :math:`S = \sigma\omega^\top\xi \sim N(0, v)`,
:math:`v = \sigma^2\omega^\top C\omega`, the conditioned noise is drawn by Matheron's rule

.. math::
    \xi_q = \xi + \frac{C\omega\,\sigma}{v + s^2}\,(y - m - \sigma\omega^\top\xi - \varepsilon),
    \qquad \varepsilon \sim N(0, s^2),

and the KL of this step is the one of :math:`S`:
:math:`\mathrm{KL}(N(\mu_q, v_q) \| N(0, v))` with :math:`\mu_q = v(y-m)/(v+s^2)`,
:math:`v_q = v s^2/(v+s^2)` (the h-transformed law has density
:math:`p(y \mid X(t_{i+1}))/h` w.r.t. the prior, a function of :math:`S` alone). The expected
log-likelihood of :math:`y_{i+1}` is taken in closed form (Rao--Blackwellised):
:math:`\log N(y; m + \mu_q, s^2) - v_q/(2s^2)`.

The last step may also carry a control :math:`u` (constant over the step): the h-transform is
then taken of the controlled law :math:`p_u` (noise mean :math:`(u\tau, \varphi u)`,
:math:`\varphi_k = (1-e^{-\gamma_k\tau})/\gamma_k`, and :math:`m` replaced by
:math:`m_u = m + \sigma\omega^\top\varphi\, u`), and
:math:`\log\frac{dq}{dp} = \log\frac{dq}{dp_u} + \int u\,d\tilde W + \tfrac12 u^2\tau`
(Girsanov, :math:`\tilde W` the :math:`p_u`-Brownian motion) gives the step KL
:math:`\mathrm{KL}_S + \tfrac12 u^2\tau + u\,E_q[\Delta\tilde W]` with
:math:`E_q[\Delta\tilde W] = \sigma\omega^\top\varphi\,(y - m_u)/(v + s^2)`.
The result is a valid ELBO for any control.
"""

from __future__ import annotations

import math

import torch

from ppltk.gaussian import psd_sqrt
from ppltk.sde.markov_fbm import ou_increment_covariance
from ppltk.sde.solvers import FractionalSDE, _coefficients, _exact_step

__all__ = ["guided_rollout"]


def _bridge_terms(g, w, tau, like):
    cov = ou_increment_covariance(g, tau).to(like)
    decay = torch.exp(-g * tau)
    phi = torch.where(g > 0, -torch.expm1(-g * tau) / torch.where(g > 0, g, 1.0), tau)
    return psd_sqrt(cov).T, decay, w * (decay - 1), w @ cov @ w, cov @ w, phi, w @ phi


def _bridge_step(sde, g, w, t, tau, x, y, y_obs, s2, u, gen, cache):
    """Controlled exact h-transform step to ``y_obs``; returns (x, y, loglik, kl)."""
    key = ("bridge", round(tau, 14))
    if key not in cache:
        cache[key] = _bridge_terms(g, w, tau, x)
    root_t, decay, m_w, wcw, cw, phi, wphi = cache[key]
    sig = sde.sigma(t, x)
    # prior mean of X(t + tau) under the controlled law p_u, and the variance of S
    m_u = x + sde.b(t, x) * tau + sig * ((y * m_w).sum(-1) + wphi * u)
    v = sig**2 * wcw
    xi = torch.randn((*x.shape, g.numel()), generator=gen, dtype=x.dtype, device=x.device)
    xi = xi @ root_t
    eps = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device) * s2.sqrt()
    gap = y_obs - m_u
    xi_q = (
        phi * u[..., None]
        + xi
        + (sig / (v + s2) * (gap - sig * (xi * w).sum(-1) - eps))[..., None] * cw
    )
    y_new = decay * y + xi_q
    x_new = x + sde.b(t, x) * tau + sig * ((y * m_w).sum(-1) + (xi_q * w).sum(-1))
    mu_q, v_q = v * gap / (v + s2), v * s2 / (v + s2)
    loglik = -0.5 * (math.log(2 * math.pi) + s2.log() + ((gap - mu_q) ** 2 + v_q) / s2)
    kl_s = 0.5 * (v_q / v + mu_q**2 / v - 1 - torch.log(v_q / v))
    mean_dw = sig * wphi * gap / (v + s2)  # E_q of the p_u-Brownian increment
    kl = kl_s + 0.5 * u**2 * tau + u * mean_dw
    return x_new, y_new, loglik.sum(-1), kl.sum(-1)


def guided_rollout(
    sde: FractionalSDE,
    x0: torch.Tensor,
    obs_ts: torch.Tensor,
    ys: torch.Tensor,
    obs_noise: torch.Tensor,
    substeps: int,
    control,
    gen: torch.Generator,
    keep_path: bool = False,
    bridge_control=None,
):
    """Roll the posterior out over ``obs_ts``; ``x0`` ``[batch, d]``, ``ys`` ``[batch, T, d]``.

    Returns ``(xs, loglik, kl)``: states ``[T, batch, d]`` at ``obs_ts`` (or on the whole grid,
    ``[(T-1) * substeps + 1, batch, d]``, with ``keep_path``), the expected log-likelihood of
    ``ys[:, 1:]`` and the path KL, both ``[batch]``. ``control(t, x, y, tau, next) -> [batch, d]``
    drives the free steps, ``bridge_control`` (default: none) the last step of each interval.
    """
    co = _coefficients(sde, x0)
    g, w, s2 = co["g"], co["w"], obs_noise.to(x0) ** 2
    x, y = x0, sde.initial_y(x0.shape, x0, gen)
    loglik = kl = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
    xs, cache = [x], {}
    tl = obs_ts.tolist()
    for i in range(len(tl) - 1):
        h = (tl[i + 1] - tl[i]) / substeps
        for j in range(substeps - 1):
            t = tl[i] + j * h
            args = (control, tl[i + 1] - t, i + 1, None, gen, cache)
            x, y, terms = _exact_step(sde, co, t, h, x, y, *args)
            kl = kl + 0.5 * (terms[0][0] ** 2).sum(-1) * h
            if keep_path:
                xs.append(x)
        t = tl[i + 1] - h
        u = torch.zeros_like(x) if bridge_control is None else bridge_control(t, x, y, h, i + 1)
        x, y, dll, dkl = _bridge_step(sde, g, w, t, h, x, y, ys[:, i + 1], s2, u, gen, cache)
        loglik, kl = loglik + dll, kl + dkl
        xs.append(x)
    return torch.stack(xs), loglik, kl
