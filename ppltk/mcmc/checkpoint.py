"""Checkpoints of a running sampler: one ``torch.save``'d dict, written atomically.

The dict holds everything that determines the rest of the run (chain state, parameters,
adaptation state, the generator's state and the draws so far) as one unit taken at the end
of a completed iteration, so a resumed run continues exactly where the saved one stopped.

It also holds a *fingerprint* of the run: the kernel and its options, the numbers of chains,
dimensions and iterations, a hash of the seed's generator state, the ppltk version and (from
:func:`ppltk.mcmc.sample`) the model's latent sites (names, shapes, supports) and a hash of
its observed data and arguments.  Resuming with any of these changed raises
:class:`~ppltk.errors.CheckpointMismatchError` naming what differs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ppltk.errors import ArgumentError, CheckpointMismatchError
from ppltk.mcmc._base import MCMCState, Params

__all__ = ["save_checkpoint", "load_checkpoint", "run_fingerprint", "stable_hash"]

_FORMAT = "ppltk.mcmc.checkpoint/1"


def _params_to_obj(params):
    if isinstance(params, list):
        return [_params_to_obj(p) for p in params]
    return params.as_dict()


def _params_from_obj(obj):
    if isinstance(obj, list):
        return [_params_from_obj(o) for o in obj]
    return Params(obj["step_size"], obj["inverse_mass"])


def stable_hash(obj) -> str:
    """A hash of ``obj`` that is the same in every process: tensors and arrays by dtype, shape
    and bytes, containers recursively, numbers and strings by value, other objects by type
    name (their ``repr`` may hold a memory address)."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()[:16]


def _feed(digest, obj) -> None:
    import numpy as np

    if isinstance(obj, torch.Tensor):
        value = obj.detach().cpu().contiguous()
        digest.update(f"T{value.dtype}{list(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        digest.update(f"A{obj.dtype}{list(obj.shape)}".encode())
        digest.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, (list, tuple)):
        digest.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(digest, item)
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _feed(digest, key)
            _feed(digest, obj[key])
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        digest.update(f"{type(obj).__name__}:{obj!r}".encode())
    elif isinstance(obj, Params):
        _feed(digest, obj.as_dict())
    else:
        digest.update(f"O{type(obj).__module__}.{type(obj).__qualname__}".encode())


def run_fingerprint(kernel, position, num_warmup, num_samples, generator, options) -> dict:
    """The sampler's part of a checkpoint's fingerprint (``{name: str}``)."""
    from ppltk import __version__

    chains, dim = position.shape
    settings = {k: v for k, v in vars(kernel).items() if not k.startswith("_")}
    return {
        "ppltk_version": __version__,
        "kernel": f"{kernel!r} {stable_hash(settings)}",
        "chains": str(chains),
        "dim": str(dim),
        "dtype": str(position.dtype),
        "num_warmup": str(num_warmup),
        "num_samples": str(num_samples),
        "seed": stable_hash(generator.get_state()),
        "options": stable_hash(options),
    }


def save_checkpoint(path: Path, run, generator_state: torch.Tensor) -> None:
    """Write ``run`` (a :class:`ppltk.mcmc.runner._Run`) to ``path`` atomically."""
    kept = run.kept
    payload = {
        "format": _FORMAT,
        "fingerprint": run.fingerprint,
        "completed": run.completed,
        "state": run.state.as_dict(),
        "params": _params_to_obj(run.params),
        "adapters": [a.state_dict() for a in run.adapters],
        "generator": generator_state,
        "positions": run.positions[:, :kept].clone(),
        "stats": {k: v[:, :kept].clone() for k, v in run.stats.items()},
        "warmup_divergences": run.warmup_divergences,
        "restarts": run.restarts,
        "nonfinite": getattr(run.ld, "nonfinite", None),
        "monitor": None if run.monitor is None else run.monitor.state_dict(),
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
    found, expected = payload.get("fingerprint", {}), run.fingerprint
    differ = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
    if differ:
        detail = ", ".join(f"{k} (saved {found.get(k)!r}, now {expected.get(k)!r})" for k in differ)
        raise CheckpointMismatchError(
            f"Expected `checkpoint` {str(path)!r} to match this run's configuration, but found "
            f"differences in: {detail}. Delete the file or pass another path to start afresh."
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
    run.restarts = payload["restarts"]
    if payload.get("nonfinite") is not None and hasattr(run.ld, "nonfinite"):
        run.ld.nonfinite = payload["nonfinite"]
    if run.monitor is not None and payload["monitor"] is not None:
        run.monitor.load_state_dict(payload["monitor"])
