"""The ``ppltk demo`` hook of continual learning runs and reproduces the finding."""

from __future__ import annotations

import pytest

from ppltk.demo.continual import run_demo


@pytest.mark.slow
def test_continual_demo_rows(tmp_path):
    rows = run_demo(fast=True, outdir=tmp_path)
    assert {"capability", "check", "value", "reference", "figure"} <= set(rows[0])
    assert rows[0]["value"] < rows[0]["reference"] - 0.3  # sequential forgets task 1
    assert (tmp_path / "continual_accuracy_matrices.png").exists()
