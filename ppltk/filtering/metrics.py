"""Decoding accuracy metrics for trajectories ``[..., T, d]``."""

from __future__ import annotations

import math

import torch

from ppltk.errors import ShapeError

__all__ = ["normalised_rmse", "mean_angle_error"]


def _check_pair(pred: torch.Tensor, truth: torch.Tensor) -> None:
    if pred.shape != truth.shape or pred.dim() < 2:
        raise ShapeError(
            f"Expected `pred` and `truth` of the same shape [..., T, d], but found "
            f"{tuple(pred.shape)} and {tuple(truth.shape)}"
        )


def normalised_rmse(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    r"""Root mean squared error relative to predicting the mean of ``truth``.

    .. math::
        \text{nRMSE} = \sqrt{\frac{\sum_t \lVert \hat z_t - z_t\rVert^2}
                                  {\sum_t \lVert z_t - \bar z\rVert^2}}

    0 is perfect, 1 is as good as the constant mean. Returns ``[...]``.
    """
    _check_pair(pred, truth)
    err = (pred - truth).pow(2).sum((-2, -1))
    spread = (truth - truth.mean(-2, keepdim=True)).pow(2).sum((-2, -1))
    return (err / spread).sqrt()


def mean_angle_error(pred: torch.Tensor, truth: torch.Tensor, degrees: bool = True) -> torch.Tensor:
    r"""Mean absolute angle between 2-D vectors, :math:`\frac1T\sum_t |\angle(\hat z_t, z_t)|`.

    The difference of ``atan2`` angles is wrapped into :math:`(-\pi, \pi]`. Returns ``[...]``.
    """
    _check_pair(pred, truth)
    if pred.shape[-1] != 2:
        raise ShapeError(f"Expected 2-D vectors [..., T, 2], but found {tuple(pred.shape)}")
    diff = torch.atan2(pred[..., 1], pred[..., 0]) - torch.atan2(truth[..., 1], truth[..., 0])
    wrapped = torch.remainder(diff + math.pi, 2 * math.pi) - math.pi
    mean = wrapped.abs().mean(-1)
    return torch.rad2deg(mean) if degrees else mean
