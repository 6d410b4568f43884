"""Continual learning on Split-Digits, and sequential HMC speed against Pyro's NUTS.

Part 1: class-incremental Split-Digits (scikit-learn's bundled 8x8 digits, 5 tasks of 2
classes): average accuracy, forgetting and backward transfer of every learner in
``ppltk.continual`` (sequential HMC with Gaussian / GMM priors, joint HMC, fine-tuning, VCL,
online Laplace, ProtoCL).

Part 2: posterior sampling of the same Bayesian MLP (64-8-10, 610 parameters, N(0, 1) prior)
on task 1 of Split-Digits: ppltk's batched NUTS and HMC (4 chains in one batch) against Pyro's
NUTS (one chain, the model written with the same likelihood as a ``pyro.factor``), same
warm-up and draws per chain. Metrics: draws/s and minimum bulk ESS/s (ArviZ), wall time
including warm-up; plus the per-task wall time of the sequential loop.

Usage: ``python benchmarks/continual.py [--fast]``; writes benchmarks/results/continual.json/.md.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import MCMC
from pyro.infer import NUTS as PyroNUTS

from ppltk.continual import (
    VCL,
    FineTuning,
    FlatBNN,
    JointHMC,
    OnlineLaplace,
    ProtoCL,
    SequentialBayes,
    average_accuracy,
    forgetting,
    make_logdensity_and_grad,
    run_continual,
)
from ppltk.datasets import split_digits
from ppltk.mcmc import HMC, sample_flat

torch.set_num_threads(1)


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.Tanh(), torch.nn.Linear(8, 10))


def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))


def learners(draws: int) -> dict:
    hmc = dict(sampler=HMC(num_steps=10), num_chains=4, num_warmup=draws, num_samples=draws)
    return {
        "sequential HMC, Gaussian prior": lambda: SequentialBayes(mlp(), "gaussian", seed=0, **hmc),
        "sequential HMC, GMM prior": lambda: SequentialBayes(
            mlp(), "gmm", density_kwargs={"max_components": 2, "reg_covar": 1e-4}, seed=0, **hmc
        ),
        "joint HMC (upper bound)": lambda: JointHMC(mlp(), seed=0, **hmc),
        "fine-tuning (lower bound)": lambda: FineTuning(mlp(), seed=0),
        "VCL": lambda: VCL(mlp(), seed=0),
        "online Laplace": lambda: OnlineLaplace(mlp(), seed=0),
        "ProtoCL (10 per class replay)": lambda: ProtoCL(encoder(), num_steps=200, lr=1e-2, seed=0),
    }


def part_table(tasks, draws: int) -> list[dict]:
    rows = []
    for name, make in learners(draws).items():
        run = run_continual(make, tasks, setting="class_incremental")
        row = {"method": name, **run.summary(), "final_row": run.accuracy[-1].tolist()}
        task_acc = run.accuracy_in("task_incremental")  # same training, task-aware scoring
        row["task_il_average_accuracy"] = average_accuracy(task_acc)
        row["task_il_forgetting"] = float(forgetting(task_acc).mean())
        if hasattr(run.learner, "sample_times"):
            row["hmc_seconds_per_task"] = run.learner.sample_times
        rows.append(row)
        print(f"{name}: avg acc {row['average_accuracy']:.3f}, forgetting {row['forgetting']:.3f}")
    return rows


def min_ess(draws: np.ndarray) -> float:
    """Minimum bulk ESS over coordinates of draws [chains, samples, D]."""
    ess = az.ess(az.convert_to_dataset({"theta": draws}), method="bulk")["theta"].values
    return float(np.nanmin(ess))


def part_speed(task, warmup: int, samples: int) -> dict:
    X, y = task[0], task[1]
    bnn = FlatBNN(mlp(), dtype=torch.float64)
    prior = bnn.standard_prior(1.0)
    lp_fn = make_logdensity_and_grad(prior, lambda z: bnn.log_likelihood(z, X, y, 2))
    out = {}
    for kernel in ("nuts", HMC(num_steps=10)):
        name = "nuts" if kernel == "nuts" else "hmc10"
        init = 0.1 * torch.randn(
            4, bnn.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64
        )
        start = time.perf_counter()
        res = sample_flat(
            lp_fn,
            init,
            kernel=kernel,
            num_warmup=warmup,
            num_samples=samples,
            seed=0,
            progress=False,
            warn_divergences=False,
        )
        seconds = time.perf_counter() - start
        draws = res.positions.numpy()
        out[f"ppltk_{name}"] = {
            "seconds": seconds,
            "chains": 4,
            "draws_per_s": draws.shape[0] * draws.shape[1] / seconds,
            "min_ess_per_s": min_ess(draws) / seconds,
            "mean_step_size": float(res.stats["step_size"].mean()),
            "mean_leapfrog_steps": float(res.stats["n_steps"].double().mean()),
        }

    def model():
        theta = pyro.sample("theta", prior)
        pyro.factor("loglik", bnn.log_likelihood(theta[None], X, y, 2)[0])

    pyro.set_rng_seed(0)
    init = {
        "theta": 0.1
        * torch.randn(bnn.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    }
    mcmc = MCMC(
        PyroNUTS(model, jit_compile=False),
        num_samples=samples,
        warmup_steps=warmup,
        num_chains=1,
        initial_params=init,
        disable_progbar=True,
    )
    start = time.perf_counter()
    mcmc.run()
    seconds = time.perf_counter() - start
    draws = mcmc.get_samples(group_by_chain=True)["theta"].numpy()
    out["pyro_nuts"] = {
        "seconds": seconds,
        "chains": 1,
        "draws_per_s": draws.shape[0] * draws.shape[1] / seconds,
        "min_ess_per_s": min_ess(draws) / seconds,
        "mean_step_size": float(mcmc.kernel.step_size),
    }
    for k in ("ppltk_nuts", "ppltk_hmc10"):
        out[k]["draws_per_s_ratio_vs_pyro"] = (
            out[k]["draws_per_s"] / out["pyro_nuts"]["draws_per_s"]
        )
        out[k]["ess_per_s_ratio_vs_pyro"] = (
            out[k]["min_ess_per_s"] / out["pyro_nuts"]["min_ess_per_s"]
        )
    return out


def to_markdown(table, speed, facts, settings) -> str:
    lines = [
        "# Continual learning: Split-Digits (one thread)",
        "",
        "Learners train once; the first columns score class-incremental (argmax over all classes",
        "seen), the task-IL columns score the same predictions restricted to the task's classes.",
        "",
        f"Machine: {facts}",
        f"Settings: {settings}",
        "",
        "| method | average accuracy | forgetting | BWT | task-IL avg. acc. | task-IL forgetting "
        "| train time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['average_accuracy']:.3f} | {r['forgetting']:.3f} | "
            f"{r['backward_transfer']:+.3f} | {r['task_il_average_accuracy']:.3f} | "
            f"{r['task_il_forgetting']:.3f} | {r['train_seconds']:.1f} |"
        )
    seq = next(r for r in table if "hmc_seconds_per_task" in r)
    per_task = ", ".join(f"{s:.1f}" for s in seq["hmc_seconds_per_task"])
    lines += [
        "",
        f"Sequential HMC wall time per task (s, 4 chains, warm-up included): {per_task}",
        "",
        "## Sampling the task-1 posterior of the 64-8-10 MLP (610 parameters)",
        "",
        "| sampler | chains | wall time (s) | draws/s | min bulk ESS/s | draws/s vs Pyro "
        "| ESS/s vs Pyro | step size | leapfrog steps/draw |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (
        ("pyro_nuts", "Pyro NUTS"),
        ("ppltk_nuts", "ppltk NUTS (batched)"),
        ("ppltk_hmc10", "ppltk HMC, 10 steps (batched)"),
    ):
        r = speed[name]
        ratio = (
            f"{r['draws_per_s_ratio_vs_pyro']:.1f}x | {r['ess_per_s_ratio_vs_pyro']:.1f}x"
            if name != "pyro_nuts"
            else "1 | 1"
        )
        lines.append(
            f"| {label} | {r['chains']} | {r['seconds']:.1f} | {r['draws_per_s']:.3g} | "
            f"{r['min_ess_per_s']:.3g} | {ratio} | {r['mean_step_size']:.3g} | "
            f"{r.get('mean_leapfrog_steps', float('nan')):.1f} |"
        )
    lines += [
        "",
        "ratio > 1: ppltk is faster. Timings on a shared machine are noisy; ratios come",
        "from one process run.",
    ]
    return "\n".join(lines) + "\n"


def main(fast: bool = False):
    tasks = split_digits(num_tasks=3 if fast else 5, seed=0)
    draws = 50 if fast else 150
    warmup, samples = (50, 50) if fast else (150, 150)
    settings = (
        f"{len(tasks)} tasks, HMC {draws}+{draws} draws x 4 chains per task; "
        f"speed: {warmup} warm-up + {samples} draws per chain"
    )
    table = part_table(tasks, draws)
    speed = part_speed(tasks[0], warmup, samples)
    return table, speed, settings


if __name__ == "__main__":
    fast = "--fast" in sys.argv
    table, speed, settings = main(fast)
    facts = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"torch {torch.__version__}, pyro {pyro.__version__}, threads={torch.get_num_threads()}"
    )
    md = to_markdown(table, speed, facts, settings)
    print(md)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "continual.json").write_text(
        json.dumps(
            {"machine": facts, "settings": settings, "table": table, "speed": speed}, indent=2
        )
    )
    (out / "continual.md").write_text(md)
