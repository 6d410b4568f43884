"""Causal interventions by string-diagram surgery (Jacobs, Kissinger, Zanasi, FoSSaCS 2019).

* syntax: :class:`Diagram` (boxes, copies, discards, latent wires), :func:`cut`, :func:`draw`;
* semantics: :func:`validate_cpts`, :func:`evaluate` (one einsum per query);
* interventions on a known model: :func:`interventional` (hard/soft, two routes);
* from observational data: :func:`identify`, :func:`effect_from_joint` (back-door, front-door
  comb disintegration with multi-variable bridges and context, then the complete ID/IDC
  algorithm for anything else, conditional queries with ``evidence=``);
* effects with uncertainty: :func:`effect_posterior` (Dirichlet posterior of the joint);
* counterfactuals: :func:`counterfactual` (n-world surgery), :func:`response_function_scm`;
* Pyro: :func:`do`, :func:`model_to_cpts`, :func:`cpts_to_model`,
  :func:`exact_interventional`, :func:`sample_interventional`.
"""

from ppltk.causal.comb import (
    CausalEffect,
    NoFullSupportError,
    effect_from_joint,
    joint_from_samples,
)
from ppltk.causal.counterfactual import (
    counterfactual,
    counterfactual_from_model,
    pns_bounds,
    response_function_scm,
    twin_network,
)
from ppltk.causal.diagram import Box, Copy, Diagram, Discard, cut
from ppltk.causal.draw import draw
from ppltk.causal.examples import smoking_graph, smoking_joint, smoking_latent_model
from ppltk.causal.id_algorithm import ADMG, id_expression
from ppltk.causal.identification import (
    Identification,
    identify,
    is_backdoor_set,
    is_frontdoor_set,
)
from ppltk.causal.pgmpy_interop import from_pgmpy, to_pgmpy
from ppltk.causal.pyro_bridge import (
    DiscreteCausalModel,
    DoMessenger,
    cpts_to_model,
    do,
    exact_interventional,
    model_to_cpts,
    monte_carlo_mean,
    sample_interventional,
)
from ppltk.causal.random_models import random_causal_model
from ppltk.causal.semantics import as_state, cardinalities, evaluate, validate_cpts
from ppltk.causal.surgery import CausalModel, interventional
from ppltk.causal.uncertainty import EffectPosterior, credible_interval, effect_posterior
from ppltk.errors import NotIdentifiableError

__all__ = [
    "Box",
    "Copy",
    "Discard",
    "Diagram",
    "cut",
    "draw",
    "validate_cpts",
    "cardinalities",
    "evaluate",
    "as_state",
    "CausalModel",
    "interventional",
    "Identification",
    "identify",
    "is_backdoor_set",
    "is_frontdoor_set",
    "CausalEffect",
    "NoFullSupportError",
    "NotIdentifiableError",
    "effect_from_joint",
    "joint_from_samples",
    "ADMG",
    "id_expression",
    "EffectPosterior",
    "effect_posterior",
    "credible_interval",
    "counterfactual",
    "counterfactual_from_model",
    "twin_network",
    "response_function_scm",
    "pns_bounds",
    "DoMessenger",
    "do",
    "DiscreteCausalModel",
    "model_to_cpts",
    "cpts_to_model",
    "exact_interventional",
    "sample_interventional",
    "monte_carlo_mean",
    "from_pgmpy",
    "to_pgmpy",
    "random_causal_model",
    "smoking_graph",
    "smoking_joint",
    "smoking_latent_model",
]
