"""Calibration of inference methods: simulation-based calibration (SBC) on any executor.

:func:`sbc` draws parameters from the prior, simulates data, runs the inference method on it and
tests the ranks of the true parameters among the posterior draws for uniformity; replications
are independent work units, so ``executor="dask"`` (or a scheduler address, a Client, a
dask-jobqueue cluster) spreads them over workers with identical results.
"""

from ppltk.calibration.examples import NormalMeanPosterior, normal_mean_model
from ppltk.calibration.plot import plot_ranks
from ppltk.calibration.ranks import rank_bins, rank_statistics, uniformity_pvalue
from ppltk.calibration.sbc import SBCReplications, SBCResult, sbc
from ppltk.calibration.simulate import UnobserveMessenger, simulate_prior, unobserve

__all__ = [
    "NormalMeanPosterior",
    "SBCReplications",
    "SBCResult",
    "UnobserveMessenger",
    "normal_mean_model",
    "plot_ranks",
    "rank_bins",
    "rank_statistics",
    "sbc",
    "simulate_prior",
    "uniformity_pvalue",
    "unobserve",
]
