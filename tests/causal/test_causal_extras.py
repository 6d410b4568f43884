"""Batched interventions, multi-variable treatments, nested ``do``, demo and doctests."""

import doctest

import pyro
import pyro.distributions as dist
import pytest
import torch
from _causal_helpers import brute as _brute

import ppltk.causal.surgery
from ppltk.causal import (
    CausalModel,
    do,
    effect_from_joint,
    exact_interventional,
    identify,
)
from ppltk.causal.examples import smoking_graph, smoking_joint
from ppltk.causal.random_models import random_causal_model
from ppltk.demo.causal import run_demo
from ppltk.errors import NotIdentifiableError


def test_causal_batched_do_values_match_single_queries():
    graph, cpts, _ = random_causal_model(5, 0.6, 3, seed=4)
    cm = CausalModel(graph, cpts)
    k = cpts["X1"][1].shape[-1]
    batched = cm.interventional(("X4",), {"X1": torch.arange(k)})
    assert batched.shape == (k, cpts["X4"][1].shape[-1])
    for i in range(k):
        assert torch.allclose(batched[i], _brute(graph, cpts, ("X4",), {"X1": i}), atol=1e-12)


def test_causal_two_treatments_from_joint_match_truth_when_identified():
    identified = 0
    for seed in range(30):
        graph, cpts, latent = random_causal_model(6, 0.5, 2, n_latent=seed % 2, seed=200 + seed)
        observed = sorted(set(graph.nodes) - latent)
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(observed), generator=gen).tolist()
        x1, x2, y = (observed[i] for i in perm[:3])
        joint = _brute(graph, cpts, tuple(observed), {})
        try:
            got = effect_from_joint(graph, latent, joint, observed, (y,), {x1: 1, x2: 0})
        except NotIdentifiableError:
            continue
        identified += 1
        truth = _brute(graph, cpts, (y,), {x1: 1, x2: 0})
        assert torch.allclose(got, truth, atol=1e-10), (seed, graph.edges, latent, x1, x2, y)
    assert identified >= 10


