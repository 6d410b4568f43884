"""Agreement with pgmpy's ``CausalInference.query`` where its back-door adjustment is valid,
and a documented case where pgmpy is wrong (evidence outside the adjustment set).

pgmpy computes ``Σ_z P(y | do-vars as evidence, z) P(z | evidence)`` and drops the evidence
from the inner query, so ``P(Y | do(X), W)`` with ``W`` a descendant of ``Y`` is not the
interventional conditional ``P(y, w | do x) / P(w | do x)``.  The oracle is brute force.
"""

import warnings

import networkx as nx
import pytest
import torch
from _causal_helpers import brute as _brute

from ppltk.causal import interventional
from ppltk.causal.pgmpy_interop import from_pgmpy, to_pgmpy
from ppltk.causal.random_models import random_causal_model

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    CausalInference = pytest.importorskip("pgmpy.inference").CausalInference


@pytest.mark.parametrize("seed", range(5))
def test_causal_agrees_with_pgmpy_do_queries(seed):
    graph, cpts, _ = random_causal_model(6, 0.5, 3, seed=seed)
    ci = CausalInference(to_pgmpy(graph, cpts))
    order = list(nx.topological_sort(graph))
    x, y = order[1], order[-1]
    ours = interventional(graph, cpts, (y,), {x: 1})
    theirs = ci.query([y], do={x: 1}, show_progress=False)
    assert torch.allclose(ours, torch.as_tensor(theirs.values), atol=1e-10)
    assert torch.allclose(ours, _brute(graph, cpts, (y,), {x: 1}), atol=1e-12)


def test_causal_pgmpy_differs_with_evidence_outside_adjustment_set():
    graph = nx.DiGraph([("Z", "X"), ("Z", "Y"), ("X", "Y"), ("Y", "W")])
    gen = torch.Generator().manual_seed(0)
    cpts = {}
    for v in ("Z", "X", "Y", "W"):
        parents = tuple(sorted(graph.predecessors(v)))
        t = torch.rand(*(2,) * len(parents), 2, generator=gen, dtype=torch.float64) + 0.05
        cpts[v] = (parents, t / t.sum(-1, keepdim=True))
    truth = _brute(graph, cpts, ("Y",), {"X": 1}, {"W": 0})
    ours = interventional(graph, cpts, ("Y",), {"X": 1}, {"W": 0})
    theirs = torch.as_tensor(
        CausalInference(to_pgmpy(graph, cpts))
        .query(["Y"], do={"X": 1}, evidence={"W": 0}, show_progress=False)
        .values
    )
    assert torch.allclose(ours, truth, atol=1e-12)
    assert (theirs - truth).abs().max() > 0.05  # pgmpy's answer is wrong here


def test_causal_pgmpy_round_trip():
    graph, cpts, _ = random_causal_model(5, 0.6, 3, seed=7)
    g2, c2, states = from_pgmpy(to_pgmpy(graph, cpts))
    assert set(g2.edges) == set(graph.edges)
    for v in cpts:
        assert c2[v][0] == cpts[v][0] and torch.allclose(c2[v][1], cpts[v][1])
        assert states[v] == list(range(cpts[v][1].shape[-1]))


def test_causal_pgmpy_cannot_do_front_door_numerically():
    """pgmpy finds the front-door set {T} but ``query`` refuses the latent parent and, given
    ``adjustment_set={"T"}``, applies the back-door formula Σ_t P(c | s, t) P(t) with it."""
    from ppltk.causal import effect_from_joint
    from ppltk.causal.examples import smoking_graph, smoking_joint, smoking_latent_model

    graph, joint = smoking_graph(), smoking_joint()
    ci = CausalInference(to_pgmpy(graph, smoking_latent_model(joint), latents={"H"}))
    with pytest.warns(FutureWarning):  # deprecated in pgmpy 1.1, still the documented API
        assert frozenset({"T"}) in ci.get_all_frontdoor_adjustment_sets("S", "C")
    with pytest.raises(ValueError, match="Not all parents"):
        ci.query(["C"], do={"S": 1}, show_progress=False)
    theirs = torch.as_tensor(
        ci.query(["C"], do={"S": 1}, adjustment_set={"T"}, show_progress=False).values
    )
    ours = effect_from_joint(graph, {"H"}, joint, ("S", "T", "C"), ("C",), {"S": 1})
    # oracle: the front-door formula written out on the joint
    w_s, w_st = joint.sum((1, 2)), joint.sum(2)
    truth = sum(
        w_st[1, t] / w_s[1] * sum(w_s[s] * joint[s, t] / w_st[s, t] for s in (0, 1)) for t in (0, 1)
    )
    backdoor_with_t = sum(joint[1, t] / w_st[1, t] * w_st[:, t].sum() for t in (0, 1))
    assert torch.allclose(ours, truth, atol=1e-12)
    assert torch.allclose(theirs, backdoor_with_t, atol=1e-9)
    assert (theirs - truth).abs().max() > 0.03


@pytest.mark.slow
def test_causal_agrees_with_pgmpy_on_alarm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.utils import get_example_model

        model = get_example_model("alarm")
    graph, cpts, states = from_pgmpy(model)
    ci = CausalInference(model)
    from ppltk.causal import CausalModel

    cm = CausalModel(graph, cpts)
    pairs = [
        (x, y)
        for x in sorted(graph)
        if graph.in_degree(x)
        for y in sorted(nx.descendants(graph, x))
    ]
    for x, y in pairs[::15]:
        theirs = ci.query([y], do={x: states[x][0]}, show_progress=False).values
        # pgmpy's tables are rounded (rows sum to 1 ± 1e-9); we renormalise them on import
        assert torch.allclose(cm.interventional((y,), {x: 0}), torch.as_tensor(theirs), atol=1e-8)
