"""Metrics (Avalanche definitions), the harness settings, the data sets."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from ppltk.continual import (
    average_accuracy,
    backward_transfer,
    forgetting,
    plot_accuracy_matrix,
    run_continual,
)
from ppltk.datasets import split_digits, toy_blob_tasks
from ppltk.errors import ArgumentError, ShapeError

R = np.array([[0.9, np.nan, np.nan], [0.6, 0.8, np.nan], [0.3, 0.7, 1.0]])


def test_metrics_on_a_hand_computed_matrix():
    assert average_accuracy(R) == pytest.approx((0.3 + 0.7 + 1.0) / 3)
    np.testing.assert_allclose(forgetting(R), [0.9 - 0.3, 0.8 - 0.7])
    assert backward_transfer(R) == pytest.approx(((0.3 - 0.9) + (0.7 - 0.8)) / 2)
    assert backward_transfer(np.array([[0.5]])) == 0.0
    with pytest.raises(ShapeError, match="square"):
        average_accuracy(np.zeros((2, 3)))


def test_plot_accuracy_matrix_returns_figure(tmp_path):
    fig = plot_accuracy_matrix(R, title="toy")
    assert isinstance(fig, matplotlib.figure.Figure)
    fig.savefig(tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0
    matplotlib.pyplot.close(fig)


class _Fixed:
    """A learner that always answers class 2k+1 of the latest task (an oracle for settings)."""

    def __init__(self):
        self.k = 0

    def observe(self, X, y):
        self.k = int(y.max()) + 1

    def predict_proba(self, X):
        p = torch.zeros(len(X), self.k)
        p[:, -1] = 1.0
        p[:, 0] = 0.5  # second choice: class 0
        return p


def test_harness_settings():
    tasks = toy_blob_tasks(num_tasks=3, num_train=5, num_test=10, seed=0)
    cls = run_continual(_Fixed, tasks, setting="class_incremental")
    # always predicts the newest class: 50% on the newest task, 0 on older ones
    np.testing.assert_allclose(cls.accuracy[-1], [0.0, 0.0, 0.5])
    assert np.isnan(cls.accuracy[0, 1])
    task = run_continual(_Fixed, tasks, setting="task")
    # restricted to task j's classes {2j, 2j+1}: task 0 -> class 0 (p = 0.5 > 0), task 1 ->
    # class 2 (a tie at p = 0: the first), task 2 -> class 5 (the newest); each is half right
    np.testing.assert_allclose(task.accuracy[-1], [0.5, 0.5, 0.5])
    assert task.summary()["setting"] == "task_incremental"
    # re-scoring the class-incremental run gives the task-incremental matrix, and back
    np.testing.assert_array_equal(cls.accuracy_in("task"), task.accuracy)
    np.testing.assert_array_equal(task.accuracy_in("class_incremental"), cls.accuracy)
    with pytest.raises(ArgumentError, match="setting"):
        run_continual(_Fixed, tasks, setting="domain")


def test_datasets_shapes_labels_and_seeds():
    tasks = toy_blob_tasks(num_train=7, num_test=3, seed=4)
    assert len(tasks) == 5
    for t, (X, y, Xt, _) in enumerate(tasks):
        assert X.shape == (14, 2) and Xt.shape == (6, 2) and X.dtype == torch.float64
        assert set(y.tolist()) == {2 * t, 2 * t + 1} and y.dtype == torch.long
    again = toy_blob_tasks(num_train=7, num_test=3, seed=4)
    assert torch.equal(again[3][0], tasks[3][0])
    digits = split_digits(seed=0)
    assert len(digits) == 5
    total = sum(len(d[1]) + len(d[3]) for d in digits)
    assert total == 1797  # every bundled digit used once
    for t, (X, y, _, yt) in enumerate(digits):
        assert X.shape[1] == 64 and 0 <= float(X.min()) and float(X.max()) <= 1
        assert set(y.tolist()) == set(yt.tolist()) == {2 * t, 2 * t + 1}
    with pytest.raises(ArgumentError, match="num_tasks"):
        split_digits(num_tasks=6)
    with pytest.raises(ArgumentError, match="num_train"):
        toy_blob_tasks(num_train=0)
