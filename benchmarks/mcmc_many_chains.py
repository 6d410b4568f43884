"""Many chains: ChEES-HMC vs ppltk's batched NUTS at 64, 256 and 1024 chains (CPU).

Both samplers run through ``ppltk.mcmc.sample_flat`` on hand-written batched densities, one
torch thread, with their default warm-up (ChEES: cross-chain adaptation; NUTS: Stan's
per-chain windows), ``W`` warm-up + ``S`` kept iterations per chain (300 + 300; ``--quick``:
150 + 150 and 64, 256 chains).

Targets:

- ``gaussian_100d``: :math:`\\mathcal N(0, \\mathrm{diag}(s^2))` in 100 dimensions with scales
  :math:`s` log-spaced in :math:`[0.1, 10]` (condition number :math:`10^4` before the metric is
  adapted);
- ``eight_schools_nc``: non-centred eight schools on :math:`(\\mu, \\log\\tau, \\tilde\\theta)`
  (10 dimensions, the density of benchmarks/mcmc.py).

Metrics: minimum bulk ESS over coordinates (ArviZ, all chains pooled) divided by (a) the
number of gradient evaluations, counted as rows the batched log-density evaluated, warm-up
included: for NUTS every chain of the batch is evaluated at every leapfrog step until the
deepest tree of the iteration ends, which is what a lock-step accelerator pays; and (b) wall
seconds and (c) process CPU seconds (the fairer clock on a shared machine: every run is
single-threaded), warm-up included.  ``useful_grads_sampling`` is the sum of the chains' own
leapfrog steps over the kept iterations.  Ratios are ChEES / NUTS at the same chain count.

Usage: ``python benchmarks/mcmc_many_chains.py [--quick]``; writes
benchmarks/results/mcmc_many_chains.json and .md (``_quick`` suffix with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import arviz as az
import numpy as np
import torch

from ppltk.errors import DivergenceWarning
from ppltk.mcmc import sample_flat
from ppltk.mcmc.targets import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y

torch.set_num_threads(1)
RESULTS = Path(__file__).parent / "results"
DTYPE = torch.float64


def min_bulk_ess(x: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = az.ess(az.convert_to_dataset(x), method="bulk")["x"].values
    return float(ess.min())


def gaussian_100d():
    scales = torch.logspace(-1, 1, 100, dtype=DTYPE)

    def ld(z):
        return -0.5 * ((z / scales) ** 2).sum(-1), -z / scales**2

    return ld, 100


def eight_schools_nc():
    y = torch.tensor(EIGHT_SCHOOLS_Y, dtype=DTYPE)
    sigma = torch.tensor(EIGHT_SCHOOLS_SIGMA, dtype=DTYPE)

    def logp(z):
        mu, log_tau, raw = z[:, 0], z[:, 1], z[:, 2:]
        tau = log_tau.exp()
        lp = -0.5 * (mu / 5.0) ** 2 - torch.log1p((tau / 5.0) ** 2) + log_tau
        lp = lp - 0.5 * (raw**2).sum(-1)
        mean = mu[:, None] + tau[:, None] * raw
        return lp - 0.5 * (((y - mean) / sigma) ** 2).sum(-1)

    def ld(z):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lp = logp(z)
            (grad,) = torch.autograd.grad(lp.sum(), z)
        return lp.detach(), grad

    return ld, 10


class Counted:
    """Counts the rows (chain gradient evaluations) a batched log-density evaluates."""

    def __init__(self, fn):
        self.fn, self.rows = fn, 0

    def __call__(self, z):
        self.rows += z.shape[0]
        return self.fn(z)


def run(target, kernel: str, chains: int, warmup: int, samples: int) -> dict:
    ld, dim = target()
    counted = Counted(ld)
    init = torch.rand(chains, dim, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    init = init * 4 - 2
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        out = sample_flat(counted, init, kernel=kernel, num_warmup=warmup, num_samples=samples,
                          seed=0, progress=False)  # fmt: skip
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    ess = min_bulk_ess(out.positions.numpy())
    row = {
        "target": target.__name__,
        "kernel": kernel,
        "chains": chains,
        "warmup": warmup,
        "samples": samples,
        "min_bulk_ess": round(ess, 1),
        "grads": counted.rows,
        "useful_grads_sampling": int(out.stats["n_steps"].sum()),
        "mean_steps": round(float(out.stats["n_steps"].double().mean()), 1),
        "step_size": round(float(out.stats["step_size"].double().mean()), 4),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "ess_per_1k_grads": round(1000 * ess / counted.rows, 3),
        "ess_per_s": round(ess / wall, 1),
        "ess_per_cpu_s": round(ess / cpu, 1),
        "divergences": out.num_divergences,
    }
    if "trajectory_length" in out.stats:
        row["trajectory_length"] = round(float(out.stats["trajectory_length"][0, 0]), 3)
    return row


def main(quick: bool) -> list[dict]:
    warmup = samples = 150 if quick else 300
    chain_counts = (64, 256) if quick else (64, 256, 1024)
    rows = []
    for target in (eight_schools_nc, gaussian_100d):
        for chains in chain_counts:
            base = None
            for kernel in ("nuts", "chees"):
                row = run(target, kernel, chains, warmup, samples)
                base = row if kernel == "nuts" else base
                row["grad_ratio_vs_nuts"] = round(
                    row["ess_per_1k_grads"] / base["ess_per_1k_grads"], 2
                )
                row["time_ratio_vs_nuts"] = round(row["ess_per_s"] / base["ess_per_s"], 2)
                row["cpu_ratio_vs_nuts"] = round(row["ess_per_cpu_s"] / base["ess_per_cpu_s"], 2)
                rows.append(row)
                print(row, flush=True)
    return rows


def to_markdown(rows: list[dict], facts: dict) -> str:
    head = (
        "| target | chains | kernel | min bulk ESS | grads | ESS/1k grads | ratio | wall s | "
        "ESS/s | ratio | CPU s | ESS/CPU-s | ratio | mean steps | divergences |"
    )
    lines = [head, "|---" * 15 + "|"]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['chains']} | {r['kernel']} | {r['min_bulk_ess']} | "
            f"{r['grads']} | {r['ess_per_1k_grads']} | {r['grad_ratio_vs_nuts']} | "
            f"{r['wall_s']} | {r['ess_per_s']} | {r['time_ratio_vs_nuts']} | {r['cpu_s']} | "
            f"{r['ess_per_cpu_s']} | {r['cpu_ratio_vs_nuts']} | {r['mean_steps']} | "
            f"{r['divergences']} |"
        )
    facts_line = ", ".join(f"{k}: {v}" for k, v in facts.items())
    return "\n".join(lines) + f"\n\nMachine: {facts_line}\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="150 + 150 iterations, 64 and 256 chains"
    )
    quick = parser.parse_args().quick
    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": os.getloadavg()[0],
        "quick": quick,
    }
    rows = main(quick)
    facts["load_avg_end"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    (RESULTS / f"mcmc_many_chains{suffix}.json").write_text(
        json.dumps({"facts": facts, "rows": rows}, indent=2)
    )
    markdown = to_markdown(rows, facts)
    (RESULTS / f"mcmc_many_chains{suffix}.md").write_text(markdown)
    print(markdown)
