"""Dask executor: identical results to in-process runs, worker threads, and worker failures.

One LocalCluster (2 single-threaded worker processes) serves the whole module. Worker
processes inherit this process's ``sys.path``, so functions defined here unpickle on them.
"""

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

distributed = pytest.importorskip("distributed")

from ppltk import Result  # noqa: E402
from ppltk._rng import make_generator  # noqa: E402
from ppltk.calibration import NormalMeanPosterior, normal_mean_model, sbc  # noqa: E402
from ppltk.distributed import (  # noqa: E402
    DaskExecutor,
    get_executor,
    map_seeded,
    map_units,
    sample_chains,
    smc_islands,
)
from ppltk.errors import DistributedError, DivergenceWarning  # noqa: E402


@pytest.fixture(scope="module")
def client():
    # Dask's default HTTP port 8787 may be taken (another cluster on a shared machine): keep it
    # taken while ours starts, to show that ":0" avoids the "port in use" warning.
    with socket.socket() as blocker:
        with contextlib.suppress(OSError):
            blocker.bind(("127.0.0.1", 8787))
            blocker.listen()
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    client = distributed.Client(cluster, set_as_default=False)
    client.run(__import__, "ppltk.distributed")  # warm the workers' imports once
    yield client
    client.close()
    cluster.close()


def fake_island(model, *args, seed):
    gen = make_generator(seed)
    x = torch.randn(1, 4, generator=gen, dtype=torch.float64)
    return Result(draws={"x": x}, log_evidence=float(x.sum()), method="fake-smc")


def square_after(unit):
    time.sleep(unit[1])
    return unit[0] ** 2


def torch_threads(_):
    return torch.get_num_threads()


def fails_on_three(unit):
    if unit == 3:
        raise ValueError("unit 3 is broken")
    return unit


def test_map_units_on_dask_keeps_input_order(client):
    # later units finish first (shorter sleeps), yet results come back in input order
    units = [(i, 0.05 * (5 - i)) for i in range(6)]
    assert map_units(square_after, units, client, progress=False) == [i * i for i in range(6)]


def test_worker_units_run_with_one_torch_thread(client):
    client.run(torch.set_num_threads, 2)
    assert map_units(torch_threads, range(4), client, progress=False) == [1] * 4


def test_unit_exception_is_raised_on_the_client(client):
    with pytest.raises(ValueError, match="unit 3 is broken"):
        map_units(fails_on_three, range(6), client, progress=False)


@pytest.mark.parametrize("method, chains_per_unit", [("nuts", 2), ("mh", 1)])
def test_sample_chains_identical_local_and_dask(client, method, chains_per_unit):
    y = torch.linspace(-1.0, 2.0, 6)
    kw = dict(
        method=method,
        num_chains=3,
        chains_per_unit=chains_per_unit,
        seed=7,
        num_warmup=30,
        num_samples=20,
    )
    local = sample_chains(normal_mean_model, 6, y=y, progress=False, **kw)
    remote = sample_chains(normal_mean_model, 6, y=y, executor=client, progress=False, **kw)
    assert remote.num_chains == 3
    np.testing.assert_array_equal(local["mu"], remote["mu"])
    for name in local.stats:
        np.testing.assert_array_equal(local.stats[name], remote.stats[name])
    assert local.attrs["unit_seeds"] == remote.attrs["unit_seeds"]


def test_worker_warnings_reach_the_client(client):
    from test_distributed_units import warning_chains

    with pytest.warns(DivergenceWarning) as record:
        res = sample_chains(
            None, method=warning_chains, num_chains=3, seed=0, executor=client, progress=False
        )
    assert res.attrs["num_divergences"] == 4
    messages = sorted(str(w.message) for w in record)
    assert messages == [f"chain group {g}: 2 divergent transitions" for g in (1, 2)]


def test_sbc_identical_local_and_dask(client):
    sampler = NormalMeanPosterior(num_draws=19)
    local = sbc(normal_mean_model, sampler, 24, num_draws=19, seed=5, progress=False)
    remote = sbc(
        normal_mean_model,
        sampler,
        24,
        num_draws=19,
        seed=5,
        executor=client,
        replications_per_unit=5,
        progress=False,
    )
    np.testing.assert_array_equal(local.ranks["mu"], remote.ranks["mu"])
    np.testing.assert_array_equal(local.prior_draws["mu"], remote.prior_draws["mu"])
    assert local.p_values == remote.p_values


def test_smc_islands_and_map_seeded_identical_local_and_dask(client):
    local = smc_islands(None, method=fake_island, num_islands=4, seed=3, progress=False)
    remote = smc_islands(
        None, method=fake_island, num_islands=4, seed=3, executor=client, progress=False
    )
    np.testing.assert_array_equal(local["x"], remote["x"])
    assert local.log_evidence == remote.log_evidence
    y = torch.linspace(-1.0, 1.0, 4)
    kw = dict(num_islands=2, num_particles=64, seed=2, progress=False)
    a = smc_islands(normal_mean_model, 4, y=y, **kw)
    b = smc_islands(normal_mean_model, 4, y=y, executor=client, **kw)
    np.testing.assert_array_equal(a["mu"], b["mu"])
    assert a.log_evidence == b.log_evidence
    fit = map_seeded(
        lambda data, seed: float(sum(data)) + seed, [[1], [2, 3]], seed=1, progress=False
    )
    assert (
        map_seeded(
            lambda data, seed: float(sum(data)) + seed,
            [[1], [2, 3]],
            client,
            seed=1,
            progress=False,
        )
        == fit
    )


