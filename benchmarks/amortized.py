"""Benchmark: amortized posterior (ppltk.amortized) vs NUTS per data set.

Two models with varying data: eight schools (non-centred; the schools' standard errors and a
one-hot school index are fixed covariates of each observation, so the set encoder can tell
which school a point belongs to) and a Bayesian logistic regression with 10 features
(N = 100 fixed covariate rows, labels varying). For each: train once on the model's own
simulations (time reported), then per data set compare

* time to a posterior: one batched forward pass over ``--datasets`` data sets (time per data
  set) and one data set alone (latency), vs ppltk's batched NUTS (4 chains) per data set;
* accuracy: the amortized (and importance-corrected) posterior means and sds against NUTS,
  in units of the NUTS posterior sd, on a few held-out data sets;
* calibration: the SBC p-value after training.

``sbi``'s NPE on the same simulations is run when ``sbi`` is importable (it is not part of the
test environment; the row says so otherwise). All in one process, one torch thread.
Writes ``benchmarks/results/amortized.json`` and ``.md``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/amortized.py [--fast]``.
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

import pyro
import pyro.distributions as dist
import torch

torch.set_num_threads(1)

from ppltk.amortized import CalibrationWarning, fit_amortized
from ppltk.mcmc import sample

SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", 8):
        theta_raw = pyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu + tau * theta_raw, SIGMA), obs=y)


X = torch.randn(100, 10, generator=torch.Generator().manual_seed(0))


def logistic(y):
    w = pyro.sample("w", dist.Normal(torch.zeros(10), 1.0).to_event(1))
    with pyro.plate("data", 100):
        pyro.sample("y", dist.Bernoulli(logits=(X * w).sum(-1)), obs=y)


CASES = {
    "eight schools": dict(
        model=eight_schools,
        shape=(8,),
        covariates=torch.cat([SIGMA[:, None] / 10, torch.eye(8)], -1),
        head="mixture",
        squash=True,  # half-Cauchy tau: heavy-tailed prior predictive
        hidden=128,
    ),
    "logistic regression (D=10)": dict(
        model=logistic, shape=(100,), covariates=X, head="gaussian", squash=False, hidden=64
    ),
}


def held_out(q, num: int, seed: int) -> torch.Tensor:
    """Data sets from the prior predictive (not seen in training)."""
    from ppltk.amortized import simulate

    sims = simulate(q.bridge, num, torch.Generator().manual_seed(seed), q.observed)
    return sims.data[q.observed[0]]


def flat_draws(values: dict, sites: list[str], lead: int) -> torch.Tensor:
    return torch.cat([torch.as_tensor(values[s]).reshape(lead, -1) for s in sites], -1)


def bench_case(name: str, spec: dict, fast: bool, datasets: int, compare: int) -> dict:
    model = spec["model"]
    sims, epochs = (4000, 40) if fast else (20000, 150)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        q = fit_amortized(
            model,
            torch.zeros(spec["shape"]),
            covariates=spec["covariates"],
            num_simulations=sims,
            max_epochs=epochs,
            patience=20,
            head=spec["head"],
            squash=spec["squash"],
            hidden=spec["hidden"],
            context_dim=64,
            seed=0,
            progress=False,
        )
    fit_s = time.perf_counter() - t0
    ys = held_out(q, datasets, seed=1)
    t0 = time.perf_counter()
    q.sample(ys, num_samples=1000, seed=0)
    batch_s = (time.perf_counter() - t0) / datasets
    t0 = time.perf_counter()
    for i in range(5):
        q.posterior(ys[i], num_samples=1000, seed=i)
    single_s = (time.perf_counter() - t0) / 5
    sites = list(q.bridge.sites)
    nuts_s, err_mean, err_sd, err_mean_is, err_sd_is, ess = [], [], [], [], [], []
    warmup, draws = (300, 300) if fast else (1000, 1000)
    for i in range(compare):
        t0 = time.perf_counter()
        ref = sample(model, ys[i], num_chains=4, num_warmup=warmup, num_samples=draws,
                     seed=i, progress=False, target_accept=0.9)  # fmt: skip
        nuts_s.append(time.perf_counter() - t0)
        r = flat_draws({s: ref.flat(s) for s in sites}, sites, ref.flat(sites[0]).shape[0])
        amort = q.posterior(ys[i], num_samples=4000, seed=i)
        a = flat_draws({s: amort.flat(s) for s in sites}, sites, 4000)
        corr = q.posterior(ys[i], num_samples=4000, seed=i, correct=True)
        c = flat_draws({s: corr.flat(s) for s in sites}, sites, 4000)
        sd = r.std(0)
        err_mean.append(((a.mean(0) - r.mean(0)) / sd).abs().max().item())
        err_sd.append((a.std(0) / sd - 1).abs().max().item())
        err_mean_is.append(((c.mean(0) - r.mean(0)) / sd).abs().max().item())
        err_sd_is.append((c.std(0) / sd - 1).abs().max().item())
        ess.append(corr.attrs["ess"] / 4000)
    nuts_mean = sum(nuts_s) / len(nuts_s)
    return {
        "model": name,
        "latent_dim": q.bridge.dim,
        "simulations": sims,
        "epochs": len(q.history["train"]),
        "simulate_s": q.timings["simulate"],
        "train_s": q.timings["train"],
        "fit_s": fit_s,
        "sbc_min_p": min(q.calibration.p_values.values()),
        "amortized_batch_ms_per_dataset": 1e3 * batch_s,
        "amortized_single_ms": 1e3 * single_s,
        "nuts_s_per_dataset": nuts_mean,
        "speedup_batch": nuts_mean / batch_s,
        "speedup_single": nuts_mean / single_s,
        "break_even_datasets": fit_s / max(nuts_mean - batch_s, 1e-9),
        "max_mean_err_sd": max(err_mean),
        "max_sd_rel_err": max(err_sd),
        "max_mean_err_sd_corrected": max(err_mean_is),
        "max_sd_rel_err_corrected": max(err_sd_is),
        "min_ess_fraction": min(ess),
    }


def sbi_row() -> str:
    try:
        import sbi  # noqa: F401
    except ImportError:
        return "sbi is not installed in this environment: its NPE was not run."
    return "sbi is installed but its comparison is not implemented yet."


def markdown(rows: list[dict], note: str, fast: bool) -> str:
    head = (
        "| model | D | train s | SBC min p | amortized ms/data set (batch) | amortized ms "
        "(one) | NUTS s/data set | speed-up (batch) | speed-up (one) | break-even data sets "
        "| max mean err (NUTS sd) | max sd err | corrected: mean err | corrected: sd err "
        "| min ESS/S |"
    )
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['latent_dim']} | {r['fit_s']:.1f} | {r['sbc_min_p']:.2g} | "
            f"{r['amortized_batch_ms_per_dataset']:.3f} | {r['amortized_single_ms']:.1f} | "
            f"{r['nuts_s_per_dataset']:.2f} | {r['speedup_batch']:.0f}× | "
            f"{r['speedup_single']:.0f}× | {r['break_even_datasets']:.0f} | "
            f"{r['max_mean_err_sd']:.2f} | {r['max_sd_rel_err']:.2f} | "
            f"{r['max_mean_err_sd_corrected']:.2f} | {r['max_sd_rel_err_corrected']:.2f} | "
            f"{r['min_ess_fraction']:.2f} |"
        )
    lines.append("")
    lines.append(
        "Amortized posterior trained once (time = simulation + training + SBC check), then "
        "applied to held-out prior-predictive data sets; NUTS = ppltk's batched NUTS, 4 chains, "
        f"{'300 + 300' if fast else '1000 + 1000'} iterations, per data set. Errors: the worst "
        "coordinate over the compared data sets, mean error in NUTS posterior sds, sd error "
        "relative; 'corrected' = importance-resampled against the exact density (4000 "
        "proposals). Break-even = data sets after which training has paid for itself. " + note
    )
    lines.append(
        f"Machine: {platform.platform()}, torch {torch.__version__}, 1 torch thread, "
        f"load average {os.getloadavg()}{' (fast mode)' if fast else ''}."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="short smoke-test run")
    parser.add_argument("--datasets", type=int, default=1000)
    parser.add_argument("--compare", type=int, default=None, help="data sets compared to NUTS")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    args = parser.parse_args()
    compare = args.compare or (2 if args.fast else 5)
    cases = {n: s for n, s in CASES.items() if args.only is None or args.only in n}
    rows = [bench_case(n, s, args.fast, args.datasets, compare) for n, s in cases.items()]
    text = markdown(rows, sbi_row(), args.fast)
    print(text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stem = "amortized_fast" if args.fast else "amortized"
    if args.only:
        stem += "_" + args.only.replace(" ", "_")
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2))
    (out / f"{stem}.md").write_text(text)


if __name__ == "__main__":
    main()
