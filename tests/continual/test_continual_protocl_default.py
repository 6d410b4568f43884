"""ProtoCL without an encoder: the default encoder, the raw-input limit, and the margin over
nearest-class-mean on Split-Digits splits that were never used to choose the defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from ppltk.continual import (
    DefaultEncoder,
    NearestClassMean,
    ProtoCL,
    herding,
    reorder_classes,
    run_continual,
)
from ppltk.datasets import split_digits, toy_blob_tasks
from ppltk.errors import ArgumentError, ShapeError


def _ncm_oracle(tasks):
    """Final-row accuracies of nearest class mean, written with numpy from the definition."""
    X = np.concatenate([t[0].numpy() for t in tasks])
    y = np.concatenate([t[1].numpy() for t in tasks])
    classes = np.unique(y)
    means = np.stack([X[y == c].mean(0) for c in classes])
    accs = []
    for _, _, X_te, y_te in tasks:
        d = ((X_te.numpy()[:, None, :] - means[None]) ** 2).sum(-1)
        accs.append(float((classes[d.argmin(1)] == y_te.numpy()).mean()))
    return np.array(accs)


def test_protocl_without_encoder_builds_default_lazily():
    tasks = toy_blob_tasks(num_tasks=2, num_train=20, num_test=25, seed=3)
    learner = ProtoCL(seed=0)
    assert learner.encoder is None
    rng = torch.get_rng_state()
    for X, y, _, _ in tasks:
        learner.observe(X, y)
    assert torch.equal(rng, torch.get_rng_state())  # no global RNG use: weights from seed=
    enc = learner.encoder
    assert isinstance(enc, DefaultEncoder)
    assert enc.net[0].in_features == 2 and enc.net[-1].out_features == learner.embed_dim
    # standardisation uses the first task's inputs only
    torch.testing.assert_close(enc.shift, tasks[0][0].mean(0))
    proba = learner.predict_proba(tasks[0][2])
    assert proba.shape == (50, 4)
    torch.testing.assert_close(proba.sum(-1), torch.ones(50, dtype=torch.float64))
    acc = (learner.predict(tasks[1][2]) == tasks[1][3]).double().mean()
    assert acc > 0.7  # two well-separated blob pairs; chance among 4 classes is 0.25
    # same seed, same learner; another seed, other initial weights
    again = ProtoCL(seed=0)
    for X, y, _, _ in tasks:
        again.observe(X, y)
    assert torch.equal(again.predict_proba(tasks[0][2]), proba)
    first, other = ProtoCL(seed=0, num_steps=0), ProtoCL(seed=1, num_steps=0)
    first.observe(*tasks[0][:2])
    other.observe(*tasks[0][:2])
    assert not torch.equal(other.encoder.net[0].weight, first.encoder.net[0].weight)


def test_default_encoder_width_follows_first_task_and_errors():
    X = torch.rand(30, 64, dtype=torch.float64)
    enc = DefaultEncoder(X, hidden=(16, 8), embed_dim=5, seed=0)
    assert enc(X).shape == (30, 5)
    assert [m.out_features for m in enc.net if isinstance(m, torch.nn.Linear)] == [16, 8, 5]
    rms = (X - X.mean(0)).pow(2).mean().sqrt()
    torch.testing.assert_close(enc.scale, rms)
    with pytest.raises(ShapeError, match="X"):
        DefaultEncoder(torch.zeros(3))
    with pytest.raises(ArgumentError, match="embed_dim"):
        ProtoCL(embed_dim=0)
    with pytest.raises(ArgumentError, match="support_per_class"):
        ProtoCL(support_per_class=0)
    with pytest.raises(ArgumentError, match="prior_var"):
        ProtoCL(prior_var=-1.0)


def test_identity_encoder_with_flat_prior_is_nearest_class_mean():
    """No encoder to train, all points in memory, a nearly flat prior and equal class counts:
    the posterior predictive argmax is the nearest raw class mean (numpy oracle)."""
    tasks = toy_blob_tasks(num_tasks=3, num_train=15, num_test=40, std=1.5, seed=4)
    proto = run_continual(
        lambda: ProtoCL(torch.nn.Identity(), prior_var=1e8, memory_per_class=15, seed=0), tasks
    )
    ncm = run_continual(NearestClassMean, tasks)
    oracle = _ncm_oracle(tasks)
    np.testing.assert_allclose(ncm.accuracy[-1], oracle)
    np.testing.assert_allclose(proto.accuracy[-1], oracle)
    assert oracle.mean() < 0.99  # overlapping blobs: the comparison is not vacuous


def test_reorder_classes_relabels_in_learning_order():
    tasks = split_digits(seed=0)
    order = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
    new = reorder_classes(tasks, order)
    assert sum(len(t[0]) for t in new) == sum(len(t[0]) for t in tasks)
    for t, (X, y, X_te, y_te) in enumerate(new):
        assert set(y.tolist()) == set(y_te.tolist()) == {2 * t, 2 * t + 1}
        for new_label, old_label in ((2 * t, order[2 * t]), (2 * t + 1, order[2 * t + 1])):
            old_task = tasks[old_label // 2]
            torch.testing.assert_close(X[y == new_label], old_task[0][old_task[1] == old_label])
            torch.testing.assert_close(
                X_te[y_te == new_label], old_task[2][old_task[3] == old_label]
            )
    with pytest.raises(ArgumentError, match="class_order"):
        reorder_classes(tasks, [0, 1, 2])


def _margin_over_ncm(tasks, seeds):
    runs = [run_continual(lambda s=s: ProtoCL(seed=s), tasks) for s in seeds]
    accs = np.array([run.average_accuracy for run in runs])
    ncm = run_continual(NearestClassMean, tasks).average_accuracy
    return accs, ncm


def _check_margin(accs, ncm, level=0.95, points=0.03):
    """One-sided t bound on ProtoCL's mean accuracy over seeds beats NCM; point margin."""
    k = len(accs)
    half_width = stats.t.ppf(level, k - 1) * accs.std(ddof=1) / np.sqrt(k)
    assert accs.mean() - half_width > ncm, (accs, ncm, half_width)
    if points is not None:
        assert accs.mean() - ncm >= points, (accs, ncm)


