r"""Particle marginal Metropolis–Hastings (Andrieu, Doucet & Holenstein, 2010).

Random-walk MH on parameters :math:`\theta` with the intractable likelihood replaced by the
particle filter's estimate :math:`\hat p_N(y \mid \theta)`:

.. math:: \alpha = \min\Big(1, \frac{p(\theta')\,\hat p_N(y\mid\theta')}
                                   {p(\theta)\,\hat p_N(y\mid\theta)}\Big).

Because :math:`E[\hat p_N] = p(y\mid\theta)` the chain leaves the *exact* posterior
:math:`p(\theta\mid y)` invariant (pseudo-marginal argument) for any :math:`N \ge 1`. Chains are
batched: one filter call advances all chains' proposals.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.errors import ShapeError
from ppltk.results import Result
from ppltk.smc.filter import particle_filter

__all__ = ["pmmh", "batched_log_likelihood"]


def batched_log_likelihood(make_ssm, ys, theta, num_particles, generator, **pf) -> torch.Tensor:
    r""":math:`\log\hat p_N(y\mid\theta)` for each row of ``theta [B, D]`` (one batched filter).

    Rows whose model is invalid (e.g. outside the support) must be masked by the caller.
    """
    out = particle_filter(
        make_ssm(theta), ys, num_particles, batch_shape=theta.shape[:1], seed=generator, **pf
    )
    return out.log_evidence


def _pmmh_step(make_ssm, log_prior, ys, theta, lp, ll, scale, num_particles, generator, pf):
    r"""One batched pseudo-marginal random-walk MH step for every row of ``theta [C, D]``.

    ``lp``/``ll`` are the current rows' log-prior and :math:`\log\hat p_N(y\mid\theta)`;
    ``scale`` is a scalar, ``[D]`` standard deviations or a ``[D, D]`` Cholesky factor.
    Proposals outside the prior's support are rejected without a filter run on them. Returns
    ``(theta, lp, ll, accept [C] bool, log_alpha [C], filter output of the proposals)``.
    """
    eps = torch.randn(theta.shape, dtype=theta.dtype, device=theta.device, generator=generator)
    prop = theta + (eps @ scale.mT if scale.ndim == 2 else eps * scale)
    lp_prop = log_prior(prop)
    valid = torch.isfinite(lp_prop)
    safe = torch.where(valid[:, None], prop, theta)
    out = particle_filter(
        make_ssm(safe), ys, num_particles, batch_shape=theta.shape[:1], seed=generator, **pf
    )
    ll_prop = out.log_evidence.to(ll.dtype)
    log_alpha = torch.where(valid, lp_prop + ll_prop - lp - ll, -torch.inf)
    u = torch.rand(log_alpha.shape, dtype=theta.dtype, device=theta.device, generator=generator)
    accept = torch.log(u) < log_alpha
    return (
        torch.where(accept[:, None], prop, theta),
        torch.where(accept, lp_prop, lp),
        torch.where(accept, ll_prop, ll),
        accept,
        log_alpha,
        out,
    )


def pmmh(
    make_ssm: Callable[[torch.Tensor], object],
    log_prior: Callable[[torch.Tensor], torch.Tensor],
    ys: torch.Tensor,
    init: torch.Tensor,
    *,
    num_samples: int = 1000,
    num_particles: int = 100,
    proposal_scale: float | torch.Tensor = 0.1,
    seed: int | torch.Generator = 0,
    resampling="systematic",
    ess_threshold: float = 0.5,
    progress: bool = True,
) -> Result:
    r"""PMMH over parameters ``theta`` (any real vector; transform inside ``make_ssm``).

    Parameters
    ----------
    make_ssm
        ``theta [C, D] -> `` a state-space model batched over the ``C`` rows.
    log_prior
        ``theta [C, D] -> [C]`` (``-inf`` outside the support: such proposals are rejected
        without running a filter on them).
    init
        ``[C, D]`` starting points of ``C`` chains.
    proposal_scale
        Scalar, ``[D]`` standard deviations or a ``[D, D]`` Cholesky factor of the Gaussian
        random-walk proposal.

    Returns
    -------
    Result
        ``draws["theta"] [C, num_samples, D]``, stats ``accept_prob`` and ``log_likelihood``.
    """
    if init.ndim != 2:
        raise ShapeError(f"Expected `init` shaped [chains, dim], but found {list(init.shape)}")
    generator = make_generator(seed, init.device)
    pf = dict(resampling=resampling, ess_threshold=ess_threshold)
    scale = torch.as_tensor(proposal_scale, dtype=init.dtype, device=init.device)
    theta, lp = init, log_prior(init)
    ll = batched_log_likelihood(make_ssm, ys, theta, num_particles, generator, **pf).to(init.dtype)
    draws, accepts, lls = [], [], []
    with progress_bar(num_samples, "PMMH", progress) as bar:
        for _ in range(num_samples):
            theta, lp, ll, _, log_alpha, _ = _pmmh_step(
                make_ssm, log_prior, ys, theta, lp, ll, scale, num_particles, generator, pf
            )
            draws.append(theta)
            accepts.append(log_alpha.clamp(max=0).exp())
            lls.append(ll)
            bar.update()
    stack = lambda xs: torch.stack(xs, 1)  # noqa: E731
    return Result(
        draws={"theta": stack(draws)},
        stats={
            "accept_prob": stack(accepts),
            "lp_likelihood": stack(lls),
        },  # not ArviZ's log_likelihood
        method="pmmh",
        attrs={"num_particles": num_particles},
    )
