"""ppltk: composable probabilistic-programming inference on Pyro and PyTorch."""

from ppltk import errors
from ppltk._version import __version__
from ppltk.results import Result

__all__ = ["Result", "errors", "__version__"]
