"""Causal effects with uncertainty: a Dirichlet posterior pushed through the identification.

With counts ``n(v)`` of the observed variables and a Dirichlet prior ``Dir(α)`` on the
observational joint ``θ``, the posterior is conjugate,

.. math::

    θ \\mid n \\sim \\mathrm{Dir}(α + n), \\qquad
    τ(θ) = P_θ(y \\mid do(x), z) = F(θ),

where ``F`` is the identification formula (back-door, front-door comb or ID/IDC).  Exact
posterior draws of the effect are ``F(θ^{(s)})`` for exact draws ``θ^{(s)}`` of the Dirichlet
(normalised Gamma variates): no MCMC.  The draws have full support almost surely, so every
conditional the formula divides by is defined.  The equal-tailed credible interval is read
off the draws' quantiles.

Draws made with the same ``seed`` and counts are the same joints ``θ^{(s)}``, so effects
computed in two calls (e.g. ``do(X=1)`` and ``do(X=0)``) are paired and their difference is
a posterior draw of the contrast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import torch

from ppltk._rng import make_generator
from ppltk.causal.comb import effect_from_joint
from ppltk.errors import ArgumentError, ShapeError

__all__ = ["EffectPosterior", "dirichlet_joints", "effect_posterior", "credible_interval"]


@dataclass(frozen=True)
class EffectPosterior:
    """Posterior of ``P(query | do, evidence)``: draws ``[n_draws, *card(query)]`` and summaries."""

    draws: torch.Tensor
    mean: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    level: float
    method: str
    formula: str


def credible_interval(draws: torch.Tensor, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal-tailed interval ``(q_{(1-level)/2}, q_{(1+level)/2})`` along the first axis."""
    if not 0.0 < float(level) < 1.0:
        raise ArgumentError(f"Expected `level` in (0, 1), but found {level!r}")
    a = (1.0 - float(level)) / 2.0
    q = torch.tensor([a, 1.0 - a], dtype=draws.dtype, device=draws.device)
    lo, hi = torch.quantile(draws, q, dim=0)
    return lo, hi


def dirichlet_joints(
    counts: torch.Tensor,
    n_vars: int,
    n_draws: int = 1000,
    prior: float | torch.Tensor = 1.0,
    seed: int | torch.Generator | None = None,
) -> torch.Tensor:
    """Exact draws ``θ^{(s)} ~ Dir(prior + counts)`` over the cells of the last ``n_vars`` axes.

    Returns a tensor ``[n_draws, *counts.shape]`` (float64) whose last ``n_vars`` axes sum
    to one.
    """
    if not torch.is_tensor(counts) or counts.ndim < n_vars:
        raise ShapeError(
            f"Expected `counts` with {n_vars} trailing axes (one per variable), but found "
            f"{getattr(counts, 'shape', type(counts))}"
        )
    counts = counts.to(torch.float64)
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise ArgumentError("Expected `counts` to be finite and non-negative")
    alpha = counts + torch.as_tensor(prior, dtype=torch.float64, device=counts.device)
    if not bool((alpha > 0).all()) or not bool(torch.isfinite(alpha).all()):
        raise ArgumentError(
            f"Expected `prior` + `counts` > 0 in every cell (a proper Dirichlet), but found "
            f"min {alpha.min().item():.3g}"
        )
    if not isinstance(n_draws, int) or n_draws < 1:
        raise ArgumentError(f"Expected `n_draws` to be a positive int, but found {n_draws!r}")
    gen = make_generator(seed, counts.device)
    gam = torch._standard_gamma(alpha.expand(n_draws, *alpha.shape).contiguous(), generator=gen)
    dims = tuple(range(-n_vars, 0))
    total = gam.sum(dims, keepdim=True)
    # tiny concentrations can underflow every Gamma variate of a draw; redraw is not needed
    # for α ≥ 1e-3 in float64, which the check above does not guarantee: fall back to α / Σα
    bad = total <= 0
    if bool(bad.any()):
        gam = torch.where(bad, alpha.expand_as(gam), gam)
        total = gam.sum(dims, keepdim=True)
    return gam / total


def effect_posterior(
    graph: nx.DiGraph,
    latent: Sequence[str],
    counts: torch.Tensor,
    variables: Sequence[str],
    query: Sequence[str],
    do: Mapping[str, object],
    *,
    evidence: Mapping[str, object] | None = None,
    prior: float | torch.Tensor = 1.0,
    n_draws: int = 1000,
    level: float = 0.9,
    seed: int | torch.Generator | None = None,
    max_set_size: int = 3,
) -> EffectPosterior:
    """Posterior draws, mean and credible interval of ``P(query | do, evidence)`` from counts.

    Parameters
    ----------
    graph, latent, variables, query, do, evidence
        As in :func:`ppltk.causal.effect_from_joint`; ``counts`` replaces ``joint``
        (integer counts per cell, e.g. from :func:`ppltk.causal.joint_from_samples`).
    prior : float or tensor
        Dirichlet concentration per cell (1.0: uniform over joints).
    n_draws : int
        Number of exact posterior draws.
    level : float
        Mass of the equal-tailed credible interval.
    seed : int or torch.Generator, optional
        Same seed and counts give the same joint draws (paired across queries).

    Raises
    ------
    NotIdentifiableError
        When the effect is not identifiable (no amount of data narrows it down this way).
    """
    variables = tuple(variables)
    theta = dirichlet_joints(counts, len(variables), n_draws, prior, seed)
    details = effect_from_joint(
        graph,
        latent,
        theta,
        variables,
        query,
        do,
        evidence=evidence,
        return_details=True,
        max_set_size=max_set_size,
    )
    draws = details.value
    lo, hi = credible_interval(draws, level)
    return EffectPosterior(
        draws, draws.mean(0), lo, hi, float(level), details.method, details.formula
    )
