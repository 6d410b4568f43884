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
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("PPLTK_FAST", "0")  # the docs build runs tutorials in full mode
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PPLTK_FIG_DIR", str(DOCS / "_build" / "figures"))

import ppltk  # noqa: E402

sys.path.insert(0, str(DOCS / "_static"))
from blocks_diagram import draw_if_stale  # noqa: E402

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
exclude_patterns = ["_build", "_static", "_templates", "conf.py", "**/.ipynb_checkpoints"]
html_theme = "furo"
html_title = f"ppltk {release}"
html_static_path = ["_static"]
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

suppress_warnings = [
    # Tutorials only display PNG figures and text; the odd rich output of a library (e.g. an
    # ArviZ/xarray HTML repr alongside its text/plain form) has no renderer in myst-nb and is
    # dropped in favour of the text form, which is what we want.
    "mystnb.unknown_mime_type",
]

# The block-composition figure of blocks.md is drawn by docs/_static/blocks_diagram.py.
draw_if_stale(DOCS / "_static" / "blocks.png")

# A percent-format script carries no notebook metadata, so without execution myst-nb does not
# know the cells' language ("No source code lexer found"). Give every tutorial the kernelspec
# that execution uses anyway (the venv's own python3 kernel).
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

"""


def _add_kernelspec(app, docname: str, source: list[str]) -> None:
    """``source-read``: prepend the kernelspec header to a percent-format tutorial."""
    path = Path(app.env.doc2path(docname))
    if path.suffix == ".py" and not source[0].lstrip().startswith("# ---"):
        source[0] = _JUPYTEXT_HEADER + source[0]


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
    app.connect("source-read", _add_kernelspec)
    app.connect("autodoc-skip-member", _skip_foreign_inherited)
    return {"parallel_read_safe": True}
