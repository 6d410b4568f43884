"""``ppltk demo`` rows for amortized inference: accuracy against an exact posterior, SBC of the
trained and of an under-trained network, importance-sampling ESS and evidence."""

from __future__ import annotations

import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from ppltk.amortized.posterior import CalibrationWarning, fit_amortized
from ppltk.demo._rows import row_maker

CAPABILITY = "Amortized inference"
N_OBS, PRIOR_SD = 10, 2.0


_row = row_maker(CAPABILITY)


def _model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", N_OBS):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def run_demo(fast: bool, outdir: Path) -> list[dict]:
    """Train on a Normal-Normal model (exact posterior known) and report the checks."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sims, epochs = (3000, 60) if fast else (20000, 200)
    q = fit_amortized(_model, torch.zeros(N_OBS), num_simulations=sims, max_epochs=epochs,
                      seed=0, progress=False)  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    mu = PRIOR_SD * torch.randn(100, 1, generator=gen)
    y = mu + torch.randn(100, N_OBS, generator=gen)
    precision = 1 / PRIOR_SD**2 + N_OBS
    mean, sd = y.sum(-1) / precision, precision**-0.5
    draws = q.sample(y, num_samples=4000, seed=0)["mu"]
    err = float(((draws.mean(-1) - mean) / sd).abs().mean())
    sd_err = float((draws.std(-1) / sd - 1).abs().mean())
    sbc = q.calibrate(num_simulations=500, seed=3)
    fig = sbc.plot()
    path = outdir / "amortized_sbc.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        weak = fit_amortized(_model, torch.zeros(N_OBS), num_simulations=1000, max_epochs=3,
                             lr=3e-3, seed=0, progress=False, calibrate=False)  # fmt: skip
    weak_p = weak.calibrate(num_simulations=500, seed=3).p_values["mu"]
    imp = q.importance_sample(y[0], num_samples=2000, seed=0)
    cov = torch.eye(N_OBS) + PRIOR_SD**2 * torch.ones(N_OBS, N_OBS)
    log_z = float(torch.distributions.MultivariateNormal(torch.zeros(N_OBS), cov).log_prob(y[0]))
    return [
        _row("mean |posterior mean error| over 100 data sets (exact sds)", err, "< 0.1"),
        _row("mean |posterior sd error| over 100 data sets (relative)", sd_err, "< 0.1"),
        _row("SBC p-value, trained network (N=500)", sbc.p_values["mu"], "> 0.01", str(path)),
        _row("SBC p-value, under-trained network (N=500)", weak_p, "< 1e-3 (flagged)"),
        _row("importance ESS / 2000 proposals", imp.ess / 2000, "close to 1"),
        _row("|log p(y) estimate - exact|", abs(imp.log_evidence - log_z), "< 0.05"),
    ]
