"""The smoking -> tar -> cancer example with a hidden confounder (JKZ 2019, Sect. 4).

The oracle is exact rational arithmetic (``fractions``) on the published joint: the
front-door / comb formula ``P(c | do(s)) = Σ_t ω(t|s) Σ_s' ω(s') ω(c|s',t)``.
"""

from fractions import Fraction
from itertools import product

import networkx as nx
import pytest
import torch

from ppltk.causal import (
    Diagram,
    cut,
    effect_from_joint,
    evaluate,
    identify,
    interventional,
    joint_from_samples,
)

# ω(S, T, C) of the paper's example; index 1 = "yes" (s, t, c), index 0 = "no" (s⊥, ...).
PAPER_JOINT = {
    (1, 1, 1): "0.5", (1, 1, 0): "0.1", (1, 0, 1): "0.01", (1, 0, 0): "0.02",
    (0, 1, 1): "0.1", (0, 1, 0): "0.05", (0, 0, 1): "0.02", (0, 0, 0): "0.2",
}  # fmt: skip
GRAPH = nx.DiGraph([("H", "S"), ("H", "C"), ("S", "T"), ("T", "C")])


def _fraction_joint():
    return {k: Fraction(v) for k, v in PAPER_JOINT.items()}


def _tensor_joint():
    t = torch.zeros(2, 2, 2, dtype=torch.float64)
    for k, v in PAPER_JOINT.items():
        t[k] = float(Fraction(v))
    return t


def _front_door_fraction(w, s, c):
    """P(C=c | do(S=s)) by the comb formula, in exact rationals."""

    def p(**fixed):
        return sum(v for k, v in w.items() if all(k["STC".index(n)] == x for n, x in fixed.items()))

    total = Fraction(0)
    for t in (0, 1):
        inner = sum(p(S=s2) * p(S=s2, T=t, C=c) / p(S=s2, T=t) for s2 in (0, 1))
        total += p(S=s, T=t) / p(S=s) * inner
    return total


def _naive_fraction(w, s, c):
    ps = sum(v for k, v in w.items() if k[0] == s)
    return sum(v for k, v in w.items() if k[0] == s and k[2] == c) / ps


def _latent_model_from_joint(joint):
    """A model with hidden H that reproduces ``joint``: H ~ ω(s), S = H, T ~ ω(t|s), C ~ ω(c|h,t)."""
    w_s = joint.sum((1, 2))
    w_t_s = joint.sum(2) / w_s[:, None]
    w_c_st = joint / joint.sum(2, keepdim=True)
    return {
        "H": ((), w_s),
        "S": (("H",), torch.eye(2, dtype=joint.dtype)),
        "T": (("S",), w_t_s),
        "C": (("H", "T"), w_c_st),
    }


@pytest.mark.parametrize("s", [0, 1])
def test_causal_comb_equals_exact_rationals_and_surgery(s):
    w, joint = _fraction_joint(), _tensor_joint()
    assert sum(w.values()) == 1
    exact = [_front_door_fraction(w, s, c) for c in (0, 1)]
    assert sum(exact) == 1
    comb = effect_from_joint(GRAPH, {"H"}, joint, ("S", "T", "C"), ("C",), {"S": s})
    assert torch.allclose(
        comb, torch.tensor([float(e) for e in exact], dtype=torch.float64), atol=1e-12, rtol=0
    )
    cpts = _latent_model_from_joint(joint)
    # the latent model reproduces the observational joint (so it is a valid "true model")
    assert torch.allclose(evaluate(Diagram.from_graph(GRAPH, {"H"}), cpts), joint, atol=1e-14)
    surgery = interventional(GRAPH, cpts, ("C",), {"S": s})
    assert torch.allclose(surgery, comb, atol=1e-12, rtol=0)


def test_causal_effect_differs_sharply_from_naive_conditional():
    w, joint = _fraction_joint(), _tensor_joint()
    naive = _naive_fraction(w, 1, 1)
    effect = _front_door_fraction(w, 1, 1)
    details = effect_from_joint(
        GRAPH, {"H"}, joint, ("S", "T", "C"), ("C",), {"S": 1}, return_details=True
    )
    assert details.method == "front-door" and details.mediators == ("T",)
    assert details.adjustment_set == ()
    assert abs(float(details.value[1]) - float(effect)) < 1e-12
    assert abs(naive - effect) > Fraction(1, 20)


def test_causal_smoking_counts_and_samples_give_the_same_answer():
    joint = _tensor_joint()
    counts = joint * 1000  # integer counts proportional to the joint
    a = effect_from_joint(GRAPH, {"H"}, counts, ("S", "T", "C"), ("C",), {"S": 1})
    b = effect_from_joint(GRAPH, {"H"}, joint, ("S", "T", "C"), ("C",), {"S": 1})
    assert torch.allclose(a, b, atol=1e-12)
    rows = [k for k, v in PAPER_JOINT.items() for _ in range(int(Fraction(v) * 100))]
    table = joint_from_samples(torch.tensor(rows), (2, 2, 2))
    assert torch.allclose(table / table.sum(), joint, atol=1e-12)


def test_causal_soft_intervention_is_the_mixture_of_hard_ones():
    joint = _tensor_joint()
    sigma = torch.tensor([0.25, 0.75], dtype=torch.float64)
    soft = effect_from_joint(GRAPH, {"H"}, joint, ("S", "T", "C"), ("C",), {"S": sigma})
    hard = [
        effect_from_joint(GRAPH, {"H"}, joint, ("S", "T", "C"), ("C",), {"S": s}) for s in (0, 1)
    ]
    assert torch.allclose(soft, 0.25 * hard[0] + 0.75 * hard[1], atol=1e-12)


def test_causal_point_and_uniform_condition_routes_agree_on_latent_model():
    cpts = _latent_model_from_joint(_tensor_joint())
    for s, ev in product((0, 1), (None, {"T": 1})):
        a = interventional(GRAPH, cpts, ("C", "T"), {"S": s}, ev, route="point")
        b = interventional(GRAPH, cpts, ("C", "T"), {"S": s}, ev, route="condition")
        assert torch.allclose(a, b, atol=1e-13)


def test_causal_identification_of_the_smoking_graph_and_cut_diagram():
    ident = identify(GRAPH, {"S", "T", "C"}, ["S"], ["C"])
    assert ident.method == "front-door"
    d = cut(Diagram.from_graph(GRAPH, {"H"}), ["S"])
    assert d.get("S").inputs == () and d.get("S").kind == "state"
    assert d.get("C").inputs == ("H", "T")
