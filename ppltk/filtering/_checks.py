"""Input contracts of the filtering package: every check in one place.

Messages follow the house form "Expected X, but found Y" and name the argument.
"""

from __future__ import annotations

import torch

from ppltk.errors import ArgumentError, NotFittedError, ShapeError

__all__ = [
    "as_float_tensor",
    "check_matrix",
    "check_observations",
    "check_training_pair",
    "check_fitted",
]


def as_float_tensor(value, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``value`` as a floating tensor (dtype/device of ``like`` when given)."""
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ArgumentError(
                f"Expected `{name}` to be a tensor or array, but found {type(value).__name__}"
            ) from exc
    if like is not None:
        return tensor.to(dtype=like.dtype, device=like.device)
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    return tensor


def check_matrix(matrix: torch.Tensor, name: str, rows: int, cols: int) -> torch.Tensor:
    """Check that ``matrix`` has shape ``[..., rows, cols]`` and finite entries."""
    if matrix.dim() < 2 or tuple(matrix.shape[-2:]) != (rows, cols):
        raise ShapeError(
            f"Expected `{name}` of shape [..., {rows}, {cols}], but found {tuple(matrix.shape)}"
        )
    if not torch.isfinite(matrix).all():
        raise ArgumentError(f"Expected `{name}` to be finite, but found NaN or inf entries")
    return matrix


def check_observations(X: torch.Tensor, name: str, num_features: int) -> torch.Tensor:
    """Check observations ``[..., T, num_features]``; NaN marks a missing row, inf is an error."""
    if X.dim() < 2 or X.shape[-1] != num_features:
        raise ShapeError(
            f"Expected `{name}` of shape [..., T, {num_features}], but found {tuple(X.shape)}"
        )
    if torch.isinf(X).any():
        raise ArgumentError(f"Expected `{name}` without inf entries, but found some")
    return X


def check_training_pair(X, Z, x_name: str = "X", z_name: str = "Z"):
    """Check paired training data ``X [T, n]`` and ``Z [T, d]``: 2-D, same length, finite."""
    X = as_float_tensor(X, x_name)
    Z = as_float_tensor(Z, z_name, like=X)
    for tensor, name in ((X, x_name), (Z, z_name)):
        if tensor.dim() != 2:
            raise ShapeError(
                f"Expected `{name}` of shape [T, features], but found {tuple(tensor.shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise ArgumentError(
                f"Expected `{name}` to be finite training data, but found "
                f"{int((~torch.isfinite(tensor)).sum())} NaN/inf entries"
            )
    if X.shape[0] != Z.shape[0]:
        raise ShapeError(
            f"Expected `{x_name}` and `{z_name}` with the same number of rows, but found "
            f"{tuple(X.shape)} and {tuple(Z.shape)}"
        )
    if X.shape[0] < 3:
        raise ArgumentError(f"Expected at least 3 training rows, but found {X.shape[0]}")
    return X, Z


def check_fitted(obj, attribute: str) -> None:
    """Raise :class:`NotFittedError` when ``obj.<attribute>`` is still ``None``."""
    if getattr(obj, attribute, None) is None:
        raise NotFittedError(
            f"Expected a fitted {type(obj).__name__}, but found it unfitted: call `fit` first"
        )
