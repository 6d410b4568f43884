"""posteriordb suite: ppltk NUTS against the reference posteriors of stan-dev/posteriordb.

Opt-in (``make test-posteriordb``; marked ``slow`` too, so ``make test`` skips it). For each
posterior: 4 chains of 500 warm-up + 500 draws, no exception, rank-normalised split R-hat
below 1.05 for every scalar parameter, and against the reference (10 x 1000 thinned Stan
draws, ``reference.json``, built by ``build_reference.py``):

* the mean, as a z-score on its Monte Carlo standard error,
  :math:`z = (\\bar x - m_{ref}) / (s_{ref} \\sqrt{1/\\mathrm{ESS} + 1/n_{ref}})`, with the bulk
  ESS of our draws and :math:`n_{ref} = 10^4` near-independent reference draws. Under a
  correct sampler :math:`z` is close to standard normal; ``|z| < 5`` has a false-alarm rate
  of about :math:`6 \\times 10^{-7}` per comparison, so about :math:`10^{-4}` over the 173
  comparisons of the suite (29 posteriors), while a bias of a fifth of a posterior sd at
  ESS 1000 gives :math:`|z| \\approx 6`;
* the sd ratio :math:`s / s_{ref}` within ``[0.7, 1.4]``: the relative standard error of an
  sd estimate is :math:`\\sqrt{(\\kappa - 1) / (4\\,\\mathrm{ESS})}` (kurtosis
  :math:`\\kappa`), 0.035 for a normal at ESS 400 and 0.1 for :math:`\\kappa = 9` at ESS 200,
  so the band is at least 3 standard errors wide on either side for every posterior here.

The same tolerances hold for every model; none is tuned per model.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time
import warnings

import arviz as az
import numpy as np
import pytest
import torch

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

from posteriordb_models import POSTERIORS, load_data  # noqa: E402

import ppltk.mcmc  # noqa: E402

REFERENCE = json.loads((HERE / "reference.json").read_text())
NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 4, 500, 500
Z_BOUND = 5.0
SD_RATIO = (0.7, 1.4)
RHAT_BOUND = 1.05
# Posteriors whose run alone exceeds the suite's time budget (~25 min for all on one thread):
# run them with PPLTK_POSTERIORDB_ALL=1. Lotka-Volterra: 80 RK4 steps make a captured graph of
# thousands of operations (above the 1000 that backend "auto" compiles, so it replays the fx
# graph), ~40 ms per gradient; a run with the suite's settings did not finish in 30 min on
# the shared 2-core machine.
EXPENSIVE = {"hudson_lynx_hare-lotka_volterra"}


def _cases():
    run_all = os.environ.get("PPLTK_POSTERIORDB_ALL") == "1"
    skip = pytest.mark.skip(reason="expensive: set PPLTK_POSTERIORDB_ALL=1 to run it")
    return [
        pytest.param(name, marks=[skip] if name in EXPENSIVE and not run_all else [])
        for name in POSTERIORS
    ]


def _scalar_draws(result) -> dict[str, np.ndarray]:
    """``{stan_name: [chain, draw]}`` with Stan's 1-based ``name[i]`` for vector sites."""
    out = {}
    for site, value in result.draws.items():
        if value.ndim == 2:
            out[site] = value
        else:
            flat = value.reshape(value.shape[:2] + (-1,))
            for i in range(flat.shape[-1]):
                out[f"{site}[{i + 1}]"] = flat[..., i]
    return out


def check_posterior(name: str, seed: int = 0) -> dict:
    """Run one posterior and return the per-parameter comparison (no assertions)."""
    ref = REFERENCE[name]
    model, args = POSTERIORS[name](load_data(ref["data"]))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ppltk.mcmc.sample(
            model,
            *args,
            num_chains=NUM_CHAINS,
            num_warmup=NUM_WARMUP,
            num_samples=NUM_SAMPLES,
            seed=seed,
            progress=False,
        )
    wall = time.perf_counter() - start
    draws = _scalar_draws(result)
    rows = {}
    for param, (ref_mean, ref_sd) in ref["params"].items():
        x = draws[param]
        ess = float(az.ess(x, method="bulk"))
        mcse = ref_sd * math.sqrt(1.0 / ess + 1.0 / ref["n_draws"])
        rows[param] = {
            "z": float((x.mean() - ref_mean) / mcse),
            "sd_ratio": float(x.std(ddof=1) / ref_sd),
            "rhat": float(az.rhat(x)),
            "ess": ess,
        }
    return {
        "name": name,
        "params": rows,
        "wall_s": wall,
        "divergences": int(result.attrs["num_divergences"]),
        "restarts": int(sum(result.attrs["num_restarts"])),
        "mean_steps": float(np.mean(result.stats.get("n_steps", np.nan))),
        "warnings": sorted({str(w.message).splitlines()[0][:120] for w in caught}),
    }


def _report(out: dict) -> str:
    rows = out["params"].values()
    z = max(abs(r["z"]) for r in rows)
    ratios = [r["sd_ratio"] for r in rows]
    rhat = max(r["rhat"] for r in rows)
    ess = min(r["ess"] for r in rows)
    return (
        f"POSTERIORDB {out['name']}: max|z|={z:.2f} sd_ratio=[{min(ratios):.3f}, "
        f"{max(ratios):.3f}] max_rhat={rhat:.4f} min_ess={ess:.0f} "
        f"divergences={out['divergences']} restarts={out['restarts']} "
        f"mean_leapfrog={out['mean_steps']:.1f} wall={out['wall_s']:.1f}s"
    )


@pytest.mark.slow
@pytest.mark.posteriordb
@pytest.mark.parametrize("name", _cases())
def test_posteriordb(name):
    torch.set_num_threads(1)
    out = check_posterior(name)
    print("\n" + _report(out))
    for message in out["warnings"]:
        print(f"  warning: {message}")
    bad = []
    for param, r in out["params"].items():
        if not r["rhat"] < RHAT_BOUND:
            bad.append(f"{param}: R-hat {r['rhat']:.4f} >= {RHAT_BOUND}")
        if not abs(r["z"]) < Z_BOUND:
            bad.append(f"{param}: |z| = {abs(r['z']):.2f} >= {Z_BOUND}")
        if not SD_RATIO[0] <= r["sd_ratio"] <= SD_RATIO[1]:
            bad.append(f"{param}: sd ratio {r['sd_ratio']:.3f} outside {SD_RATIO}")
    assert not bad, f"{name}: " + "; ".join(bad)
