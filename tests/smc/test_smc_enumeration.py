"""Exact checks by enumerating every random choice the algorithm makes.

A tiny hidden Markov model (2 states, binary observations) is filtered with N = 2 or 3
particles. Every random choice of the particle filter — each particle's initial/transition draw
and every resampling uniform — is enumerated: transitions over their finite support, the
resampling uniforms over the cells of [0, 1) on which the library's own inverse-CDF map
(`*_from_uniforms`) is constant (cell length = probability). Summing over all execution paths
gives expectations exactly, so E[Zhat] = Z and E[Zhat * pi_hat(f)] = Z * pi(f) hold to
round-off for each resampling scheme.
"""

import itertools
import math

import pytest
import torch

from ppltk.smc import particle_filter
from ppltk.smc.resampling import (
    multinomial_from_uniforms,
    residual_from_uniforms,
    stratified_from_uniforms,
    systematic_from_uniforms,
)

D = torch.float64
PRIOR = torch.tensor([0.6, 0.4], dtype=D)
TRANS = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=D)
EMIT = torch.tensor([[0.9, 0.1], [0.3, 0.7]], dtype=D)


class Chooser:
    """Replays a prefix of choice indices, then takes option 0 and remembers the branches."""

    def __init__(self, prefix):
        self.prefix, self.taken, self.prob, self.branches = list(prefix), [], 1.0, []

    def choose(self, probs):
        k = len(self.taken)
        j = self.prefix[k] if k < len(self.prefix) else 0
        if k >= len(self.prefix):
            self.branches += [self.taken + [i] for i in range(1, len(probs))]
        self.taken.append(j)
        self.prob *= float(probs[j])
        return j


def enumerate_paths(run):
    stack, paths = [[]], []
    while stack:
        chooser = Chooser(stack.pop())
        value = run(chooser)
        stack.extend(chooser.branches)
        paths.append((chooser.prob, value))
    return paths


class ScriptedHMM:
    def __init__(self, chooser):
        self.ch = chooser

    def _draw(self, probs_rows):
        return torch.tensor([[float(self.ch.choose(p))] for p in probs_rows], dtype=D)

    def init(self, shape, generator):
        return self._draw([PRIOR] * shape[-1])

    def transition(self, state, t, generator):
        return self._draw([TRANS[int(s)] for s in state[:, 0]])

    def log_observation(self, state, t, y):
        return EMIT[state[:, 0].long(), int(y)].log()


def cells(breaks):
    """Cells of [0, 1) cut at the given points: (midpoint, length) pairs.

    Breakpoints equal up to round-off (e.g. 4 * 0.55 - 2 vs 0.2) are merged: a 1e-16 cell
    between them is an artefact, not a random outcome.
    """
    pts = sorted({0.0, 1.0, *[round(b, 12) for b in breaks if 1e-12 < b < 1 - 1e-12]})
    return [((a + b) / 2, b - a) for a, b in zip(pts[:-1], pts[1:])]


def _cdf(w):
    return torch.cumsum(w, 0).tolist()


def coordinate_cells(scheme, w, m=None):
    """Per-uniform cells on which the scheme's inverse-CDF map is constant (m draws)."""
    n = len(w) if m is None else m
    if scheme == "systematic":
        return [cells([n * c - i for c in _cdf(w) for i in range(n)])]
    if scheme == "stratified":
        return [cells([n * c - i for c in _cdf(w)]) for i in range(n)]
    if scheme == "multinomial":
        return [cells(_cdf(w))] * n
    frac = n * w - torch.floor(n * w)
    rest = round(float(n - torch.floor(n * w).sum()))
    if rest == 0:
        return [[(0.5, 1.0)]] * n
    return [cells(_cdf(frac / frac.sum()))] * rest + [[(0.5, 1.0)]] * (n - rest)


FROM_U = {
    "systematic": systematic_from_uniforms,
    "stratified": stratified_from_uniforms,
    "multinomial": multinomial_from_uniforms,
    "residual": residual_from_uniforms,
}


def scripted_resampler(scheme, chooser):
    def resample(log_weights, generator):
        w = torch.softmax(log_weights.double(), -1)
        u = [c[chooser.choose([p for _, p in c])][0] for c in coordinate_cells(scheme, w)]
        return FROM_U[scheme](w, torch.tensor(u, dtype=D))

    return resample


