"""Failures of the cluster itself are DistributedError, with a bounded wait; unit errors pass."""

import socket
import time

import pytest

distributed = pytest.importorskip("distributed")

from ppltk.distributed import DaskExecutor  # noqa: E402
from ppltk.errors import ArgumentError, DistributedError  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nap(seconds):
    time.sleep(seconds)
    return seconds


def fail(unit):
    raise ValueError(f"unit {unit} is broken")


def test_dead_scheduler_address_is_a_distributed_error():
    start = time.perf_counter()
    with pytest.raises(DistributedError, match="could not connect"):
        DaskExecutor(f"tcp://127.0.0.1:{_free_port()}", connect_timeout=1)
    assert time.perf_counter() - start < 15


@pytest.fixture
def threads_cluster():
    def make(n_workers):
        return distributed.LocalCluster(
            n_workers=n_workers, processes=False, threads_per_worker=1, dashboard_address=":0"
        )

    made = []
    yield lambda n: made.append(make(n)) or made[-1]
    for cluster in made:
        cluster.close()


def test_no_workers_gives_up_after_worker_timeout(threads_cluster):
    with DaskExecutor(threads_cluster(0), worker_timeout=0.5) as ex:
        start = time.perf_counter()
        with pytest.raises(DistributedError, match="no.*connected|none connected"):
            ex.map_units(nap, [0.0], progress=False)
        assert time.perf_counter() - start < 10


def test_overall_timeout_is_a_distributed_error(threads_cluster):
    with DaskExecutor(threads_cluster(1), timeout=0.3) as ex:
        with pytest.raises(DistributedError, match="timed out"):
            ex.map_units(nap, [1.0, 1.0], progress=False)


def test_unit_errors_are_re_raised_unchanged(threads_cluster):
    with DaskExecutor(threads_cluster(1)) as ex:
        with pytest.raises(ValueError, match="unit 3 is broken"):
            ex.map_units(fail, [3], progress=False)
        assert ex.map_units(nap, [0.0, 0.0], progress=False) == [0.0, 0.0]


def test_bad_timeouts_are_argument_errors(threads_cluster):
    cluster = threads_cluster(0)
    for kwargs in ({"timeout": 0}, {"worker_timeout": -1}, {"connect_timeout": "x"}):
        with pytest.raises(ArgumentError):
            DaskExecutor(cluster, **kwargs)


def test_lost_scheduler_is_a_distributed_error():
    import contextlib
    import threading

    cluster = distributed.LocalCluster(
        n_workers=1, processes=False, threads_per_worker=1, dashboard_address=":0"
    )
    ex = DaskExecutor(cluster, timeout=30)
    client = ex.client
    threading.Timer(0.5, lambda: cluster.sync(cluster.scheduler.close)).start()
    try:
        with pytest.raises(DistributedError, match="connection was lost"):
            ex.map_units(nap, [2.0, 2.0], progress=False)
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=1)
        with contextlib.suppress(Exception):
            cluster.close(timeout=1)
