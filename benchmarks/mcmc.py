"""NUTS throughput: ppltk's batched NUTS vs Pyro's NUTS and NumPyro's vectorized NUTS.

Models (``ppltk.mcmc.targets``, NumPyro translations below): eight schools (non-centred, 10
unconstrained dims), Bayesian logistic regression (N=1000, D=25, 26 dims) and a varying-
intercept hierarchical regression (50 groups, 1073 observations, 54 dims). Each library runs
4 chains at 500 + 500 and 1000 + 1000 iterations (``--quick``: 200 + 200) on one thread.

Every run is a **fresh Python process** (a worker of this script), so what is timed is what a
user waits for on a first call in a new session: compilation included (TorchInductor for
ppltk, XLA for NumPyro), interpreter start and imports excluded. ``cold`` runs start from an
empty compile cache, ``warm`` runs from the cache the cold run left (ppltk's compiled
libraries and TorchInductor's cache, ``ppltk.model.graph.inductor_cache_dir``; JAX's
persistent compilation cache for NumPyro), so a warm run is "the second time this model is run
on this machine".

Rows: ``pyro`` (Pyro NUTS, chains one after another in the process, its one-process mode),
``numpyro`` (``chain_method="vectorized"``: one XLA computation for all chains), ``ppltk``
(``ppltk.mcmc.sample`` defaults: ``backend="auto"``), ``ppltk-fx`` (the captured graph
replayed, nothing compiled). Metric: minimum bulk ESS over all parameters (ArviZ) per second,
warm-up included; ratios are against NumPyro (same ``cache`` column) and Pyro. Both the wall
clock and the process CPU time are reported: on a shared machine CPU time is the fairer
clock (XLA may use more than one thread even when asked for one; then CPU > wall).

Usage: ``python benchmarks/mcmc.py [--quick] [--no-pyro]``; writes
benchmarks/results/mcmc.json and .md (``_quick`` with ``--quick``). ``--scaling`` instead runs
ppltk alone on the hand-written eight-schools density with 1, 4, 16 and 64 chains (500 + 500
draws) and writes mcmc_scaling.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
import arviz as az
import numpy as np
import torch

from ppltk.errors import DivergenceWarning
from ppltk.mcmc import sample_flat
from ppltk.mcmc.targets import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    hierarchical_regression_data,
    logistic_regression_data,
)

torch.set_num_threads(1)
CHAINS = 4
RESULTS = Path(__file__).parent / "results"
PROBLEMS = ("eight_schools", "logistic_regression", "hierarchical_regression")


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


def _with_grad(logp):
    def logdensity_and_grad(z):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lp = logp(z)
            (grad,) = torch.autograd.grad(lp.sum(), z)
        return lp.detach(), grad

    return logdensity_and_grad


def run_flat(logp, dim, warmup, samples, chains=CHAINS):
    init = torch.rand(chains, dim, generator=torch.Generator().manual_seed(0)) * 4 - 2
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        out = sample_flat(_with_grad(logp), init, num_warmup=warmup, num_samples=samples,
                          seed=0, progress=False)  # fmt: skip
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, {"z": out.positions.numpy()}, out.num_divergences


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


def _torch_problem(name: str):
    """``(Pyro model, args)`` of a benchmark problem, float64 data."""
    from ppltk.mcmc import targets

    if name == "eight_schools":
        sigma = torch.tensor(EIGHT_SCHOOLS_SIGMA, dtype=torch.float64)
        return targets.eight_schools_noncentered, (sigma, torch.tensor(EIGHT_SCHOOLS_Y))
    if name == "logistic_regression":
        return targets.logistic_regression, logistic_regression_data(1000, 25)
    return targets.hierarchical_regression, hierarchical_regression_data(50, 20)


def _numpyro_problem(name: str):
    """The same models in NumPyro, on the same data."""
    import numpyro
    import numpyro.distributions as nd

    def eight_schools(sigma, y):
        mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
        with numpyro.plate("J", sigma.shape[0]):
            theta_raw = numpyro.sample("theta_raw", nd.Normal(0.0, 1.0))
            numpyro.sample("y", nd.Normal(mu + tau * theta_raw, sigma), obs=y)

    def logistic_regression(x, y):
        w = numpyro.sample("w", nd.Normal(np.zeros(x.shape[1]), 1.0).to_event(1))
        b = numpyro.sample("b", nd.Normal(0.0, 1.0))
        with numpyro.plate("N", x.shape[0]):
            numpyro.sample("y", nd.Bernoulli(logits=x @ w + b), obs=y)

    def hierarchical_regression(group, x, num_groups, y):
        mu_a = numpyro.sample("mu_a", nd.Normal(0.0, 5.0))
        tau_a = numpyro.sample("tau_a", nd.HalfNormal(2.5))
        beta = numpyro.sample("beta", nd.Normal(0.0, 2.5))
        sigma = numpyro.sample("sigma", nd.HalfNormal(2.5))
        with numpyro.plate("groups", num_groups):
            a_raw = numpyro.sample("a_raw", nd.Normal(0.0, 1.0))
        with numpyro.plate("N", x.shape[0]):
            mean = mu_a + tau_a * a_raw[group] + beta * x
            numpyro.sample("y", nd.Normal(mean, sigma), obs=y)

    model, args = _torch_problem(name)
    args = tuple(a.numpy() if torch.is_tensor(a) else a for a in args)
    return {
        "eight_schools": eight_schools,
        "logistic_regression": logistic_regression,
        "hierarchical_regression": hierarchical_regression,
    }[name], args


def worker(method: str, name: str, warmup: int, samples: int) -> dict:
    """One timed run in this (fresh) process; returns the row."""
    if method == "numpyro":
        import jax
        from numpyro.infer import MCMC, NUTS

        jax.config.update("jax_enable_x64", True)
        if os.environ.get("BENCH_CACHE_DIR"):  # JAX's persistent cache, as ppltk's
            jax.config.update("jax_compilation_cache_dir", os.environ["BENCH_CACHE_DIR"])
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        model, args = _numpyro_problem(name)
        start, cpu = time.perf_counter(), time.process_time()
        mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=samples, num_chains=CHAINS,
                    chain_method="vectorized", progress_bar=False)  # fmt: skip
        mcmc.run(jax.random.PRNGKey(0), *args)
        draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    elif method == "pyro":
        from unittest import mock

        import pyro
        from pyro.infer import MCMC
        from pyro.infer import NUTS as PyroNUTS

        model, args = _torch_problem(name)
        pyro.set_rng_seed(0)
        start, cpu = time.perf_counter(), time.process_time()
        # one CPU as far as Pyro knows: its chains run one after another in this process
        with mock.patch("pyro.infer.mcmc.api.mp.cpu_count", return_value=1), \
                warnings.catch_warnings():  # fmt: skip
            warnings.simplefilter("ignore", UserWarning)
            mcmc = MCMC(PyroNUTS(model), num_samples=samples, warmup_steps=warmup,
                        num_chains=CHAINS, disable_progbar=True)  # fmt: skip
            mcmc.run(*args)
        draws = {k: v.numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}
        divergences = sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
    else:
        if os.environ.get("BENCH_CACHE_DIR"):
            os.environ["PPLTK_CACHE_DIR"] = os.environ["BENCH_CACHE_DIR"]
        from ppltk.mcmc import sample

        model, args = _torch_problem(name)
        backend = {"ppltk": "auto", "ppltk-fx": "fx"}[method]
        start, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)
            res = sample(model, *args, num_chains=CHAINS, num_warmup=warmup,
                         num_samples=samples, seed=0, progress=False, backend=backend)  # fmt: skip
        draws, divergences = res.draws, res.attrs["num_divergences"]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    ess = min_bulk_ess(draws)
    return {"model": name, "method": method, "warmup": warmup, "samples": samples,
            "min_bulk_ess": round(ess, 1), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "ess_per_s": round(ess / wall, 2), "ess_per_cpu_s": round(ess / cpu, 2),
            "divergences": int(divergences)}  # fmt: skip


def _spawn(method: str, name: str, warmup: int, samples: int, cache: str | None) -> dict:
    env = dict(os.environ)
    env.pop("BENCH_CACHE_DIR", None)
    if cache is not None:
        env["BENCH_CACHE_DIR"] = cache
    cmd = [sys.executable, __file__, "--worker", method, name, str(warmup), str(samples)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{method} on {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(settings: list[tuple[int, int]], with_pyro: bool) -> list[dict]:
    rows = []
    for name in PROBLEMS:
        for warmup, samples in settings:
            with (
                tempfile.TemporaryDirectory() as np_cache,
                tempfile.TemporaryDirectory() as pp_cache,
            ):
                runs = [("numpyro", "cold", np_cache), ("numpyro", "warm", np_cache),
                        ("ppltk", "cold", pp_cache), ("ppltk", "warm", pp_cache),
                        ("ppltk-fx", "-", None)]  # fmt: skip
                if with_pyro:
                    runs.insert(0, ("pyro", "-", None))
                block = []
                for method, cache, folder in runs:
                    row = _spawn(method, name, warmup, samples, folder)
                    row["cache"] = cache
                    block.append(row)
                    print(row, flush=True)
            ref = {r["cache"]: r for r in block if r["method"] == "numpyro"}
            pyro_row = next((r for r in block if r["method"] == "pyro"), None)
            for row in block:
                peer = ref.get(row["cache"], ref["cold"])
                row["vs_numpyro"] = round(row["ess_per_s"] / peer["ess_per_s"], 2)
                row["cpu_vs_numpyro"] = round(row["ess_per_cpu_s"] / peer["ess_per_cpu_s"], 2)
                if pyro_row is not None:
                    row["vs_pyro"] = round(row["ess_per_s"] / pyro_row["ess_per_s"], 2)
            rows += block
    return rows


def to_markdown(rows: list[dict], facts: dict) -> str:
    head = (
        "| model | iterations | method | cache | min bulk ESS | wall s | ESS/s | vs NumPyro | "
        "CPU s | ESS/CPU-s | CPU vs NumPyro | vs Pyro | divergences |"
    )
    lines = [head, "|---" * 13 + "|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['warmup']}+{r['samples']} | {r['method']} | {r['cache']} | "
            f"{r['min_bulk_ess']} | {r['wall_s']} | {r['ess_per_s']} | {r['vs_numpyro']} | "
            f"{r['cpu_s']} | {r['ess_per_cpu_s']} | {r['cpu_vs_numpyro']} | "
            f"{r.get('vs_pyro', '-')} | {r['divergences']} |"
        )
    facts_line = ", ".join(f"{k}: {v}" for k, v in facts.items())
    return "\n".join(lines) + f"\n\nMachine: {facts_line}\n"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        method, name, warmup, samples = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:6])
        print(json.dumps(worker(method, name, warmup, samples)))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 + 200 draws only")
    parser.add_argument("--no-pyro", action="store_true", help="leave out Pyro (slow)")
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
    import jax
    import numpyro
    import pyro

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpyro": numpyro.__version__,
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": os.getloadavg()[0],
        "chains": CHAINS,
        "quick": quick,
    }
    settings = [(200, 200)] if quick else [(500, 500), (1000, 1000)]
    rows = main(settings, with_pyro=not options.no_pyro)
    facts["load_avg_end"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    (RESULTS / f"mcmc{suffix}.json").write_text(
        json.dumps({"facts": facts, "rows": rows}, indent=2)
    )
    markdown = to_markdown(rows, facts)
    (RESULTS / f"mcmc{suffix}.md").write_text(markdown)
    print(markdown)