def test_causal_batched_joint():
    g, joint = smoking_graph(), smoking_joint()
    other = torch.rand(2, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    both = torch.stack([joint, other / other.sum()])
    got = effect_from_joint(g, {"H"}, both, ("S", "T", "C"), ("C",), {"S": 1})
    for b in range(2):
        single = effect_from_joint(g, {"H"}, both[b], ("S", "T", "C"), ("C",), {"S": 1})
        assert torch.allclose(got[b], single)


def test_causal_identify_multi_variable_treatment_backdoor():
    import networkx as nx

    g = nx.DiGraph([("Z", "A"), ("Z", "B"), ("Z", "Y"), ("A", "Y"), ("B", "Y"), ("U", "Z")])
    ident = identify(g, {"Z", "A", "B", "Y"}, ["A", "B"], ["Y"])
    assert ident.method == "back-door" and ident.adjustment_set == ("Z",)


def test_causal_nested_do_outermost_wins():
    def model():
        x = pyro.sample("x", dist.Bernoulli(0.5))
        return pyro.sample("y", dist.Bernoulli(torch.tensor([0.1, 0.9])[x.long()]))

    nested = do(do(model, {"x": 0.0}), {"x": 1.0})
    assert torch.allclose(exact_interventional(nested, ("y",)), torch.tensor([0.1, 0.9]))


def test_causal_demo_rows(tmp_path):
    rows = run_demo(True, tmp_path)
    assert len(rows) == 3
    for r in rows:
        assert set(r) == {"capability", "check", "value", "reference", "figure"}
    assert abs(rows[0]["value"] - rows[0]["reference"]) < 1e-12
    assert rows[0]["figure"] and (tmp_path / "causal_surgery.png").exists()
    assert abs(rows[1]["value"] - rows[1]["reference"]) > 0.05


def test_causal_doctests():
    res = doctest.testmod(ppltk.causal.surgery, verbose=False)
    assert res.attempted >= 1 and res.failed == 0


def test_causal_soft_evidence_is_a_likelihood():
    graph, cpts, _ = random_causal_model(4, 0.7, 2, seed=9)
    cm = CausalModel(graph, cpts)
    lam = torch.tensor([0.2, 0.6], dtype=torch.float64)  # need not sum to one
    got = cm.interventional(("X3",), {"X0": 1}, {"X2": lam})
    joint = torch.stack([_brute(graph, cpts, ("X3", "X2"), {"X0": 1})[:, j] for j in range(2)], -1)
    want = (joint * lam).sum(-1)
    assert torch.allclose(got, want / want.sum(), atol=1e-12)


def test_causal_converted_model_diagram():
    from ppltk.causal import cpts_to_model, model_to_cpts

    graph, cpts, _ = random_causal_model(4, 0.7, 2, seed=2)
    dm = model_to_cpts(cpts_to_model(cpts))
    assert set(dm.diagram.to_graph().edges) == set(graph.edges)


@pytest.mark.cuda
def test_causal_cuda_matches_cpu():
    graph, cpts, _ = random_causal_model(6, 0.5, 3, seed=1)
    gpu = {v: (p, t.cuda()) for v, (p, t) in cpts.items()}
    a = CausalModel(graph, cpts).interventional(("X5",), {"X1": 1}, {"X0": 0})
    b = CausalModel(graph, gpu).interventional(("X5",), {"X1": 1}, {"X0": 0})
    assert b.device.type == "cuda" and torch.allclose(a, b.cpu())


def test_causal_cached_contraction_equals_torch_einsum():
    from ppltk.causal import Diagram, cut
    from ppltk.causal.semantics import as_state, contract, einsum_equation

    graph, cpts, _ = random_causal_model(8, 0.4, 3, seed=12)
    d = cut(Diagram.from_graph(graph), ["X2"])
    states = {"X2": as_state(1, cpts["X2"][1].shape[-1], cpts["X0"][1])}
    lam = {"X0": as_state(0, cpts["X0"][1].shape[-1], cpts["X0"][1])}
    eq, ops = einsum_equation(d, cpts, states, lam, ("X7", "X5"))
    assert torch.allclose(contract(eq, ops), torch.einsum(eq, *ops), atol=1e-14)


def test_causal_effect_from_sampled_counts_is_consistent():
    from ppltk.causal import (
        cpts_to_model,
        interventional,
        joint_from_samples,
        sample_interventional,
        smoking_graph,
    )

    graph = smoking_graph()
    gen = torch.Generator().manual_seed(5)
    cpts = {}
    for v, parents in (("H", ()), ("S", ("H",)), ("T", ("S",)), ("C", ("H", "T"))):
        t = torch.rand(*(2,) * len(parents), 2, generator=gen, dtype=torch.float64) + 0.2
        cpts[v] = (parents, t / t.sum(-1, keepdim=True))
    truth = float(interventional(graph, cpts, ("C",), {"S": 1})[1])
    model = cpts_to_model(cpts)
    reps, n = 20, 5000
    est = []
    for r in range(reps):
        d = sample_interventional(model, {}, n, seed=r)
        counts = joint_from_samples(torch.stack([d["S"], d["T"], d["C"]], -1), (2, 2, 2))
        est.append(
            float(effect_from_joint(graph, {"H"}, counts, ("S", "T", "C"), ("C",), {"S": 1})[1])
        )
    est = torch.tensor(est, dtype=torch.float64)
    # mean of `reps` i.i.d. plug-in estimates: SE = sd / sqrt(reps); the O(1/n) plug-in
    # bias (~1e-4) is far below the 4-SE band (~6e-3)
    se = est.std() / reps**0.5
    assert abs(float(est.mean()) - truth) < 4 * float(se)
