r"""Particle marginal Metropolis–Hastings (Andrieu, Doucet & Holenstein, 2010).

PMMH is random-walk MH on parameters :math:`\theta` over the *pseudo-marginal* target: the
intractable likelihood is replaced by a particle filter's unbiased estimate,

.. math:: \alpha = \min\Big(1, \frac{p(\theta')\,\hat p_N(y\mid\theta')}
                                   {p(\theta)\,\hat p_N(y\mid\theta)}\Big),

with the accepted estimate (and its filter) carried in the chain state. Because
:math:`E[\hat p_N] = p(y\mid\theta)` the chain leaves the *exact* posterior
:math:`p(\theta\mid y)` invariant for any :math:`N \ge 1`. :class:`PseudoMarginalMH` is that
kernel with the :mod:`ppltk.mcmc` protocol (``default_params``/``init``/``step``, explicit
:class:`~ppltk.mcmc.Params` and generator); chains are batched, one filter call advances
every chain's proposal. A chain whose filter finds zero likelihood simply rejects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.errors import ArgumentError, ShapeError
from ppltk.mcmc import MCMCState, Params, RandomWalkMH
from ppltk.mcmc._base import where
from ppltk.results import Result
from ppltk.smc.filter import particle_filter
from ppltk.smc.population import Population
from ppltk.smc.programs import ProgramFK, ProgramInfo, SiteTransforms

__all__ = ["PseudoMarginalMH", "PseudoMarginalState", "pmmh", "ssm_estimator"]


@dataclass
class PseudoMarginalState:
    """Chain state: position ``[C, D]``, log target estimate ``[C]`` and the accepted
    estimator's output ``aux`` (a tensor or dict of tensors with leading ``[C]``, or ``None``)."""

    position: torch.Tensor
    lp: torch.Tensor
    aux: Any = None


def _select(accept: torch.Tensor, new: Any, old: Any) -> Any:
    """Row-wise ``accept ? new : old`` over tensors, dicts and populations (``None``: old)."""
    if new is None:
        return old
    if isinstance(new, Population):
        return Population(
            *(
                _select(accept, a, b)
                for a, b in zip(
                    (new.particles, new.log_weights, new.log_evidence),
                    (old.particles, old.log_weights, old.log_evidence),
                )
            )
        )
    if isinstance(new, dict):
        return {k: _select(accept, new[k], old[k]) for k in new}
    if isinstance(new, torch.Tensor):
        return where(accept, new, old)
    return new


class PseudoMarginalMH:
    r"""Random-walk MH on a log-target *estimate* ``estimate(z [C, D]) -> (lp [C], aux)``.

    One transition is :class:`~ppltk.mcmc.RandomWalkMH`'s (proposal
    :math:`z' = z + \epsilon L\xi` with :math:`LL^\top = M^{-1}` from ``params``; NaN or
    :math:`-\infty` estimates rejected) with the estimate in place of the log-density. The
    estimate at the current point is carried, never recomputed (that is what makes the chain
    exact), and so is the accepted estimator output ``aux``.
    """

    name = "pmmh"
    uses_gradient = False

    def __init__(self) -> None:
        self._rw = RandomWalkMH()

    def default_params(self, position: torch.Tensor, dense: bool = False) -> Params:
        return self._rw.default_params(position, dense)

    def init(self, position: torch.Tensor, estimate: Callable) -> PseudoMarginalState:
        lp, aux = estimate(position)
        return PseudoMarginalState(position, lp, aux)

    def step(
        self,
        state: PseudoMarginalState,
        estimate: Callable,
        params: Params,
        generator: torch.Generator,
    ) -> tuple[PseudoMarginalState, dict[str, torch.Tensor]]:
        proposed = {}

        def logdensity_and_grad(z):
            lp, proposed["aux"] = estimate(z)
            proposed["z"] = z
            return lp.to(state.lp.dtype), torch.zeros_like(z)

        current = MCMCState(state.position, state.lp, torch.zeros_like(state.position))
        out, info = self._rw.step(current, logdensity_and_grad, params, generator)
        accept = (out.position == proposed["z"]).all(-1)
        aux = _select(accept, proposed["aux"], state.aux)
        return PseudoMarginalState(out.position, out.lp, aux), {**info, "accepted": accept}


