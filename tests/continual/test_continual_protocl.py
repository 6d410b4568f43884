"""ProtoCL: exact conjugate updates, no use of test labels, learning on toy tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppltk.continual import (
    ProtoCL,
    conjugate_update,
    predictive_log_proba,
    prior_state,
    run_continual,
)
from ppltk.datasets import toy_blob_tasks
from ppltk.errors import ArgumentError, ShapeError


def _embeddings(n=60, k=3, h=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=gen)
    z = torch.randn(n, h, generator=gen, dtype=torch.float64) + y[:, None].double()
    return z, y


def test_chunked_conjugate_updates_equal_batch_update():
    z, y = _embeddings()
    prior = prior_state(3, 4, prior_var=2.0, alpha0=0.5)
    batch = conjugate_update(prior, z, y, noise_var=0.7)
    state = prior
    for chunk in torch.arange(len(y)).split([7, 20, 1, 32]):
        state = conjugate_update(state, z[chunk], y[chunk], noise_var=0.7)
    for a, b in zip((state.mean, state.var, state.alpha), (batch.mean, batch.var, batch.alpha)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_conjugate_update_matches_gaussian_product_formula():
    """Independent oracle: posterior of mu_c from the d-dimensional Normal-Normal formula."""
    z, y = _embeddings(seed=1)
    s2, sigma2 = 2.0, 0.7
    state = conjugate_update(prior_state(3, 4, prior_var=s2, alpha0=0.5), z, y, noise_var=sigma2)
    for c in range(3):
        zc = z[y == c].numpy()
        # full-covariance formula: Sigma_post = (I/s2 + n I/sigma2)^{-1}, mean = Sigma_post sum z / sigma2
        prec = np.eye(4) / s2 + len(zc) * np.eye(4) / sigma2
        cov = np.linalg.inv(prec)
        np.testing.assert_allclose(state.mean[c].numpy(), cov @ zc.sum(0) / sigma2, rtol=1e-10)
        np.testing.assert_allclose(state.var[c].item(), cov[0, 0], rtol=1e-10)
        assert state.alpha[c].item() == pytest.approx(0.5 + len(zc))


def test_predictive_is_dirichlet_mean_times_gaussian_predictive():
    z, y = _embeddings(seed=2)
    state = conjugate_update(prior_state(3, 4), z, y, noise_var=0.5)
    logp = predictive_log_proba(state, z[:5], 0.5)
    assert logp.shape == (5, 3)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(5, dtype=torch.float64))
    # oracle: pi_c N(z; m_c, (s_c^2 + sigma^2) I), normalised
    from scipy.stats import multivariate_normal

    for i in range(5):
        alpha = state.alpha.numpy()
        w = [
            alpha[c]
            / alpha.sum()
            * multivariate_normal(
                state.mean[c].numpy(), (state.var[c] + 0.5).item() * np.eye(4)
            ).pdf(z[i].numpy())
            for c in range(3)
        ]
        np.testing.assert_allclose(logp[i].exp().numpy(), np.array(w) / sum(w), rtol=1e-8)


def _encoder():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def test_protocl_learns_toy_tasks_class_incremental():
    tasks = toy_blob_tasks(num_train=30, num_test=50, seed=0)
    run = run_continual(lambda: ProtoCL(_encoder(), num_steps=100, lr=1e-2, seed=0), tasks)
    # chance in class-incremental 10-way is 0.1; blobs' Bayes accuracy is > 0.97
    assert run.average_accuracy > 0.8
    assert run.learner.predict_proba(tasks[0][2]).shape == (100, 10)


def test_test_labels_never_change_predictions():
    tasks = toy_blob_tasks(num_tasks=3, num_train=20, num_test=30, seed=1)
    gen = torch.Generator().manual_seed(0)
    scrambled = [(a, b, c, d[torch.randperm(len(d), generator=gen)]) for a, b, c, d in tasks]
    runs = [
        run_continual(lambda: ProtoCL(_encoder(), num_steps=30, seed=0), ts)
        for ts in (tasks, scrambled)
    ]
    for row_a, row_b in zip(runs[0].predictions, runs[1].predictions):
        for pa, pb in zip(row_a, row_b):
            assert torch.equal(pa, pb)
    # accuracies do differ (the labels were scrambled), so the comparison is not vacuous
    assert not np.allclose(runs[0].accuracy[-1], runs[1].accuracy[-1])
    # predicting leaves the prototype posterior untouched
    learner = runs[0].learner
    before = [t.clone() for t in (learner.state.mean, learner.state.var, learner.state.alpha)]
    learner.predict_proba(tasks[0][2])
    for a, b in zip(before, (learner.state.mean, learner.state.var, learner.state.alpha)):
        assert torch.equal(a, b)


def test_frozen_encoder_prototypes_equal_batch_posterior():
    """With num_steps=0 the learner's new-class prototypes are the batch conjugate posterior."""
    tasks = toy_blob_tasks(num_tasks=2, num_train=15, seed=2)
    learner = ProtoCL(_encoder(), num_steps=0, memory_per_class=5, seed=0)
    for X, y, _, _ in tasks:
        learner.observe(X, y)
    X, y = tasks[1][0], tasks[1][1]
    with torch.no_grad():
        z = learner.encoder(X)
    batch = conjugate_update(prior_state(4, 4), z, y, learner.noise_var)
    torch.testing.assert_close(learner.state.mean[2:], batch.mean[2:])
    torch.testing.assert_close(learner.state.var[2:], batch.var[2:])
    # Dirichlet counts keep every training label seen: alpha0 + 15 per class
    torch.testing.assert_close(learner.state.alpha, torch.full((4,), 16.0, dtype=torch.float64))
    assert len(learner.memory_y) == 4 * 5


def test_protocl_errors():
    with pytest.raises(ArgumentError, match="encoder"):
        ProtoCL("not a module")
    with pytest.raises(ShapeError, match="z"):
        conjugate_update(
            prior_state(2, 3), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 1.0
        )
    with pytest.raises(ShapeError, match="labels"):
        conjugate_update(prior_state(2, 3), torch.zeros(1, 3), torch.tensor([2]), 1.0)
