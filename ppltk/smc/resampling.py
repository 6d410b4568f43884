r"""Resampling schemes and (adaptive) resampling of a :class:`~ppltk.smc.Population`.

Every scheme has one signature, ``resample(log_weights [*batch, N], generator, num_samples=None)
-> ancestors [*batch, M]`` (int64, :math:`M` = ``num_samples``, default :math:`N`), and is split
into a random part (uniforms, float64) and a deterministic inverse-CDF part
``*_from_uniforms(weights, u)`` (:math:`M` = ``u.shape[-1]``) so tests can enumerate the
randomness exactly.

Each scheme is *unbiased*: the offspring count :math:`N^j = \#\{i: a^i = j\}` has
:math:`E[N^j] = M W^j`, which is what keeps :math:`E[\hat Z] = Z` through resampling. Their
count distributions (Douc, Cappé & Moulines, 2005):

* multinomial: :math:`(N^1..N^N) \sim \mathrm{Multinomial}(N, W)`;
* residual: :math:`N^j = \lfloor N W^j\rfloor + \mathrm{Multinomial}(R, \bar W)^j`,
  :math:`R = N - \sum_j \lfloor N W^j \rfloor`, :math:`\bar W^j \propto N W^j - \lfloor N W^j\rfloor`;
* stratified: one uniform per stratum, :math:`a^i = F^{-1}((i + U_i)/N)`;
* systematic: one shared uniform, :math:`a^i = F^{-1}((i + U)/N)`, so
  :math:`N^j \in \{\lfloor N W^j\rfloor, \lceil N W^j\rceil\}`.

Cumulative sums are taken in float64: at :math:`N = 10^7` a float32 cumsum drifts by
:math:`\sim 10^{-3}`, which biases the last particles' offspring counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ppltk.errors import ArgumentError
from ppltk.smc.population import Population, check_log_weights, reindex

__all__ = [
    "Resampler",
    "multinomial",
    "stratified",
    "systematic",
    "residual",
    "multinomial_from_uniforms",
    "stratified_from_uniforms",
    "systematic_from_uniforms",
    "residual_from_uniforms",
    "RESAMPLERS",
    "get_resampler",
    "resample",
]

Resampler = Callable[..., torch.Tensor]
"""``resampler(log_weights [*batch, N], generator, num_samples=None) -> ancestors [*batch, M]``."""


def _cdf(weights: torch.Tensor) -> torch.Tensor:
    """Float64 cumulative sum with the last entry pinned to 1 (no float drift past the end)."""
    cdf = torch.cumsum(weights, dim=-1, dtype=torch.float64)
    return cdf / cdf[..., -1:]


def _inverse_cdf(weights: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    r""":math:`F^{-1}(p) = \min\{j : F_j > p\}` for points in :math:`[0, 1)`."""
    idx = torch.searchsorted(_cdf(weights), points.double().contiguous(), right=True)
    return idx.clamp_(max=weights.shape[-1] - 1)


def _weights(log_weights: torch.Tensor) -> torch.Tensor:
    """Normalised weights in the input dtype (the cumulative sum is then taken in float64)."""
    return torch.softmax(log_weights, dim=-1)


def _uniforms(log_weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    shape = log_weights.shape[:-1] + (n,)
    return torch.rand(shape, dtype=torch.float64, device=log_weights.device, generator=generator)


def multinomial_from_uniforms(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Ancestors :math:`a^i = F^{-1}(U_i)` for iid uniforms ``u [*batch, N]``."""
    return _inverse_cdf(weights, u)


