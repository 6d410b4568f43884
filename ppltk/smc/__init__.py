"""Composable sequential Monte Carlo: small blocks, each preserving its target, composed.

Kernel
    A :class:`FeynmanKac` model (``M0``/``M``/``logG`` or ``advance``, owning its data:
    :class:`StateSpaceFK` for a state-space model and a proposal, :class:`ProgramFK` for any
    Pyro program), a carried :class:`SMCState`, and :func:`init` / :func:`step` returning
    ``(state, SMCInfo)``: every algorithm below is a short loop over them.

Blocks
    :class:`Population` (particles ``[*batch, N, ...]``, log-weights, running float64
    log-evidence, ESS); resamplers :func:`multinomial`, :func:`stratified`, :func:`systematic`,
    :func:`residual` (one signature ``(log_weights, generator, num_samples=None) -> ancestors``)
    and adaptive
    :func:`resample` (folds ``lse(log w) - log N`` into the evidence); proposals
    (:func:`bootstrap`, :class:`GuideProposal`, :class:`LinearGaussianOptimalProposal`);
    :func:`mcmc_move` (any :mod:`ppltk.mcmc` kernel, returning its full state),
    :func:`population_params` / :func:`weighted_covariance` (the move's metric);
    :class:`PseudoMarginalMH` (PMMH as an MCMC kernel); :func:`next_beta` and
    :func:`tempering_increment` (adaptive tempering);
    handlers in :mod:`ppltk.handlers` (tempering, particle plate, log-weights, replay, suspension).

Algorithms
    :func:`particle_filter` / :func:`smc` (with the model's path: explicit Markov state O(NT),
    Pyro ``init``/``step`` O(NT), any Pyro program run once O(NT), or replayed O(NT^2) as a
    fallback),
    :func:`resample_move`, :func:`tempered_smc` / :func:`tempered_smc_flat`, :func:`pmmh`,
    :func:`smc2`, :func:`conditional_smc` / :func:`particle_gibbs`, :func:`ffbs`.
"""

from ppltk.smc.api import model_path, smc
from ppltk.smc.filter import FilterOutput, StateSpaceFK, particle_filter
from ppltk.smc.kernel import FeynmanKac, SMCInfo, SMCState, init, step
from ppltk.smc.moves import mcmc_move, population_params, weighted_covariance
from ppltk.smc.pmmh import PseudoMarginalMH, PseudoMarginalState, pmmh
from ppltk.smc.population import Population, ess, normalized_weights, reindex
from ppltk.smc.programs import ProgramFK
from ppltk.smc.proposals import GuideProposal, LinearGaussianOptimalProposal, bootstrap
from ppltk.smc.resample_move import resample_move
from ppltk.smc.resampling import (
    RESAMPLERS,
    get_resampler,
    multinomial,
    resample,
    residual,
    stratified,
    systematic,
)
from ppltk.smc.smc2 import smc2
from ppltk.smc.smoothing import conditional_smc, ffbs, particle_gibbs
from ppltk.smc.ssm import LinearGaussianSSM, StateSpaceModel, StochasticVolatilitySSM
from ppltk.smc.tempered import tempered_smc, tempered_smc_flat
from ppltk.smc.tempering import next_beta, tempering_increment

__all__ = [
    "FeynmanKac",
    "ProgramFK",
    "PseudoMarginalMH",
    "PseudoMarginalState",
    "SMCInfo",
    "SMCState",
    "StateSpaceFK",
    "init",
    "population_params",
    "step",
    "tempering_increment",
    "weighted_covariance",
    "conditional_smc",
    "ffbs",
    "mcmc_move",
    "model_path",
    "next_beta",
    "particle_gibbs",
    "pmmh",
    "resample_move",
    "smc",
    "smc2",
    "tempered_smc",
    "tempered_smc_flat",
    "FilterOutput",
    "GuideProposal",
    "LinearGaussianOptimalProposal",
    "LinearGaussianSSM",
    "Population",
    "RESAMPLERS",
    "StateSpaceModel",
    "StochasticVolatilitySSM",
    "bootstrap",
    "ess",
    "get_resampler",
    "multinomial",
    "normalized_weights",
    "particle_filter",
    "reindex",
    "resample",
    "residual",
    "stratified",
    "systematic",
]
