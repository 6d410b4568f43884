"""Sphinx configuration: API reference from docstrings, tutorials executed as notebooks."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PPLTK_FAST", "0")  # the docs build runs tutorials in full mode
os.environ.setdefault("MPLBACKEND", "Agg")

import ppltk  # noqa: E402

project = "ppltk"
author = "the ppltk developers"
release = ppltk.__version__
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build", "conf.py", "**/.ipynb_checkpoints"]
html_theme = "furo"
html_title = f"ppltk {release}"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_numpy_docstring = True
myst_enable_extensions = ["dollarmath", "amsmath"]
# Tutorials are plain percent-format Python files; myst-nb executes them through jupytext.
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = os.environ.get("PPLTK_DOCS_EXECUTE", "force")
nb_execution_timeout = 3600
nb_execution_raise_on_error = True
suppress_warnings = ["mystnb.unknown_mime_type"]
