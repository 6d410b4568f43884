"""Checkpoints of a running sampler: one ``torch.save``'d dict, written atomically.

The dict holds everything that determines the rest of the run (chain state, parameters,
adaptation state, the generator's state and the draws so far), so a resumed run continues
exactly where the saved one stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ppltk.errors import ArgumentError
from ppltk.mcmc._base import MCMCState, Params

__all__ = ["save_checkpoint", "load_checkpoint"]

_FORMAT = "ppltk.mcmc.checkpoint/1"


def _params_to_obj(params):
    if isinstance(params, list):
        return [_params_to_obj(p) for p in params]
    return params.as_dict()


def _params_from_obj(obj):
    if isinstance(obj, list):
        return [_params_from_obj(o) for o in obj]
    return Params(obj["step_size"], obj["inverse_mass"])


def _config(run) -> dict:
    chains, dim = run.state.position.shape
    return {
        "num_warmup": run.num_warmup,
        "num_samples": run.num_samples,
        "chains": chains,
        "dim": dim,
        "kernel": repr(run.kernel),
    }


def save_checkpoint(path: Path, run, generator_state: torch.Tensor) -> None:
    """Write ``run`` (a :class:`ppltk.mcmc.runner._Run`) to ``path`` atomically."""
    kept = run.kept
    payload = {
        "format": _FORMAT,
        "config": _config(run),
        "completed": run.completed,
        "state": run.state.as_dict(),
        "params": _params_to_obj(run.params),
        "adapters": [a.state_dict() for a in run.adapters],
        "generator": generator_state,
        "positions": run.positions[:, :kept].clone(),
        "stats": {k: v[:, :kept].clone() for k, v in run.stats.items()},
        "warmup_divergences": run.warmup_divergences,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, run) -> None:
    """Restore ``run`` in place from ``path``; the run's configuration must match."""
    payload = torch.load(path, map_location=run.state.position.device, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ArgumentError(f"Expected `checkpoint` {str(path)!r} to be a ppltk.mcmc checkpoint")
    found, expected = payload["config"], _config(run)
    if found != expected:
        raise ArgumentError(
            f"Expected `checkpoint` {str(path)!r} to match this run's configuration {expected}, "
            f"but found {found}"
        )
    run.completed = payload["completed"]
    run.state = MCMCState(**payload["state"])
    run.params = _params_from_obj(payload["params"])
    for adapter, saved in zip(run.adapters, payload["adapters"]):
        adapter.load_state_dict(saved)
    run.gen.set_state(payload["generator"])
    kept = payload["positions"].shape[1]
    run.positions[:, :kept] = payload["positions"]
    for name, value in payload["stats"].items():
        run.stats[name] = value.new_zeros((value.shape[0], run.num_samples))
        run.stats[name][:, :kept] = value
    run.warmup_divergences = payload["warmup_divergences"]
