"""Demo hook for ``ppltk demo``: batched NUTS on a conjugate model and on eight schools."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from ppltk.mcmc.api import sample
from ppltk.mcmc.targets import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y, eight_schools_noncentered

__all__ = ["run_demo"]


def _normal_normal(y):
    theta = pyro.sample("theta", dist.Normal(1.0, 2.0))
    with pyro.plate("N", y.shape[0]):
        pyro.sample("y", dist.Normal(theta, 1.5), obs=y)


def _conjugate(size: int) -> list[dict]:
    y = torch.tensor([0.3, 2.1, 1.4, -0.2, 3.0, 1.1])
    precision = 1 / 2.0**2 + len(y) / 1.5**2
    mean = (1.0 / 2.0**2 + y.sum().item() / 1.5**2) / precision
    res = sample(_normal_normal, y, num_warmup=size, num_samples=size, seed=0, progress=False)
    theta = res.draws["theta"]
    return [
        {
            "capability": "mcmc.nuts",
            "check": "Normal-Normal posterior mean",
            "value": float(theta.mean()),
            "reference": mean,
            "figure": None,
        },
        {
            "capability": "mcmc.nuts",
            "check": "Normal-Normal posterior sd",
            "value": float(theta.std()),
            "reference": precision**-0.5,
            "figure": None,
        },
    ]


def _eight_schools(size: int, outdir: Path) -> list[dict]:
    import arviz as az
    import matplotlib.pyplot as plt

    sigma, y = torch.tensor(EIGHT_SCHOOLS_SIGMA), torch.tensor(EIGHT_SCHOOLS_Y)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sample(
            eight_schools_noncentered,
            sigma,
            y,
            num_warmup=size,
            num_samples=size,
            seed=0,
            progress=False,
        )
    wall = time.perf_counter() - start
    idata = res.to_arviz()
    ess = az.ess(idata, method="bulk")
    rhat = az.rhat(idata)
    min_ess = min(float(ess[v].min()) for v in ess.data_vars)
    max_rhat = max(float(rhat[v].max()) for v in rhat.data_vars)
    axes = az.plot_rank(idata, var_names=["mu", "tau"])
    fig = axes.ravel()[0].figure
    outdir.mkdir(parents=True, exist_ok=True)
    figure = outdir / "mcmc_eight_schools_rank.png"
    fig.savefig(figure, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [
        {
            "capability": "mcmc.nuts",
            "check": "eight schools max R-hat (4 chains)",
            "value": max_rhat,
            "reference": 1.01,
            "figure": str(figure),
        },
        {
            "capability": "mcmc.nuts",
            "check": "eight schools min bulk ESS per second",
            "value": min_ess / wall,
            "reference": 16.0,
            "figure": None,
        },
        {
            "capability": "mcmc.nuts",
            "check": "eight schools divergences after warm-up",
            "value": res.attrs["num_divergences"],
            "reference": 0,
            "figure": None,
        },
    ]


def run_demo(fast: bool, outdir: Path) -> list[dict]:
    """Conjugate Normal–Normal posterior vs the exact one; eight schools R-hat, ESS/s (the
    reference 16 ESS/s is Pyro's NUTS, GUIDE §3) and a rank plot."""
    size = 150 if fast else 1000
    outdir = Path(outdir)
    return _conjugate(size) + _eight_schools(size, outdir)
