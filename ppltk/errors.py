"""The one error and warning hierarchy of ppltk.

Every exception raised on purpose by ppltk derives from :class:`PpltkError`; argument and
shape problems also derive from :class:`ValueError`, numerical trouble from
:class:`RuntimeError`, so callers may catch either the ppltk class or the builtin one.
"""

from __future__ import annotations

__all__ = [
    "PpltkError",
    "ArgumentError",
    "ShapeError",
    "NumericalError",
    "NonFiniteLogDensityError",
    "NotPositiveDefiniteError",
    "DegenerateWeightsError",
    "DiscreteLatentError",
    "ModelStructureError",
    "NotIdentifiableError",
    "NotFittedError",
    "DistributedError",
    "CheckpointMismatchError",
    "FileFormatError",
    "PpltkWarning",
    "DivergenceWarning",
    "InterruptedWarning",
    "NumericalFallbackWarning",
    "VectorisationWarning",
    "CalibrationWarning",
]


class PpltkError(Exception):
    """Base class of every error ppltk raises on purpose."""


class ArgumentError(PpltkError, ValueError):
    """An argument has the wrong type, value or range; the message names it."""


class ShapeError(ArgumentError):
    """A tensor argument has the wrong shape; the message gives expected and found shapes."""


class NumericalError(PpltkError, RuntimeError):
    """Numerical trouble that ppltk cannot recover from."""


class NonFiniteLogDensityError(NumericalError):
    """A log-density (or its gradient) is NaN/inf where a finite value is required."""


class NotPositiveDefiniteError(NumericalError):
    """A covariance or precision matrix is not positive definite."""


class DegenerateWeightsError(NumericalError):
    """All importance weights are zero (log-weights -inf) or NaN."""


class DiscreteLatentError(PpltkError, TypeError):
    """A gradient-based method met a discrete latent site."""


class ModelStructureError(PpltkError, ValueError):
    """The model's structure does not fit what the method needs."""


class NotIdentifiableError(PpltkError, ValueError):
    """A causal effect is not computable from the given observational data this way."""


class NotFittedError(PpltkError, RuntimeError):
    """A method was used before ``fit``."""


class DistributedError(PpltkError, RuntimeError):
    """A distributed run could not deliver every work unit exactly once."""


class CheckpointMismatchError(ArgumentError):
    """A checkpoint was written by a different run: its fingerprint (model, data, options,
    seed, ppltk version) does not match the run that tries to resume from it."""


class FileFormatError(ArgumentError):
    """A file to read is missing, empty, truncated or not of the kind expected (the message
    names the path and what was expected)."""


class PpltkWarning(UserWarning):
    """Base class of ppltk warnings."""


class DivergenceWarning(PpltkWarning):
    """Divergent transitions occurred during sampling."""


class InterruptedWarning(PpltkWarning):
    """A run was interrupted (Ctrl-C); the work done so far is returned."""


class NumericalFallbackWarning(PpltkWarning):
    """A numerical fallback fired (e.g. jitter added, a non-PD fix applied)."""


class VectorisationWarning(PpltkWarning):
    """A model could not be vectorised and runs in a slower loop."""


class CalibrationWarning(PpltkWarning):
    """A posterior failed its simulation-based calibration check (e.g. an amortized one)."""