def test_protocl_beats_ncm_on_heldout_digits_split():
    """A split (class order and train/test draw) never used when choosing the defaults."""
    order = torch.randperm(10, generator=torch.Generator().manual_seed(99)).tolist()
    tasks = reorder_classes(split_digits(seed=5), order)
    accs, ncm = _margin_over_ncm(tasks, seeds=(0, 1, 2))
    _check_margin(accs, ncm)


@pytest.mark.slow
def test_protocl_beats_ncm_on_benchmark_digits_splits():
    """The benchmark's three splits (A: defaults chosen there; B, C: held out). Each: the
    99% t bound over 5 seeds beats NCM; over the splits, the mean margin is >= 3 points
    (split C alone measured 2.9 points, so a per-split 3-point bar is not claimed)."""
    margins = []
    for order_seed, split_seed in [(None, 0), (2026, 7), (11, 3)]:
        tasks = split_digits(seed=split_seed)
        if order_seed is not None:
            order = torch.randperm(10, generator=torch.Generator().manual_seed(order_seed))
            tasks = reorder_classes(tasks, order.tolist())
        accs, ncm = _margin_over_ncm(tasks, seeds=range(5))
        _check_margin(accs, ncm, level=0.99, points=None)
        margins.append(accs.mean() - ncm)
    assert np.mean(margins) >= 0.03, margins


@pytest.mark.slow
def test_protocl_near_bayes_rate_on_toy_blobs():
    """On isotropic blobs with equal spreads the nearest true centre is the Bayes classifier,
    so NCM on raw inputs is (near-)optimal and no method can beat it by 3 points; ProtoCL
    must stay close to it."""
    tasks = toy_blob_tasks(seed=1)
    accs, ncm = _margin_over_ncm(tasks, seeds=range(5))
    assert accs.mean() > ncm - 0.03, (accs, ncm)


def test_herding_matches_greedy_definition():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    got = herding(torch.as_tensor(X), 7).tolist()
    chosen, total = [], np.zeros(3)
    for k in range(1, 8):  # oracle: the definition, written out
        cost = [
            np.inf if i in chosen else np.sum((X.mean(0) - (total + X[i]) / k) ** 2)
            for i in range(40)
        ]
        chosen.append(int(np.argmin(cost)))
        total += X[chosen[-1]]
    assert got == chosen
    assert sorted(herding(torch.as_tensor(X[:5]), 9).tolist()) == list(range(5))
    # the herded subset's mean is closer to the class mean than a typical random subset's
    err = np.linalg.norm(X[got].mean(0) - X.mean(0))
    rand = [np.linalg.norm(X[rng.permutation(40)[:7]].mean(0) - X.mean(0)) for _ in range(200)]
    assert err < np.quantile(rand, 0.05)
