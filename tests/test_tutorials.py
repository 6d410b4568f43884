"""Every tutorial in docs/tutorials runs, in fast mode, as part of the test suite."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).parents[1] / "docs" / "tutorials").glob("*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_fast_mode(path, tmp_path):
    env = dict(os.environ, PPLTK_FAST="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg", CI="true")
    env["PPLTK_FIG_DIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert list(tmp_path.glob("*.png")), "a tutorial should save at least one figure"
