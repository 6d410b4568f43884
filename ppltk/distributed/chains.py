"""Groups of MCMC chains as work units: run them anywhere, merge them into one result."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ppltk.distributed.merge import merge_results
from ppltk.distributed.seeds import root_seed, unit_seeds
from ppltk.distributed.units import map_units
from ppltk.errors import ArgumentError, PpltkWarning
from ppltk.results import Result

__all__ = ["sample_chains", "ChainGroup"]


def _is_callable_method(method: Any) -> bool:
    """A user function (not a kernel object or name) that runs the chains itself."""
    return callable(method) and not isinstance(method, str) and not hasattr(method, "step")


@dataclass(frozen=True)
class ChainGroup:
    """One work unit: ``num_chains`` chains of ``method`` on ``model(*args, **kwargs)``.

    ``method`` is a kernel name or object for :func:`ppltk.mcmc.sample`, or a callable with the
    same signature, ``method(model, *args, num_chains=..., seed=..., **kwargs) -> Result``.
    """

    model: Callable[..., Any]
    args: tuple
    kwargs: dict[str, Any]
    method: Any
    num_chains: int
    seed: int
    first_chain: int = 0

    def run(self) -> Result:
        if _is_callable_method(self.method):
            result = self.method(
                self.model, *self.args, num_chains=self.num_chains, seed=self.seed, **self.kwargs
            )
        else:
            from ppltk.mcmc import sample

            result = sample(
                self.model,
                *self.args,
                kernel=self.method,
                num_chains=self.num_chains,
                seed=self.seed,
                progress=False,
                **self.kwargs,
            )
        if not isinstance(result, Result) or result.num_chains != self.num_chains:
            raise ArgumentError(
                f"Expected `method` to return a ppltk.Result with {self.num_chains} chains, but "
                f"found {result!r}"
            )
        return result


def _run_group(unit: ChainGroup) -> tuple[Result, list[tuple[type[Warning], str]]]:
    """Run a group and return its result with the ppltk warnings it raised (to re-emit them on
    the client: warnings on a Dask worker would otherwise be lost)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PpltkWarning)
        result = unit.run()
    kept = [(w.category, str(w.message)) for w in caught if issubclass(w.category, PpltkWarning)]
    for w in caught:  # anything else is passed on unchanged
        if not issubclass(w.category, PpltkWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, kept


_SUMMED_ATTRS = ("num_divergences", "num_warmup_divergences")


def split_chains(num_chains: int, chains_per_unit: int) -> list[int]:
    """Sizes of consecutive chain groups: ``[k, k, ..., rest]`` with ``k = chains_per_unit``."""
    for name, value in (("num_chains", num_chains), ("chains_per_unit", chains_per_unit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"Expected `{name}` to be an int >= 1, but found {value!r}")
    full, rest = divmod(num_chains, chains_per_unit)
    return [chains_per_unit] * full + ([rest] if rest else [])


def sample_chains(
    model: Callable[..., Any],
    *model_args: Any,
    method: Any = "nuts",
    num_chains: int = 4,
    chains_per_unit: int = 1,
    executor: Any = None,
    seed: int | torch.Generator | None = 0,
    retries: int = 3,
    progress: bool = True,
    **kwargs: Any,
) -> Result:
    """Run ``num_chains`` MCMC chains in groups of ``chains_per_unit``, one work unit per group.

    Group ``g`` (chains ``g*k .. g*k + k - 1``) runs ``ppltk.mcmc.sample(model, *model_args,
    kernel=method, num_chains=k, seed=s_g, **kwargs)`` with ``s_g = unit_seeds(seed, G)[g]``;
    the groups' results are concatenated along the chain axis (:func:`merge_results`), so chain
    ids are the same as in the split. Chains within a group run batched on one worker; groups
    run in parallel on the executor.

    The result depends only on ``seed``, ``num_chains`` and ``chains_per_unit`` — not on the
    executor, the number of workers or worker failures: a local run and a Dask run give identical
    draws.

    Parameters
    ----------
    model, model_args
        The Pyro model and its positional arguments (picklable).
    method
        Kernel name (``"nuts"``, ``"hmc"``, ``"mh"``) or kernel object for
        :func:`ppltk.mcmc.sample`, or any callable
        ``method(model, *model_args, num_chains=k, seed=s, **kwargs) -> Result``.
    num_chains, chains_per_unit
        Total chains and chains per work unit.
    executor
        See :func:`ppltk.distributed.map_units` (``None``, ``"dask"``, an address, a Client, a
        cluster, e.g. ``dask_jobqueue.SLURMCluster``).
    seed, retries, progress
        Root seed; resubmissions after lost workers; progress bar over groups.
    **kwargs
        Passed to every group's ``method`` (sampler options such as ``num_warmup`` and model
        keyword arguments).

    Returns
    -------
    Result
        Draws ``[num_chains, draw, ...]``; ``attrs`` record ``seed``, ``chains_per_unit`` and
        ``unit_seeds``.
    """
    sizes = split_chains(num_chains, chains_per_unit)
    root = root_seed(seed)
    seeds = unit_seeds(root, len(sizes))
    starts = [sum(sizes[:g]) for g in range(len(sizes))]
    units = [
        ChainGroup(model, tuple(model_args), dict(kwargs), method, n, s, start)
        for n, s, start in zip(sizes, seeds, starts)
    ]
    outputs = map_units(
        _run_group, units, executor, retries=retries, progress=progress, desc="chain groups"
    )
    for g, (_, caught) in enumerate(outputs):
        for category, message in caught:
            warnings.warn(f"chain group {g}: {message}", category, stacklevel=2)
    parts = [result for result, _ in outputs]
    merged = merge_results(parts)
    for key in _SUMMED_ATTRS:  # counts over all chains
        values = [p.attrs.get(key) for p in parts]
        if all(isinstance(v, (int, np.integer)) for v in values):
            merged.attrs[key] = int(sum(values))
    merged.attrs.update(seed=root, chains_per_unit=chains_per_unit, unit_seeds=seeds)
    return merged
