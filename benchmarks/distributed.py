"""Benchmark: 200 SBC replications in process vs on a 2-worker Dask LocalCluster.

Two inference methods on the conjugate normal-mean model (n = 10):

- ``mh``: random-walk MH through ``ppltk.mcmc.sample`` (100 warm-up, 19 draws x thin 2), a
  cheap but real MCMC run (~0.1-0.3 s per replication): compute-bound, measures the speed-up
  (this short, little-thinned run is *not* calibrated: SBC rightly flags it, see min_p_value);
- ``exact``: the exact posterior sampler (~1 ms per replication): overhead-bound, measures
  what Dask costs per task; ``exact, 10 per task`` batches replications to amortise it.

For each: wall time in process and on the cluster (1 replication per task unless stated), the
speed-up, and the
scheduler overhead per task ``(wall x workers - sum of task compute times) / tasks`` from Dask's
task stream; plus the round trip of a no-op task. The cluster start-up is timed separately and
not included. Ranks must be identical on both executors (checked). Writes
``benchmarks/results/distributed.json`` and ``.md``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distributed.py [--fast]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# this file is named like the `distributed` package: keep its folder off the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np
import torch

torch.set_num_threads(1)

import distributed

from ppltk.calibration import NormalMeanPosterior, normal_mean_model, sbc
from ppltk.distributed import map_units

L = 19
METHODS = {
    "mh": dict(method="mh", thin=2, num_warmup=100),
    "exact": dict(method=NormalMeanPosterior(num_draws=L), thin=1),
    "exact, 10 per task": dict(
        method=NormalMeanPosterior(num_draws=L), thin=1, replications_per_unit=10
    ),
}


def noop(unit):
    return unit


def run_sbc(name: str, num: int, executor) -> tuple[float, object]:
    opts = dict(METHODS[name])
    method = opts.pop("method")
    start = time.perf_counter()
    res = sbc(
        normal_mean_model,
        method,
        num,
        args=(10,),
        num_draws=L,
        seed=0,
        executor=executor,
        progress=False,
        **opts,
    )
    return time.perf_counter() - start, res


def compute_seconds(stream: list[dict]) -> float:
    """Sum of the 'compute' intervals of the tasks in a Dask task stream."""
    return sum(
        s["stop"] - s["start"]
        for task in stream
        for s in task["startstops"]
        if s["action"] == "compute"
    )


def bench_method(name: str, num: int, client, workers: int) -> dict:
    t_local, local = run_sbc(name, num, None)
    with distributed.get_task_stream(client=client) as ts:
        t_dask, remote = run_sbc(name, num, client)
    busy = compute_seconds(ts.data)
    return {
        "method": name,
        "replications": num,
        "tasks": len(ts.data),
        "in_process_s": t_local,
        "dask_s": t_dask,
        "speedup": t_local / t_dask,
        "task_compute_s": busy,
        "overhead_per_task_ms": 1e3 * (t_dask * workers - busy) / max(len(ts.data), 1),
        # > 1 when the workers got less CPU than the in-process run (a shared machine)
        "compute_inflation": busy / t_local,
        "identical_ranks": bool(np.array_equal(local.ranks["mu"], remote.ranks["mu"])),
        "min_p_value": float(min(remote.p_values.values())),
    }


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dask": distributed.__version__,
        "cpu_count": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
    }


def table(rows: list[dict], extra: dict) -> str:
    lines = [
        "| method | reps | in-process s | 2-worker Dask s | speed-up | task compute s "
        "| compute inflation | overhead/task ms | identical ranks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['replications']} | {r['in_process_s']:.2f} | {r['dask_s']:.2f} "
            f"| {r['speedup']:.2f}x | {r['task_compute_s']:.2f} | {r['compute_inflation']:.2f}x "
            f"| {r['overhead_per_task_ms']:.2f} "
            f"| {r['identical_ranks']} |"
        )
    lines.append("")
    lines.append(
        f"No-op task round trip: {extra['noop_ms_per_task']:.2f} ms/task "
        f"({extra['noop_tasks']} tasks); cluster start-up {extra['cluster_start_s']:.1f} s "
        f"(not included above); load average {extra['machine']['loadavg_1min']:.1f} on "
        f"{extra['machine']['cpu_count']} cores. Compute inflation = summed task compute time on "
        "the workers / in-process wall time: above 1 the workers were starved of CPU by other "
        "load, which caps the speed-up below the worker count."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="40 replications instead of 200")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    num = 40 if args.fast or os.environ.get("PPLTK_FAST") == "1" else 200

    start = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster, set_as_default=False)
    client.run(__import__, "ppltk.mcmc")
    cluster_start = time.perf_counter() - start
    run_sbc("mh", 2, client)  # warm the workers (first model trace, imports)
    run_sbc("mh", 2, None)
    try:
        rows = [bench_method(name, num, client, args.workers) for name in METHODS]
        t0 = time.perf_counter()
        map_units(noop, range(num), client, progress=False)
        noop_ms = 1e3 * (time.perf_counter() - t0) / num
    finally:
        client.close()
        cluster.close()

    extra = {
        "noop_ms_per_task": noop_ms,
        "noop_tasks": num,
        "cluster_start_s": cluster_start,
        "workers": args.workers,
        "machine": machine(),
    }
    md = table(rows, extra)
    print(md)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "distributed.json").write_text(json.dumps({"rows": rows, **extra}, indent=2))
    (out / "distributed.md").write_text(
        "# SBC replications: in process vs 2-worker Dask LocalCluster\n\n" + md + "\n"
    )


if __name__ == "__main__":
    main()
