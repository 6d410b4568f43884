"""The Dask distributed executor: units become Dask tasks, results come back in input order.

Fault tolerance is Dask's own: when a worker process dies, the scheduler reschedules the tasks it
held on the surviving (or restarted) workers, up to ``distributed.scheduler.allowed-failures``
times per task; a task that exhausts that budget ends as :class:`distributed.KilledWorker`, and
:meth:`DaskExecutor.map_units` resubmits it under a fresh key up to ``retries`` more times.
Because every unit carries its own seed, a re-run unit returns exactly what the first run
would have returned, and each unit's result is stored once, by its index.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ppltk._progress import progress_bar
from ppltk.distributed.errors import DistributedError
from ppltk.errors import ArgumentError

__all__ = ["DaskExecutor", "default_num_workers"]


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - dask is in the `dist`/`test` extras
        raise ImportError(
            "executor='dask' needs Dask distributed: pip install 'ppltk[dist]'"
        ) from exc
    return distributed


def default_num_workers() -> int:
    """Cores available to this process (``os.sched_getaffinity`` where supported)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


class _Unit:
    """Picklable wrapper run on a worker: pin torch's thread count, then call ``fn(unit)``."""

    def __init__(self, fn: Callable[[Any], Any], torch_threads: int | None) -> None:
        self.fn = fn
        self.torch_threads = torch_threads

    def __call__(self, unit: Any) -> Any:
        if self.torch_threads is not None:
            import torch

            if torch.get_num_threads() != self.torch_threads:
                torch.set_num_threads(self.torch_threads)
        return self.fn(unit)


class DaskExecutor:
    """Run work units as tasks on a Dask distributed cluster.

    Parameters
    ----------
    target
        ``None``: start a :class:`dask.distributed.LocalCluster` with ``n_workers`` single-threaded
        worker *processes* (default: one per available core). A scheduler address string
        (``"tcp://host:8786"``): connect to it. A :class:`dask.distributed.Client`: use it. A Dask
        cluster object (``LocalCluster``, ``dask_jobqueue.SLURMCluster``/``PBSCluster``, ...):
        connect a client to it. Only what this object creates is closed by :meth:`close`.
    n_workers, threads_per_worker
        Size of the LocalCluster started when ``target`` is ``None``.
    torch_threads
        Torch intra-op threads on the workers (set before each unit; ``None`` leaves them).
        One thread per single-threaded worker avoids oversubscribing the cores.
    **cluster_kwargs
        Passed to :class:`~dask.distributed.LocalCluster` (e.g. ``memory_limit``).

    Examples
    --------
    Reuse one cluster for several calls::

        with DaskExecutor(n_workers=4) as ex:
            fit = sample_chains(model, data, num_chains=8, executor=ex)
            cal = ppltk.calibration.sbc(model, "nuts", 200, executor=ex)
    """

    name = "dask"

    def __init__(
        self,
        target: Any = None,
        *,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        torch_threads: int | None = 1,
        **cluster_kwargs: Any,
    ) -> None:
        distributed = _import_distributed()
        self.torch_threads = torch_threads
        self._owned: list[Any] = []
        if target is None:
            cluster_kwargs.setdefault("dashboard_address", ":0")  # a free port, never 8787
            cluster = distributed.LocalCluster(
                n_workers=n_workers or default_num_workers(),
                threads_per_worker=threads_per_worker,
                processes=True,
                **cluster_kwargs,
            )
            self._owned.append(cluster)
            target = cluster
        if isinstance(target, distributed.Client):
            self.client = target
        elif isinstance(target, str) or hasattr(target, "scheduler_address"):
            self.client = distributed.Client(target, set_as_default=False)
            self._owned.insert(0, self.client)
        else:
            raise ArgumentError(
                "Expected `target` to be None, a scheduler address, a dask Client or a dask "
                f"cluster, but found {type(target).__name__}"
            )

    @property
    def num_workers(self) -> int:
        """Workers currently connected to the scheduler."""
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def map_units(
        self,
        fn: Callable[[Any], Any],
        units: Sequence[Any],
        *,
        retries: int = 3,
        progress: bool = True,
        desc: str = "units",
    ) -> list[Any]:
        """Return ``[fn(u) for u in units]`` computed on the cluster, each unit exactly once.

        A unit whose worker died too often (:class:`distributed.KilledWorker`) is resubmitted up
        to ``retries`` times; an exception raised *by the unit* is re-raised at once (units are
        seeded, so a re-run would fail the same way) and the other units are cancelled.
        """
        distributed = _import_distributed()
        from distributed.scheduler import KilledWorker

        wrapped = _Unit(fn, self.torch_threads)
        label = re.sub(r"\W+", "_", getattr(fn, "__name__", "unit")).strip("_") or "unit"
        prefix = f"ppltk-{label}-{uuid.uuid4().hex[:10]}"
        index: dict[str, tuple[int, int]] = {}
        futures: list[Any] = []

        def submit(i: int, attempt: int):
            key = f"{prefix}-{i}-{attempt}"
            index[key] = (i, attempt)
            futures.append(self.client.submit(wrapped, units[i], key=key, pure=False))
            return futures[-1]

        for i in range(len(units)):
            submit(i, 0)
        results: list[Any] = [None] * len(units)
        counts = [0] * len(units)
        pending = distributed.as_completed(list(futures), loop=self.client.loop)
        with progress_bar(len(units), desc, progress) as bar:
            for future in pending:
                i, attempt = index[future.key]
                if future.status == "error":
                    exc = future.exception()
                    if isinstance(exc, KilledWorker) and attempt < retries:
                        pending.add(submit(i, attempt + 1))
                        continue
                    self.client.cancel([f for f in futures if not f.done()])
                    future.result()  # re-raises the remote exception with its traceback
                results[i] = future.result()
                counts[i] += 1
                bar.update(1)
                future.release()
        _check_exactly_once(counts)
        return results

    def close(self) -> None:
        """Close the client/cluster this executor created (not those passed in)."""
        while self._owned:
            self._owned.pop(0).close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DaskExecutor(scheduler={self.client.scheduler.address!r})"


def _check_exactly_once(counts: list[int]) -> None:
    wrong = [i for i, c in enumerate(counts) if c != 1]
    if wrong:
        raise DistributedError(
            f"Expected every unit's result exactly once, but units {wrong[:10]} came back "
            f"{[counts[i] for i in wrong[:10]]} times"
        )