def decode_session(session, seed):
    """One per-dataset fit: a DKF trained and scored on one recording session."""
    from ppltk.filtering import DiscriminativeKalmanFilter, normalised_rmse

    X, Z = session
    n = int(0.8 * len(X))
    mean, _ = DiscriminativeKalmanFilter("nw", warn=False).fit(X[:n], Z[:n]).filter(X[n:])
    return float(normalised_rmse(mean, Z[n:]))


def test_per_session_dkf_fits_identical_local_and_dask(client):
    from ppltk.datasets.neural import simulate_neural_decoding

    sessions = [simulate_neural_decoding(10, 300, seed=s) for s in range(3)]
    local = map_seeded(decode_session, sessions, seed=0, progress=False)
    remote = map_seeded(decode_session, sessions, client, seed=0, progress=False)
    # Same seeds, same sessions, same order. Not bitwise: the DKF's least-squares fit
    # (torch.linalg.lstsq, MKL gelsy) varies in the last bits when run off the main thread, as
    # Dask runs tasks; observed differences ~1e-14 relative, so 1e-9 is far above that noise
    # and far below the spread between sessions (> 1e-2).
    assert remote == pytest.approx(local, rel=1e-9)
    assert min(abs(a - b) for a, b in zip(local, local[1:])) > 1e-3  # order matters


def test_executor_from_scheduler_address_and_dask_executor(client):
    address = client.scheduler.address
    assert address.startswith("tcp://")
    with get_executor(address) as ex:
        assert isinstance(ex, DaskExecutor) and ex.num_workers == 2
        assert ex.client is not client
        assert ex.map_units(abs, [-2, 3], progress=False) == [2, 3]
    assert ex.client.status == "closed"  # the executor closed the client it opened
    assert client.status == "running"  # ... and left the caller's client alone
    with get_executor(client.cluster) as ex:  # a cluster object (as dask-jobqueue makes)
        assert ex.map_units(abs, [-4], progress=False) == [4]


@pytest.mark.slow
def test_dask_string_starts_a_local_cluster_sized_to_the_machine():
    from ppltk.distributed import default_num_workers

    with get_executor("dask") as ex:
        assert ex.num_workers == default_num_workers()
        assert ex.map_units(torch_threads, range(3), progress=False) == [1, 1, 1]


# --- worker failure -------------------------------------------------------------------------


def marked_unit(unit):
    """Write a marker '<index>-<pid>' when a unit starts, then work for a while."""
    index, folder = unit
    Path(folder, f"{index}-{os.getpid()}").touch()
    time.sleep(0.3)
    return index, os.getpid()


def kill_first_busy_worker(folder: Path, timeout: float = 60.0) -> dict:
    """Test helper: SIGKILL the worker process that starts the first unit, mid-unit."""
    killed = {}

    def watch():
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            marks = sorted(os.listdir(folder))
            if marks:
                index, pid = marks[0].split("-")
                os.kill(int(pid), signal.SIGKILL)
                killed.update(index=int(index), pid=int(pid))
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    killed["thread"] = thread
    return killed


def set_allowed_failures(client, value: int) -> int:
    """Set the scheduler's tolerance for lost workers per task; return the previous value."""

    def swap(dask_scheduler, value=value):
        old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, value
        return old

    return client.run_on_scheduler(swap)


# allowed_failures=3 (Dask's default): the scheduler reschedules the lost task itself;
# allowed_failures=0: the task ends as KilledWorker and map_units resubmits it (retries=1).
@pytest.mark.parametrize("allowed_failures, retries", [(3, 3), (0, 1)])
def test_killed_worker_run_completes_with_every_unit_exactly_once(
    client, tmp_path, allowed_failures, retries
):
    client.wait_for_workers(2, timeout=60)
    pids_before = set(client.run(os.getpid).values())
    previous = set_allowed_failures(client, allowed_failures)
    try:
        killed = kill_first_busy_worker(tmp_path)
        units = [(i, str(tmp_path)) for i in range(8)]
        results = map_units(marked_unit, units, client, retries=retries, progress=False)
        killed["thread"].join()
    finally:
        set_allowed_failures(client, previous)
    assert killed.get("pid") in pids_before  # a real worker process died mid-unit ...
    assert [index for index, _ in results] == list(range(8))  # ... yet every unit, once, in order
    starts = [m.split("-") for m in os.listdir(tmp_path)]
    reruns = [int(i) for i, pid in starts if int(i) == killed["index"]]
    assert len(reruns) == 2  # the killed unit started twice (on the dead worker, then again)
    assert results[killed["index"]][1] != killed["pid"]  # its result came from a live worker


def test_killed_worker_without_retries_raises(client, tmp_path):
    client.wait_for_workers(2, timeout=60)
    previous = set_allowed_failures(client, 0)
    try:
        killed = kill_first_busy_worker(tmp_path)
        with pytest.raises(DistributedError, match="retries are spent") as info:
            map_units(
                marked_unit,
                [(i, str(tmp_path)) for i in range(4)],
                client,
                retries=0,
                progress=False,
            )
        killed["thread"].join()
    finally:
        set_allowed_failures(client, previous)
    assert isinstance(info.value.__cause__, distributed.KilledWorker)
