"""Where work units run: in this process (default) or on a Dask distributed cluster.

An *executor* maps a picklable callable over a list of picklable work units and returns the
results in input order. :func:`get_executor` turns the user-facing ``executor=`` argument into
one:

- ``None``, ``"local"``, ``"inprocess"``: this process, one unit after the other;
- ``"dask"``: a fresh :class:`dask.distributed.LocalCluster` sized to the machine (one
  single-threaded worker process per available core), closed after the call;
- a scheduler address such as ``"tcp://host:8786"``: an existing Dask scheduler (a real
  cluster); the client opened for it is closed after the call;
- a :class:`dask.distributed.Client`: that client's cluster (left open);
- a Dask cluster object (``LocalCluster``, ``dask_jobqueue.SLURMCluster``, ...): that cluster
  (left open);
- an :class:`Executor` (:class:`InProcessExecutor`, :class:`~ppltk.distributed.DaskExecutor`):
  itself, e.g. to reuse one cluster across calls.

On a batch system (SLURM, PBS, SGE, LSF) ``dask-jobqueue`` starts workers as batch jobs::

    from dask_jobqueue import SLURMCluster        # or PBSCluster, SGECluster, LSFCluster
    cluster = SLURMCluster(cores=1, processes=1, memory="4GB", walltime="01:00:00",
                           job_script_prologue=["export OMP_NUM_THREADS=1"])
    cluster.scale(jobs=32)                        # 32 single-core workers
    result = ppltk.distributed.sample_chains(model, data, num_chains=32, executor=cluster)

Every executor gives the same results for the same seeds: seeds are derived on the client
(:func:`ppltk.distributed.unit_seeds`), never on the workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from ppltk._progress import progress_bar
from ppltk.errors import ArgumentError

__all__ = ["Executor", "InProcessExecutor", "get_executor", "LOCAL_NAMES"]

LOCAL_NAMES = (None, "local", "inprocess", "in-process", "sequential")


@runtime_checkable
class Executor(Protocol):
    """Anything that maps a callable over work units, preserving order."""

    name: str

    def map_units(
        self,
        fn: Callable[[Any], Any],
        units: Sequence[Any],
        *,
        retries: int = 3,
        progress: bool = True,
        desc: str = "units",
    ) -> list[Any]:
        """Return ``[fn(u) for u in units]``, each unit's result exactly once, in input order."""
        ...


class InProcessExecutor:
    """Run units one after the other in this process (the default executor).

    ``retries`` is accepted for interface compatibility and ignored: an exception raised by a unit
    in process is a bug in the unit, not a lost worker, and is raised at once.
    """

    name = "in-process"

    def map_units(
        self,
        fn: Callable[[Any], Any],
        units: Sequence[Any],
        *,
        retries: int = 3,
        progress: bool = True,
        desc: str = "units",
    ) -> list[Any]:
        results = []
        with progress_bar(len(units), desc, progress) as bar:
            for unit in units:
                results.append(fn(unit))
                bar.update(1)
        return results

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "InProcessExecutor()"


@contextlib.contextmanager
def get_executor(executor: Any = None) -> Iterator[Executor]:
    """Resolve the ``executor=`` argument (see the module docstring) into an :class:`Executor`.

    Resources created here (a LocalCluster for ``"dask"``, a client for an address) are closed
    when the ``with`` block ends; objects passed in by the caller are left open.
    """
    if isinstance(executor, str) and executor.lower() in LOCAL_NAMES:
        executor = None
    if executor is None:
        yield InProcessExecutor()
        return
    if isinstance(executor, Executor):
        yield executor
        return
    from ppltk.distributed._dask import DaskExecutor

    if isinstance(executor, str) and executor.lower() != "dask" and "://" not in executor:
        raise ArgumentError(
            "Expected `executor` to be None, 'local', 'dask', a scheduler address such as "
            f"'tcp://host:8786', a dask Client or cluster, but found {executor!r}"
        )
    owned = DaskExecutor(None if executor == "dask" else executor)
    try:
        yield owned
    finally:
        owned.close()
