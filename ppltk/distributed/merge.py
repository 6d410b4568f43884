"""Merging the results of work units into one :class:`ppltk.Result`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

from ppltk.errors import ArgumentError, ShapeError
from ppltk.results import Result

__all__ = ["merge_results", "log_mean_exp"]


def log_mean_exp(values: Sequence[float] | np.ndarray) -> float:
    r"""Return :math:`\log \frac1n \sum_i e^{v_i}`, stably (``-inf`` entries allowed).

    This is how independent unbiased evidence estimates combine: if every island ``i`` returns
    :math:`\log \hat Z_i` with :math:`E[\hat Z_i] = Z`, then :math:`\frac1n\sum_i \hat Z_i` is
    unbiased for :math:`Z` with ``n`` times less variance, and its log is this function of the
    :math:`\log \hat Z_i`.

    Examples
    --------
    >>> round(log_mean_exp([0.0, 0.0]), 12)
    0.0
    >>> round(log_mean_exp([math.log(1.0), math.log(3.0)]) - math.log(2.0), 12)
    0.0
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ArgumentError("Expected at least one value in `values`, but found none")
    return float(logsumexp(arr) - math.log(arr.size))


def merge_results(results: Sequence[Result]) -> Result:
    """Concatenate results along the chain axis, keeping their order.

    Chain ``c`` of ``results[k]`` becomes chain ``sum(r.num_chains for r in results[:k]) + c``, so
    chains split into groups in order (as :func:`ppltk.distributed.sample_chains` does) keep
    their ids. Draws, stats and observed data must agree in sites, shapes and number of draws.

    The merged ``log_evidence`` is :func:`log_mean_exp` of the parts' estimates when every part
    has one (independent SMC islands), else ``None``. ``attrs`` keep the keys whose values agree;
    keys that differ between parts become lists (one entry per part).
    """
    results = list(results)
    if not results or not all(isinstance(r, Result) for r in results):
        raise ArgumentError(
            "Expected `results` to be a non-empty list of ppltk.Result, but found "
            f"{[type(r).__name__ for r in results]}"
        )
    first = results[0]
    for k, r in enumerate(results[1:], start=1):
        _check_compatible(first, r, k)
    draws = {s: np.concatenate([r.draws[s] for r in results], axis=0) for s in first.draws}
    stats = {s: np.concatenate([r.stats[s] for r in results], axis=0) for s in first.stats}
    evidences = [r.log_evidence for r in results]
    log_evidence = None if any(e is None for e in evidences) else log_mean_exp(evidences)
    return Result(
        draws=draws,
        stats=stats,
        log_evidence=log_evidence,
        observed_data=dict(first.observed_data),
        method=first.method,
        attrs=_merge_attrs([r.attrs for r in results]),
    )


def _check_compatible(first: Result, other: Result, k: int) -> None:
    for field in ("draws", "stats"):
        a, b = getattr(first, field), getattr(other, field)
        if set(a) != set(b):
            raise ArgumentError(
                f"Expected results[{k}].{field} to have keys {sorted(a)}, but found {sorted(b)}"
            )
        for name in a:
            sa, sb = a[name].shape, b[name].shape
            if sa[1:] != sb[1:]:
                raise ShapeError(
                    f"Expected results[{k}].{field}[{name!r}] shaped [chain, {list(sa[1:])}], "
                    f"but found {list(sb)}"
                )
    if first.method != other.method:
        raise ArgumentError(
            f"Expected results[{k}].method == {first.method!r}, but found {other.method!r}"
        )
    if set(first.observed_data) != set(other.observed_data) or not all(
        np.array_equal(first.observed_data[s], other.observed_data[s]) for s in first.observed_data
    ):
        raise ArgumentError(
            f"Expected results[{k}] to share observed_data with results[0], but it differs"
        )


def _merge_attrs(attrs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = list(dict.fromkeys(k for a in attrs for k in a))
    merged: dict[str, Any] = {}
    for key in keys:
        values = [a.get(key) for a in attrs]
        same = all(_equal(v, values[0]) for v in values[1:])
        merged[key] = values[0] if same else values
    return merged


def _equal(a: Any, b: Any) -> bool:
    """Structural equality of attr values: tensors and arrays by shape and entries, containers
    element-wise, anything else with ``==``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and torch.equal(a.detach().cpu(), b.detach().cpu())
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)
