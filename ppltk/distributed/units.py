"""Mapping work units over an executor: the one entry point every distributed helper uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ppltk.distributed.executor import get_executor
from ppltk.distributed.seeds import unit_seeds
from ppltk.errors import ArgumentError

__all__ = ["map_units", "map_seeded"]


def map_units(
    fn: Callable[[Any], Any],
    units: Sequence[Any],
    executor: Any = None,
    *,
    retries: int = 3,
    progress: bool = True,
    desc: str | None = None,
) -> list[Any]:
    """Apply ``fn`` to every work unit on ``executor``; results in input order, each exactly once.

    Parameters
    ----------
    fn
        A picklable callable ``fn(unit) -> result`` (a module-level function or a picklable
        object; Dask pickles closures with cloudpickle). It must not rely on global state of the
        calling process: all it needs travels in ``unit``.
    units
        Picklable work units.
    executor
        ``None`` (in process), ``"dask"`` (a LocalCluster sized to this machine), a scheduler
        address, a :class:`dask.distributed.Client`, a Dask cluster object (e.g. from
        dask-jobqueue) or an executor object; see :func:`ppltk.distributed.get_executor`.
    retries
        On Dask: resubmissions of a unit whose worker was lost more often than the scheduler
        tolerates (``KilledWorker``). Exceptions raised by ``fn`` itself are re-raised.
    progress
        Show a tqdm bar of finished units.

    Returns
    -------
    list
        ``[fn(units[0]), fn(units[1]), ...]``; the same values on every executor when ``fn`` is
        deterministic given its unit (seed every unit, see :func:`map_seeded`).

    Examples
    --------
    >>> map_units(abs, [-1, 2, -3])
    [1, 2, 3]
    """
    if not callable(fn):
        raise ArgumentError(f"Expected `fn` to be callable, but found {type(fn).__name__}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ArgumentError(f"Expected `retries` to be an int >= 0, but found {retries!r}")
    units = list(units)
    label = desc or getattr(fn, "__name__", "units")
    with get_executor(executor) as ex:
        return ex.map_units(fn, units, retries=retries, progress=progress, desc=label)


@dataclass(frozen=True)
class _Seeded:
    fn: Callable[..., Any]
    item: Any
    seed: int

    def run(self) -> Any:
        return self.fn(self.item, seed=self.seed)


def _run_seeded(unit: _Seeded) -> Any:
    return unit.run()


def map_seeded(
    fn: Callable[..., Any],
    items: Sequence[Any],
    executor: Any = None,
    *,
    seed: int | torch.Generator | None = 0,
    retries: int = 3,
    progress: bool = True,
) -> list[Any]:
    """Run ``fn(item, seed=seed_i)`` for every item, e.g. one fit per dataset or recording session.

    ``seed_i = unit_seeds(seed, len(items))[i]``, so item ``i`` gets the same seed (and, for a
    deterministic ``fn``, the same result) on every executor.

    Examples
    --------
    >>> def fit(data, seed):
    ...     return sum(data) + seed % 1
    >>> map_seeded(fit, [[1, 2], [3]], seed=0)
    [3, 3]
    """
    seeds = unit_seeds(seed, len(items))
    units = [_Seeded(fn, item, s) for item, s in zip(items, seeds)]
    label = f"{getattr(fn, '__name__', 'fit')} per item"
    return map_units(_run_seeded, units, executor, retries=retries, progress=progress, desc=label)
