"""Amortized inference: a network trained on a Pyro model's own simulations.

:func:`fit_amortized` draws :math:`(\\theta, y)` from the model's prior predictive, trains a
permutation-invariant set encoder with a Gaussian or Gaussian-mixture head over the model
bridge's unconstrained latents, and checks the result by simulation-based calibration. The
returned :class:`AmortizedPosterior` gives a :class:`ppltk.Result` for new data in one forward
pass, optionally importance-corrected against the exact model density (with its ESS).
:func:`fit_prior_adaptive` trains a Distribution-Transformer head that also takes the prior
(a Gaussian mixture over the unconstrained latents) as an input, so the prior can change at
inference time and a posterior can be the next step's prior.

.. autofunction:: ppltk.amortized.fit_amortized

.. autoclass:: ppltk.amortized.AmortizedPosterior
   :members:

.. autoclass:: ppltk.amortized.ImportanceSample
   :members:

.. autoclass:: ppltk.amortized.CalibrationWarning

.. autofunction:: ppltk.amortized.simulate

.. autofunction:: ppltk.amortized.simulate_units

.. autoclass:: ppltk.amortized.Simulations
   :members:

.. autoclass:: ppltk.amortized.DeepSetEncoder
   :members: forward

.. autoclass:: ppltk.amortized.MixtureHead
   :members:

Prior adaptation (the prior as an input at inference time):

.. autofunction:: ppltk.amortized.fit_prior_adaptive

.. autoclass:: ppltk.amortized.PriorAdaptivePosterior
   :members:

.. autoclass:: ppltk.amortized.GaussianMixturePrior
   :members:
"""

from ppltk.amortized.networks import DeepSetEncoder, MixtureHead
from ppltk.amortized.posterior import (
    AmortizedPosterior,
    CalibrationWarning,
    ImportanceSample,
    fit_amortized,
)
from ppltk.amortized.prior_adaptive import (
    GaussianMixturePrior,
    PriorAdaptivePosterior,
    fit_prior_adaptive,
)
from ppltk.amortized.simulate import Simulations, SimulationUnit, simulate, simulate_units

__all__ = [
    "AmortizedPosterior",
    "CalibrationWarning",
    "DeepSetEncoder",
    "GaussianMixturePrior",
    "ImportanceSample",
    "MixtureHead",
    "PriorAdaptivePosterior",
    "SimulationUnit",
    "Simulations",
    "fit_amortized",
    "fit_prior_adaptive",
    "simulate",
    "simulate_units",
]
