"""Latency and throughput of the online DKF step next to filterpy's KF and UKF.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/filtering.py [--quick]``.
Writes ``benchmarks/results/filtering.json`` and ``.md``.

* Per-step latency (median, p99) of one online update on 100 neurons, 2-D state: the DKF
  step including Nadaraya–Watson f(x) on 5,000 training points and Q(x) (constant, or
  kernel-smoothed on the held-out rows); ppltk's KF step; filterpy's KF (linear-Gaussian
  fitted by least squares) and UKF (Poisson-GLM observation) predict+update.
* Throughput (stream-steps per second) of filtering 1,000 streams batched against a loop
  over streams, for the KF, the DKF recursion given f and Q, and the full DKF.
* Decoding accuracy (5,000 training / 1,000 test bins, 2-D velocity): nRMSE of the KF and
  the DKF with each regressor (NW, MLP, GP) and with ``regressor="auto"``, with fit time
  (thread CPU seconds) and online step latency (median / p99, wall and thread CPU), on the
  project simulator (exponentiated cosine tuning) and on a simulator of another family
  (von Mises direction tuning with a speed gain), each as 100 raw spike counts and as their
  10 leading principal components (the shape of the Flint et al. data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from filterpy.kalman import KalmanFilter as FilterpyKF
from filterpy.kalman import MerweScaledSigmaPoints
from filterpy.kalman import UnscentedKalmanFilter as FilterpyUKF

from ppltk.datasets import simulate_neural_decoding, simulate_vonmises_neurons
from ppltk.filtering import (
    DiscriminativeKalmanFilter,
    KalmanFilter,
    fit_poisson_observation,
    fit_state_dynamics,
    normalised_rmse,
)
from ppltk.filtering._gaussian import GaussianState, predict_linear

torch.set_num_threads(1)
RESULTS = Path(__file__).parent / "results"


def latency(step, inputs, warmup: int = 50) -> dict:
    """Median and p99 in milliseconds of ``step(x)`` over ``inputs`` (after ``warmup`` calls)."""
    for x in inputs[:warmup]:
        step(x)
    wall, cpu = [], []
    for x in inputs[warmup:]:
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        step(x)
        cpu.append(time.thread_time_ns() - start_cpu)
        wall.append(time.perf_counter_ns() - start)
    ms, cpu_ms = np.array(wall) / 1e6, np.array(cpu) / 1e6
    return {
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        # thread CPU time leaves out time the thread spent preempted on a shared machine
        "cpu_median_ms": float(np.median(cpu_ms)),
        "cpu_p99_ms": float(np.percentile(cpu_ms, 99)),
        "n": len(ms),
    }


def filterpy_kf(kf: KalmanFilter):
    fp = FilterpyKF(dim_x=kf.state_dim, dim_z=kf.obs_dim)
    fp.F, fp.Q, fp.H, fp.R = (t.numpy() for t in (kf.A, kf.Gamma, kf.H, kf.R))
    fp.x, fp.P = np.zeros((kf.state_dim, 1)), kf.init_cov.numpy().copy()
    b = kf.b.numpy().reshape(-1, 1)

    def step(x):
        fp.predict()
        fp.update(x.reshape(-1, 1) - b)

    return step


def filterpy_ukf(X_tr, Z_tr):
    dyn, glm = fit_state_dynamics(Z_tr), fit_poisson_observation(X_tr, Z_tr)
    A, W, c = dyn.A.numpy(), glm.W.numpy(), glm.c.numpy()
    points = MerweScaledSigmaPoints(2, alpha=1.0, beta=2.0, kappa=0.0)
    fp = FilterpyUKF(
        2, W.shape[0], dt=1.0, hx=lambda z: np.exp(W @ z + c), fx=lambda z, dt: A @ z, points=points
    )
    fp.Q, fp.R, fp.x, fp.P = dyn.Gamma.numpy(), glm.R.numpy(), np.zeros(2), dyn.S.numpy()

    def step(x):
        fp.predict()
        fp.update(x)

    return step


def ppltk_step(filt):
    filt.reset()

    def step(x):
        filt.step(x)

    return step


def throughput(run, streams: int, steps: int, repeats: int = 1) -> float:
    """Stream-steps per second of ``run()`` that filters ``streams`` x ``steps``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return streams * steps / best


def dkf_recursion(dkf, f, Q):
    """The DKF time loop given precomputed f [..., T, d], Q [..., T, d, d]."""
    d = dkf.A.shape[-1]
    state = GaussianState(
        dkf.init_mean.expand(*f.shape[:-2], d), dkf.init_cov.expand(*f.shape[:-2], d, d)
    )
    for t in range(f.shape[-2]):
        state, _ = dkf.update(
            predict_linear(state, dkf.A, dkf.Gamma), f[..., t, :], Q[..., t, :, :]
        )
    return state


