r"""Pyro programs as particle filters: the three ways resampling re-indexes their state.

* :class:`ProgramFK` — any Pyro program that observes sequentially, run **once** for all
  particles in a coroutine suspended at each observation
  (:class:`~ppltk.handlers.SuspendedProgram`); its live tensors re-index lazily after
  resampling (:class:`~ppltk.handlers.ParticleTensor`): **linear in T**, the default.
* :class:`PyroStateSpace` — a Pyro model with ``init(state, ...)`` / ``step(state, y)`` methods
  (the interface of :class:`pyro.infer.SMCFilter`) keeps its Markov state in a dict that the
  algorithm re-indexes by ancestors: **linear in T** (:math:`O(N)` per step).
* :class:`ReplayProgram` — any Pyro program that observes sequentially: step :math:`k` replays
  the resampled latent values drawn so far, samples the new ones from the prior and suspends
  after observation :math:`k`: **quadratic in T** (the prefix is re-run each step); the
  fallback for programs the lazy path refuses (Python state outside tensors, control flow on
  particle values).

Both run under ppltk's handlers: :func:`~ppltk.handlers.particle_plate` vectorises the program
over particles, :class:`~ppltk.handlers.LogWeightMessenger` collects the observation weights,
:class:`~ppltk.handlers.ReplayValuesMessenger` / :class:`~ppltk.handlers.SuspendMessenger`
implement replay and suspension. Pyro samples from torch's global generator: :func:`ppltk.smc.smc`
seeds it once from the algorithm's generator for the whole run (:func:`ppltk._rng.pyro_seed`)
and restores it after; reseeding every step would cost more than the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from ppltk._rng import pyro_seed
from ppltk.errors import ArgumentError, ModelStructureError
from ppltk.handlers import (
    PARTICLE_PLATE,
    LogWeightMessenger,
    ReplayValuesMessenger,
    Suspended,
    SuspendedProgram,
    SuspendMessenger,
    particle_plate,
    per_particle,
)
from ppltk.handlers.particles import site_log_prob
from ppltk.smc.kernel import FeynmanKac
from ppltk.smc.moves import mcmc_move, population_params

__all__ = [
    "ProgramFK",
    "ProgramInfo",
    "ProgramParticles",
    "PyroStateSpace",
    "ReplayProgram",
    "ResampleMoveFK",
    "SiteTransforms",
]


def _trace_log_weight(trace, num_particles: int, dim: int, observed: bool | None) -> torch.Tensor:
    total = None
    for site in trace.nodes.values():
        if site["type"] != "sample" or site["name"] == PARTICLE_PLATE:
            continue
        if observed is not None and site["is_observed"] != observed:
            continue
        lp = site_log_prob(site)
        if lp is not None:
            term = per_particle(lp, num_particles, dim)
            total = term if total is None else total + term
    return torch.zeros(num_particles) if total is None else total


class PyroStateSpace:
    """Adapter: a Pyro ``init``/``step`` model (and optional guide) as a PF proposal.

    The state dict's tensors must have the particle dim leading (``[N, ...]``), as values
    sampled inside the particle plate do; other entries are passed along unchanged.
    """

    def __init__(
        self, model, guide=None, max_plate_nesting: int = 0, init_args=(), init_kwargs=None
    ):
        self.model, self.guide, self.nesting = model, guide, max_plate_nesting
        self.init_args, self.init_kwargs = tuple(init_args), dict(init_kwargs or {})

    def _run(self, state, t, y, num_particles):
        with particle_plate(num_particles, self.nesting):
            if t == 0:
                self.model.init(state, *self.init_args, **self.init_kwargs)
            self.model.step(state, y)

    def __call__(self, ssm, prev, t, y, shape, generator):
        num = shape[-1]
        state = {} if prev is None else dict(prev)
        if self.guide is None:
            with LogWeightMessenger(num, self.nesting) as lw:
                self._run(state, t, y, num)
            return state, torch.as_tensor(lw.log_weight).expand(num)
        return state, self._guided(state, t, y, num)

    def _guided(self, state, t, y, num):
        """Guide then model (replayed on the guide's values), as SMCFilter orders them."""
        weight = 0.0
        if t == 0:
            weight = self._guided_call("init", state, num, self.init_args, self.init_kwargs)
        return weight + self._guided_call("step", state, num, (y,), {})

    def _guided_call(self, method, state, num, args, kwargs):
        dim = -(self.nesting + 1)
        with poutine.trace() as gtr, particle_plate(num, self.nesting):
            getattr(self.guide, method)(dict(state), *args, **kwargs)  # the guide only reads
        with poutine.trace() as mtr, poutine.replay(trace=gtr.trace):
            with particle_plate(num, self.nesting):
                getattr(self.model, method)(state, *args, **kwargs)
        log_p = _trace_log_weight(mtr.trace, num, dim, None)
        return log_p - _trace_log_weight(gtr.trace, num, dim, False)


class ProgramInfo:
    """What one prior run of a program (no particle plate) tells: its observed sites in
    execution order, latent site shapes and batch ranks, and its plate nesting."""

    def __init__(self, model: Callable, args=(), kwargs=None, seed: int = 0) -> None:
        try:
            with pyro_seed(seed), poutine.block():
                trace = poutine.trace(model).get_trace(*args, **(kwargs or {}))
            trace.compute_log_prob()
        except (ValueError, RuntimeError) as err:
            if isinstance(err, ModelStructureError):
                raise
            raise ModelStructureError(
                "Expected the model to run on its prior draws (one validated run before the "
                f"particle run), but found: {err}"
            ) from err
        sites = [s for s in trace.nodes.values() if s["type"] == "sample"]
        self.observed = [s["name"] for s in sites if s["is_observed"]]
        if not self.observed:
            raise ModelStructureError(
                "Expected the model to observe data (obs=...), but found no observed site"
            )
        latent = [s for s in sites if not s["is_observed"] and not site_is_subsample(s)]
        self.latent_shapes = {s["name"]: tuple(s["value"].shape) for s in latent}
        self.batch_ranks = {s["name"]: len(s["fn"].batch_shape) for s in latent}
        self.supports = {s["name"]: s["fn"].support for s in latent}
        frames = [f.dim for s in sites for f in s["cond_indep_stack"]]
        self.nesting = max([-d for d in frames if d is not None], default=0)


class ProgramParticles:
    """The particles of a :class:`ProgramFK`: a handle on the suspended program.

    Resampling calls :meth:`reindex`, which records the ancestors in the program's lineage
    (the program's tensors follow lazily) and returns the same handle: the program's state is
    one mutable execution, so an older population holding this handle sees the new state.
    """

    def __init__(self, program: SuspendedProgram, shape: tuple[int, ...], info: ProgramInfo | None):
        self.program, self.shape, self.info = program, tuple(shape), info
        batch = math.prod(shape[:-1])
        offsets = torch.arange(batch) * shape[-1]
        self._offsets = offsets.reshape(shape[:-1] + (1,))

    def reindex(self, ancestors: torch.Tensor) -> ProgramParticles:
        flat = ancestors + self._offsets.to(ancestors.device)
        self.program.resample(flat.reshape(-1))
        return self

    def finish(self) -> None:
        """Run the program past its last observation (draws its remaining latent sites)."""
        if self.program.advance() is not None:
            raise ModelStructureError(
                "Expected the program to end after its observations (as in a prior run), but it "
                "made more: the number of observations must not depend on random values"
            )

    def values(self) -> dict[str, torch.Tensor]:
        """Every latent site's current values shaped ``[*batch, N, *site_shape]`` (without a
        prior run, ``site_shape`` keeps the plate dims' padding)."""
        if self.info is None:
            return {
                k: v.reshape(self.shape + v.shape[1:]) for k, v in self.program.values().items()
            }
        shapes = self.info.latent_shapes
        return {
            name: v.reshape(self.shape + shapes[name])
            for name, v in self.program.values().items()
            if name in shapes
        }


class ProgramFK(FeynmanKac):
    r"""Any Pyro program that observes sequentially, as a Feynman–Kac model run once (O(NT)).

    :math:`M_t` runs the program from observation :math:`t-1` to observation :math:`t`
    (sampling latent sites from their priors: the bootstrap proposal) and :math:`G_t` is the
    observation's likelihood. The program is vectorised over a flat particle plate of size
    :math:`\prod(\text{batch}) N`; ``fixed`` replays latent values per batch row (e.g. the
    parameters of PMMH chains, ``{site: [*batch, *site_shape]}``), whose log-prior is then
    available as :attr:`fixed_log_prob`.

    By default one validated prior run (:class:`ProgramInfo`) finds the number of observations
    and the plate nesting first, and the particle run skips per-particle argument validation.
    With ``max_plate_nesting`` given (as Pyro's ``SMCFilter`` requires) there is no prior run:
    the particle run checks each observed value against its support (a parameter outside its
    constraint shows as a non-finite weight, a named error) and the end of the program is
    found when it returns (one last step with :math:`G = 1`).
    """

    def __init__(
        self,
        model: Callable,
        args=(),
        kwargs=None,
        fixed=None,
        info=None,
        max_plate_nesting: int | None = None,
    ) -> None:
        self.model, self.args, self.kwargs = model, tuple(args), dict(kwargs or {})
        if info is None and max_plate_nesting is None:
            info = ProgramInfo(model, self.args, self.kwargs)
        self.info = info
        self.nesting = info.nesting if info is not None else int(max_plate_nesting)
        self.num_steps = len(info.observed) if info is not None else None
        self.fixed, self.finished = fixed, False
        self.handle: ProgramParticles | None = None

    def done(self, t: int) -> bool:
        return self.finished if self.info is None else super().done(t)

    def _wrappers(self, shape):
        if not self.fixed:
            return ()
        n, values = shape[-1], {}
        for name, v in self.fixed.items():
            rank = self.info.batch_ranks.get(name, 0)
            site = self.info.latent_shapes[name]
            flat = v.reshape((-1,) + site).repeat_interleave(n, 0)
            values[name] = flat.reshape(flat.shape[:1] + (1,) * (self.info.nesting - rank) + site)
        return (ReplayValuesMessenger(values),)

    def advance(self, t, xp, shape, generator):
        if xp is None:
            seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
            program = SuspendedProgram(
                self.model,
                self.args,
                self.kwargs,
                size=math.prod(shape),
                max_plate_nesting=self.nesting,
                seed=seed,
                wrappers=self._wrappers(shape),
                record_fixed=bool(self.fixed),
                validate=self.info is None,
            )
            xp = self.handle = ProgramParticles(program, shape, self.info)
        out = xp.program.advance()
        if out is None and self.info is None and t > 0:
            self.finished = True
            return xp, torch.zeros(shape, device=generator.device)
        if out is None:
            raise ModelStructureError(
                f"Expected {self.num_steps} observations (as in a prior run), but the program "
                f"ended after {t}: the number of observations must not depend on random values"
            )
        return xp, out[1].reshape(shape)

    @property
    def fixed_log_prob(self) -> torch.Tensor:
        """``[*batch]`` log-density of the replayed ``fixed`` values (0 without them)."""
        handle = self.handle
        lp = torch.as_tensor(handle.program.fixed_log_prob)
        if lp.ndim == 0:
            return lp.expand(handle.shape[:-1])
        return lp.reshape(handle.shape)[..., 0]


class ReplayProgram:
    """Adapter: any sequentially-observing Pyro program as a PF proposal (replay path).

    The particle state is the dict of latent values drawn so far, each ``[N, ...]``.
    """

    def __init__(self, model: Callable, args=(), kwargs=None, seed: int = 0) -> None:
        self.model, self.args, self.kwargs = model, tuple(args), dict(kwargs or {})
        self.info = info = ProgramInfo(model, self.args, self.kwargs, seed)
        self.observed, self.latent_shapes, self.nesting = (
            info.observed,
            info.latent_shapes,
            info.nesting,
        )

    @property
    def num_observations(self) -> int:
        return len(self.observed)

    def run(self, values: dict, num: int, stop_after: int | None):
        """Execute once with ``values`` replayed; returns the trace (suspended if asked)."""
        with (
            poutine.trace() as tr,
            ReplayValuesMessenger(values),
            particle_plate(num, self.nesting),
        ):
            try:
                if stop_after is None:
                    self.model(*self.args, **self.kwargs)
                else:
                    with SuspendMessenger(stop_after):
                        self.model(*self.args, **self.kwargs)
            except Suspended:
                pass
        return tr.trace

    def latent_values(self, trace) -> dict:
        return {
            n: s["value"]
            for n, s in trace.nodes.items()
            if s["type"] == "sample"
            and not s["is_observed"]
            and n != PARTICLE_PLATE
            and s["fn"] is not None
            and n in self.latent_shapes
        }

    def __call__(self, ssm, prev, t, y, shape, generator):
        num = shape[-1]
        trace = self.run({} if prev is None else prev, num, stop_after=t)
        site = trace.nodes[self.observed[t]]
        lp = site_log_prob(site)
        if lp is None:  # a fully masked observation carries no weight
            lp = torch.zeros((), dtype=site["value"].dtype, device=site["value"].device)
        return self.latent_values(trace), per_particle(lp, num, -(self.nesting + 1))

    def complete(self, values: dict, num: int) -> dict:
        """Run to the end (latent sites after the last observation drawn from the prior)."""
        return self.latent_values(self.run(values, num, stop_after=None))

    def draws(self, values: dict, num: int) -> dict:
        """Values reshaped to ``[N, *site_shape]``."""
        return {n: v.reshape((num,) + self.latent_shapes[n]) for n, v in values.items()}


class SiteTransforms:
    r"""Latent sites laid end to end in one unconstrained vector per row: site ``s`` with
    support :math:`S_s` maps through Pyro's ``biject_to(S_s)``; ``row_shapes`` are the sites'
    shapes without the leading row (chain or particle) dim."""

    def __init__(self, names, supports: dict, row_shapes: dict) -> None:
        self.names = list(names)
        self.shapes = [tuple(row_shapes[n]) for n in self.names]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.transforms = [biject_to(supports[n]) for n in self.names]

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def constrain(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``{site: [R, *shape]}`` and the log-Jacobian ``[R]`` for ``u [R, D]``."""
        values, log_jac, start = {}, torch.zeros_like(u[:, 0]), 0
        for name, shape, size, tr in zip(self.names, self.shapes, self.sizes, self.transforms):
            x = u[:, start : start + size].reshape(u.shape[:1] + shape)
            values[name], start = tr(x), start + size
            ladj = tr.log_abs_det_jacobian(x, values[name])
            log_jac = log_jac + ladj.reshape(len(u), -1).sum(-1)
        return values, log_jac

    def unconstrain(self, values: dict) -> torch.Tensor:
        """``[R, D]`` from ``{site: [R, *shape]}``."""
        parts = [
            tr.inv(torch.as_tensor(values[n])).reshape(-1, size)
            for n, size, tr in zip(self.names, self.sizes, self.transforms)
        ]
        return torch.cat(parts, -1)


class ResampleMoveFK(FeynmanKac):
    r"""Resample-move SMC on any Pyro program (monad-bayes' ``rmsmc``), on the replay path.

    :math:`M_t = q_t \circ K_{t-1}`: first ``num_moves`` transitions of an MCMC ``kernel``
    (random-walk MH with the particles' covariance by default) on the **latest block** — the
    continuous latent sites the program drew between observations :math:`t-2` and
    :math:`t-1`, moved in their unconstrained space — invariant for the prefix target
    :math:`p(x_{0:t-1} \mid y_{0:t-1})`, then the prior proposal of the next block
    (:class:`ReplayProgram`), weighted by the next observation. ``block="all"`` moves every
    continuous site drawn so far. Each move re-runs the program's prefix (its joint density
    is evaluated by replay), so a run costs :math:`O(N T^2)` with moves, like ``rmsmc``;
    the estimate of :math:`\log Z` stays unbiased because each move leaves the prefix target
    invariant.
    """

    def __init__(
        self,
        model: Callable,
        args=(),
        kwargs=None,
        kernel=None,
        num_moves: int = 1,
        block: str = "latest",
    ) -> None:
        if block not in ("latest", "all"):
            raise ArgumentError(f"Expected `block` 'latest' or 'all', but found {block!r}")
        from ppltk.mcmc import make_kernel

        self.program = ReplayProgram(model, args, kwargs)
        self.num_steps = self.program.num_observations
        self.kernel = make_kernel("mh" if kernel is None else kernel)
        self.num_moves, self.block = num_moves, block
        self.blocks: list[list[str]] = []
        self.accept_prob: list[float] = []

    def advance(self, t, xp, shape, generator):
        if xp is not None and self.num_moves > 0:
            xp = self._move(t - 1, xp, shape[-1], generator)
        values, log_w = self.program(None, xp, t, None, shape, generator)
        supports = self.program.info.supports
        self.blocks.append(
            [
                n
                for n in values
                if (xp is None or n not in xp)
                and values[n].is_floating_point()
                and not supports[n].is_discrete
            ]
        )
        return values, log_w

    def _move(self, t: int, values: dict, num: int, generator) -> dict:
        sites = self.blocks[t] if self.block == "latest" else [n for b in self.blocks for n in b]
        if not sites:
            return values
        shapes = {n: values[n].shape[1:] for n in sites}
        space = SiteTransforms(sites, self.program.info.supports, shapes)

        def log_density(z):
            moved, log_jac = space.constrain(z)
            trace = self.program.run({**values, **moved}, num, stop_after=t)
            return _trace_log_weight(trace, num, -(self.program.nesting + 1), None) + log_jac

        u = space.unconstrain(values)
        params = population_params(self.kernel, u)
        state, info = mcmc_move(self.kernel, log_density, u, self.num_moves, generator, params)
        self.accept_prob.append(float(info["accept_prob"].mean()))
        moved, _ = space.constrain(state.position)
        return {**values, **{n: v.detach() for n, v in moved.items()}}
