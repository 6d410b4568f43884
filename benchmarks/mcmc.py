"""NUTS throughput: Pyro's NUTS vs ppltk's batched NUTS, side by side in one process.

Models: eight schools (non-centred, 10 unconstrained dims) and Bayesian logistic regression
(N=1000, D=25, 26 dims). Both samplers run 4 chains of 1000 warm-up + 1000 draws (``--quick``:
200 + 200) on one torch thread; Pyro's chains run one after another in this process (its
one-process mode), ppltk's chains run as one batch. Metric: minimum bulk
ESS over all parameters (ArviZ) divided by wall time including warm-up.

Rows: ``pyro`` (Pyro NUTS on the Pyro model), ``ppltk`` (``ppltk.mcmc.sample`` on the same
Pyro model with its defaults: for 1000+1000 iterations the captured graph is compiled by
``torch.compile``, compilation time included), ``ppltk-fx`` (the captured graph replayed
uncompiled), ``ppltk-eager`` (the bridge re-running the model each step) and ``ppltk-flat`` (``ppltk.mcmc.sample_flat`` on the
same density written by hand in torch, which shows the kernel's own cost without the bridge).
Ratios are ppltk/Pyro. Besides wall time the process CPU time is reported: on a shared machine
it is the fairer clock (every run here is single-threaded).

Usage: ``python benchmarks/mcmc.py [--quick]``; writes benchmarks/results/mcmc.json and .md.
``--scaling`` instead runs ppltk alone on the hand-written eight-schools density with 1, 4, 16
and 64 chains (500 + 500 draws) and writes mcmc_scaling.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path
from unittest import mock

os.environ.setdefault("OMP_NUM_THREADS", "1")
import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import MCMC
from pyro.infer import NUTS as PyroNUTS

from ppltk.errors import DivergenceWarning
from ppltk.mcmc import sample, sample_flat
from ppltk.mcmc.targets import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    eight_schools_noncentered,
    logistic_regression,
    logistic_regression_data,
)

torch.set_num_threads(1)
CHAINS = 4
RESULTS = Path(__file__).parent / "results"


def min_bulk_ess(draws: dict[str, np.ndarray]) -> float:
    ess = az.ess(az.from_dict(posterior=draws), method="bulk")
    return float(min(float(ess[v].min()) for v in ess.data_vars))


def _eight_schools_flat():
    """Hand-written log-density of the non-centred eight schools on (mu, log tau, theta_raw)."""
    y, sigma = torch.tensor(EIGHT_SCHOOLS_Y), torch.tensor(EIGHT_SCHOOLS_SIGMA)

    def logp(z):
        mu, log_tau, raw = z[:, 0], z[:, 1], z[:, 2:]
        tau = log_tau.exp()
        lp = -0.5 * (mu / 5.0) ** 2 - torch.log1p((tau / 5.0) ** 2) + log_tau
        lp = lp - 0.5 * (raw**2).sum(-1)
        mean = mu[:, None] + tau[:, None] * raw
        return lp - 0.5 * (((y - mean) / sigma) ** 2).sum(-1)

    return logp, 10


def _logistic_flat(x, y):
    def logp(z):
        w, b = z[:, :-1], z[:, -1]
        logits = w @ x.T + b[:, None]
        lik = (y * logits - torch.nn.functional.softplus(logits)).sum(-1)
        return lik - 0.5 * (w**2).sum(-1) - 0.5 * b**2

    return logp, x.shape[1] + 1


def _with_grad(logp):
    def logdensity_and_grad(z):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lp = logp(z)
            (grad,) = torch.autograd.grad(lp.sum(), z)
        return lp.detach(), grad

    return logdensity_and_grad


def run_pyro(model, args, warmup, samples):
    pyro.set_rng_seed(0)
    start, cpu = time.perf_counter(), time.process_time()
    # Pyro runs chains in worker processes when CPUs are free; pretend there is one CPU so
    # that its chains run one after another in this process (one thread, as ppltk).
    with mock.patch("pyro.infer.mcmc.api.mp.cpu_count", return_value=1), \
            warnings.catch_warnings():  # fmt: skip
        warnings.simplefilter("ignore", UserWarning)  # "Chains will be drawn sequentially"
        mcmc = MCMC(PyroNUTS(model), num_samples=samples, warmup_steps=warmup,
                    num_chains=CHAINS, disable_progbar=True)  # fmt: skip
        mcmc.run(*args)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    draws = {k: v.numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}
    divergences = sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
    return wall, cpu, draws, divergences


def run_ppltk(model, args, warmup, samples, backend="auto"):
    """ppltk NUTS on the Pyro model; ``backend`` as in ModelBridge (compile time included)."""
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        res = sample(model, *args, num_chains=CHAINS, num_warmup=warmup, num_samples=samples,
                     seed=0, progress=False, backend=backend)  # fmt: skip
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, res.draws, res.attrs["num_divergences"]


def run_flat(logp, dim, warmup, samples, chains=CHAINS):
    init = torch.rand(chains, dim, generator=torch.Generator().manual_seed(0)) * 4 - 2
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        out = sample_flat(_with_grad(logp), init, num_warmup=warmup, num_samples=samples,
                          seed=0, progress=False)  # fmt: skip
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, {"z": out.positions.numpy()}, out.num_divergences


def main(quick: bool) -> list[dict]:
    warmup = samples = 200 if quick else 1000
    x, y = logistic_regression_data(1000, 25)
    sigma, ys = torch.tensor(EIGHT_SCHOOLS_SIGMA), torch.tensor(EIGHT_SCHOOLS_Y)
    problems = {
        "eight_schools_noncentered": (
            eight_schools_noncentered,
            (sigma, ys),
            _eight_schools_flat(),
        ),
        "logistic_regression_N1000_D25": (logistic_regression, (x, y), _logistic_flat(x, y)),
    }
    rows = []
    for name, (model, args, (logp, dim)) in problems.items():
        runs = [
            ("pyro", run_pyro, (model, args)),
            ("ppltk-eager", run_ppltk, (model, args, "eager")),
            ("ppltk-fx", run_ppltk, (model, args, "fx")),
            ("ppltk", run_ppltk, (model, args)),
            ("ppltk-flat", run_flat, (logp, dim)),
        ]
        base = None
        for method, fn, fn_args in runs:
            wall, cpu, draws, divergences = fn(*fn_args[:2], warmup, samples, *fn_args[2:])
            ess = min_bulk_ess(draws)
            row = {"model": name, "method": method, "chains": CHAINS, "warmup": warmup,
                   "samples": samples, "min_bulk_ess": round(ess, 1), "wall_s": round(wall, 2),
                   "cpu_s": round(cpu, 2), "ess_per_s": round(ess / wall, 2),
                   "ess_per_cpu_s": round(ess / cpu, 2), "divergences": divergences}  # fmt: skip
            base = row if method == "pyro" else base
            row["ratio_vs_pyro"] = round(row["ess_per_s"] / base["ess_per_s"], 2)
            row["cpu_ratio_vs_pyro"] = round(row["ess_per_cpu_s"] / base["ess_per_cpu_s"], 2)
            rows.append(row)
            print(row, flush=True)
    return rows


def chain_scaling(warmup: int, samples: int, device: str = "cpu") -> list[dict]:
    """ppltk NUTS on the hand-written eight-schools density with 1, 4, 16, 64 chains: one batch
    costs about the same per leapfrog step, so ESS per CPU second grows with the chains."""
    logp, dim = _eight_schools_flat()
    rows = []
    for chains in (1, 4, 16, 64):
        wall, cpu, draws, divergences = run_flat(logp, dim, warmup, samples, chains)
        ess = min_bulk_ess(draws)
        rows.append(
            {
                "chains": chains,
                "min_bulk_ess": round(ess, 1),
                "cpu_s": round(cpu, 2),
                "ess_per_cpu_s": round(ess / cpu, 2),
                "divergences": divergences,
            }
        )
        print(rows[-1], flush=True)
    return rows


def to_markdown(rows: list[dict], facts: dict) -> str:
    head = (
        "| model | method | min bulk ESS | wall s | ESS/s | ratio | CPU s | ESS/CPU-s | "
        "CPU ratio | divergences |"
    )
    lines = [head, "|---" * 10 + "|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['min_bulk_ess']} | {r['wall_s']} | "
            f"{r['ess_per_s']} | {r['ratio_vs_pyro']} | {r['cpu_s']} | {r['ess_per_cpu_s']} | "
            f"{r['cpu_ratio_vs_pyro']} | {r['divergences']} |"
        )
    facts_line = ", ".join(f"{k}: {v}" for k, v in facts.items())
    return "\n".join(lines) + f"\n\nMachine: {facts_line}\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 + 200 draws instead of 1000")
    parser.add_argument(
        "--scaling", action="store_true", help="only the chain-scaling table (1 to 64 chains)"
    )
    options = parser.parse_args()
    quick = options.quick
    if options.scaling:
        size = 200 if quick else 500
        scaling = chain_scaling(size, size)
        lines = ["| chains | min bulk ESS | CPU s | ESS/CPU-s | divergences |", "|---" * 5 + "|"]
        lines += [
            f"| {r['chains']} | {r['min_bulk_ess']} | {r['cpu_s']} | {r['ess_per_cpu_s']} | "
            f"{r['divergences']} |"
            for r in scaling
        ]
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "mcmc_scaling.json").write_text(json.dumps(scaling, indent=2))
        (RESULTS / "mcmc_scaling.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        raise SystemExit(0)
    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": os.getloadavg()[0],
        "chains": CHAINS,
        "quick": quick,
    }
    rows = main(quick)
    facts["load_avg_end"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    (RESULTS / f"mcmc{suffix}.json").write_text(
        json.dumps({"facts": facts, "rows": rows}, indent=2)
    )
    markdown = to_markdown(rows, facts)
    (RESULTS / f"mcmc{suffix}.md").write_text(markdown)
    print(markdown)