def cuda_throughput(streams: int = 100_000, T: int = 50) -> dict:
    """Batched KF and DKF on 100,000 streams on the GPU (float64), stream-steps per second."""
    dev = torch.device("cuda")
    X, Z = simulate_neural_decoding(100, 6250, 20.0, seed=0, tuning="exponential", device=dev)
    kf_c = KalmanFilter().fit(X, Z)
    dkf_c = DiscriminativeKalmanFilter("nw", "constant", warn=False).fit(X, Z)
    gen = torch.Generator(device=dev).manual_seed(2)
    rates = torch.rand(streams, T, 100, generator=gen, device=dev, dtype=torch.float64)
    Xb = torch.poisson(rates, generator=gen)
    out = {}
    for name, run in [
        ("KF", lambda: kf_c.filter(Xb)),
        ("DKF incl. NW f(x)", lambda: dkf_c.filter(Xb)),
    ]:
        run()
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        out[name] = streams * T / (time.perf_counter() - start)
    return {
        "streams": streams,
        "steps": T,
        "steps_per_s": out,
        "device": torch.cuda.get_device_name(),
    }


def _principal_components(X: torch.Tensor, k: int, n_train: int) -> torch.Tensor:
    """Standardised inputs projected on their ``k`` leading training principal components."""
    mean, std = X[:n_train].mean(0), X[:n_train].std(0).clamp_min(1e-9)
    Xs = (X - mean) / std
    return Xs @ torch.linalg.svd(Xs[:n_train], full_matrices=False)[2][:k].mT


def accuracy(quick: bool) -> dict:
    """nRMSE, fit time and step latency of KF and DKF variants on two simulator families."""
    n_train, n_test = (2000, 500) if quick else (5000, 1000)
    T = n_train + n_test
    sims = {
        "project (exp. cosine), 100 counts": simulate_neural_decoding(
            100, T, 20.0, seed=0, tuning="exponential"
        ),
        "von Mises + speed gain, 100 counts": simulate_vonmises_neurons(100, T, 20.0, seed=0),
    }
    for name in list(sims):
        X, Z = sims[name]
        sims[name.replace("100 counts", "10 PCs")] = (_principal_components(X, 10, n_train), Z)
    methods = {
        "KF": lambda: KalmanFilter(),
        "DKF-NW": lambda: DiscriminativeKalmanFilter("nw", warn=False),
        "DKF-MLP": lambda: DiscriminativeKalmanFilter("mlp", warn=False),
        "DKF-GP": lambda: DiscriminativeKalmanFilter("gp", warn=False),
        "DKF-auto": lambda: DiscriminativeKalmanFilter(warn=False),
    }
    out = {}
    for sim, (X, Z) in sims.items():
        X_tr, Z_tr, X_te, Z_te = X[:n_train], Z[:n_train], X[n_train:], Z[n_train:]
        rows = {}
        for name, make in methods.items():
            model = make()
            start_cpu, start = time.thread_time(), time.perf_counter()
            model.fit(X_tr, Z_tr)
            fit_cpu, fit_wall = time.thread_time() - start_cpu, time.perf_counter() - start
            means, _ = model.filter(X_te)
            lat = latency(ppltk_step(model), X_te[: 300 if quick else 1000])
            rows[name] = {
                "nrmse": float(normalised_rmse(means, Z_te)),
                "fit_cpu_s": fit_cpu,
                "fit_wall_s": fit_wall,
                "step": lat,
                "choice": getattr(model, "regressor_name_", None) if name == "DKF-auto" else None,
            }
            print(f"{sim} {name}: nRMSE {rows[name]['nrmse']:.3f}", flush=True)
        out[sim] = rows
    return {"train": n_train, "test": n_test, "results": out}


