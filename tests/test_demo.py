import importlib
import re
from pathlib import Path

import pytest

from ppltk.demo import CAPABILITIES, run_demos


@pytest.mark.parametrize("name", sorted(CAPABILITIES))
def test_every_capability_has_a_demo(name):
    module = importlib.import_module(f"ppltk.{name}.demo")
    assert callable(module.run_demo)


def test_demo_report_links_existing_figures(tmp_path, capsys):
    assert run_demos(only=["causal"], fast=True, outdir=tmp_path) == 0
    out = capsys.readouterr().out
    assert "capability" in out and "report:" in out
    page = (tmp_path / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images, "the report should show at least one figure"
    for src in images:
        assert (tmp_path / src).is_file() or Path(src).is_file(), src
