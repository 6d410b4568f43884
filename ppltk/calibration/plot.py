"""Rank histograms of simulation-based calibration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from ppltk.calibration.ranks import rank_bins

if TYPE_CHECKING:  # pragma: no cover
    from ppltk.calibration.sbc import SBCResult

__all__ = ["plot_ranks"]


def plot_ranks(
    result: SBCResult,
    params: Sequence[str] | None = None,
    *,
    band: float = 0.99,
    ncols: int = 4,
    panel_size: tuple[float, float] = (3.0, 2.4),
):
    """One rank histogram per parameter, with the band a uniform histogram stays in.

    Bins are those of the chi-square test. Under uniformity the count of bin ``b`` is
    :math:`\\text{Binomial}(N, m_b/(L+1))`; the grey band spans its central ``band`` interval
    (per bin), the line its mean. U-shapes mean a too narrow posterior, humps a too wide one,
    slopes a biased one.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    names = list(params) if params is not None else list(result.ranks)
    ncols = min(ncols, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False
    )
    edges = rank_bins(result.num_draws, result.num_bins)
    n = result.num_simulations
    probs = np.diff(edges) / (result.num_draws + 1)
    low, high = stats.binom.interval(band, n, probs)
    for ax, name in zip(axes.flat, names):
        counts = np.histogram(result.ranks[name], bins=edges)[0]
        ax.fill_between(
            edges,
            np.append(low, low[-1]),
            np.append(high, high[-1]),
            step="post",
            color="0.85",
            label=f"{band:.0%} band",
        )
        ax.stairs(n * probs, edges, color="0.4", linestyle="--")
        ax.stairs(counts, edges, fill=True, alpha=0.7, color="C0")
        ax.set_title(f"{name}  (p = {result.p_values[name]:.3g})", fontsize=9)
        ax.set_xlabel("rank")
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(f"SBC ranks: {result.method}\nN = {n}, L = {result.num_draws}", fontsize=10)
    fig.tight_layout()
    return fig
