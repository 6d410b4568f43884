"""The one shape of a ``ppltk demo`` table row."""

from __future__ import annotations

import functools


def row(capability: str, check: str, value, reference, figure=None) -> dict:
    """A row: what was checked, the value found and the reference it is compared with."""
    return {
        "capability": capability,
        "check": check,
        "value": value,
        "reference": reference,
        "figure": figure,
    }


def row_maker(capability: str):
    """``row`` with the capability filled in (each demo module's ``_row``)."""
    return functools.partial(row, capability)
