"""The Dask distributed executor: units become Dask tasks, results come back in input order.

Fault tolerance is Dask's own: when a worker process dies, the scheduler reschedules the tasks it
held on the surviving (or restarted) workers, up to ``distributed.scheduler.allowed-failures``
times per task; a task that exhausts that budget ends as :class:`distributed.KilledWorker`, and
:meth:`DaskExecutor.map_units` resubmits it under a fresh key up to ``retries`` more times.
Because every unit carries its own seed, a re-run unit returns exactly what the first run
would have returned, and each unit's result is stored once, by its index.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
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
    connect_timeout
        Seconds to wait for the scheduler when connecting to an address or cluster.
    worker_timeout
        Seconds :meth:`map_units` waits for at least one worker before it gives up (a
        scheduler without workers would otherwise wait forever).
    timeout
        Overall seconds one :meth:`map_units` call may take (``None``: no limit).
    **cluster_kwargs
        Passed to :class:`~dask.distributed.LocalCluster` (e.g. ``memory_limit``).

    Raises
    ------
    DistributedError
        On every failure of the cluster itself (no scheduler at the address, no workers, a
        unit that killed its workers more often than ``retries`` allows, a lost scheduler, the
        overall timeout), with the Dask error as its cause. An exception raised by a unit's
        own code is re-raised unchanged.

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
        connect_timeout: float = 10.0,
        worker_timeout: float = 120.0,
        timeout: float | None = None,
        **cluster_kwargs: Any,
    ) -> None:
        distributed = _import_distributed()
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("worker_timeout", worker_timeout),
        ):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ArgumentError(f"Expected `{name}` a number > 0, but found {value!r}")
        if timeout is not None and (not isinstance(timeout, (int, float)) or not timeout > 0):
            raise ArgumentError(f"Expected `timeout` None or a number > 0, but found {timeout!r}")
        self.torch_threads = torch_threads
        self.worker_timeout, self.timeout = float(worker_timeout), timeout
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
            self.client = _connect(distributed, target, connect_timeout)
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
        if not units:
            return []
        self._wait_for_a_worker()
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

        results: list[Any] = [None] * len(units)
        counts = [0] * len(units)
        try:
            for i in range(len(units)):
                submit(i, 0)
            pending = distributed.as_completed(
                list(futures), loop=self.client.loop, timeout=self.timeout
            )
            with progress_bar(len(units), desc, progress) as bar:
                for future in pending:
                    i, attempt = index[future.key]
                    retry = functools.partial(submit, i, attempt + 1)
                    value = self._result(future, attempt, retries, retry, pending)
                    if value is _RESUBMITTED:
                        continue
                    results[i] = value
                    counts[i] += 1
                    bar.update(1)
                    future.release()
        except BaseException as error:
            self._cancel(futures)
            if not getattr(error, "_ppltk_unit_error", False):
                _raise_cluster_error(error, self)
            raise
        _check_exactly_once(counts)
        return results

    def _result(self, future, attempt, retries, resubmit, pending):
        """The unit's result; a resubmission marker after a killed worker (retries left)."""
        from distributed.scheduler import KilledWorker

        if future.status == "error":
            exc = future.exception()
            if isinstance(exc, KilledWorker):
                if attempt < retries:
                    pending.add(resubmit())
                    return _RESUBMITTED
                raise DistributedError(
                    f"Expected every unit to finish, but a unit killed its workers "
                    f"{attempt + 1} time(s) and the {retries} retries are spent: {exc}"
                ) from exc
        try:
            return future.result()  # re-raises a unit's own exception with its traceback
        except BaseException as error:
            if future.status == "error":  # the unit's code failed, not the cluster
                error._ppltk_unit_error = True
            raise

    def _wait_for_a_worker(self) -> None:
        try:
            self.client.wait_for_workers(1, timeout=self.worker_timeout)
        except (TimeoutError, OSError) as error:
            raise DistributedError(
                f"Expected at least one Dask worker at {self._address()}, but none connected "
                f"within worker_timeout={self.worker_timeout:g} s"
            ) from error

    def _cancel(self, futures: list) -> None:
        with contextlib.suppress(Exception):  # the scheduler may be gone already
            self.client.cancel([f for f in futures if not f.done()])

    def _address(self) -> str:
        try:
            return repr(self.client.scheduler.address)
        except Exception:  # noqa: BLE001 - only for a message
            return "the scheduler"

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


_RESUBMITTED = object()


def _connect(distributed, target, timeout: float):
    """A client for an address or a cluster; a dead address is a :class:`DistributedError`."""
    try:
        return distributed.Client(target, set_as_default=False, timeout=timeout)
    except (OSError, TimeoutError) as error:
        where = target if isinstance(target, str) else getattr(target, "scheduler_address", target)
        raise DistributedError(
            f"Expected a Dask scheduler at {where!r}, but could not connect within "
            f"connect_timeout={timeout:g} s ({type(error).__name__}: {error})"
        ) from error


def _raise_cluster_error(error: BaseException, executor: DaskExecutor) -> None:
    """Re-raise a failure of the cluster (not of a unit's code) as :class:`DistributedError`."""
    from distributed.comm.core import CommClosedError

    if isinstance(error, DistributedError):
        return
    if isinstance(error, TimeoutError):
        raise DistributedError(
            f"Expected every unit within timeout={executor.timeout} s, but the run timed out "
            f"on {executor._address()}"
        ) from error
    if isinstance(
        error, (CommClosedError, asyncio.CancelledError, concurrent.futures.CancelledError)
    ):
        raise DistributedError(
            f"Expected the Dask scheduler {executor._address()} to stay reachable, but the "
            f"connection was lost ({type(error).__name__}: {error})"
        ) from error


def _check_exactly_once(counts: list[int]) -> None:
    wrong = [i for i, c in enumerate(counts) if c != 1]
    if wrong:
        raise DistributedError(
            f"Expected every unit's result exactly once, but units {wrong[:10]} came back "
            f"{[counts[i] for i in wrong[:10]]} times"
        )
