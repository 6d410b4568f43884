"""Variational inference for SDEs driven by fractional Brownian motion (Daems et al., 2024).

See ``../shared/GUIDE.md`` section 6: Markov approximation of fBM (:class:`MarkovFBM`), the
augmented Markov SDE and its solvers (:func:`sdeint_fractional`), the variational posterior
with a neural control (:class:`VariationalFractionalSDE`, :class:`LatentFractionalSDE`),
:func:`fit_hurst`, exact fBM (:func:`davies_harte`) and baseline Hurst estimators.
"""

from ppltk.sde._gamma import RegularizedGammaP, RegularizedGammaQ, gammainc, gammaincc
from ppltk.sde.fbm import davies_harte, fgn_autocovariance, hurst_gaussian_mle, hurst_variogram
from ppltk.sde.guided import guided_rollout
from ppltk.sde.latent import LatentFractionalSDE
from ppltk.sde.markov_fbm import (
    MarkovFBM,
    OmegaFunction,
    fbm_scale,
    geometric_gammas,
    omega_system,
    optimal_omega,
    ou_increment_covariance,
)
from ppltk.sde.solvers import FractionalSDE, SolveOutput, sdeint_fractional
from ppltk.sde.variational import ControlNet, VariationalFractionalSDE, fit_hurst

__all__ = [
    "ControlNet",
    "FractionalSDE",
    "LatentFractionalSDE",
    "MarkovFBM",
    "OmegaFunction",
    "RegularizedGammaP",
    "RegularizedGammaQ",
    "SolveOutput",
    "VariationalFractionalSDE",
    "davies_harte",
    "fbm_scale",
    "fgn_autocovariance",
    "fit_hurst",
    "gammainc",
    "gammaincc",
    "geometric_gammas",
    "hurst_gaussian_mle",
    "guided_rollout",
    "hurst_variogram",
    "omega_system",
    "optimal_omega",
    "ou_increment_covariance",
    "sdeint_fractional",
]
