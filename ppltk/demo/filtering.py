"""`ppltk demo` hook: neural decoding with the DKF against the Kalman filter."""

from __future__ import annotations

import pathlib

from ppltk.filtering.pipeline import decoding_pipeline
from ppltk.filtering.plotting import plot_decoded


def run_demo(fast: bool, outdir: pathlib.Path) -> list[dict]:
    """Decode simulated exponentially tuned neurons; compare nRMSE of DKF and KF.

    Returns one row per check with keys ``capability``, ``check``, ``value``,
    ``reference`` and ``figure`` (the PNG of decoded against true trajectories).
    """

    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    table = decoding_pipeline(
        num_neurons=30 if fast else 100,
        num_steps=1500 if fast else 5000,
        regressors=("nw",) if fast else ("nw", "mlp", "gp", "auto"),
        fast=fast,
        seed=0,
    )
    by_name = {row["method"]: row for row in table.rows}
    best_dkf = min(
        (r for r in table.rows if r["method"].startswith("DKF")), key=lambda r: r["nrmse"]
    )
    shown = {name: table.decoded[name] for name in ("KF", best_dkf["method"])}
    fig = plot_decoded(table.truth, shown)
    figure = outdir / "filtering_decoding.png"
    fig.savefig(figure, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return [
        {
            "capability": "filtering: neural decoding",
            "check": f"nRMSE of {best_dkf['method']} (value) vs KF (reference), lower is better",
            "value": best_dkf["nrmse"],
            "reference": by_name["KF"]["nrmse"],
            "figure": str(figure),
        },
        {
            "capability": "filtering: neural decoding",
            "check": f"mean angle error (deg) of {best_dkf['method']} vs KF",
            "value": best_dkf["angle_error_deg"],
            "reference": by_name["KF"]["angle_error_deg"],
            "figure": None,
        },
    ]
