"""Amortized inference: a network trained on a Pyro model's own simulations.

:func:`fit_amortized` draws :math:`(\\theta, y)` from the model's prior predictive, trains a
permutation-invariant set encoder with a Gaussian or Gaussian-mixture head over the model
bridge's unconstrained latents, and checks the result by simulation-based calibration. The
returned :class:`AmortizedPosterior` gives a :class:`ppltk.Result` for new data in one forward
pass, optionally importance-corrected against the exact model density (with its ESS).

.. autofunction:: ppltk.amortized.fit_amortized

.. autoclass:: ppltk.amortized.AmortizedPosterior
   :members:

.. autoclass:: ppltk.amortized.ImportanceSample
   :members:

.. autoclass:: ppltk.amortized.CalibrationWarning

.. autofunction:: ppltk.amortized.simulate

.. autoclass:: ppltk.amortized.Simulations
   :members:

.. autoclass:: ppltk.amortized.DeepSetEncoder
   :members: forward

.. autoclass:: ppltk.amortized.MixtureHead
   :members:
"""

from ppltk.amortized.networks import DeepSetEncoder, MixtureHead
from ppltk.amortized.posterior import (
    AmortizedPosterior,
    CalibrationWarning,
    ImportanceSample,
    fit_amortized,
)
from ppltk.amortized.simulate import Simulations, simulate

__all__ = [
    "AmortizedPosterior",
    "CalibrationWarning",
    "DeepSetEncoder",
    "ImportanceSample",
    "MixtureHead",
    "Simulations",
    "fit_amortized",
    "simulate",
]
