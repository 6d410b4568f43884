r"""``ppltk.smc.smc``: the particle filter on any sequentially-observing model.

Which path a model takes (and what it costs, :math:`N` particles, :math:`T` observations):

=====================================================  =====================  ==============
model                                                  path                   cost
=====================================================  =====================  ==============
object with ``init``/``transition``/``log_observation``  explicit Markov state   :math:`O(NT)`
a :class:`~ppltk.smc.FeynmanKac` model                  ``advance`` per step    :math:`O(NT)`
Pyro object with ``init(state, ...)``/``step(state, y)``  Markov state dict       :math:`O(NT)`
any other Pyro program (observations in order)          run once, suspended     :math:`O(NT)`
the same with ``path="replay"``                         replay + suspension     :math:`O(NT^2)`
the same with ``path="resample-move"``                  replay + MCMC moves     :math:`O(NT^2)`
=====================================================  =====================  ==============

The default for a Pyro program (``"program"``) runs it once for all particles in a coroutine
that stops at each observation; after resampling, its live tensors re-index themselves lazily
(:mod:`ppltk.handlers.lazy`). It refuses, with :class:`~ppltk.errors.ModelStructureError`,
programs whose Python control flow depends on particle values or that move the particle dim;
``path="replay"`` runs those (re-executing the program up to each observation).
``path="resample-move"`` adds MCMC moves of the latest block of latent sites before each
step (:class:`~ppltk.smc.programs.ResampleMoveFK`, options in ``move=``).
"""

from __future__ import annotations

import torch

from ppltk._rng import child_seed, make_generator, pyro_seed
from ppltk.errors import ArgumentError
from ppltk.results import Result
from ppltk.smc.filter import particle_filter
from ppltk.smc.kernel import FeynmanKac
from ppltk.smc.population import reindex
from ppltk.smc.programs import ProgramFK, PyroStateSpace, ReplayProgram, ResampleMoveFK
from ppltk.smc.resampling import multinomial

__all__ = ["smc", "model_path", "PATHS"]


PATHS = ("markov", "feynman-kac", "pyro-markov", "program", "replay", "resample-move")


def model_path(model, path: str | None = None) -> str:
    """The path :func:`smc` takes (see module): ``"markov"``, ``"feynman-kac"``,
    ``"pyro-markov"``, ``"program"`` (default for Pyro programs), or, asked for a Pyro
    program, ``"replay"`` or ``"resample-move"``."""
    if isinstance(model, FeynmanKac):
        found = "feynman-kac"
    elif all(hasattr(model, m) for m in ("init", "transition", "log_observation")):
        found = "markov"
    elif all(hasattr(model, m) for m in ("init", "step")):
        found = "pyro-markov"
    elif callable(model):
        found = "program"
    else:
        raise ArgumentError(
            f"Expected a state-space model or a Pyro model, but found {type(model)}"
        )
    if path is None or path == found:
        return found
    if path in ("replay", "resample-move") and found == "program":
        return path
    raise ArgumentError(
        f"Expected `path` None or one this model supports ({found!r}"
        + (", 'replay' or 'resample-move'" if found == "program" else "")
        + f"), but found {path!r}"
    )


