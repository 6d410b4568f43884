"""Effects with uncertainty: Dirichlet posterior over the joint pushed through identification.

Calibration checks (tolerances from the binomial Monte Carlo error of the coverage):

* exact Bayesian calibration: joints drawn from the prior, data from each, the truth being
  the functional of the drawn joint — the 90% intervals cover 90% of the time exactly (up to
  the quantile error of finite posterior draws);
* frequentist coverage at a fixed causal model with hidden confounding (truth by brute-force
  truncated factorisation): 1,000 samples per data set, close to nominal by Bernstein–von
  Mises.
"""

import math

import networkx as nx
import pytest
import torch
from _causal_helpers import brute

from ppltk.causal import effect_from_joint, joint_from_samples
from ppltk.causal.uncertainty import (
    credible_interval,
    dirichlet_joints,
    effect_posterior,
)
from ppltk.errors import ArgumentError, NotIdentifiableError

FRONT_DOOR = nx.DiGraph([("U", "X"), ("U", "Y"), ("X", "M"), ("M", "Y")])
NAPKIN = nx.DiGraph(
    [("W1", "W2"), ("W2", "X"), ("X", "Y"), ("U1", "W1"), ("U1", "X"), ("U2", "W1"), ("U2", "Y")]
)


def _tables(graph, seed):
    gen = torch.Generator().manual_seed(seed)
    cpts = {}
    for v in nx.topological_sort(graph):
        parents = tuple(sorted(graph.predecessors(v)))
        t = torch.rand(*(2,) * len(parents), 2, generator=gen, dtype=torch.float64) + 0.15
        cpts[v] = (parents, t / t.sum(-1, keepdim=True))
    return cpts


def _counts(p, n, gen):
    idx = torch.multinomial(p.flatten(), n, replacement=True, generator=gen)
    return torch.bincount(idx, minlength=p.numel()).reshape(p.shape).to(torch.float64)


def _band(level, reps):
    return 3.5 * math.sqrt(level * (1 - level) / reps)


def test_causal_posterior_exactly_calibrated_over_the_prior():
    gen = torch.Generator().manual_seed(0)
    obs, reps, level, hits = ("X", "M", "Y"), 300, 0.9, 0
    for r in range(reps):
        theta = dirichlet_joints(torch.zeros(2, 2, 2), 3, 1, 1.0, gen)[0]
        true = effect_from_joint(FRONT_DOOR, {"U"}, theta, obs, ("Y",), {"X": 1})[1]
        counts = _counts(theta, 40, gen)
        post = effect_posterior(
            FRONT_DOOR, {"U"}, counts, obs, ("Y",), {"X": 1}, n_draws=400, level=level, seed=r
        )
        hits += bool(post.lower[1] <= true <= post.upper[1])
    assert abs(hits / reps - level) < _band(level, reps), hits / reps


@pytest.mark.parametrize(
    "graph, latent, obs, method",
    [
        (FRONT_DOOR, {"U"}, ("X", "M", "Y"), "front-door"),
        (NAPKIN, {"U1", "U2"}, ("W1", "W2", "X", "Y"), "id"),
    ],
)
def test_causal_posterior_interval_covers_the_true_effect(graph, latent, obs, method):
    cpts = _tables(graph, 1)
    p = brute(graph, cpts, obs, {})
    true = brute(graph, cpts, ("Y",), {"X": 1})[1]
    gen = torch.Generator().manual_seed(2)
    reps, level, hits, widths = 200, 0.9, 0, []
    for r in range(reps):
        counts = _counts(p, 1000, gen)
        post = effect_posterior(
            graph, latent, counts, obs, ("Y",), {"X": 1}, n_draws=300, level=level, seed=100 + r
        )
        assert post.method == method and post.draws.shape == (300, 2)
        hits += bool(post.lower[1] <= true <= post.upper[1])
        widths.append(float(post.upper[1] - post.lower[1]))
    assert abs(hits / reps - level) < _band(level, reps) + 0.02, hits / reps
    # informative: 1,000 samples pin a probability down to a few hundredths
    assert sum(widths) / reps < 0.2


def test_causal_posterior_draws_paired_and_reproducible():
    cpts = _tables(FRONT_DOOR, 3)
    p = brute(FRONT_DOOR, cpts, ("X", "M", "Y"), {})
    counts = _counts(p, 500, torch.Generator().manual_seed(0))
    args = (FRONT_DOOR, {"U"}, counts, ("X", "M", "Y"), ("Y",))
    a1 = effect_posterior(*args, {"X": 1}, n_draws=50, seed=4)
    a2 = effect_posterior(*args, {"X": 1}, n_draws=50, seed=4)
    b = effect_posterior(*args, {"X": 0}, n_draws=50, seed=4)
    assert torch.equal(a1.draws, a2.draws)
    # the same joint draws give both effects: recompute one pair by hand
    theta = dirichlet_joints(counts, 3, 50, 1.0, 4)
    for post, x in ((a1, 1), (b, 0)):
        want = effect_from_joint(FRONT_DOOR, {"U"}, theta[7], ("X", "M", "Y"), ("Y",), {"X": x})
        assert torch.allclose(post.draws[7], want, atol=1e-12)
    assert torch.allclose(a1.mean, a1.draws.mean(0))
    assert torch.allclose(a1.draws.sum(-1), torch.ones(50, dtype=torch.float64))
    lo, hi = credible_interval(a1.draws, 0.5)
    assert bool((lo <= a1.draws.median(0).values).all() & (a1.draws.median(0).values <= hi).all())


def test_causal_posterior_from_samples_and_errors():
    cpts = _tables(FRONT_DOOR, 5)
    samples = torch.stack(
        [torch.randint(0, 2, (200,), generator=torch.Generator().manual_seed(i)) for i in range(3)],
        1,
    )
    counts = joint_from_samples(samples, (2, 2, 2))
    post = effect_posterior(
        FRONT_DOOR, {"U"}, counts, ("X", "M", "Y"), ("Y",), {"X": 0}, evidence={"M": 1}, seed=0
    )
    assert post.method == "idc" and post.draws.shape == (1000, 2)
    assert "do(X" in post.formula
    del cpts
    with pytest.raises(ArgumentError, match="non-negative"):
        dirichlet_joints(-torch.ones(2, 2), 2)
    with pytest.raises(ArgumentError, match="proper Dirichlet"):
        dirichlet_joints(torch.zeros(2, 2), 2, prior=0.0)
    with pytest.raises(ArgumentError, match="level"):
        credible_interval(torch.zeros(3, 2), 1.5)
    bow = nx.DiGraph([("U", "X"), ("U", "Y"), ("X", "Y")])
    with pytest.raises(NotIdentifiableError, match="hedge"):
        effect_posterior(bow, {"U"}, torch.ones(2, 2), ("X", "Y"), ("Y",), {"X": 1})