def main(quick: bool) -> dict:
    n_train = 6250  # 80 % (5,000 rows) train NW's f, 20 % the residuals for Q
    n_steps = 300 if quick else 1050
    X, Z = simulate_neural_decoding(100, n_train + n_steps, 20.0, seed=0, tuning="exponential")
    X_tr, Z_tr, X_te = X[:n_train], Z[:n_train], X[n_train:]
    kf = KalmanFilter().fit(X_tr, Z_tr)
    dkf_c = DiscriminativeKalmanFilter("nw", "constant", warn=False).fit(X_tr, Z_tr)
    dkf_k = DiscriminativeKalmanFilter("nw", "kernel", warn=False).fit(X_tr, Z_tr)
    X_np = X_te.numpy()
    rows = {
        "ppltk DKF step (NW f, constant Q)": latency(ppltk_step(dkf_c), X_te),
        "ppltk DKF step (NW f, kernel Q)": latency(ppltk_step(dkf_k), X_te),
        "ppltk KF step": latency(ppltk_step(kf), X_te),
        "filterpy KF predict+update": latency(filterpy_kf(kf), X_np),
        "filterpy UKF predict+update": latency(filterpy_ukf(X_tr, Z_tr), X_np),
    }
    ref = rows["filterpy KF predict+update"]["median_ms"]
    for row in rows.values():
        row["speedup_vs_filterpy_kf"] = ref / row["median_ms"]

    streams, loop_streams, T = 1000, (20 if quick else 100), 50
    gen = torch.Generator().manual_seed(1)
    Xb = torch.stack(
        [
            simulate_neural_decoding(100, T, 20.0, seed=gen, tuning="exponential")[0]
            for _ in range(streams)
        ]
    )
    f, Q = dkf_c.predict_measurement(Xb)
    tp = {}
    for name, batched, single in [
        ("KF", lambda: kf.filter(Xb), lambda i: kf.filter(Xb[i])),
        (
            "DKF recursion (given f, Q)",
            lambda: dkf_recursion(dkf_c, f, Q),
            lambda i: dkf_recursion(dkf_c, f[i], Q[i]),
        ),
        ("DKF incl. NW f(x)", lambda: dkf_c.filter(Xb), lambda i: dkf_c.filter(Xb[i])),
    ]:
        b = throughput(batched, streams, T)
        loop = throughput(lambda s=single: [s(i) for i in range(loop_streams)], loop_streams, T)
        tp[name] = {"batched_steps_per_s": b, "loop_steps_per_s": loop, "ratio": b / loop}
    cuda = cuda_throughput() if torch.cuda.is_available() else None
    return {
        "accuracy": accuracy(quick),
        "cuda": cuda,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "quick": quick,
        },
        "latency": rows,
        "throughput": tp,
        "setup": {
            "neurons": 100,
            "state_dim": 2,
            "nw_training_points": dkf_c.regressor.X_train.shape[0],
            "streams": streams,
            "loop_streams_timed": loop_streams,
            "steps_per_stream": T,
        },
    }


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(res: dict) -> str:
    m, setup = res["machine"], res["setup"]
    lines = [
        f"Machine: {m['platform']}, {m['cpu_count']} cores, torch {m['torch']}, "
        f"{m['threads']} thread, load average {tuple(round(x, 2) for x in m['loadavg'])}",
        "",
    ]
    header = ["per-step update (100 neurons, 2-D state)", "median ms", "p99 ms"]
    header += ["CPU median ms", "CPU p99 ms", "median vs filterpy KF"]
    keys = ("median_ms", "p99_ms", "cpu_median_ms", "cpu_p99_ms")
    rows = [
        [name, *(f"{r[k]:.4f}" for k in keys), f"{r['speedup_vs_filterpy_kf']:.2f}x"]
        for name, r in res["latency"].items()
    ]
    lines += _table(header, rows) + [""]
    shape = f"{setup['streams']} streams x {setup['steps_per_stream']} steps"
    rows = [
        [
            name,
            f"{r['batched_steps_per_s']:.0f}",
            f"{r['loop_steps_per_s']:.0f}",
            f"{r['ratio']:.1f}x",
        ]
        for name, r in res["throughput"].items()
    ]
    lines += _table([shape, "batched steps/s", "loop steps/s", "ratio"], rows)
    acc = res.get("accuracy")
    if acc:
        lines += [
            "",
            f"Decoding accuracy, {acc['train']:,} training / {acc['test']:,} test bins "
            "(nRMSE, lower is better; fit = thread CPU s; step = online update incl. f(x), "
            "Q(x), ms)",
            "",
        ]
        header = ["data", "method", "nRMSE", "fit CPU s", "step median ms", "step p99 ms"]
        header += ["step CPU p99 ms", "auto chose"]
        rows = []
        for sim, methods in acc["results"].items():
            for name, r in methods.items():
                st = r["step"]
                rows.append(
                    [
                        sim,
                        name,
                        f"{r['nrmse']:.3f}",
                        f"{r['fit_cpu_s']:.2f}",
                        f"{st['median_ms']:.3f}",
                        f"{st['p99_ms']:.3f}",
                        f"{st['cpu_p99_ms']:.3f}",
                        r["choice"] or "",
                    ]
                )
        lines += _table(header, rows)
    if res.get("cuda"):
        cuda = res["cuda"]
        title = f"CUDA ({cuda['device']}), {cuda['streams']} streams x {cuda['steps']} steps"
        rows = [[name, f"{v:.0f}"] for name, v in cuda["steps_per_s"].items()]
        lines += [""] + _table([title, "steps/s"], rows)
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer timed steps and loop streams")
    args = parser.parse_args()
    result = main(args.quick)
    table = markdown(result)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "filtering.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "filtering.md").write_text(table + "\n")
