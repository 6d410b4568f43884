"""Doctest examples in every ppltk module run as tests."""

import doctest
import importlib
import pkgutil

import pytest

import ppltk

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(ppltk.__path__, "ppltk.")
    if not name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
