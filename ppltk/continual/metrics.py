r"""Continual-learning metrics on the accuracy matrix (Avalanche's definitions).

:math:`R_{ij}` is the accuracy on task :math:`j`'s test set after training on tasks
:math:`0..i` (``NaN`` for :math:`j > i`). With :math:`T` tasks:

* average accuracy :math:`\bar A = \frac1T \sum_j R_{T-1, j}`;
* forgetting of task :math:`j < T-1`: :math:`F_j = R_{jj} - R_{T-1, j}` (accuracy right
  after learning the task minus final accuracy), averaged over :math:`j < T-1`;
* backward transfer :math:`\mathrm{BWT} = \frac1{T-1} \sum_{j<T-1} (R_{T-1,j} - R_{jj})`
  (Lopez-Paz & Ranzato, 2017), i.e. minus the average forgetting.

>>> import numpy as np
>>> R = np.array([[0.9, np.nan], [0.6, 0.8]])
>>> round(average_accuracy(R), 6), np.round(forgetting(R), 6), round(backward_transfer(R), 6)
(0.7, array([0.3]), -0.3)
"""

from __future__ import annotations

import numpy as np

from ppltk.errors import ShapeError

__all__ = ["average_accuracy", "forgetting", "backward_transfer", "plot_accuracy_matrix"]


def _check(acc) -> np.ndarray:
    R = np.asarray(acc, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ShapeError(f"Expected a square accuracy matrix [T, T], but found {R.shape}")
    return R


def average_accuracy(acc) -> float:
    """Mean over tasks of the final accuracy, :math:`\\frac1T\\sum_j R_{T-1,j}`."""
    return float(np.mean(_check(acc)[-1]))


def forgetting(acc) -> np.ndarray:
    """Per-task forgetting :math:`F_j = R_{jj} - R_{T-1,j}` for :math:`j < T-1` (``[T-1]``)."""
    R = _check(acc)
    j = np.arange(R.shape[0] - 1)
    return R[j, j] - R[-1, j]


def backward_transfer(acc) -> float:
    """:math:`\\frac1{T-1}\\sum_{j<T-1} (R_{T-1,j} - R_{jj})`; ``0`` for a single task."""
    f = forgetting(acc)
    return float(-f.mean()) if f.size else 0.0


def plot_accuracy_matrix(acc, ax=None, title: str | None = None):
    """Heat map of :math:`R` (rows: after task i, columns: test task j); returns the figure."""
    import matplotlib.pyplot as plt

    R = _check(acc)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * R.shape[0], 0.6 + 0.7 * R.shape[0]))
    else:
        fig = ax.figure
    im = ax.imshow(np.ma.masked_invalid(R), vmin=0.0, vmax=1.0, cmap="viridis")
    for (i, j), v in np.ndenumerate(R):
        if np.isfinite(v):
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                color="black" if v > 0.5 else "white",
                fontsize=8,
            )
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_xticks(range(R.shape[0]))
    ax.set_yticks(range(R.shape[0]))
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig
