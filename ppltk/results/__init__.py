"""One result type for every algorithm."""

from ppltk.results.result import Result

__all__ = ["Result"]
