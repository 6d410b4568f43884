"""Offline continual-learning task sequences: 2-D Gaussian blobs and Split-Digits.

Every loader returns a list of tasks ``(X_train, y_train, X_test, y_test)`` with float
features ``[n, d]`` and long labels ``[n]``. Labels are *global*: task ``t`` holds classes
``2t`` and ``2t + 1``, so a class-incremental learner sees classes ``0 .. 2t + 1`` after task
``t``; a task-incremental evaluation restricts the prediction to the task's own two classes.
"""

from __future__ import annotations

import math

import torch

from ppltk._rng import make_generator
from ppltk.errors import ArgumentError

__all__ = ["split_digits", "toy_blob_tasks"]

Task = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _check_positive(name: str, value, kind=int) -> None:
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
        raise ArgumentError(
            f"Expected `{name}` to be a positive {kind.__name__}, but found {value!r}"
        )


def toy_blob_tasks(
    num_tasks: int = 5,
    num_train: int = 100,
    num_test: int = 100,
    radius: float = 4.0,
    std: float = 0.6,
    seed: int | torch.Generator = 0,
    dtype: torch.dtype = torch.float64,
) -> list[Task]:
    r"""Five 2-D binary classification tasks made of Gaussian blobs (Kessler et al., 2023).

    The ``2 * num_tasks`` class centres lie on a circle of radius ``radius``; task ``t`` holds
    the adjacent pair of classes ``2t, 2t + 1`` at angles :math:`\theta_k = 2\pi k / (2T)`,
    and every point is :math:`x = c_k + \text{std}\,\varepsilon`, :math:`\varepsilon \sim
    \mathcal N(0, I_2)`. The centres are in convex position, so all classes together are
    separable by a softmax-linear rule (a joint learner can solve every task at once).

    Parameters
    ----------
    num_tasks, num_train, num_test
        Number of tasks and points per class in each split.
    radius, std
        Circle radius of the centres and the blobs' standard deviation.
    seed
        Seed or generator for the draws.
    dtype
        Floating dtype of the features.

    Returns
    -------
    list of ``(X_train [2 num_train, 2], y_train, X_test [2 num_test, 2], y_test)``.
    """
    for name, value in (("num_tasks", num_tasks), ("num_train", num_train), ("num_test", num_test)):
        _check_positive(name, value)
    if not std > 0 or not radius > 0:
        raise ArgumentError(f"Expected positive `std` and `radius`, but found {std}, {radius}")
    gen = make_generator(seed)
    num_classes = 2 * num_tasks
    angles = torch.arange(num_classes, dtype=dtype) * (2 * math.pi / num_classes)
    centres = radius * torch.stack([angles.cos(), angles.sin()], dim=-1)
    tasks = []
    for t in range(num_tasks):
        splits = []
        for n in (num_train, num_test):
            labels = torch.tensor([2 * t, 2 * t + 1]).repeat_interleave(n)
            noise = torch.randn(2 * n, 2, generator=gen, dtype=dtype)
            splits.append((centres[labels] + std * noise, labels))
        (xtr, ytr), (xte, yte) = splits
        tasks.append((xtr, ytr, xte, yte))
    return tasks


def split_digits(
    num_tasks: int = 5,
    test_fraction: float = 0.3,
    seed: int | torch.Generator = 0,
    dtype: torch.dtype = torch.float64,
) -> list[Task]:
    """Split-Digits: scikit-learn's bundled 8x8 digits as 5 tasks of 2 classes (offline).

    Task ``t`` holds digits ``2t`` and ``2t + 1``. Pixels are scaled to ``[0, 1]`` (divided
    by 16). Within each task the points are split at random into train and test.

    Parameters
    ----------
    num_tasks
        Number of tasks (1 to 5), taken in the order (0, 1), (2, 3), ...
    test_fraction
        Fraction of each task's points held out for testing, in ``(0, 1)``.
    seed
        Seed or generator for the train/test split.
    dtype
        Floating dtype of the features.

    Returns
    -------
    list of ``(X_train [n, 64], y_train [n], X_test [m, 64], y_test [m])``.
    """
    from sklearn.datasets import load_digits

    _check_positive("num_tasks", num_tasks)
    if num_tasks > 5:
        raise ArgumentError(f"Expected `num_tasks` <= 5 (10 digits), but found {num_tasks}")
    if not 0.0 < test_fraction < 1.0:
        raise ArgumentError(f"Expected `test_fraction` in (0, 1), but found {test_fraction}")
    gen = make_generator(seed)
    data = load_digits()
    X = torch.as_tensor(data.data, dtype=dtype) / 16.0
    y = torch.as_tensor(data.target, dtype=torch.long)
    tasks = []
    for t in range(num_tasks):
        idx = torch.nonzero((y == 2 * t) | (y == 2 * t + 1)).squeeze(-1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = int(round(test_fraction * len(idx)))
        test, train = idx[:n_test], idx[n_test:]
        tasks.append((X[train], y[train], X[test], y[test]))
    return tasks
