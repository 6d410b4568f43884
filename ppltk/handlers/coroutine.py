r"""Run a Pyro program once for N particles, suspended at each observation (a coroutine).

The user's function does not ``yield``, so the program runs in a ``greenlet``: the
:class:`ObservationSuspender` messenger, at every observed site (``obs=`` or ``pyro.factor``),
sums the site's scaled log-probability per particle and switches back to the driver with it.
The driver reweights and maybe resamples (:meth:`SuspendedProgram.resample` only records the
ancestors: the program's live tensors are :class:`~ppltk.handlers.lazy.ParticleTensor` and
re-index themselves lazily), then resumes the same execution. The program's Python runs once,
so a filter over :math:`T` observations costs :math:`O(NT)`.

Pyro's handler stack, its plate-dimension allocator, torch's global random state and the
distributions' argument validation flag are global; each switch swaps them, so the suspended
program and the driver (or any other Pyro code run between two observations) never see each
other's handlers, and the program's random stream is its own (seeded once). The program runs
without per-particle argument validation: :class:`~ppltk.smc.ProgramFK` validates the program
once, in its prior run (or, without one, checks each observed value's support), and a
non-finite weight raises :class:`~ppltk.errors.DegenerateWeightsError` naming the
observation.
"""

from __future__ import annotations

import torch
from greenlet import GreenletExit, greenlet
from pyro.poutine import runtime
from pyro.poutine.messenger import Messenger
from torch.distributions import Distribution

from ppltk.errors import ModelStructureError
from ppltk.handlers.lazy import Lineage, ParticleTensor, as_particles, plain
from ppltk.handlers.particles import PARTICLE_PLATE, particle_plate, per_particle, site_log_prob

__all__ = ["ObservationSuspender", "SuspendedProgram"]


class ObservationSuspender(Messenger):
    """Wrap latent values as particle tensors and hand each observation's log-weight to the
    driver (suspending the program until it is resumed). Preserves the program's execution."""

    def __init__(self, program: SuspendedProgram) -> None:
        super().__init__()
        self.program = program

    def _postprocess_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["name"] == PARTICLE_PLATE:
            return
        program = self.program
        if not msg["is_observed"]:
            if msg["infer"].get("_ppltk_replayed") and program.fixed_log_prob is not None:
                lp = site_log_prob(msg)
                if lp is not None:
                    program.fixed_log_prob += per_particle(plain(lp), program.size, program.dim)
            if not (msg["infer"].get("is_auxiliary") or msg["infer"].get("subsample")):
                msg["value"] = as_particles(msg["value"], program.lineage)
                program.latents[msg["name"]] = msg["value"]
            return
        if program.check_observations:
            _check_observed_support(msg)
        lp = site_log_prob(msg)
        if lp is None:  # a fully masked observation: zero log-weight
            lp = torch.zeros((), dtype=msg["value"].dtype, device=msg["value"].device)
        log_weight = per_particle(plain(lp), program.size, program.dim).detach()
        greenlet.getcurrent().parent.switch((msg["name"], log_weight))


def _check_observed_support(msg) -> None:
    """An observed value outside its distribution's support is a named error (the particle
    run skips the distributions' own argument validation; non-finite weights are caught by
    the SMC step)."""
    if msg.get("mask") is False:
        return
    fn, value = msg["fn"], msg["value"]
    try:
        inside = fn.support.check(value)
    except (NotImplementedError, AttributeError):  # e.g. a factor's Unit distribution
        return
    mask = msg.get("mask")
    if mask is not None and mask is not True:
        inside = inside | ~mask
    if not bool(plain(inside).all()):
        raise ModelStructureError(
            f"Expected the observation at site {msg['name']!r} inside the support "
            f"{fn.support} of {type(fn).__name__}, but found values outside it"
        )


