"""``ppltk demo`` rows for fractional SDEs: the learned Hurst index against the truth."""

from __future__ import annotations

from pathlib import Path

import torch

from ppltk.demo._rows import row_maker
from ppltk.sde.fbm import davies_harte, hurst_gaussian_mle, hurst_variogram
from ppltk.sde.markov_fbm import MarkovFBM
from ppltk.sde.variational import VariationalFractionalSDE

CAPABILITY = "Fractional-noise SDE inference"


_row = row_maker(CAPABILITY)


def _figure(results: dict, posterior, outdir: Path) -> str:

    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    truths = sorted(results)
    for name, marker in (("variational", "o"), ("variogram", "s"), ("gaussian_mle", "^")):
        ax1.plot(truths, [results[h][name] for h in truths], marker, label=name, ms=8)
    ax1.plot([0, 1], [0, 1], "k--", lw=1)
    ax1.set(xlabel="true H", ylabel="estimated H", title="Hurst index", xlim=(0, 1), ylim=(0, 1))
    ax1.legend()
    paths, grid, ts, ys = posterior
    for k in range(min(20, paths.shape[0])):
        ax2.plot(grid, paths[k, 0, :, 0], color="C0", alpha=0.25, lw=0.8)
    ax2.plot(ts, ys[0, :, 0], "k.", label="observations")
    ax2.set(xlabel="t", title="posterior paths (H = 0.3 data)")
    ax2.legend()
    path = outdir / "sde_hurst.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def run_demo(fast: bool, outdir: Path) -> list[dict]:
    """Rows: fitted H vs truth (0.3, 0.7) on exact fBM, the baselines, and the MA-fBM L2 error
    at H = 1/2 (Type II reproduces Brownian motion); one figure."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    T, paths_n, steps = (48, 6, 80) if fast else (96, 12, 250)
    ts = torch.linspace(0, 1, T, dtype=torch.float64)
    results, rows, posterior = {}, [], None
    for hurst in (0.3, 0.7):
        ys = davies_harte(hurst, T - 1, paths_n, seed=1)[..., None]
        model = VariationalFractionalSDE(num_particles=2 if fast else 4, lr=0.05)
        model.fit(ts, ys, num_steps=steps, seed=0, progress=False)
        results[hurst] = {
            "variational": model.hurst,
            "variogram": hurst_variogram(ys),
            "gaussian_mle": hurst_gaussian_mle(ys),
        }
        for name, value in results[hurst].items():
            rows.append(_row(f"H by {name}, {paths_n} fBM paths", value, hurst))
        if posterior is None:
            paths, grid = model.sample_posterior_paths(num_samples=20, seed=0)
            posterior = (paths, grid, ts, ys)
    err = MarkovFBM(0.5, num_processes=5, kind="II").approximation_error(relative=True)
    rows.append(_row("MA-fBM rel. L2 error, H=1/2, Type II, K=5", float(err), 0.0))
    figure = _figure(results, posterior, outdir)
    rows[0]["figure"] = figure
    return rows
