"""The demo hook returns well-formed rows (slow: it runs eight schools through the bridge)."""

import pytest

from ppltk.demo.mcmc import run_demo


@pytest.mark.slow
def test_run_demo_rows(tmp_path):
    rows = run_demo(fast=True, outdir=tmp_path)
    assert all({"capability", "check", "value", "reference", "figure"} <= set(r) for r in rows)
    mean, sd = rows[0], rows[1]
    # 4 x 150 draws of a Gaussian posterior: 4.5 MC SEs of the mean is < 0.5 sd
    assert abs(mean["value"] - mean["reference"]) < 0.5 * sd["reference"]
    assert any(r["figure"] for r in rows)
    assert (tmp_path / "mcmc_eight_schools_rank.png").exists()