def forward(ys):
    """Exact log p(y) and filtering distribution p(x_{T-1} | y) by the forward algorithm."""
    alpha = PRIOR * EMIT[:, ys[0]]
    for y in ys[1:]:
        alpha = (alpha @ TRANS) * EMIT[:, y]
    return math.log(float(alpha.sum())), alpha / alpha.sum()


@pytest.mark.parametrize("scheme", ["multinomial", "stratified", "systematic", "residual"])
@pytest.mark.parametrize("threshold", [1.0, 0.9])
@pytest.mark.parametrize("n", [2, 3])
def test_smc_enumerated_evidence_and_posterior_exact(scheme, threshold, n):
    ys = [0, 1, 1] if n == 2 else [1, 0]
    logz, post = forward(ys)
    ys_t = torch.tensor(ys, dtype=D)[:, None]

    def run(chooser):
        out = particle_filter(
            ScriptedHMM(chooser),
            ys_t,
            n,
            resampling=scripted_resampler(scheme, chooser),
            ess_threshold=threshold,
        )
        zhat = math.exp(float(out.log_evidence))
        return zhat, zhat * float(out.means[-1, 0]), int(out.resampled.sum())

    paths = enumerate_paths(run)
    total = sum(p for p, _ in paths)
    assert abs(total - 1) < 1e-12
    ez = sum(p * v[0] for p, v in paths)
    assert abs(ez / math.exp(logz) - 1) < 1e-12
    # E[Zhat * sum_i W^i x^i] = Z * P(x_{T-1} = 1 | y): the unnormalised estimate is unbiased
    ezf = sum(p * v[1] for p, v in paths)
    assert abs(ezf / math.exp(logz) - float(post[1])) < 1e-12
    assert any(v[2] > 0 for _, v in paths)  # the resampling branch was exercised
    # ... while the self-normalised estimate alone is biased (this test can tell them apart)
    if threshold == 1.0 and n == 2:
        biased = sum(p * v[1] / v[0] for p, v in paths)
        assert abs(biased - float(post[1])) > 1e-6


W = torch.tensor([0.05, 0.5, 0.15, 0.3], dtype=D)


@pytest.mark.parametrize("scheme", ["multinomial", "stratified", "systematic", "residual"])
@pytest.mark.parametrize("m", [4, 3, 6])
def test_smc_offspring_count_distribution(scheme, m):
    """Exact offspring-count law for M = num_samples draws from N = 4 weights (M != N too)."""
    n = m
    dist = {}
    for combo in itertools.product(*coordinate_cells(scheme, W, m)):
        u = torch.tensor([c[0] for c in combo], dtype=D)
        if scheme == "systematic":
            ancestors = systematic_from_uniforms(W, u, m)
        else:
            ancestors = FROM_U[scheme](W, u)
        assert ancestors.shape == (m,)
        counts = tuple(torch.bincount(ancestors, minlength=len(W)).tolist())
        dist[counts] = dist.get(counts, 0.0) + math.prod(c[1] for c in combo)
    mean = sum(p * torch.tensor(c, dtype=D) for c, p in dist.items())
    torch.testing.assert_close(mean, n * W, atol=1e-12, rtol=0)  # unbiased: E[N^j] = N W^j
    if scheme == "multinomial":
        exact = torch.distributions.Multinomial(n, W)
        for c, p in dist.items():
            assert abs(p - float(exact.log_prob(torch.tensor(c, dtype=D)).exp())) < 1e-12
    if scheme == "systematic":
        for c in dist:
            assert all(math.floor(n * w) <= k <= math.ceil(n * w) for k, w in zip(c, W.tolist()))
    if scheme == "residual":
        floor = torch.floor(n * W)
        assert all((torch.tensor(c, dtype=D) >= floor).all() for c in dist)


@pytest.mark.parametrize("scheme", ["multinomial", "stratified", "systematic", "residual"])
@pytest.mark.parametrize("n", [4, 3, 7])
def test_smc_sampled_ancestor_counts(scheme, n):
    from ppltk.smc import get_resampler

    g = torch.Generator().manual_seed(0)
    reps = 4000
    logw = W.log().expand(reps, len(W))
    ancestors = get_resampler(scheme)(logw, g, num_samples=n)
    assert ancestors.shape == (reps, n)
    counts = torch.nn.functional.one_hot(ancestors, len(W)).sum(1).double()
    # 5 standard errors of the mean count (sd <= sqrt(n w (1 - w)) <= 1 for n = 4)
    assert (
        (counts.mean(0) - n * W).abs() < 5 * counts.std(0).clamp_min(1e-3) / math.sqrt(reps)
    ).all()