def smc(
    model,
    *args,
    num_particles: int = 1000,
    resampling="systematic",
    ess_threshold: float = 0.5,
    seed: int | torch.Generator = 0,
    proposal=None,
    guide=None,
    max_plate_nesting: int | None = None,
    progress: bool = True,
    path: str | None = None,
    move: dict | None = None,
    **kwargs,
) -> Result:
    r"""Sequential Monte Carlo (particle filter) with adaptive resampling.

    Parameters
    ----------
    model
        A :class:`~ppltk.smc.StateSpaceModel` (called as ``smc(ssm, ys)``), a Pyro object with
        ``init``/``step`` methods (``smc(model, ys, *init_args)``; ``step(state, ys[t])``,
        optional ``guide`` with the same methods), or any Pyro program that observes data in
        sequence (``smc(model, *args, **kwargs)``). See the module table for paths and costs.
    num_particles, resampling, ess_threshold, seed
        :math:`N`; the scheme; resample when :math:`\mathrm{ESS}/N <` threshold; seed.
    proposal
        For explicit state-space models: a proposal (default bootstrap).
    guide, max_plate_nesting
        For ``init``/``step`` models: a guide with the same methods and the plate nesting
        (default 0). For a Pyro program, ``max_plate_nesting`` skips the validated prior run
        that otherwise finds the nesting and the number of observations (see
        :class:`~ppltk.smc.ProgramFK`).
    path
        ``None`` (the model's own path, see the module table), ``"replay"`` for a Pyro
        program the run-once path refuses, or ``"resample-move"``.
    move
        With ``path="resample-move"``: options of
        :class:`~ppltk.smc.programs.ResampleMoveFK` (``kernel``, ``num_moves``, ``block``).

    Returns
    -------
    Result
        ``log_evidence`` (unbiased in :math:`\hat Z`), draws resampled from the final weighted
        particles (one chain of ``num_particles``), ``attrs["path"]`` and, outside ArviZ,
        ``attrs["filter"]`` (the :class:`~ppltk.smc.FilterOutput` with weighted particles).
    """
    path = model_path(model, path)
    generator = make_generator(seed)
    common = dict(
        resampling=resampling, ess_threshold=ess_threshold, seed=generator, progress=progress
    )
    if path == "resample-move":
        fk = ResampleMoveFK(model, args, kwargs, **(move or {}))
        with pyro_seed(child_seed(generator)):
            out = particle_filter(fk, None, num_particles, **common)
            picked = _final_draws(out, generator)
            draws = fk.program.draws(fk.program.complete(picked, num_particles), num_particles)
    elif path in ("program", "feynman-kac"):
        if path == "program":
            fk = ProgramFK(model, args, kwargs, max_plate_nesting=max_plate_nesting)
        else:
            fk = model
        try:
            out = particle_filter(fk, None, num_particles, **common)
            picked = _final_draws(out, generator)
            if path == "program":
                picked.finish()
                picked = picked.values()
        finally:
            if path == "program" and fk.handle is not None:
                fk.handle.program.close()
        draws = picked if isinstance(picked, dict) else {"x": picked}
    elif path == "replay":
        program = ReplayProgram(model, args, kwargs, seed=0)
        ys = torch.zeros(program.num_observations, 1)
        with pyro_seed(child_seed(generator)):
            out = particle_filter(program, ys, num_particles, proposal=program, **common)
            picked = _final_draws(out, generator)
            draws = program.draws(program.complete(picked, num_particles), num_particles)
    else:
        if not args:
            raise ArgumentError(
                "Expected the observations `ys` as the first argument, but found none"
            )
        ys = args[0]
        if path == "pyro-markov":
            nesting = max_plate_nesting or 0
            proposal = PyroStateSpace(model, guide, nesting, args[1:], kwargs)
        with pyro_seed(child_seed(generator)):
            out = particle_filter(model, ys, num_particles, proposal=proposal, **common)
        picked = _final_draws(out, generator)
        draws = picked if isinstance(picked, dict) else {"x": picked}
    return Result(
        draws={k: v[None].detach() for k, v in draws.items() if isinstance(v, torch.Tensor)},
        log_evidence=float(out.log_evidence),
        method="smc",
        attrs={
            "path": path,
            "num_resampling_steps": int(out.resampled.sum()),
            "min_ess": float(out.ess.min()),
            "filter": out,
            **({"move_accept_prob": tuple(fk.accept_prob)} if path == "resample-move" else {}),
        },
    )


def _final_draws(out, generator):
    """Equally weighted draws: the final particles resampled multinomially by their weights."""
    ancestors = multinomial(out.population.log_weights, generator)
    return reindex(out.population.particles, ancestors)
