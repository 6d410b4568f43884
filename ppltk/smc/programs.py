r"""Pyro programs as particle-filter proposals: the two ways resampling re-indexes their state.

* :class:`PyroStateSpace` — a Pyro model with ``init(state, ...)`` / ``step(state, y)`` methods
  (the interface of :class:`pyro.infer.SMCFilter`) keeps its Markov state in a dict that the
  algorithm re-indexes by ancestors: **linear in T** (:math:`O(N)` per step).
* :class:`ReplayProgram` — any Pyro program that observes sequentially: step :math:`k` replays
  the resampled latent values drawn so far, samples the new ones from the prior and suspends
  after observation :math:`k`: general, **quadratic in T** (the prefix is re-run each step).

Both run under ppltk's handlers: :func:`~ppltk.handlers.particle_plate` vectorises the program
over particles, :class:`~ppltk.handlers.LogWeightMessenger` collects the observation weights,
:class:`~ppltk.handlers.ReplayValuesMessenger` / :class:`~ppltk.handlers.SuspendMessenger`
implement replay and suspension. Pyro samples from torch's global generator: :func:`ppltk.smc.smc`
seeds it once from the algorithm's generator for the whole run (:func:`ppltk._rng.pyro_seed`)
and restores it after; reseeding every step would cost more than the step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ppltk._rng import pyro_seed
from ppltk.errors import ModelStructureError
from ppltk.handlers import (
    PARTICLE_PLATE,
    LogWeightMessenger,
    ReplayValuesMessenger,
    Suspended,
    SuspendMessenger,
    particle_plate,
    per_particle,
)
from ppltk.handlers.particles import site_log_prob

__all__ = ["PyroStateSpace", "ReplayProgram"]


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


class ReplayProgram:
    """Adapter: any sequentially-observing Pyro program as a PF proposal (replay path).

    The particle state is the dict of latent values drawn so far, each ``[N, ...]``.
    """

    def __init__(self, model: Callable, args=(), kwargs=None, seed: int = 0) -> None:
        self.model, self.args, self.kwargs = model, tuple(args), dict(kwargs or {})
        with pyro_seed(seed), poutine.block():
            trace = poutine.trace(model).get_trace(*self.args, **self.kwargs)
        trace.compute_log_prob()
        self.observed = [
            n for n, s in trace.nodes.items() if s["type"] == "sample" and s["is_observed"]
        ]
        if not self.observed:
            raise ModelStructureError(
                "Expected the model to observe data (obs=...), but found no observed site"
            )
        self.latent_shapes = {
            n: tuple(s["value"].shape)
            for n, s in trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
        }
        frames = [
            f.dim
            for s in trace.nodes.values()
            if s["type"] == "sample"
            for f in s["cond_indep_stack"]
        ]
        self.nesting = max([-d for d in frames if d is not None], default=0)

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
