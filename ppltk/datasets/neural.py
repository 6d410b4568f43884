r"""Simulated intracortical recordings for velocity decoding.

Cursor velocity :math:`z_t \in \mathbb R^2` follows a stationary AR(1),

.. math::
    z_t = a z_{t-1} + \sqrt{1 - a^2}\,\sigma\,\varepsilon_t, \qquad a = e^{-\Delta/\tau},

and neuron :math:`i` with preferred direction :math:`d_i` fires Poisson counts in bins of
:math:`\Delta` ms at rate (Hz)

* ``"cosine"``: :math:`\lambda_i(z) = \max(b_i + m_i\, d_i^\top z,\ 0)` (rectified cosine tuning);
* ``"exponential"``: :math:`\lambda_i(z) = b_i \exp(\kappa_i\, d_i^\top z)`,
  :math:`\kappa_i = \log(1 + m_i / b_i)` (the tuning curve exponentiated; equal to
  :math:`b_i + m_i` at :math:`d_i^\top z = 1`),

with baseline :math:`b_i` and modulation :math:`m_i` drawn around ``baseline_hz`` and
``modulation_hz``. Optional outliers: in a bin, with probability ``outlier_prob``, one random
channel gets ``Poisson(outlier_hz * Δ)`` extra counts.
"""

from __future__ import annotations

import math

import torch

from ppltk._rng import make_generator
from ppltk.errors import ArgumentError

__all__ = ["simulate_neural_decoding"]


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ArgumentError(f"Expected `{name}` > 0, but found {value!r}")


def simulate_neural_decoding(
    num_neurons: int = 100,
    num_steps: int = 2000,
    bin_ms: float = 20.0,
    seed: int | torch.Generator | None = 0,
    *,
    tuning: str = "cosine",
    baseline_hz: float = 10.0,
    modulation_hz: float = 20.0,
    velocity_timescale_ms: float = 400.0,
    velocity_std: float = 1.0,
    outlier_prob: float = 0.0,
    outlier_hz: float = 1000.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate spike counts ``X [num_steps, num_neurons]`` and velocities ``Z [num_steps, 2]``.

    Examples
    --------
    >>> X, Z = simulate_neural_decoding(num_neurons=5, num_steps=10, seed=1)
    >>> tuple(X.shape), tuple(Z.shape), X.dtype
    ((10, 5), (10, 2), torch.float64)
    """
    _check_sizes(num_neurons, num_steps, outlier_prob)
    if tuning not in ("cosine", "exponential"):
        raise ArgumentError(f"Expected `tuning` in ('cosine', 'exponential'), but found {tuning!r}")
    _check_positive(
        bin_ms=bin_ms,
        baseline_hz=baseline_hz,
        modulation_hz=modulation_hz,
        velocity_timescale_ms=velocity_timescale_ms,
        velocity_std=velocity_std,
    )
    _check_device_and_dtype(device, dtype)
    gen = make_generator(seed, device)
    opts = {"generator": gen, "dtype": dtype, "device": gen.device}
    Z = _ar1_velocity(num_steps, bin_ms, velocity_timescale_ms, velocity_std, opts)
    angle = 2 * math.pi * torch.rand(num_neurons, **opts)
    directions = torch.stack([angle.cos(), angle.sin()], -1)  # [n, 2]
    base = baseline_hz * (0.5 + torch.rand(num_neurons, **opts))
    mod = modulation_hz * (0.5 + torch.rand(num_neurons, **opts))
    drive = Z @ directions.mT  # [T, n]
    if tuning == "cosine":
        rates = (base + mod * drive).clamp_min(0.0)
    else:
        rates = base * torch.exp(torch.log1p(mod / base) * drive)
    return _poisson_counts(rates, bin_ms, outlier_prob, outlier_hz, opts), Z


def _check_sizes(num_neurons, num_steps, outlier_prob) -> None:
    if not isinstance(num_neurons, int) or num_neurons < 1:
        raise ArgumentError(f"Expected `num_neurons` a positive int, but found {num_neurons!r}")
    if not isinstance(num_steps, int) or num_steps < 2:
        raise ArgumentError(f"Expected `num_steps` an int >= 2, but found {num_steps!r}")
    if not 0.0 <= outlier_prob <= 1.0:
        raise ArgumentError(f"Expected `outlier_prob` in [0, 1], but found {outlier_prob!r}")


def _poisson_counts(rates, bin_ms, outlier_prob, outlier_hz, opts) -> torch.Tensor:
    """Counts ``Poisson(rates [T, n] * bin)``; with ``outlier_prob``, in each bin one random
    channel gets ``Poisson(outlier_hz * bin)`` extra counts with that probability."""
    dt, gen = bin_ms / 1000.0, opts["generator"]
    X = torch.poisson(rates * dt, generator=gen)
    if outlier_prob > 0:
        num_steps, num_neurons = rates.shape
        hit = torch.rand(num_steps, **opts) < outlier_prob
        channel = torch.randint(num_neurons, (num_steps,), generator=gen, device=gen.device)
        mean = torch.full((num_steps,), outlier_hz * dt, dtype=rates.dtype, device=gen.device)
        extra = torch.poisson(mean, generator=gen)
        rows = torch.nonzero(hit).squeeze(-1)
        X[rows, channel[rows]] += extra[rows]
    return X


def _check_device_and_dtype(device, dtype) -> None:
    """A named error for an unknown or unavailable device and a non-float32/64 dtype."""
    if dtype not in (torch.float32, torch.float64):
        raise ArgumentError(f"Expected `dtype` torch.float32 or torch.float64, but found {dtype!r}")
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ArgumentError(f"Expected `device` a torch device, but found {device!r}") from error
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(f"Expected an available `device`, but found {device!r} with no GPU")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ArgumentError(
            f"Expected `device` index < {torch.cuda.device_count()}, but found {device!r}"
        )


def _ar1_velocity(T: int, bin_ms: float, tau_ms: float, std: float, opts: dict) -> torch.Tensor:
    a = math.exp(-bin_ms / tau_ms)
    noise = torch.randn(T, 2, **opts)
    Z = torch.empty(T, 2, dtype=opts["dtype"], device=opts["device"])
    z = std * noise[0]
    Z[0] = z
    for t in range(1, T):
        z = a * z + math.sqrt(1 - a * a) * std * noise[t]
        Z[t] = z
    return Z
