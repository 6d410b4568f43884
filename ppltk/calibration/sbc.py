"""Simulation-based calibration (SBC): is an inference method's posterior the right one?

Talts, Betancourt, Simpson, Vehtari, Gelman, "Validating Bayesian Inference Algorithms with
Simulation-Based Calibration" (2018). For :math:`n = 1..N`: draw
:math:`\\tilde\\theta \\sim p(\\theta)`, :math:`\\tilde y \\sim p(y \\mid \\tilde\\theta)`, run
the method on :math:`\\tilde y` to get :math:`L` (thinned) posterior draws, and record the rank
of :math:`\\tilde\\theta` among them. Because :math:`\\tilde\\theta` is itself a draw from the
exact posterior :math:`p(\\theta \\mid \\tilde y)`, the ranks are uniform on :math:`\\{0..L\\}`
exactly when the method samples that posterior; a too narrow posterior gives a U-shaped
histogram, a too wide one a hump, a biased one a slope.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ppltk._methods import get_method, lookup
from ppltk._rng import child_seed, make_generator
from ppltk.calibration.ranks import rank_statistics, scalar_names, uniformity_pvalue
from ppltk.calibration.simulate import condition_on, simulate_prior
from ppltk.distributed.seeds import root_seed, unit_seeds
from ppltk.distributed.units import map_units
from ppltk.errors import ArgumentError, DivergenceWarning
from ppltk.results import Result

__all__ = ["SBCResult", "sbc", "SBCReplications"]


@dataclass
class SBCResult:
    """Ranks and uniformity p-values of a simulation-based calibration run.

    Attributes
    ----------
    ranks
        ``{parameter: int array [num_simulations]}`` in ``0..num_draws``; one entry per scalar
        component (``"theta[0]"``, ...).
    p_values
        ``{parameter: p}`` of the chi-square uniformity test of its ranks.
    num_draws, num_bins
        ``L`` (posterior draws per replication, after thinning) and the histogram bins.
    prior_draws
        ``{parameter: array [num_simulations]}``, the simulated true values.
    method
        Name of the inference method.
    attrs
        ``seed``, ``thin``, ``unit_seeds`` (one per replication), ``num_divergences`` (an int
        array, one count per replication; a :class:`~ppltk.errors.DivergenceWarning` summarises
        them once).
    """

    ranks: dict[str, np.ndarray]
    p_values: dict[str, float]
    num_draws: int
    num_bins: int
    prior_draws: dict[str, np.ndarray] = field(default_factory=dict)
    method: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def num_simulations(self) -> int:
        return len(next(iter(self.ranks.values())))

    def failed(self, alpha: float = 0.01) -> list[str]:
        """Parameters whose ranks fail the uniformity test at family-wise level ``alpha``.

        Bonferroni: a parameter fails when its p-value is below ``alpha / num_parameters``, so a
        correct method fails anywhere with probability at most ``alpha``.
        """
        if not 0.0 < alpha < 1.0:
            raise ArgumentError(f"Expected `alpha` in (0, 1), but found {alpha!r}")
        threshold = alpha / len(self.p_values)
        return [name for name, p in self.p_values.items() if p < threshold]

    def passed(self, alpha: float = 0.01) -> bool:
        """True when no parameter fails (see :meth:`failed`)."""
        return not self.failed(alpha)

    def plot(self, **kwargs: Any):
        """Rank histograms; see :func:`ppltk.calibration.plot_ranks`."""
        from ppltk.calibration.plot import plot_ranks

        return plot_ranks(self, **kwargs)

    def __repr__(self) -> str:
        worst = min(self.p_values.values())
        return (
            f"SBCResult(method={self.method!r}, simulations={self.num_simulations}, "
            f"draws={self.num_draws}, parameters={len(self.p_values)}, min_p={worst:.3g})"
        )


@dataclass(frozen=True)
class SBCReplications:
    """One work unit: the SBC replications with the given seeds (one seed per replication)."""

    model: Callable[..., Any]
    args: tuple
    kwargs: dict[str, Any]
    observed: tuple[str, ...]
    method: Any
    method_kwargs: dict[str, Any]
    num_draws: int
    thin: int
    params: tuple[str, ...] | None
    seeds: tuple[int, ...]

    def run(self) -> list[tuple[dict[str, int], dict[str, float], int]]:
        return [self.replicate(seed) for seed in self.seeds]

    def replicate(self, seed: int) -> tuple[dict[str, int], dict[str, float], int]:
        """Simulate, infer and rank once.

        Returns ``(ranks, prior values)`` per scalar parameter and the number of divergent
        transitions the method reported (``attrs["num_divergences"]``, else 0).
        """
        gen = make_generator(seed)
        latents, data = simulate_prior(
            self.model, self.args, self.kwargs, self.observed, child_seed(gen)
        )
        sites = self.params if self.params is not None else tuple(latents)
        with warnings.catch_warnings():  # divergences are counted and reported once, below
            warnings.simplefilter("ignore", DivergenceWarning)
            result = self.infer(data, child_seed(gen))
        ranks, truth = {}, {}
        for site in sites:
            if site not in latents or site not in result.draws:
                raise ArgumentError(
                    f"Expected parameter {site!r} among the model's latent sites {list(latents)} "
                    f"and the method's draws {list(result.draws)}, but it is missing"
                )
            post = _thinned(result.draws[site], self.thin, self.num_draws, site)
            site_ranks = rank_statistics(latents[site], post, gen)
            values = latents[site].detach().cpu().numpy().reshape(-1)
            for j, name in enumerate(scalar_names(site, tuple(latents[site].shape))):
                ranks[name], truth[name] = int(site_ranks[j]), float(values[j])
        return ranks, truth, int(result.attrs.get("num_divergences", 0) or 0)

    def infer(self, data: dict[str, torch.Tensor], seed: int) -> Result:
        if callable(self.method):
            model = functools.partial(self.model, **self.kwargs) if self.kwargs else self.model
            return self.method(model, self.args, data, seed)
        sample, fixed = get_method(self.method, "mcmc")
        opts = {**fixed, **self.method_kwargs}
        chains = opts.pop("num_chains", 1)
        opts.setdefault("num_samples", math.ceil(self.num_draws * self.thin / chains))
        model = condition_on(self.model, data, self.kwargs)
        return sample(
            model,
            *self.args,
            num_chains=chains,
            seed=seed,
            progress=False,
            **opts,
        )


def _run_replications(unit: SBCReplications) -> list:
    return unit.run()


def _thinned(draws: np.ndarray, thin: int, num_draws: int, site: str) -> np.ndarray:
    """Every ``thin``-th draw of each chain, chains concatenated, first ``num_draws`` kept."""
    kept = draws[:, ::thin]
    flat = kept.reshape((-1,) + draws.shape[2:])
    if flat.shape[0] < num_draws:
        raise ArgumentError(
            f"Expected at least num_draws * thin = {num_draws}*{thin} draws of {site!r} per "
            f"replication, but the method returned {draws.shape[:2]} [chain, draw]"
        )
    return flat[:num_draws]


def sbc(
    model: Callable[..., Any],
    method: str | Callable[..., Result],
    num_simulations: int,
    *,
    observed: Sequence[str] = ("y",),
    args: tuple = (),
    kwargs: dict[str, Any] | None = None,
    params: Sequence[str] | None = None,
    executor: Any = None,
    seed: int | torch.Generator | None = 0,
    num_draws: int = 99,
    thin: int = 1,
    num_bins: int | None = None,
    replications_per_unit: int = 1,
    retries: int = 3,
    progress: bool = True,
    **method_kwargs: Any,
) -> SBCResult:
    """Simulation-based calibration of ``method`` on ``model``, replications run on ``executor``.

    Parameters
    ----------
    model
        A Pyro model ``model(*args, **kwargs)``. The sites named in ``observed`` are the data: for
        the prior simulation they are sampled from the model (even if the model passes ``obs=``),
        for inference they are conditioned on the simulated values with
        :func:`pyro.poutine.condition`; so ``def model(n, y=None): ... pyro.sample("y", ...,
        obs=y)`` works, and so does a model with its data baked in.
    method
        ``"nuts"``, ``"hmc"`` or ``"mh"``: :func:`ppltk.mcmc.sample` with ``num_chains=1`` (or
        ``num_chains`` in ``method_kwargs``) and ``num_samples = ceil(num_draws * thin /
        num_chains)`` unless given. Or any callable ``method(model, args, data, seed) -> Result``
        (``model`` with ``kwargs`` bound, ``data = {site: tensor}``) returning at least
        ``num_draws * thin`` draws.
    num_simulations
        Replications ``N``.
    observed, args, kwargs
        Data site names, model positional and keyword arguments.
    params
        Latent sites to rank (default: every latent site; each scalar component is tested).
    executor
        Where replications run: ``None`` (in process), ``"dask"``, a scheduler address, a
        ``Client`` or a cluster (see :func:`ppltk.distributed.map_units`). Ranks are identical
        on every executor for the same ``seed``.
    seed
        Root seed; replication ``n`` uses ``unit_seeds(seed, N)[n]`` for its prior draw, its
        inference and its tie-breaking.
    num_draws, thin
        ``L`` posterior draws per replication after keeping every ``thin``-th draw (thinning
        lowers the autocorrelation that otherwise makes MCMC ranks non-uniform).
    num_bins
        Histogram bins of the chi-square test (default: ``min(20, N // 5, L + 1)``, at least 2,
        so every bin expects >= 5 ranks).
    replications_per_unit
        Replications per work unit (more per unit amortises scheduler overhead for cheap
        methods; results do not depend on it).
    retries, progress
        See :func:`ppltk.distributed.map_units`.
    **method_kwargs
        Passed to :func:`ppltk.mcmc.sample` (e.g. ``num_warmup``) for string methods.

    Returns
    -------
    SBCResult
        Ranks, chi-square p-values (:func:`scipy.stats.chisquare`), ``passed(alpha)``, ``plot()``.
    """
    _check_sbc_args(method, num_simulations, num_draws, thin, replications_per_unit)
    if callable(method) and method_kwargs:
        raise ArgumentError(
            "Expected no extra keyword arguments with a callable `method` (bind them in the "
            f"callable), but found {sorted(method_kwargs)}"
        )
    root = root_seed(seed)
    seeds = unit_seeds(root, num_simulations)
    chunks = [
        tuple(seeds[i : i + replications_per_unit])
        for i in range(0, num_simulations, replications_per_unit)
    ]
    kw = dict(kwargs or {})
    sites = None if params is None else tuple(params)
    units = [
        SBCReplications(
            model,
            tuple(args),
            kw,
            tuple(observed),
            method,
            method_kwargs,
            num_draws,
            thin,
            sites,
            c,
        )
        for c in chunks
    ]
    parts = map_units(
        _run_replications,
        units,
        executor,
        retries=retries,
        progress=progress,
        desc="SBC replications",
    )
    reps = [rep for part in parts for rep in part]
    return _collect(reps, num_draws, num_bins, method, dict(seed=root, thin=thin, unit_seeds=seeds))


def _collect(
    reps: list, num_draws: int, num_bins: int | None, method: Any, attrs: dict
) -> SBCResult:
    bins = num_bins or max(2, min(20, len(reps) // 5, num_draws + 1))
    ranks = {name: np.array([r[0][name] for r in reps], dtype=np.int64) for name in reps[0][0]}
    prior = {name: np.array([r[1][name] for r in reps]) for name in reps[0][1]}
    p_values = {name: uniformity_pvalue(r, num_draws, bins) for name, r in ranks.items()}
    divergences = np.array([r[2] for r in reps], dtype=np.int64)
    if divergences.any():
        warnings.warn(
            f"{int((divergences > 0).sum())} of {len(reps)} SBC replications had divergent "
            f"transitions ({int(divergences.sum())} in all); their ranks may be biased",
            DivergenceWarning,
            stacklevel=3,
        )
    label = (
        method if isinstance(method, str) else getattr(method, "__name__", type(method).__name__)
    )
    attrs = {**attrs, "num_divergences": divergences}
    return SBCResult(ranks, p_values, num_draws, bins, prior, label, attrs)


def _check_sbc_args(method: Any, num_simulations: int, num_draws: int, thin: int, per_unit: int):
    if isinstance(method, str):
        lookup(method, "mcmc")  # a named error for an unknown name
    if not isinstance(method, str) and not callable(method):
        raise ArgumentError(f"Expected `method` to be a str or callable, but found {method!r}")
    for name, value, low in (
        ("num_simulations", num_simulations, 2),
        ("num_draws", num_draws, 1),
        ("thin", thin, 1),
        ("replications_per_unit", per_unit, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ArgumentError(f"Expected `{name}` to be an int >= {low}, but found {value!r}")
