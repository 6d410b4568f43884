"""``ppltk demo`` rows for SMC: particle-filter and tempered-SMC evidence against exact values."""

from __future__ import annotations

import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from ppltk.demo._rows import row_maker
from ppltk.smc import LinearGaussianSSM, particle_filter, smc, tempered_smc_flat
from ppltk.smc._kalman import kalman_filter

D = torch.float64


_row = row_maker("Composable SMC")


def _lg_model() -> LinearGaussianSSM:
    g = torch.Generator().manual_seed(0)
    A = 0.9 * torch.linalg.qr(torch.randn(2, 2, dtype=D, generator=g))[0]
    eye = torch.eye(2, dtype=D)
    return LinearGaussianSSM(A, eye, 0.3 * eye, 0.5 * eye, torch.zeros(2, dtype=D), eye)


def _lg_program(ys, ssm: LinearGaussianSSM):
    """The linear-Gaussian model written the ordinary Pyro way (SMC runs it once, O(NT))."""
    x = pyro.sample("x_0", dist.MultivariateNormal(ssm.m0, scale_tril=ssm.L0))
    for t in pyro.markov(range(len(ys))):
        if t > 0:
            x = pyro.sample(f"x_{t}", dist.MultivariateNormal(x @ ssm.A.mT, scale_tril=ssm.LQ))
        pyro.sample(f"y_{t}", dist.MultivariateNormal(x @ ssm.C.mT, scale_tril=ssm.LR), obs=ys[t])


def run_demo(fast: bool, outdir: Path) -> list[dict]:
    """Rows: PF log-evidence vs Kalman (T=200, the same model as a Pyro program, and a long
    T=10,000 series), tempered SMC evidence vs the closed form; one figure (filtered means vs
    Kalman, tempering schedule)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ssm = _lg_model()
    _, ys = ssm.simulate(200, torch.Generator().manual_seed(1))
    kf_means, kf_covs, logz = kalman_filter(ssm, ys)
    out = particle_filter(ssm, ys, 1000 if fast else 10000, seed=0)
    rows = [_row("PF log-evidence (LG 2-D, T=200) vs Kalman", float(out.log_evidence), logz)]
    start = time.perf_counter()
    prog = smc(_lg_program, ys, ssm, num_particles=1000 if fast else 10000, seed=0, progress=False)
    seconds = time.perf_counter() - start
    rows.append(
        _row(
            f"same model as an ordinary Pyro program, run once ({seconds:.1f}s)",
            prog.log_evidence,
            logz,
        )
    )

    long_t = 10_000
    _, ys_long = ssm.simulate(long_t, torch.Generator().manual_seed(2))
    start = time.perf_counter()
    long = particle_filter(ssm, ys_long, 2000 if fast else 20000, seed=1)
    seconds = time.perf_counter() - start
    rows.append(
        _row(
            f"PF log-evidence, T={long_t} ({seconds:.1f}s)",
            float(long.log_evidence),
            kalman_filter(ssm, ys_long)[2],
        )
    )

    y = torch.randn(20, dtype=D, generator=torch.Generator().manual_seed(3)) + 1.0
    s = 2.0
    cov = torch.eye(20, dtype=D) + s**2 * torch.ones(20, 20, dtype=D)
    exact = float(torch.distributions.MultivariateNormal(torch.zeros(20, dtype=D), cov).log_prob(y))
    z0 = s * torch.randn(
        1000 if fast else 4000, 1, dtype=D, generator=torch.Generator().manual_seed(4)
    )
    temp = tempered_smc_flat(
        lambda z: torch.distributions.Normal(0.0, s).log_prob(z[:, 0]),
        lambda z: torch.distributions.Normal(z, 1.0).log_prob(y).sum(-1),
        z0,
        seed=5,
    )
    rows.append(_row("tempered SMC log-evidence vs closed form", float(temp.log_evidence), exact))
    figure = _figure(out, kf_means, kf_covs, temp.betas, outdir / "smc_demo.png")
    rows[0]["figure"] = str(figure)
    return rows


def _figure(out, kf_means, kf_covs, betas, path: Path) -> Path:

    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    t = torch.arange(len(kf_means))
    sd = kf_covs[:, 0, 0].sqrt()
    ax1.fill_between(
        t, kf_means[:, 0] - 2 * sd, kf_means[:, 0] + 2 * sd, alpha=0.3, label="Kalman ±2 sd"
    )
    ax1.plot(t, kf_means[:, 0], "k", lw=1, label="Kalman mean")
    ax1.plot(t, out.means[:, 0], "r--", lw=1, label="particle filter mean")
    ax1.set(xlabel="t", ylabel="x[0]", title="Filtering: PF vs exact")
    ax1.legend(fontsize=8)
    ax2.plot(betas, "o-")
    ax2.set(
        xlabel="tempering step", ylabel="beta", title=f"Adaptive schedule ({len(betas) - 1} steps)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
