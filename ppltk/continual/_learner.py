"""Shared plumbing of continual learners: input checks, seen classes, the network wrapper."""

from __future__ import annotations

import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.continual.bnn import FlatBNN, check_task_data
from ppltk.errors import NotFittedError, ShapeError

__all__ = ["ContinualLearner", "training_steps"]


def training_steps(num_steps: int, desc: str, progress: bool):
    """``range(num_steps)`` with a tqdm bar (see ``ppltk._progress``)."""
    with progress_bar(num_steps, desc, progress) as bar:
        for i in range(num_steps):
            yield i
            bar.update(1)


class ContinualLearner:
    """Base class: ``observe(X, y)`` one task at a time, ``predict_proba``, ``predict``.

    Subclasses implement ``_observe(X, y)`` and ``_predict_proba(X) -> [n, num_classes]``.
    ``num_classes`` is one more than the largest label observed so far (labels are global).
    A learner built on a custom likelihood (``classifier = False``) accepts any targets.
    """

    def __init__(self, seed: int | torch.Generator = 0, dtype: torch.dtype = torch.float64):
        self.generator = make_generator(seed)
        self.dtype = dtype
        self.num_classes = 0
        self.num_tasks = 0
        self.in_features: int | None = None
        self.classifier = True  # integer class labels; False for a custom likelihood

    def _wrap(self, network: torch.nn.Module) -> FlatBNN:
        return FlatBNN(network, dtype=self.dtype)

    def observe(self, X: torch.Tensor, y: torch.Tensor) -> ContinualLearner:
        """Learn one task from its training data ``X [n, d]``, labels ``y [n]``; returns self."""
        check_task_data(X, y, self.in_features, integer_labels=self.classifier)
        self.in_features = X.shape[1]
        if self.classifier:
            self.num_classes = max(self.num_classes, int(y.max()) + 1)
            y = y.long()
        self._observe(X.to(self.dtype), y)
        self.num_tasks += 1
        return self

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """Predictive class probabilities over the classes seen so far: ``[n, num_classes]``."""
        if self.num_tasks == 0:
            raise NotFittedError(f"{type(self).__name__}.predict_proba called before any observe()")
        if not isinstance(X, torch.Tensor) or X.ndim != 2 or X.shape[1] != self.in_features:
            raise ShapeError(
                f"Expected `X` of shape [n, {self.in_features}], but found {getattr(X, 'shape', X)}"
            )
        with torch.no_grad():
            return self._predict_proba(X.to(self.dtype))

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Most probable class among those seen so far: ``[n]`` long."""
        return self.predict_proba(X).argmax(-1)

    def _observe(self, X: torch.Tensor, y: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _predict_proba(self, X: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
