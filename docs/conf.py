"""Sphinx configuration: API reference from docstrings, tutorials executed as notebooks.

Environment variables
---------------------
``PPLTK_DOCS_EXECUTE``
    myst-nb execution mode: ``force`` (default, every tutorial is run), ``off`` (no execution,
    for fast iteration and for ``tests/test_docs.py``), ``cache`` or ``auto``.
``PPLTK_FAST``
    ``0`` (default here): tutorials run at full size; ``1`` shrinks them as in the test suite.
``PPLTK_FIG_DIR``
    Where tutorials save their PNGs (default ``docs/_build/figures``, absolute, so the kernel's
    working directory ``docs/tutorials`` stays clean).
"""

import inspect
import os
import re
import runpy
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS.parent / "benchmarks" / "results"

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("PPLTK_FAST", "0")  # the docs build runs tutorials in full mode
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PPLTK_FIG_DIR", str(DOCS / "_build" / "figures"))

import ppltk  # noqa: E402

project = "ppltk"
author = "the ppltk developers"
copyright = "the ppltk developers"
release = ppltk.__version__
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
exclude_patterns = [
    "_build",
    "_static",
    "_templates",
    "examples",
    "conf.py",
    "**/.ipynb_checkpoints",
]
html_theme = "furo"
html_title = f"ppltk {release}"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_numpy_docstring = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# Tutorials are plain percent-format Python files; myst-nb executes them through jupytext.
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
_MODES = ("force", "off", "cache", "auto", "inline")
nb_execution_mode = os.environ.get("PPLTK_DOCS_EXECUTE", "force")
if nb_execution_mode not in _MODES:
    raise ValueError(f"Expected PPLTK_DOCS_EXECUTE in {_MODES}, but found {nb_execution_mode!r}")
nb_execution_timeout = 3600
nb_execution_raise_on_error = True  # a tutorial that fails fails the build
nb_execution_show_tb = True  # ... and its traceback is printed in the build log
nb_merge_streams = True

# No warning is suppressed: every one is fixed at its source or by the hooks below. (The
# executed tutorials emit only stdout, image/png and text/plain, so myst-nb's
# "unknown_mime_type" warning, suppressed in an earlier version, does not occur.)
suppress_warnings: list[str] = []

# The block-composition figure of blocks.md is drawn by docs/_static/blocks_diagram.py (run
# without importing it, so no bytecode cache lands in the source tree). docs/_static holds
# sources only: it is excluded from the documents and not copied as an HTML static folder.
runpy.run_path(str(DOCS / "_static" / "blocks_diagram.py"))["draw_if_missing"](
    DOCS / "_static" / "blocks.png"
)

# A percent-format script carries no notebook metadata, so without execution myst-nb does not
# know the cells' language ("No source code lexer found"). Give every tutorial the kernelspec
# that execution uses anyway (the venv's own python3 kernel), and a hidden first cell that
# makes the kernel behave like `python tutorial.py` (how the test suite runs them):
# - `__file__` is defined, as for a script (a kernel does not define it);
# - `ppltk._tutorial.save_figure` also displays the PNG it saved, so the figure is in the page
#   (`ppltk._tutorial._in_notebook` looks for "Kernel" in the shell's class name, but the
#   kernel's shell is `ipykernel.zmqshell.ZMQInteractiveShell`, so it never displays; and with
#   MPLBACKEND=Agg `display(fig)` would only give text; showing the saved file is exact), and
#   the Path it returns does not print itself when it is a cell's last expression;
# - tqdm's "IProgress not found" warning is ignored: `ppltk._progress` imports `tqdm.auto`,
#   which looks for ipywidgets in a kernel; without them it falls back to the text bar, which is
#   what we want (progress bars are off outside a terminal anyway).
_JUPYTEXT_HEADER = """\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   language_info:
#     name: python
#     pygments_lexer: ipython3
# ---

# %% tags=["remove-cell"]
__file__ = {path!r}
import pathlib as _pathlib
import warnings as _warnings

from IPython.display import Image as _Image
from IPython.display import display as _display

_warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
import ppltk._tutorial as _ppltk_tutorial

_ppltk_tutorial._in_notebook = lambda: False
_ppltk_save_figure = _ppltk_tutorial.save_figure


class _QuietPath(type(_pathlib.Path())):
    def _ipython_display_(self):
        pass


def _save_and_show(fig, name):
    path = _ppltk_save_figure(fig, name)
    _display(_Image(filename=str(path)))
    return _QuietPath(path)


_ppltk_tutorial.save_figure = _save_and_show

"""