def stratified_from_uniforms(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    r"""Ancestors :math:`a^i = F^{-1}((i + U_i)/M)` for uniforms ``u [*batch, M]``, in O(N + M).

    The points are sorted, so the number of points below :math:`F_j` is closed-form:
    with :math:`k = \lfloor M F_j \rfloor`, :math:`C_j = k + [U_k < M F_j - k]` — no search.
    """
    m = u.shape[-1]
    scaled = _cdf(weights) * m
    k = torch.floor(scaled)
    below = torch.gather(u.double(), -1, k.long().clamp_(max=m - 1)) < scaled - k
    cumulative = torch.where(k >= m, m, k.long() + below.long())
    return cumulative_to_ancestors(cumulative, m)


def systematic_from_uniforms(
    weights: torch.Tensor, u: torch.Tensor, num_samples: int | None = None
) -> torch.Tensor:
    """Ancestors :math:`a^i = F^{-1}((i + U)/M)` for one uniform per row, ``u [*batch, 1]``."""
    m = weights.shape[-1] if num_samples is None else num_samples
    return stratified_from_uniforms(weights, u.expand(weights.shape[:-1] + (m,)))


def residual_from_uniforms(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    r"""Residual resampling: :math:`\lfloor M W^j\rfloor` copies, then multinomial on the rest.

    Only the first :math:`R` uniforms of each row of ``u [*batch, M]`` are used. Ancestors are
    returned sorted.
    """
    n = u.shape[-1]
    scaled = weights.double() * n
    det = torch.floor(scaled)
    rest = (n - det.sum(-1, keepdim=True)).round().long()
    frac = (scaled - det).clamp_min(0)
    frac = torch.where(frac.sum(-1, keepdim=True) > 0, frac, torch.ones_like(frac))
    draws = _inverse_cdf(frac, u)
    used = torch.arange(n, device=weights.device) < rest
    counts = det.long().scatter_add(-1, draws, used.long())
    return cumulative_to_ancestors(torch.cumsum(counts, -1), n)


def cumulative_to_ancestors(
    cumulative: torch.Tensor, num_samples: int | None = None
) -> torch.Tensor:
    r"""Sorted ancestors ``[*batch, M]`` from cumulative offspring counts
    :math:`C_j = \sum_{k \le j} N^k` (``[*batch, N]``, :math:`C_{N-1} = M`).

    :math:`a^i = \#\{j : C_j \le i\}`, by a scatter and a cumsum: O(N + M), batched.
    """
    n = cumulative.shape[-1]
    m = n if num_samples is None else num_samples
    marker = torch.zeros(
        cumulative.shape[:-1] + (m + 1,), dtype=torch.long, device=cumulative.device
    )
    marker.scatter_add_(-1, cumulative.clamp(0, m), torch.ones_like(cumulative))
    return torch.cumsum(marker[..., :m], -1).clamp_(max=n - 1)


def _count(log_weights: torch.Tensor, num_samples: int | None) -> int:
    if num_samples is None:
        return log_weights.shape[-1]
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ArgumentError(f"Expected `num_samples` a positive int, but found {num_samples!r}")
    return num_samples


def _checked_weights(log_weights: torch.Tensor) -> torch.Tensor:
    if log_weights.shape[-1] == 0:
        raise ArgumentError("Expected at least one particle to resample, but found none")
    weights = _weights(log_weights)
    if not bool(torch.isfinite(weights.sum(-1)).all()):  # NaN, +inf or all -inf somewhere
        check_log_weights(log_weights, "resampling")
    return weights


def multinomial(
    log_weights: torch.Tensor, generator: torch.Generator, num_samples: int | None = None
) -> torch.Tensor:
    """Multinomial resampling (iid draws from the weights). See module docs."""
    m = _count(log_weights, num_samples)
    return multinomial_from_uniforms(
        _checked_weights(log_weights), _uniforms(log_weights, m, generator)
    )


def stratified(
    log_weights: torch.Tensor, generator: torch.Generator, num_samples: int | None = None
) -> torch.Tensor:
    """Stratified resampling (one uniform per stratum). See module docs."""
    m = _count(log_weights, num_samples)
    return stratified_from_uniforms(
        _checked_weights(log_weights), _uniforms(log_weights, m, generator)
    )


def systematic(
    log_weights: torch.Tensor, generator: torch.Generator, num_samples: int | None = None
) -> torch.Tensor:
    """Systematic resampling (one shared uniform). See module docs."""
    m = _count(log_weights, num_samples)
    return systematic_from_uniforms(
        _checked_weights(log_weights), _uniforms(log_weights, 1, generator), m
    )


def residual(
    log_weights: torch.Tensor, generator: torch.Generator, num_samples: int | None = None
) -> torch.Tensor:
    """Residual resampling (deterministic floor part + multinomial remainder). See module docs."""
    m = _count(log_weights, num_samples)
    return residual_from_uniforms(
        _checked_weights(log_weights), _uniforms(log_weights, m, generator)
    )


RESAMPLERS: dict[str, Resampler] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def get_resampler(resampling: str | Resampler) -> Resampler:
    """Look up a scheme by name (or pass a callable with the resampler signature through)."""
    if callable(resampling):
        return resampling
    if resampling not in RESAMPLERS:
        raise ArgumentError(
            f"Expected `resampling` to be one of {sorted(RESAMPLERS)} or a callable, "
            f"but found {resampling!r}"
        )
    return RESAMPLERS[resampling]


def resample(
    population: Population,
    resampler: str | Resampler,
    generator: torch.Generator,
    ess_threshold: float = 1.0,
    where: str = "resampling",
    ess: torch.Tensor | None = None,
) -> tuple[Population, torch.Tensor, torch.Tensor]:
    r"""Resample the rows whose :math:`\mathrm{ESS}/N <` ``ess_threshold`` (1.0: always).

    For a resampled row, the evidence of the current weights is folded in before they are reset,

    .. math:: \log\hat Z_{\mathrm{past}} \mathrel{+}= \mathrm{lse}_i(\log w^i) - \log N,
              \qquad x^i \leftarrow x^{a^i},\quad \log w^i \leftarrow 0,

    so :meth:`Population.log_evidence_estimate` is unchanged in value and, because the scheme
    is unbiased, the unnormalised measure stays unbiased. The threshold rule is deterministic given the weights, so it does not
    bias :math:`\hat Z`. Returns ``(population, resampled [*batch] bool, ancestors [*batch, N])``
    (identity ancestors in rows not resampled). ``ess`` may be passed when already computed.
    """
    if not 0.0 <= ess_threshold <= 1.0:
        raise ArgumentError(f"Expected `ess_threshold` in [0, 1], but found {ess_threshold}")
    logw = population.log_weights
    if logw.ndim == 1:
        return _resample_one(population, resampler, generator, ess_threshold, where, ess)
    n = population.num_particles
    identity = torch.arange(n, device=logw.device).expand(logw.shape)
    if ess_threshold < 1.0:
        mask = (population.ess if ess is None else ess) < ess_threshold * n
    else:
        mask = torch.ones(logw.shape[:-1], dtype=torch.bool, device=logw.device)
    lse = population.log_weight_sum
    mask = mask & ~torch.isneginf(lse)  # a row with zero total weight (a dead filter) stays
    if not bool(mask.any()):
        return population, mask, identity
    if not bool(torch.isfinite(lse[mask]).all()):
        check_log_weights(logw[mask], where)
    safe = torch.where(mask[..., None], logw, torch.zeros_like(logw))
    ancestors = get_resampler(resampler)(safe, generator)
    ancestors = torch.where(mask[..., None], ancestors, identity)
    folded = lse - math.log(n)
    return (
        Population(
            particles=reindex(population.particles, ancestors),
            log_weights=torch.where(mask[..., None], torch.zeros_like(logw), logw),
            log_evidence=population.log_evidence + torch.where(mask, folded, 0.0),
        ),
        mask,
        ancestors,
    )


def _resample_one(population, resampler, generator, ess_threshold, where, ess):
    """:func:`resample` for one (unbatched) population: the same, with Python control flow."""
    logw, n = population.log_weights, population.num_particles
    device = logw.device
    if ess_threshold < 1.0 and not bool(
        (population.ess if ess is None else ess) < ess_threshold * n
    ):
        return (
            population,
            torch.zeros((), dtype=torch.bool, device=device),
            torch.arange(n, device=device),
        )
    lse = population.log_weight_sum
    if not bool(torch.isfinite(lse)):
        check_log_weights(logw, where)
    ancestors = get_resampler(resampler)(logw, generator)
    resampled = Population(
        reindex(population.particles, ancestors),
        torch.zeros_like(logw),
        population.log_evidence + (lse - math.log(n)),
    )
    return resampled, torch.ones((), dtype=torch.bool, device=device), ancestors