def ssm_estimator(
    make_ssm, log_prior, ys, num_particles, generator, keep_filter: bool = False, **pf
) -> Callable:
    r"""``theta [C, D] -> (log p(theta) + log p_N(y | theta) [C], aux)``; rows outside the
    prior's support get :math:`-\infty` without a filter run on them. ``aux`` is the filters'
    final :class:`~ppltk.smc.Population` with ``keep_filter=True`` (SMC²), else ``None``."""

    def estimate(theta: torch.Tensor):
        lp = log_prior(theta)
        valid = torch.isfinite(lp)
        if not bool(valid.any()):
            return torch.full_like(lp, -math.inf), None
        safe = torch.where(valid[:, None], theta, theta[valid][:1].expand_as(theta))
        out = particle_filter(
            make_ssm(safe), ys, num_particles, batch_shape=theta.shape[:1], seed=generator, **pf
        )
        target = torch.where(valid, lp + out.log_evidence.to(lp.dtype), -math.inf)
        return target, (out.population if keep_filter else None)

    return estimate


class ProgramEstimator:
    r"""The pseudo-marginal target of a Pyro program in the parameters' unconstrained space.

    ``estimate(u [C, D])`` replays :math:`\theta = T(u)` (per site, Pyro's ``biject_to`` of the
    site's support) at the ``parameters`` sites of one program run for :math:`C \times N`
    particles, filters the rest (bootstrap, O(NT)) and returns
    :math:`\log p(\theta) + \log|\det J_T(u)| + \log\hat p_N(y\mid\theta)` and the chain's
    latent draws (one particle per chain, drawn by weight).
    """

    def __init__(self, model, args, kwargs, parameters, num_particles, generator, **pf) -> None:
        self.model, self.args, self.kwargs = model, args, kwargs
        self.info = ProgramInfo(model, args, kwargs)
        missing = [p for p in parameters if p not in self.info.latent_shapes]
        if missing:
            raise ArgumentError(
                f"Expected `parameters` to name latent sites of the model "
                f"{sorted(self.info.latent_shapes)}, but found {missing}"
            )
        self.parameters, self.num_particles, self.generator, self.pf = (
            tuple(parameters),
            num_particles,
            generator,
            pf,
        )
        self.space = SiteTransforms(self.parameters, self.info.supports, self.info.latent_shapes)

    @property
    def dim(self) -> int:
        return self.space.dim

    def constrain(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``{site: [C, *shape]}`` and the log-Jacobian ``[C]`` for ``u [C, D]``."""
        return self.space.constrain(u)

    def unconstrain(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.space.unconstrain(values)

    def __call__(self, u: torch.Tensor):
        values, log_jac = self.constrain(u)
        fk = ProgramFK(self.model, self.args, self.kwargs, fixed=values, info=self.info)
        try:
            out = particle_filter(
                fk,
                None,
                self.num_particles,
                batch_shape=u.shape[:1],
                seed=self.generator,
                **self.pf,
            )
            fk.handle.finish()
            log_prior = fk.fixed_log_prob.to(u.dtype)
            pick = torch.multinomial(
                out.population.weights.double().nan_to_num(1.0), 1, generator=self.generator
            )[:, 0]
            rows = torch.arange(len(u), device=u.device)
            draws = {k: v[rows, pick] for k, v in fk.handle.values().items()}
        finally:
            fk.handle.program.close()
        ll = out.log_evidence.to(u.dtype)
        return log_prior + log_jac + ll, draws


def pmmh(
    model: Callable,
    *args,
    parameters=None,
    init: torch.Tensor | dict | None = None,
    log_prior: Callable | None = None,
    num_samples: int = 1000,
    num_chains: int = 4,
    num_particles: int = 100,
    proposal_scale: float | torch.Tensor = 0.1,
    seed: int | torch.Generator = 0,
    resampling="systematic",
    ess_threshold: float = 0.5,
    proposal=None,
    progress: bool = True,
    **kwargs,
) -> Result:
    r"""PMMH: :class:`PseudoMarginalMH` chains over a particle filter's evidence.

    Two forms:

    * **Pyro program** ``pmmh(model, *args, parameters=["phi", ...], **kwargs)``: the named
      latent sites are the parameters, moved in unconstrained space; the same program (run once
      per filter, O(NT), see :class:`~ppltk.smc.ProgramFK`) filters the other latent sites.
      ``init`` is an optional ``{site: [C, *shape]}`` of starting values (default: prior
      draws). Draws hold the parameter sites ``[C, S, *shape]`` and one filtered trajectory of
      every other latent site per draw.
    * **State-space model** ``pmmh(make_ssm, log_prior, ys, init)``:
      ``make_ssm(theta [C, D])`` returns a model batched over the ``C`` rows, ``log_prior``
      maps ``[C, D] -> [C]`` (``-inf`` outside the support: rejected without a filter run),
      ``init`` ``[C, D]``; ``proposal`` is the inner filter's proposal. Draws hold
      ``"theta" [C, S, D]``.

    ``proposal_scale`` is a scalar, ``[D]`` standard deviations or a ``[D, D]`` Cholesky
    factor of the random-walk proposal; ``resampling``/``ess_threshold`` configure the inner
    filter. Stats: ``accept_prob`` and ``lp_target`` (the accepted log-target estimate).
    """
    _check_pmmh(num_samples, num_particles)
    pf = dict(resampling=resampling, ess_threshold=ess_threshold)
    if parameters is not None:
        generator = make_generator(seed)
        estimate = ProgramEstimator(model, args, kwargs, parameters, num_particles, generator, **pf)
        u0 = _program_init(estimate, init, num_chains, generator)
    else:
        if len(args) == 3 and log_prior is None and init is None:
            log_prior, ys, init = args
        elif len(args) == 1:
            ys = args[0]
        if log_prior is None or not isinstance(init, torch.Tensor) or len(args) not in (1, 3):
            raise ArgumentError(
                "Expected `parameters=[...]` for a Pyro program, or (make_ssm, log_prior, ys, "
                "init [C, D]) for a state-space model factory, but found neither"
            )
        if init.ndim != 2:
            raise ShapeError(f"Expected `init` shaped [chains, dim], but found {list(init.shape)}")
        generator = make_generator(seed, init.device)
        estimate = ssm_estimator(
            model, log_prior, ys, num_particles, generator, proposal=proposal, **pf
        )
        u0 = init
    chain = _run_chain(estimate, u0, num_samples, proposal_scale, generator, progress)
    draws = chain.pop("draws")
    if parameters is not None:
        values, _ = estimate.constrain(draws.reshape(-1, draws.shape[-1]))
        extra = chain.pop("aux")
        draws = {k: v.reshape(draws.shape[:2] + v.shape[1:]) for k, v in values.items()}
        draws.update({k: v for k, v in extra.items() if k not in draws})
    else:
        chain.pop("aux")
        draws = {"theta": draws}
    return Result(draws=draws, stats=chain, method="pmmh", attrs={"num_particles": num_particles})


def _check_pmmh(num_samples, num_particles) -> None:
    for name, value in (("num_samples", num_samples), ("num_particles", num_particles)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"Expected `{name}` a positive int, but found {value!r}")


def _program_init(estimate: ProgramEstimator, init, num_chains, generator) -> torch.Tensor:
    if init is not None:
        return estimate.unconstrain(init)
    from pyro import poutine

    from ppltk._rng import pyro_seed

    rows = []
    seed = int(torch.randint(2**31, (1,), generator=generator))
    with pyro_seed(seed), poutine.block():
        for _ in range(num_chains):
            tr = poutine.trace(estimate.model).get_trace(*estimate.args, **estimate.kwargs)
            rows.append({p: tr.nodes[p]["value"][None] for p in estimate.parameters})
    return torch.cat([estimate.unconstrain(r) for r in rows], 0)


def _run_chain(estimate, u0, num_samples, proposal_scale, generator, progress) -> dict:
    kernel = PseudoMarginalMH()
    params = kernel.default_params(u0)
    scale = torch.as_tensor(proposal_scale, dtype=u0.dtype, device=u0.device)
    params.step_size = torch.ones_like(params.step_size)
    if scale.ndim == 2:
        params.inverse_mass = (scale @ scale.mT).expand(u0.shape[0], *scale.shape).clone()
    else:
        params.inverse_mass = (scale**2 * torch.ones_like(u0)).clone()
    state = kernel.init(u0, estimate)
    rec = {"draws": [], "accept_prob": [], "lp_target": [], "aux": []}
    with progress_bar(num_samples, "PMMH", progress) as bar:
        for _ in range(num_samples):
            state, info = kernel.step(state, estimate, params, generator)
            for key, value in (
                ("draws", state.position),
                ("accept_prob", info["accept_prob"]),
                ("lp_target", state.lp),
                ("aux", state.aux),
            ):
                rec[key].append(value)
            bar.update()
    out = {k: torch.stack(v, 1) for k, v in rec.items() if k != "aux"}
    aux = rec["aux"]
    out["aux"] = (
        {k: torch.stack([a[k] for a in aux], 1) for k in aux[0]}
        if isinstance(aux[0], dict)
        else None
    )
    return out
