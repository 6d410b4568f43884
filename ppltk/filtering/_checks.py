"""Input contracts of the filtering package: every check in one place.

Messages follow the house form "Expected X, but found Y" and name the argument.
"""

from __future__ import annotations

import contextlib

import torch

from ppltk.errors import (
    ArgumentError,
    NotFittedError,
    NotPositiveDefiniteError,
    NumericalError,
    ShapeError,
)

__all__ = [
    "as_float_tensor",
    "check_matrix",
    "check_covariance",
    "check_observations",
    "check_training_pair",
    "check_fitted",
    "check_finite_output",
    "named_linalg_errors",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


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
    if tensor.is_complex():
        raise ArgumentError(f"Expected `{name}` real, but found dtype {tensor.dtype}")
    if like is not None:
        return tensor.to(dtype=like.dtype, device=like.device)
    if tensor.dtype in _LOW_PRECISION:
        raise ArgumentError(
            f"Expected `{name}` float32 or float64 (covariance recursions need at least single "
            f"precision), but found {tensor.dtype}; convert it with .float() or .double()"
        )
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


def check_covariance(matrix: torch.Tensor, name: str) -> torch.Tensor:
    r"""Check that the (batch of) covariance ``matrix`` is symmetric positive semi-definite.

    Tolerances scale with the matrix: asymmetry and negative eigenvalues down to
    :math:`\sqrt{\epsilon}\,\max(1, |\lambda|_{\max})` are accepted as rounding.
    """
    if matrix.numel() == 0:
        return matrix
    scale = matrix.abs().amax(dim=(-2, -1)).clamp_min(1.0)
    tol = torch.finfo(matrix.dtype).eps ** 0.5 * scale
    asym = (matrix - matrix.mT).abs().amax(dim=(-2, -1))
    if bool((asym > tol).any()):
        raise NotPositiveDefiniteError(
            f"Expected `{name}` symmetric, but found an asymmetry of {float(asym.max()):.3g} "
            f"(shape {tuple(matrix.shape)})"
        )
    low = torch.linalg.eigvalsh(0.5 * (matrix + matrix.mT)).amin(-1)
    if bool((low < -tol).any()):
        raise NotPositiveDefiniteError(
            f"Expected `{name}` positive semi-definite, but found an eigenvalue "
            f"{float(low.min()):.4g} (shape {tuple(matrix.shape)})"
        )
    return matrix


def check_observations(X: torch.Tensor, name: str, num_features: int | None) -> torch.Tensor:
    """Check observations ``[..., T, num_features]`` with ``T >= 1``; NaN marks a missing row,
    inf is an error (``num_features=None``: any number of features)."""
    if X.dim() < 2 or (num_features is not None and X.shape[-1] != num_features):
        n = "n" if num_features is None else num_features
        raise ShapeError(f"Expected `{name}` of shape [..., T, {n}], but found {tuple(X.shape)}")
    if X.shape[-2] < 1:
        raise ShapeError(
            f"Expected `{name}` with at least one time step (T >= 1), but found shape "
            f"{tuple(X.shape)}"
        )
    if torch.isinf(X).any():
        raise ArgumentError(
            f"Expected `{name}` without inf entries (NaN marks a missing row), but found "
            f"{int(torch.isinf(X).sum())}"
        )
    return X


def check_row(x: torch.Tensor, name: str, num_features: int | None) -> torch.Tensor:
    """Check one observation row ``[..., num_features]`` for the online ``step``."""
    if x.dim() < 1 or (num_features is not None and x.shape[-1] != num_features):
        n = "n" if num_features is None else num_features
        raise ShapeError(f"Expected `{name}` of shape [..., {n}], but found {tuple(x.shape)}")
    if torch.isinf(x).any():
        raise ArgumentError(
            f"Expected `{name}` without inf entries (NaN marks a missing row), but found "
            f"{int(torch.isinf(x).sum())}"
        )
    return x


def check_finite_output(value: torch.Tensor, what: str, *more: torch.Tensor) -> torch.Tensor:
    """Raise :class:`NumericalError` instead of returning NaN/inf filter output.

    ``value`` and any further tensors in ``more`` (e.g. the covariances) are checked with
    one reduction and one synchronisation (a sum that overflows counts as overflow);
    ``value`` is returned.
    """
    total = value.sum()  # NaN/inf anywhere make the sum non-finite: one cheap reduction
    for other in more:
        total = total + other.sum()
    if not bool(torch.isfinite(total)):
        raise NumericalError(
            f"Expected finite {what}, but found NaN/inf entries (overflow: rescale the data "
            "or the covariances, or use float64)"
        )
    return value


@contextlib.contextmanager
def named_linalg_errors(what: str):
    """Turn a failed factorisation inside the block into :class:`NotPositiveDefiniteError`."""
    try:
        yield
    except torch.linalg.LinAlgError as error:
        raise NotPositiveDefiniteError(
            f"Expected positive definite {what}, but a Cholesky factorisation failed: "
            f"{str(error).splitlines()[0]}"
        ) from None


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
