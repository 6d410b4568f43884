"""The continual-learning harness: train task by task, evaluate every task seen so far.

Settings
--------
``"class_incremental"``
    Predict among all classes seen so far (``argmax`` of ``predict_proba``).
``"task_incremental"``
    The task identity is known at test time: predict among the test task's own classes
    (its training labels), i.e. a masked multi-head evaluation of the same model.
Test labels are used only to score predictions, never passed to a learner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ppltk._progress import progress_bar
from ppltk.continual.metrics import average_accuracy, backward_transfer, forgetting
from ppltk.errors import ArgumentError

__all__ = ["ContinualRun", "run_continual", "reorder_classes", "SETTINGS"]

SETTINGS = ("class_incremental", "task_incremental")
_ALIASES = {"class": "class_incremental", "task": "task_incremental"}


@dataclass
class ContinualRun:
    """Outcome of :func:`run_continual`.

    Attributes
    ----------
    accuracy
        ``[T, T]`` matrix, ``accuracy[i, j]`` after task ``i`` on task ``j`` (NaN for j > i).
    predictions
        ``predictions[i][j]``: predicted labels ``[n_j]`` on task ``j`` after task ``i``.
    probabilities
        ``probabilities[i][j]``: ``predict_proba`` output ``[n_j, K_i]`` (for other settings).
    train_seconds
        Wall time of each ``observe``.
    """

    accuracy: np.ndarray
    setting: str
    predictions: list[list[torch.Tensor]]
    train_seconds: list[float]
    probabilities: list[list[torch.Tensor]] = field(repr=False, default_factory=list)
    learner: object = field(repr=False, default=None)
    tasks: Sequence = field(repr=False, default=())

    def accuracy_in(self, setting: str) -> np.ndarray:
        """The accuracy matrix re-scored in another setting from the stored probabilities.

        The learner was trained once; only the evaluation rule changes (e.g. the
        task-incremental matrix of a run made in the class-incremental setting).
        """
        setting = _check_setting(setting)
        acc = np.full_like(self.accuracy, np.nan)
        for i, row in enumerate(self.probabilities):
            for j, proba in enumerate(row):
                acc[i, j] = _score(proba, self.tasks[j], setting)[1]
        return acc

    @property
    def average_accuracy(self) -> float:
        return average_accuracy(self.accuracy)

    @property
    def forgetting(self) -> float:
        f = forgetting(self.accuracy)
        return float(f.mean()) if f.size else 0.0

    @property
    def backward_transfer(self) -> float:
        return backward_transfer(self.accuracy)

    def summary(self) -> dict:
        """Scalar metrics as a plain dict (JSON-friendly)."""
        return {
            "setting": self.setting,
            "average_accuracy": self.average_accuracy,
            "forgetting": self.forgetting,
            "backward_transfer": self.backward_transfer,
            "train_seconds": float(sum(self.train_seconds)),
        }


def _check_setting(setting: str) -> str:
    setting = _ALIASES.get(setting, setting)
    if setting not in SETTINGS:
        raise ArgumentError(f"Expected `setting` in {SETTINGS}, but found {setting!r}")
    return setting


def _decide(proba: torch.Tensor, y_train: torch.Tensor, setting: str) -> torch.Tensor:
    """Class-incremental: argmax over all seen classes; task-incremental: over the task's."""
    if setting == "class_incremental":
        return proba.argmax(-1)
    classes = y_train.to(proba.device).unique()
    classes = classes[classes < proba.shape[-1]]
    return classes[proba[:, classes].argmax(-1)]


def _score(proba: torch.Tensor, task, setting: str) -> tuple[torch.Tensor, float]:
    """Predicted labels on ``task``'s test set and their accuracy against its test labels."""
    pred = _decide(proba, task[1], setting)
    return pred, float((pred == task[3].to(pred.device)).double().mean())


def run_continual(
    learner_factory: Callable[[], object],
    tasks: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    setting: str = "class_incremental",
    progress: bool = False,
) -> ContinualRun:
    """Train a fresh learner on ``tasks`` in order and fill the accuracy matrix.

    Parameters
    ----------
    learner_factory
        Zero-argument callable returning a learner with ``observe``/``predict_proba``.
    tasks
        List of ``(X_train, y_train, X_test, y_test)``.
    setting
        ``"class_incremental"`` (or ``"class"``) or ``"task_incremental"`` (or ``"task"``).
    """
    setting = _check_setting(setting)
    if len(tasks) == 0:
        raise ArgumentError("Expected at least one task in `tasks`, but found none")
    learner = learner_factory()
    T = len(tasks)
    acc = np.full((T, T), np.nan)
    predictions, probabilities, seconds = [], [], []
    bar = progress_bar(T, "tasks", progress)
    for i, (X, y, _, _) in enumerate(tasks):
        start = time.perf_counter()
        learner.observe(X, y)
        seconds.append(time.perf_counter() - start)
        probabilities.append([learner.predict_proba(X_te) for _, _, X_te, _ in tasks[: i + 1]])
        scored = [_score(p, tasks[j], setting) for j, p in enumerate(probabilities[-1])]
        predictions.append([pred for pred, _ in scored])
        acc[i, : i + 1] = [a for _, a in scored]
        bar.update(1)
    bar.close()
    return ContinualRun(acc, setting, predictions, seconds, probabilities, learner, list(tasks))


def reorder_classes(tasks: Sequence, class_order: Sequence[int], classes_per_task: int = 2) -> list:
    """The same data as another task sequence: new class order, same train/test assignment.

    All points of ``tasks`` are pooled (each keeps its train or test role); task ``t`` of the
    result holds the original classes ``class_order[t * m : (t + 1) * m]`` (``m =
    classes_per_task``), relabelled ``t * m, ..., t * m + m - 1`` so that labels stay global
    and contiguous in the order they are learned.

    Parameters
    ----------
    tasks
        List of ``(X_train, y_train, X_test, y_test)``.
    class_order
        A permutation of every label that occurs in ``tasks``.
    classes_per_task
        Classes per new task (must divide the number of classes).
    """
    if len(tasks) == 0:
        raise ArgumentError("Expected at least one task in `tasks`, but found none")
    X_tr = torch.cat([t[0] for t in tasks])
    y_tr = torch.cat([t[1] for t in tasks]).long()
    X_te = torch.cat([t[2] for t in tasks])
    y_te = torch.cat([t[3] for t in tasks]).long()
    labels = torch.cat([y_tr, y_te]).unique().tolist()
    order = [int(c) for c in class_order]
    if sorted(order) != labels:
        raise ArgumentError(
            f"Expected `class_order` to be a permutation of the labels {labels}, but found {order}"
        )
    m = classes_per_task
    if not isinstance(m, int) or m < 1 or len(order) % m:
        raise ArgumentError(
            f"Expected `classes_per_task` to divide {len(order)} classes, but found {m!r}"
        )
    new_label = torch.full((max(labels) + 1,), -1, dtype=torch.long, device=y_tr.device)
    new_label[torch.tensor(order, device=y_tr.device)] = torch.arange(
        len(order), device=y_tr.device
    )
    out = []
    for t in range(len(order) // m):
        group = torch.tensor(order[t * m : (t + 1) * m], device=y_tr.device)
        in_tr, in_te = torch.isin(y_tr, group), torch.isin(y_te, group)
        out.append((X_tr[in_tr], new_label[y_tr[in_tr]], X_te[in_te], new_label[y_te[in_te]]))
    return out
