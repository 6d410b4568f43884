"""Rank statistics of simulation-based calibration and their uniformity test."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from ppltk.errors import ArgumentError, ShapeError

__all__ = ["scalar_names", "rank_statistics", "rank_bins", "uniformity_pvalue"]


def scalar_names(site: str, shape: tuple[int, ...]) -> list[str]:
    """Names of the scalar components of a site: ``"mu"`` or ``"theta[0]"``, ``"w[1,2]"``."""
    if not shape:
        return [site]
    return [f"{site}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


def rank_statistics(
    prior_value: torch.Tensor, posterior: np.ndarray, generator: torch.Generator
) -> np.ndarray:
    r"""Rank of each scalar prior draw among its posterior draws.

    .. math::

        r_j = \#\{l : \theta^{(l)}_j < \tilde\theta_j\} + U_j, \qquad
        U_j \sim \text{Uniform}\{0, \dots, \#\{l : \theta^{(l)}_j = \tilde\theta_j\}\},

    in :math:`\{0, \dots, L\}`. If the posterior draws are exact and independent, :math:`r_j`
    is uniform on :math:`\{0, \dots, L\}` (Talts et al. 2018, Theorem 1); ties (discrete
    parameters) are broken at random so uniformity still holds.

    Parameters
    ----------
    prior_value
        The prior draw :math:`\tilde\theta`, shape ``site_shape``.
    posterior
        ``L`` posterior draws, shape ``[L, *site_shape]``.
    generator
        Randomness for tie-breaking.

    Returns
    -------
    numpy.ndarray
        Integer ranks, flattened over ``site_shape``.
    """
    truth = prior_value.detach().cpu().numpy().reshape(-1)
    post = np.asarray(posterior).reshape(posterior.shape[0], -1)
    if post.shape[1] != truth.size:
        raise ShapeError(
            f"Expected posterior draws shaped [L, {list(prior_value.shape)}], but found "
            f"{list(posterior.shape)}"
        )
    less = (post < truth).sum(axis=0)
    ties = (post == truth).sum(axis=0)
    u = torch.rand(truth.size, generator=generator, dtype=torch.float64).numpy()
    return less + np.floor(u * (ties + 1)).astype(np.int64)


def rank_bins(num_draws: int, num_bins: int) -> np.ndarray:
    """Bin edges over the rank values ``0..num_draws``: ``num_bins`` contiguous, near-equal bins.

    Returns integer edges ``e`` with bin ``b`` holding ranks ``e[b] <= r < e[b+1]``.
    """
    if not 1 <= num_bins <= num_draws + 1:
        raise ArgumentError(
            f"Expected `num_bins` in [1, num_draws + 1 = {num_draws + 1}], but found {num_bins}"
        )
    sizes = [len(c) for c in np.array_split(np.arange(num_draws + 1), num_bins)]
    return np.concatenate([[0], np.cumsum(sizes)])


def uniformity_pvalue(ranks: np.ndarray, num_draws: int, num_bins: int) -> float:
    r"""Chi-square test that ranks are uniform on ``{0..num_draws}`` (:func:`scipy.stats.chisquare`).

    With ``N`` ranks and bins holding :math:`m_b` of the :math:`L+1` rank values, the expected
    count of bin ``b`` is :math:`N m_b / (L + 1)`; the statistic
    :math:`\sum_b (O_b - E_b)^2 / E_b` is :math:`\chi^2_{B-1}` under uniformity (for
    :math:`E_b \gtrsim 5`).
    """
    ranks = np.asarray(ranks)
    if ranks.min() < 0 or ranks.max() > num_draws:
        raise ArgumentError(
            f"Expected ranks in [0, {num_draws}], but found [{ranks.min()}, {ranks.max()}]"
        )
    edges = rank_bins(num_draws, num_bins)
    observed = np.histogram(ranks, bins=edges)[0]
    expected = ranks.size * np.diff(edges) / (num_draws + 1)
    return float(stats.chisquare(observed, expected).pvalue)
