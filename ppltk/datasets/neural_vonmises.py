r"""A second neural-decoding simulator: von Mises direction tuning with a speed gain.

A different family from :func:`ppltk.datasets.simulate_neural_decoding` (cosine or
exponentiated-cosine tuning of the velocity *vector*): here each neuron is tuned to the
*direction* :math:`\theta_t = \operatorname{atan2}(z_{t,2}, z_{t,1})` with a von Mises bump of
concentration :math:`\kappa_i` (narrow, non-cosine tuning curves) and its modulation scales
with the speed :math:`s_t = \lVert z_t \rVert`:

.. math::
    \lambda_i(z) = b_i + m_i\, \Bigl(\frac{s_t}{\sigma}\Bigr)^{\gamma}
                   \exp\bigl(\kappa_i(\cos(\theta_t - \phi_i) - 1)\bigr) \quad \text{(Hz)},

with preferred directions :math:`\phi_i` uniform on the circle, baselines :math:`b_i` and
modulations :math:`m_i` drawn around ``baseline_hz`` and ``modulation_hz``, concentrations
uniform in ``concentration`` and a speed exponent :math:`\gamma` (``speed_exponent``). The
velocity is the stationary AR(1) of the project simulator. :math:`E[x \mid z]` is neither
linear nor log-linear in :math:`z`, so a linear (Kalman) or Poisson-GLM observation model is
misspecified in a different way than on the project simulator.
"""

from __future__ import annotations

import math

import torch

from ppltk._rng import make_generator
from ppltk.datasets.neural import (
    _ar1_velocity,
    _check_device_and_dtype,
    _check_positive,
    _check_sizes,
    _poisson_counts,
)
from ppltk.errors import ArgumentError

__all__ = ["simulate_vonmises_neurons"]


def simulate_vonmises_neurons(
    num_neurons: int = 100,
    num_steps: int = 2000,
    bin_ms: float = 20.0,
    seed: int | torch.Generator | None = 0,
    *,
    baseline_hz: float = 10.0,
    modulation_hz: float = 40.0,
    concentration: tuple[float, float] = (1.0, 4.0),
    speed_exponent: float = 1.0,
    velocity_timescale_ms: float = 400.0,
    velocity_std: float = 1.0,
    outlier_prob: float = 0.0,
    outlier_hz: float = 1000.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate counts ``X [num_steps, num_neurons]`` and velocities ``Z [num_steps, 2]``.

    ``outlier_prob``: in a bin, with this probability one random channel gets
    ``Poisson(outlier_hz * bin)`` extra counts (single-channel outliers).

    Examples
    --------
    >>> X, Z = simulate_vonmises_neurons(num_neurons=5, num_steps=10, seed=1)
    >>> tuple(X.shape), tuple(Z.shape)
    ((10, 5), (10, 2))
    """
    _check_sizes(num_neurons, num_steps, outlier_prob)
    low, high = concentration
    if not 0.0 <= low <= high:
        raise ArgumentError(
            f"Expected `concentration` (low, high) with 0 <= low <= high, but found {concentration!r}"
        )
    if not speed_exponent >= 0:
        raise ArgumentError(f"Expected `speed_exponent` >= 0, but found {speed_exponent!r}")
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
    preferred = 2 * math.pi * torch.rand(num_neurons, **opts)
    base = baseline_hz * (0.5 + torch.rand(num_neurons, **opts))
    mod = modulation_hz * (0.5 + torch.rand(num_neurons, **opts))
    kappa = low + (high - low) * torch.rand(num_neurons, **opts)
    theta = torch.atan2(Z[:, 1], Z[:, 0]).unsqueeze(-1)  # [T, 1]
    gain = (Z.norm(dim=-1, keepdim=True) / velocity_std).pow(speed_exponent)  # [T, 1]
    bump = torch.exp(kappa * (torch.cos(theta - preferred) - 1.0))  # [T, n]
    rates = base + mod * gain * bump
    return _poisson_counts(rates, bin_ms, outlier_prob, outlier_hz, opts), Z
