"""Batched-chain MCMC: HMC, NUTS, ChEES-HMC, random-walk MH and Gibbs-style blocks, with Stan's
warm-up (cross-chain warm-up for ChEES).

All chains advance as one tensor computation: a kernel's ``step`` makes one batched
``logdensity_and_grad(z [C, D])`` call per leapfrog step for every chain at once.
"""

from ppltk.mcmc._base import Kernel, MCMCState, Params
from ppltk.mcmc.adaptation import (
    Adam,
    DualAveraging,
    EnsembleAdapter,
    StuckChainMonitor,
    WarmupAdapter,
    WelfordCovariance,
    window_schedule,
)
from ppltk.mcmc.api import sample
from ppltk.mcmc.chees import ChEES, ChEESAdapter, ChEESParams
from ppltk.mcmc.gibbs import Gibbs
from ppltk.mcmc.hmc import HMC
from ppltk.mcmc.integrators import find_reasonable_step_size, leapfrog
from ppltk.mcmc.mh import RandomWalkMH
from ppltk.mcmc.nuts import NUTS
from ppltk.mcmc.runner import (
    ChainsDisagreeWarning,
    GuardedDensity,
    SampleOutput,
    make_kernel,
    sample_flat,
)

__all__ = [
    "NUTS",
    "HMC",
    "ChEES",
    "ChEESParams",
    "ChEESAdapter",
    "RandomWalkMH",
    "Gibbs",
    "Kernel",
    "MCMCState",
    "Params",
    "SampleOutput",
    "ChainsDisagreeWarning",
    "GuardedDensity",
    "sample",
    "sample_flat",
    "make_kernel",
    "leapfrog",
    "find_reasonable_step_size",
    "window_schedule",
    "DualAveraging",
    "WelfordCovariance",
    "WarmupAdapter",
    "StuckChainMonitor",
    "EnsembleAdapter",
    "Adam",
]
