"""Continual learning: sequential posteriors with fitted-density priors, baselines, ProtoCL.

Kessler, Cobb, Rudner, Zohren, Roberts, "On Sequential Bayesian Inference for Continual
Learning", Entropy 2023. Every learner is built with ``seed=`` and has ``observe(X, y)``,
``predict_proba(X) -> [n, num_classes_seen]`` and ``predict(X)``; :func:`run_continual`
fills the task-accuracy matrix in the class- or task-incremental setting.
``ProtoCL(seed=0)`` builds its own encoder; :class:`NearestClassMean` is the raw-input
prototype baseline.
"""

from ppltk.continual.baselines import VCL, FineTuning, NearestClassMean, OnlineLaplace
from ppltk.continual.bnn import FlatBNN, make_logdensity_and_grad
from ppltk.continual.densities import FittedDensity, fit_density, fit_flow, fit_gaussian, fit_gmm
from ppltk.continual.harness import ContinualRun, reorder_classes, run_continual
from ppltk.continual.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    plot_accuracy_matrix,
)
from ppltk.continual.protocl import (
    DefaultEncoder,
    ProtoCL,
    PrototypeState,
    conjugate_update,
    herding,
    predictive_log_proba,
    prior_state,
)
from ppltk.continual.sequential import JointHMC, SequentialBayes

__all__ = [
    "SequentialBayes",
    "JointHMC",
    "FineTuning",
    "VCL",
    "OnlineLaplace",
    "NearestClassMean",
    "ProtoCL",
    "DefaultEncoder",
    "herding",
    "PrototypeState",
    "prior_state",
    "conjugate_update",
    "predictive_log_proba",
    "FlatBNN",
    "make_logdensity_and_grad",
    "FittedDensity",
    "fit_gaussian",
    "fit_gmm",
    "fit_flow",
    "fit_density",
    "run_continual",
    "reorder_classes",
    "ContinualRun",
    "average_accuracy",
    "forgetting",
    "backward_transfer",
    "plot_accuracy_matrix",
]
