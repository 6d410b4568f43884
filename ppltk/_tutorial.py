"""Helpers shared by the runnable tutorials in ``docs/tutorials``."""

from __future__ import annotations

import os
from pathlib import Path


def fast_mode() -> bool:
    """True when ``PPLTK_FAST=1``: tutorials shrink their sizes (used by the test suite)."""
    return os.environ.get("PPLTK_FAST", "0") not in ("", "0", "false", "False")


def figure_dir() -> Path:
    """Folder for tutorial figures (``PPLTK_FIG_DIR`` or ``docs/_build/figures``)."""
    path = Path(os.environ.get("PPLTK_FIG_DIR", Path("docs") / "_build" / "figures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, name: str) -> Path:
    """Save a matplotlib figure as ``<figure_dir>/<name>.png`` and close it."""
    import matplotlib.pyplot as plt

    path = figure_dir() / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    if _in_notebook():  # the docs build executes tutorials as notebooks: show the figure there
        from IPython.display import Image, display

        display(Image(filename=str(path)))
    return path


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
