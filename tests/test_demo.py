import importlib
import re
from pathlib import Path

import pytest

from ppltk.demo import CAPABILITIES, run_demos


@pytest.mark.parametrize("name", sorted(CAPABILITIES))
def test_every_capability_has_a_demo(name):
    module = importlib.import_module(f"ppltk.demo.{name}")
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


def test_demo_leaves_the_callers_process_as_it_was(tmp_path, capsys):
    """Importing and running the tour changes no global state (threads, RNG, backend)."""
    import matplotlib
    import torch

    threads, rng, backend = torch.get_num_threads(), torch.random.get_rng_state(), None
    backend = matplotlib.get_backend()
    torch.set_num_threads(2)
    try:
        assert run_demos(only=["smc"], fast=True, outdir=tmp_path) == 0
        assert torch.get_num_threads() == 2
        assert torch.equal(torch.random.get_rng_state(), rng)
        assert matplotlib.get_backend().lower() == backend.lower()
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
