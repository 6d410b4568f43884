"""ppltk vs N. Chopin's ``particles`` on ``particles``' own data (one thread each).

(c) Bootstrap filter of the stochastic-volatility model (mu=-1, rho=0.9, sigma=0.3) on the
    GBP/USD 1997-98 log-returns shipped with ``particles`` (T = 750), N = 10^3, 10^4, 10^5:
    ppltk's explicit state-space model (float64, like ``particles``) and the same model written
    as an ordinary Pyro program (run once, O(NT); its states are float32, as Pyro samples them
    from Python-float parameters) vs ``particles.SMC``; log-evidence mean and sd over seeds,
    time per run.
(d) Tempered SMC on the Pima logistic regression (768 x 9, beta ~ N(0, 5^2 I)) at equal budget
    in likelihood evaluations per temperature: ``ppltk.smc.tempered_smc_flat`` with its defaults
    (N = 1000, random-walk moves with the particles' full covariance, as many steps as it takes
    to decorrelate) and ``particles.AdaptiveTempering`` (waste-free, chains of 10) with N set to
    ppltk's evaluations per temperature; both against an importance-sampling reference
    (Laplace-centred multivariate t, 10^6 draws).

``particles`` 0.4 pins numpy < 2, which ppltk's test environment (pandas 3, pgmpy) cannot
have, so it runs in its own virtual environment (``make bench`` builds ``.venv-particles``;
or set ``PARTICLES_PYTHON``) through ``benchmarks/peers/particles_runner.py``; times are
measured inside that process, the first (numba-compiling) run excluded. The data both sides
use comes from that process.

Usage: ``python benchmarks/smc_particles.py [--fast]``; writes results/smc_particles.{json,md}.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import pyro
import pyro.distributions as dist
import torch

from ppltk.smc import StochasticVolatilitySSM, smc, tempered_smc_flat

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
D = torch.float64


def peer_python() -> str | None:
    path = os.environ.get("PARTICLES_PYTHON") or str(HERE.parent / ".venv-particles/bin/python")
    return path if Path(path).exists() else None


def run_peer(*args: str) -> dict:
    cmd = [peer_python(), str(HERE / "peers" / "particles_runner.py"), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout)


def sv_program(ys, mu, phi, sigma):
    x = pyro.sample("x_0", dist.Normal(mu, sigma / math.sqrt(1 - phi**2)))
    for t in pyro.markov(range(len(ys))):
        if t > 0:
            x = pyro.sample(f"x_{t}", dist.Normal(mu + phi * (x - mu), sigma))
        pyro.sample(f"y_{t}", dist.Normal(0.0, torch.exp(x / 2)), obs=ys[t])


def timed(fn, seeds):
    ests, times = [], []
    for s in seeds:
        start = time.perf_counter()
        ests.append(float(fn(s)))
        times.append(time.perf_counter() - start)
    return ests, times


def summary(ests, times) -> dict:
    return {
        "mean": statistics.fmean(ests),
        "sd": statistics.stdev(ests) if len(ests) > 1 else 0.0,
        "time": statistics.median(times),
    }


def bench_sv(n: int, seeds: int) -> dict:
    peer = run_peer("sv", str(n), str(seeds + 1))
    ys = torch.tensor(peer["data"], dtype=D)
    p = peer["params"]
    ssm = StochasticVolatilitySSM(
        torch.tensor(p["mu"], dtype=D),
        torch.tensor(p["rho"], dtype=D),
        torch.tensor(p["sigma"], dtype=D),
    )

    def explicit(s):
        return smc(ssm, ys[:, None], num_particles=n, seed=s, progress=False).log_evidence

    def program(s):
        args = (ys, p["mu"], p["rho"], p["sigma"])
        return smc(
            sv_program, *args, num_particles=n, seed=s, max_plate_nesting=0, progress=False
        ).log_evidence

    runs = peer["runs"][1:]  # the first run compiles numba
    row = {
        "N": n,
        "particles": summary([r["log_evidence"] for r in runs], [r["time"] for r in runs]),
    }
    row["ppltk_ssm"] = summary(*timed(explicit, range(seeds)))
    row["ppltk_program"] = summary(*timed(program, range(seeds)))
    for key in ("ppltk_ssm", "ppltk_program"):
        row[f"speed_{key}_vs_particles"] = row["particles"]["time"] / row[key]["time"]
    return row


def importance_reference(data: torch.Tensor, prior_scale: float, draws: int = 10**6) -> tuple:
    """log p(y) by importance sampling from a multivariate t (5 dof) at the Laplace fit."""
    p = data.shape[1]

    def log_joint(b):
        prior = dist.Normal(0.0, prior_scale).log_prob(b).sum(-1)
        return prior + torch.nn.functional.logsigmoid(b @ data.T).sum(-1)

    b = torch.zeros(p, dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS([b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -log_joint(b[None]).sum()
        loss.backward()
        return loss

    opt.step(closure)
    mode = b.detach()
    hess = torch.autograd.functional.hessian(lambda x: -log_joint(x[None]).sum(), mode)
    proposal = dist.MultivariateStudentT(
        5.0, mode, scale_tril=torch.linalg.cholesky(torch.linalg.inv(hess))
    )
    torch.manual_seed(0)
    lw = torch.cat(
        [
            (lambda x: log_joint(x) - proposal.log_prob(x))(proposal.sample((50_000,)))
            for _ in range(draws // 50_000)
        ]
    )
    ref = torch.logsumexp(lw, 0) - math.log(len(lw))
    w = torch.exp(lw - lw.max())
    return float(ref), float(w.std() / w.mean() / math.sqrt(len(lw)))


def bench_pima(seeds: int, n: int = 1000) -> dict:
    """ppltk first (default settings: adaptive steps), then particles at the same number of
    likelihood evaluations per temperature (waste-free: N evaluations per temperature)."""
    probe = run_peer("pima", "1000", "1", "10")  # the data, and numba compiled
    data = torch.tensor(probe["data"], dtype=D)
    scale = probe["prior_scale"]
    ref, ref_se = importance_reference(data, scale)

    def log_prior(b):
        return dist.Normal(0.0, scale).log_prob(b).sum(-1)

    def log_lik(b):
        return torch.nn.functional.logsigmoid(b @ data.T).sum(-1)

    evals = []

    def run(s):
        g = torch.Generator().manual_seed(1000 + s)
        z0 = scale * torch.randn(n, data.shape[1], dtype=D, generator=g)
        out = tempered_smc_flat(
            log_prior,
            log_lik,
            z0,
            seed=s,
            prior_and_likelihood=lambda b: (log_prior(b), log_lik(b)),
        )
        temps = len(out.betas) - 1
        evals.append(n * (sum(out.num_mcmc_steps) + temps + 1) / temps)
        return out.log_evidence

    ours = summary(*timed(run, range(seeds)))
    n_peer = int(round(statistics.fmean(evals) / 1000) * 1000)
    peer = run_peer("pima", str(n_peer), str(seeds + 1), "10")
    runs = peer["runs"][1:]
    peer_s = summary([r["log_evidence"] for r in runs], [r["time"] for r in runs])
    row = {
        "reference": ref,
        "reference_se": ref_se,
        "particles": peer_s,
        "ppltk": ours,
        "N_particles": n_peer,
        "N_ppltk": n,
        "evaluations_per_temperature": statistics.fmean(evals),
        "seeds": seeds,
    }
    for key, s in (("particles", peer_s), ("ppltk", ours)):
        row[f"bias_{key}"] = s["mean"] - ref
        row[f"bias_se_{key}"] = s["sd"] / math.sqrt(seeds)
    row["speed_ppltk_vs_particles"] = peer_s["time"] / ours["time"]
    return row


def to_markdown(result: dict) -> str:
    lines = [
        "# ppltk vs particles, on particles' own data (one thread)",
        "",
        f"Machine: {result['machine']}",
        "",
    ]
    if "skipped" in result:
        return "\n".join(lines + [result["skipped"], ""])
    lines += [
        "**(c) Stochastic volatility, GBP/USD 1997-98 (T = 750), bootstrap filter**",
        "",
        "| N | particles log Z (sd) | time | ppltk SSM log Z (sd) | time | speed | "
        "ppltk Pyro program (float32) log Z (sd) | time | speed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["sv"]:
        pa, ss, pr = r["particles"], r["ppltk_ssm"], r["ppltk_program"]
        lines.append(
            f"| {r['N']:,} | {pa['mean']:.2f} ({pa['sd']:.2f}) | {pa['time']:.3f} s | "
            f"{ss['mean']:.2f} ({ss['sd']:.2f}) | {ss['time']:.3f} s | "
            f"{r['speed_ppltk_ssm_vs_particles']:.2f}x | {pr['mean']:.2f} ({pr['sd']:.2f}) | "
            f"{pr['time']:.3f} s | {r['speed_ppltk_program_vs_particles']:.2f}x |"
        )
    p = result["pima"]
    lines += [
        "",
        "**(d) Tempered SMC, Pima logistic regression, equal budget**",
        "",
        f"Importance-sampling reference log p(y) = {p['reference']:.3f} "
        f"(se {p['reference_se']:.4f}); {p['seeds']} seeds each.",
        "",
        "| method | mean log Z - reference (se) | sd | time per run |",
        "|---|---|---|---|",
        f"| particles AdaptiveTempering, waste-free, N = {p['N_particles']:,} | "
        f"{p['bias_particles']:+.3f} ({p['bias_se_particles']:.3f}) | "
        f"{p['particles']['sd']:.3f} | {p['particles']['time']:.2f} s |",
        f"| ppltk tempered_smc_flat (defaults), N = {p['N_ppltk']:,} | "
        f"{p['bias_ppltk']:+.3f} ({p['bias_se_ppltk']:.3f}) | {p['ppltk']['sd']:.3f} | "
        f"{p['ppltk']['time']:.2f} s |",
        "",
        f"speed ppltk / particles: {p['speed_ppltk_vs_particles']:.2f}x",
        "",
    ]
    return "\n".join(lines) + "\n"


def main(fast: bool) -> dict:
    facts = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"torch {torch.__version__}, threads={torch.get_num_threads()}"
    )
    if peer_python() is None:
        return {
            "machine": facts,
            "skipped": "particles environment missing (make bench builds "
            ".venv-particles): not measured.",
        }
    seeds = 3 if fast else 10
    sizes = (1000, 10000) if fast else (1000, 10000, 100000)
    sv = [bench_sv(n, 3 if fast or n > 10000 else 5) for n in sizes]
    return {"machine": facts, "sv": sv, "pima": bench_pima(seeds)}


if __name__ == "__main__":
    result = main("--fast" in sys.argv)
    md = to_markdown(result)
    print(md)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "smc_particles.json").write_text(json.dumps(result, indent=2))
    (out / "smc_particles.md").write_text(md)