class _GlobalState:
    """Pyro's handler stack, plate dims, torch's RNG state and the validation flag, saved for
    one side of a switch."""

    def __init__(
        self, rng: torch.Tensor | None = None, validate: bool | None = None, seed: int = 0
    ) -> None:
        self.stack: list = []
        self.dims: list = []
        self.rng, self.validate, self.seed = rng, validate, seed
        self.cuda_rng: torch.Tensor | None = None

    def swap(self, other: _GlobalState) -> None:
        """Save the live globals into ``other`` and install this one's."""
        other.stack, other.dims = list(runtime._PYRO_STACK), list(runtime._DIM_ALLOCATOR._stack)
        other.rng = torch.random.get_rng_state()
        other.validate = Distribution._validate_args
        runtime._PYRO_STACK[:] = self.stack
        runtime._DIM_ALLOCATOR._stack[:] = self.dims
        if self.rng is not None:
            torch.random.set_rng_state(self.rng)
        if self.validate is not None:
            Distribution._validate_args = self.validate
        if torch.cuda.is_initialized():  # the current CUDA device's generator, likewise
            other.cuda_rng = torch.cuda.get_rng_state()
            if self.cuda_rng is not None:
                torch.cuda.set_rng_state(self.cuda_rng)
            elif self.rng is not None:  # the program's first switch on CUDA: seed its stream
                torch.cuda.manual_seed(self.seed)


class SuspendedProgram:
    r"""A Pyro program executing for ``size`` particles, one observation at a time.

    Parameters
    ----------
    model, args, kwargs
        The program and its arguments.
    size
        Number of particles (``prod(batch) * N`` for batched filters: the particle plate is flat).
    max_plate_nesting
        The program's own plate nesting; the particle plate sits left of it.
    seed
        Seed of the program's own random stream (torch's global generator, swapped per switch).
    wrappers
        Extra handlers entered inside the particle plate (e.g. replaying parameter values).
    record_fixed
        Sum the log-density of replayed latent values per particle (:attr:`fixed_log_prob`).
    validate
        Check every observed value against its distribution's support (the distributions'
        own argument validation is always off in the particle run: a parameter outside its
        constraint shows as a non-finite weight, which the SMC step names).
    """

    def __init__(
        self,
        model,
        args=(),
        kwargs=None,
        *,
        size: int,
        max_plate_nesting: int = 0,
        seed: int = 0,
        wrappers=(),
        record_fixed: bool = False,
        validate: bool = False,
    ) -> None:
        self.model, self.args, self.kwargs = model, tuple(args), dict(kwargs or {})
        self.size, self.nesting, self.dim = size, max_plate_nesting, -(max_plate_nesting + 1)
        self.lineage = Lineage(size)
        self.latents: dict[str, ParticleTensor] = {}
        self.fixed_log_prob = 0.0 if record_fixed else None
        self.wrappers = tuple(wrappers)
        self.num_observations = 0
        self.finished = False
        rng = torch.Generator().manual_seed(seed).get_state()
        self._own = _GlobalState(rng, False, seed)
        self.check_observations = validate
        self._greenlet = greenlet(self._main)

    def _main(self):
        with ObservationSuspender(self), particle_plate(self.size, self.nesting):
            for wrapper in self.wrappers:
                wrapper.__enter__()
            try:
                self.model(*self.args, **self.kwargs)
            finally:
                for wrapper in reversed(self.wrappers):
                    wrapper.__exit__(None, None, None)
        return None

    def _switch(self, *throw):
        outer = _GlobalState()
        self._own.swap(outer)
        try:
            return self._greenlet.throw(*throw) if throw else self._greenlet.switch()
        finally:
            outer.swap(self._own)

    def advance(self) -> tuple[str, torch.Tensor] | None:
        """Run to the next observation: ``(site name, log-weight [size])``, or ``None`` at the
        program's end."""
        if self.finished:
            return None
        try:
            out = self._switch()
        except ValueError as err:
            if isinstance(err, ModelStructureError):
                raise
            raise ModelStructureError(f"Expected the program to run, but found: {err}") from err
        except RuntimeError as err:
            if "ambiguous" in str(err) or "more than one value" in str(err):
                raise ModelStructureError(
                    "Expected the program's Python control flow not to depend on particle "
                    f"values, but found: {err}. Run it with smc(..., path='replay') or move the "
                    "branch into tensors (torch.where)."
                ) from err
            raise
        if self._greenlet.dead:
            self.finished = True
            return None
        self.num_observations += 1
        return out

    def resample(self, ancestors: torch.Tensor) -> None:
        """Record a resampling (ancestors ``[size]``); live tensors re-index lazily."""
        self.lineage.resample(ancestors)

    def values(self) -> dict[str, torch.Tensor]:
        """Latest value of every latent site, at the current generation (plain tensors)."""
        return {name: plain(v) for name, v in self.latents.items()}

    def close(self) -> None:
        """Unwind a program that has not finished (its handlers exit cleanly)."""
        if not self._greenlet.dead and self._greenlet:
            try:
                self._switch(GreenletExit)
            except GreenletExit:
                pass
        self.finished = True