def _prepare_tutorial(app, docname: str, source: list[str]) -> None:
    """``source-read``: prepend the kernelspec header and the hidden set-up cell to a tutorial."""
    path = Path(app.env.doc2path(docname)).resolve()
    if path.suffix == ".py" and not source[0].lstrip().startswith("# ---"):
        source[0] = _JUPYTEXT_HEADER.format(path=str(path)) + source[0]


_BENCH_MARKER = re.compile(r"^<!-- bench-results: (\w+) -->$", re.MULTILINE)


def _bench_results(name: str, taken: set[str], reserved: set[str] = frozenset()) -> str:
    """``{include}`` directives for ``benchmarks/results/<name>[_*].md`` (or a note if none);
    files whose stem is another marker's name (``mcmc_many_chains`` under ``mcmc``) are
    left to that marker."""
    files = [f for f in sorted(RESULTS.glob("*.md")) if f.stem == name or f.stem not in reserved]
    if name == "others":
        chosen = [f for f in files if f.stem not in taken]
        heading = "## Other results\n\n" if chosen else ""
    else:
        chosen = [f for f in files if f.stem == name or f.stem.startswith(f"{name}_")]
        heading = ""
    taken.update(f.stem for f in chosen)
    if not chosen:
        if name == "others":
            return ""
        return f"*No results yet: run `python benchmarks/{name}.py`.*\n"
    blocks = [
        f"From `benchmarks/results/{f.name}`:\n\n"
        f"```{{include}} {os.path.relpath(f, DOCS)}\n:heading-offset: 2\n```\n"
        for f in chosen
    ]
    return heading + "\n".join(blocks)


def _include_benchmark_tables(app, docname: str, source: list[str]) -> None:
    """``source-read``: replace ``<!-- bench-results: NAME -->`` in benchmarks.md by the tables.

    Every ``benchmarks/results/*.md`` present at build time is included once; the ``others``
    marker collects files that no named marker claimed (a new benchmark shows up by itself).
    """
    if docname != "benchmarks":
        return
    taken: set[str] = set()
    names = _BENCH_MARKER.findall(source[0])
    names = [n for n in names if n != "others"] + ["others"] * ("others" in names)
    reserved = set(names)
    tables = {name: _bench_results(name, taken, reserved) for name in names}
    source[0] = _BENCH_MARKER.sub(lambda m: tables[m.group(1)], source[0])


def _always_reread_benchmarks(app, env, added, changed, removed) -> list[str]:
    """``env-get-outdated``: re-read benchmarks.md on every build (new result files appear)."""
    return ["benchmarks"] if "benchmarks" in env.found_docs else []


def _foreign_inherited_doc(obj) -> bool:
    """True for a ppltk method without a docstring of its own whose docstring autodoc would
    inherit from a class outside ppltk (e.g. ``torch.autograd.Function.forward``)."""
    func = inspect.unwrap(getattr(obj, "__func__", obj))
    if not inspect.isfunction(func) or func.__doc__ is not None:
        return False
    if not func.__module__.startswith("ppltk."):
        return False
    owner_name, _, name = func.__qualname__.rpartition(".")
    owner = getattr(sys.modules.get(func.__module__), owner_name, None)
    if not inspect.isclass(owner):
        return False
    for base in owner.__mro__[1:]:
        member = base.__dict__.get(name)
        if member is not None and getattr(member, "__doc__", None):
            return not base.__module__.startswith("ppltk")
    return False


def _skip_foreign_inherited(app, what, name, obj, skip, options):
    """``autodoc-skip-member``: do not document a method only by torch's inherited docstring.

    ``torch.autograd.Function.forward``/``backward`` and ``torch.nn.Module.forward`` carry
    torch's own text with cross-references to labels of the torch docs (``extending-autograd``,
    ``combining-forward-context``) that do not exist here and would be broken links.
    """
    if _foreign_inherited_doc(obj):
        return True
    return None


def setup(app):
    app.connect("source-read", _prepare_tutorial)
    app.connect("source-read", _include_benchmark_tables)
    app.connect("env-get-outdated", _always_reread_benchmarks)
    app.connect("autodoc-skip-member", _skip_foreign_inherited)
    return {"parallel_read_safe": True}
