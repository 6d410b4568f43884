"""The amortized-inference demo rows (``ppltk demo``) are produced and within their references."""

from ppltk.demo.amortized import run_demo


def test_run_demo_fast(tmp_path):
    rows = run_demo(fast=True, outdir=tmp_path)
    assert {tuple(sorted(r)) for r in rows} == {
        ("capability", "check", "figure", "reference", "value")
    }
    assert rows[0]["value"] < 0.1 and rows[1]["value"] < 0.1
    assert rows[2]["value"] > 0.01 and rows[3]["value"] < 1e-3
    assert rows[4]["value"] > 0.5 and rows[5]["value"] < 0.05
    assert len({r["check"] for r in rows}) == len(rows)
    assert (tmp_path / "amortized_sbc.png").exists()
