"""Independent SMC runs ("islands") as work units, with their evidence combined correctly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

from ppltk._methods import get_method, lookup
from ppltk.distributed.merge import merge_results
from ppltk.distributed.seeds import root_seed, unit_seeds
from ppltk.distributed.units import map_units
from ppltk.errors import ArgumentError
from ppltk.results import Result

__all__ = ["smc_islands"]


@dataclass(frozen=True)
class Island:
    """One work unit: one independent SMC run of ``method`` with its own seed."""

    model: Callable[..., Any]
    args: tuple
    kwargs: dict[str, Any]
    method: Any
    seed: int

    def run(self) -> Result:
        fn = self.method
        if isinstance(fn, str):
            fn, fixed = get_method(fn, "smc")
            result = fn(
                self.model, *self.args, seed=self.seed, progress=False, **fixed, **self.kwargs
            )
        else:
            result = fn(self.model, *self.args, seed=self.seed, **self.kwargs)
        if not isinstance(result, Result) or result.log_evidence is None:
            raise ArgumentError(
                "Expected the SMC `method` to return a ppltk.Result with a log_evidence, but "
                f"found {result!r}"
            )
        return result


def _run_island(unit: Island) -> Result:
    return unit.run()


def smc_islands(
    model: Callable[..., Any],
    *model_args: Any,
    method: Any = "tempered",
    num_islands: int = 4,
    executor: Any = None,
    seed: int | torch.Generator | None = 0,
    retries: int = 3,
    progress: bool = True,
    **kwargs: Any,
) -> Result:
    r"""Run ``num_islands`` independent SMC samplers as work units and merge them.

    Island ``i`` runs ``method(model, *model_args, seed=s_i, **kwargs)`` with
    ``s_i = unit_seeds(seed, num_islands)[i]``. Each returns an unbiased evidence estimate
    :math:`\hat Z_i` (:math:`E[\hat Z_i] = Z`); the islands' average is again unbiased, with
    variance divided by ``n``:

    .. math::

        \log \hat Z = \log \frac1n \sum_{i=1}^n \hat Z_i
                    = \operatorname{logsumexp}_i(\log \hat Z_i) - \log n .

    (Averaging :math:`\log \hat Z_i` instead would be biased low by Jensen's inequality.)
    Each island's (equally weighted) particles approximate the posterior; pooled, island ``i``
    carries weight :math:`w_i = \hat Z_i / \sum_j \hat Z_j`, recorded as the stat
    ``island_log_weight`` (``log w_i`` for each of its particles) and in
    ``attrs["island_weights"]`` so that :math:`E[f] \approx \sum_i w_i \bar f_i`.

    Parameters
    ----------
    method
        ``"tempered"`` (:func:`ppltk.smc.tempered_smc`), ``"smc"`` (:func:`ppltk.smc.smc`) or a
        callable ``method(model, *model_args, seed=s, **kwargs) -> Result`` with ``log_evidence``.
    executor, seed, retries, progress
        As in :func:`ppltk.distributed.map_units`; results are identical on every executor.
    **kwargs
        Passed to every island (e.g. ``num_particles``).

    Returns
    -------
    Result
        The islands' results concatenated along the chain axis (island order kept) with the
        combined ``log_evidence``; ``attrs["island_log_evidence"]`` lists the islands' estimates.
    """
    if isinstance(num_islands, bool) or not isinstance(num_islands, int) or num_islands < 1:
        raise ArgumentError(f"Expected `num_islands` to be an int >= 1, but found {num_islands!r}")
    if isinstance(method, str):
        lookup(method, "smc")  # a named error for an unknown name, before any work
    root = root_seed(seed)
    seeds = unit_seeds(root, num_islands)
    units = [Island(model, tuple(model_args), dict(kwargs), method, s) for s in seeds]
    parts = map_units(
        _run_island, units, executor, retries=retries, progress=progress, desc="SMC islands"
    )
    return _pool_islands(parts, root, seeds)


def _pool_islands(parts: list[Result], root: int, seeds: list[int]) -> Result:
    log_z = np.array([p.log_evidence for p in parts], dtype=np.float64)
    log_w = log_z - logsumexp(log_z)
    for part, lw in zip(parts, log_w):
        shape = (part.num_chains, part.num_draws)
        part.stats = {**part.stats, "island_log_weight": np.full(shape, lw)}
    merged = merge_results(parts)  # log_evidence = log_mean_exp(log_z): every part has one
    merged.attrs.update(
        seed=root,
        unit_seeds=seeds,
        num_islands=len(parts),
        island_log_evidence=log_z.tolist(),
        island_weights=np.exp(log_w).tolist(),
    )
    return merged
