"""Counterfactuals by twin-network surgery against enumeration of the exogenous noise.

Oracle: for every assignment ``u`` of the exogenous nodes (probability ``Π P(u_i)``), each
world's endogenous values are computed by running the deterministic mechanisms in
topological order with that world's intervention; ``P(query | evidence)`` is the normalised
sum over ``u`` (plain Python, no einsum).  Textbook checks: Tian–Pearl bounds on PN and PNS,
and the effect of treatment on the treated on the front-door graph,
``P(Y_x = y | X = x') = Σ_m P(m | x) P(y | x', m)`` (Shpitser & Pearl 2009).
"""

import itertools

import networkx as nx
import pyro
import pyro.distributions as dist
import pytest
import torch
from _causal_helpers import brute

from ppltk.causal import interventional
from ppltk.causal.counterfactual import (
    counterfactual,
    counterfactual_from_model,
    pns_bounds,
    response_function_scm,
    twin_network,
)
from ppltk.errors import ArgumentError, ModelStructureError


def enumerate_cf(graph, cpts, exogenous, worlds, query, evidence):
    card = {v: cpts[v][1].shape[-1] for v in graph.nodes}
    exo = sorted(exogenous)
    order = [v for v in nx.topological_sort(graph) if v not in exogenous]
    out = torch.zeros(*(card[v] for v, _ in query), dtype=torch.float64)
    for us in itertools.product(*(range(card[u]) for u in exo)):
        p = 1.0
        for u, val in zip(exo, us):
            p *= float(cpts[u][1][val])
        vals = []
        for w in worlds:
            a = dict(zip(exo, us))
            for v in order:
                if v in w:
                    a[v] = w[v]
                else:
                    parents, table = cpts[v]
                    a[v] = int(table[tuple(a[q] for q in parents)].argmax())
            vals.append(a)
        if all(vals[k][v] == e for (v, k), e in evidence.items()):
            out[tuple(vals[k][v] for v, k in query)] += p
    return out / out.sum()


def random_scm(gen, n_endo=4, p_edge=0.5, card=2):
    """Endogenous V0..: each with its own noise E_i, plus a shared confounder C of two nodes."""
    names = [f"V{i}" for i in range(n_endo)]
    g = nx.DiGraph()
    for j, v in enumerate(names):
        g.add_edge(f"E{j}", v)
        for i in range(j):
            if torch.rand((), generator=gen).item() < p_edge:
                g.add_edge(names[i], v)
    a, b = torch.randperm(n_endo, generator=gen)[:2].tolist()
    g.add_edges_from([("C", names[a]), ("C", names[b])])
    exo = {"C"} | {f"E{j}" for j in range(n_endo)}
    cpts = {}
    for v in nx.topological_sort(g):
        parents = tuple(sorted(g.predecessors(v)))
        if v in exo:
            k = int(torch.randint(2, 4, (), generator=gen))
            t = torch.rand(k, generator=gen, dtype=torch.float64) + 0.1
            cpts[v] = ((), t / t.sum())
            continue
        shape = [cpts[p][1].shape[-1] for p in parents]
        f = torch.randint(0, card, shape, generator=gen)
        cpts[v] = (parents, torch.nn.functional.one_hot(f, card).to(torch.float64))
    return g, cpts, exo, names


def test_causal_counterfactual_random_scms_match_enumeration():
    checked = 0
    for seed in range(40):
        gen = torch.Generator().manual_seed(seed)
        g, cpts, exo, names = random_scm(gen)
        perm = torch.randperm(len(names), generator=gen).tolist()
        x, y, e = names[perm[0]], names[perm[1]], names[perm[2]]
        worlds = [{}, {x: int(torch.randint(2, (), generator=gen))}]
        if seed % 3 == 0:
            worlds.append({x: 1 - worlds[1][x], e: 0})  # three worlds
        evidence = {(x, 0): int(torch.randint(2, (), generator=gen)), (e, 0): 1}
        query = [(y, len(worlds) - 1), (y, 0)]
        want = enumerate_cf(g, cpts, exo, worlds, query, evidence)
        if not torch.isfinite(want).all():
            continue  # evidence of probability zero
        got = counterfactual(g, cpts, exo, worlds, query, evidence)
        assert torch.allclose(got, want, atol=1e-12), (seed, worlds, query, evidence)
        checked += 1
    assert checked >= 25


def _confounded_xy(seed):
    gen = torch.Generator().manual_seed(seed)
    g = nx.DiGraph([("C", "X"), ("C", "Y"), ("EX", "X"), ("EY", "Y"), ("X", "Y")])
    cpts = {}
    for u, k in (("C", 3), ("EX", 2), ("EY", 4)):
        t = torch.rand(k, generator=gen, dtype=torch.float64) + 0.05
        cpts[u] = ((), t / t.sum())
    fx = torch.randint(0, 2, (3, 2), generator=gen)
    fy = torch.randint(0, 2, (3, 4, 2), generator=gen)  # (C, EY, X)
    cpts["X"] = (("C", "EX"), torch.nn.functional.one_hot(fx, 2).double())
    cpts["Y"] = (("C", "EY", "X"), torch.nn.functional.one_hot(fy, 2).double())
    return g, cpts, {"C", "EX", "EY"}


def test_causal_probabilities_of_causation_within_tian_pearl_bounds():
    inside = 0
    for seed in range(30):
        g, cpts, exo = _confounded_xy(seed)
        p_obs = brute(g, cpts, ("X", "Y"), {})
        p_y_x1 = float(brute(g, cpts, ("Y",), {"X": 1})[1])
        p_y_x0 = float(brute(g, cpts, ("Y",), {"X": 0})[1])
        if not 0 < float(p_obs[1, 1]) < 1:
            continue
        pns = counterfactual(g, cpts, exo, [{"X": 1}, {"X": 0}], [("Y", 0), ("Y", 1)])[1, 0]
        assert torch.allclose(
            pns,
            enumerate_cf(g, cpts, exo, [{"X": 1}, {"X": 0}], [("Y", 0), ("Y", 1)], {})[1, 0],
            atol=1e-12,
        )
        pn = counterfactual(g, cpts, exo, [{}, {"X": 0}], [("Y", 1)], {("X", 0): 1, ("Y", 0): 1})
        b = pns_bounds(
            p_y_x1, p_y_x0, float(p_obs[1, 1]), float(p_obs[0, 0]), float(p_obs[:, 1].sum())
        )
        lo, hi = b["PNS"]
        assert lo - 1e-12 <= float(pns) <= hi + 1e-12, (seed, b, float(pns))
        lo, hi = b["PN"]
        assert lo - 1e-12 <= float(pn[0]) <= hi + 1e-12, (seed, b, float(pn[0]))
        inside += 1
    assert inside >= 15


def test_causal_effect_of_treatment_on_the_treated_front_door():
    gen = torch.Generator().manual_seed(11)
    g = nx.DiGraph(
        [("U", "X"), ("U", "Y"), ("EX", "X"), ("X", "M"), ("EM", "M"), ("M", "Y"), ("EY", "Y")]
    )
    cpts = {}
    for u, k in (("U", 3), ("EX", 3), ("EM", 3), ("EY", 3)):
        t = torch.rand(k, generator=gen, dtype=torch.float64) + 0.05
        cpts[u] = ((), t / t.sum())
    cpts["X"] = (
        ("EX", "U"),
        torch.nn.functional.one_hot(torch.randint(0, 2, (3, 3), generator=gen), 2).double(),
    )
    cpts["M"] = (
        ("EM", "X"),
        torch.nn.functional.one_hot(torch.tensor([[0, 1], [1, 0], [1, 1]]), 2).double(),
    )
    cpts["Y"] = (
        ("EY", "M", "U"),
        torch.nn.functional.one_hot(torch.randint(0, 2, (3, 2, 3), generator=gen), 2).double(),
    )
    exo = {"U", "EX", "EM", "EY"}
    p = brute(g, cpts, ("X", "M", "Y"), {})
    p_m_x = p.sum(2) / p.sum((1, 2))[:, None]
    p_y_xm = p / p.sum(2, keepdim=True)
    for x, xp in itertools.product(range(2), repeat=2):
        ett = counterfactual(g, cpts, exo, [{}, {"X": x}], [("Y", 1)], {("X", 0): xp})
        formula = (p_m_x[x][:, None] * p_y_xm[xp]).sum(0)
        assert torch.allclose(ett, formula, atol=1e-12), (x, xp)
        # ETT with x = x' is the observational conditional (consistency)
        if x == xp:
            assert torch.allclose(ett, p[x].sum(0) / p[x].sum(), atol=1e-12)


def test_causal_response_function_scm_reproduces_the_network():
    g = nx.DiGraph([("Z", "X"), ("X", "Y"), ("Z", "Y")])
    gen = torch.Generator().manual_seed(0)
    cpts = {}
    for v in nx.topological_sort(g):
        parents = tuple(sorted(g.predecessors(v)))
        t = torch.rand(*(2,) * len(parents), 2, generator=gen, dtype=torch.float64) + 0.1
        cpts[v] = (parents, t / t.sum(-1, keepdim=True))
    g2, cpts2, exo = response_function_scm(g, cpts)
    assert exo == {"U_X", "U_Y", "U_Z"}
    for do in ({}, {"X": 1}, {"X": 0}):
        want = brute(g, cpts, ("Z", "X", "Y"), do)
        got = interventional(g2, cpts2, ("Z", "X", "Y"), do)
        assert torch.allclose(got, want, atol=1e-12)
    # independent coupling: P(Y_{x=1} = 1, Y_{x=0} = 0 | z) = P(y | 1, z) P(y' | 0, z)
    joint = counterfactual(
        g2, cpts2, exo, [{"X": 1}, {"X": 0}], [("Y", 0), ("Y", 1)], {("Z", 0): 1}
    )
    ty = cpts["Y"][1]  # axes (X, Z, Y)
    assert torch.allclose(joint[1, 0], ty[1, 1, 1] * ty[0, 1, 0], atol=1e-12)
    # one world, no evidence: plain surgery
    one = counterfactual(g2, cpts2, exo, [{"X": 1}], [("Y", 0)])
    assert torch.allclose(one, brute(g, cpts, ("Y",), {"X": 1}), atol=1e-12)
    net, tables = twin_network(g2, cpts2, exo, 3)
    assert {"X@0", "X@2", "U_X"} <= set(net.nodes) and "X" not in net


def test_causal_counterfactual_errors():
    g = nx.DiGraph([("X", "Y")])
    cpts = {
        "X": ((), torch.tensor([0.5, 0.5], dtype=torch.float64)),
        "Y": (("X",), torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)),
    }
    with pytest.raises(ModelStructureError, match="deterministic"):
        counterfactual(g, cpts, {"X"}, [{}, {"X": 1}], [("Y", 1)])
    g2, cpts2, exo = response_function_scm(g, cpts)
    with pytest.raises(ArgumentError, match=r"\(variable, world\)"):
        counterfactual(g2, cpts2, exo, [{}, {"X": 1}], ["Y"])
    with pytest.raises(ArgumentError, match="worlds in"):
        counterfactual(g2, cpts2, exo, [{}, {"X": 1}], [("Y", 2)])
    with pytest.raises(ArgumentError, match="list of intervention"):
        counterfactual(g2, cpts2, exo, {"X": 1}, [("Y", 1)])
    with pytest.raises(ArgumentError, match="endogenous"):
        counterfactual(g2, cpts2, exo, [{"U_X": 0}], [("Y", 0)])
    with pytest.raises(ModelStructureError, match="roots"):
        counterfactual(g2, cpts2, {"X"}, [{}], [("Y", 0)])


def test_causal_counterfactual_of_a_pyro_scm_matches_enumeration():
    g, cpts, exo = _confounded_xy(3)
    ex_p = float(cpts["EX"][1][1])

    def scm():
        c = pyro.sample("C", dist.Categorical(probs=cpts["C"][1]))
        ex = pyro.sample("EX", dist.Bernoulli(torch.tensor(ex_p, dtype=torch.float64)))
        ey = pyro.sample("EY", dist.Categorical(probs=cpts["EY"][1]))
        x = pyro.sample("X", dist.Categorical(probs=cpts["X"][1][c, ex.long()]))
        return pyro.sample("Y", dist.Categorical(probs=cpts["Y"][1][c, ey, x]))

    worlds, query = [{}, {"X": 0}], [("Y", 1), ("X", 1)]
    for ev in ({("X", 0): 1, ("Y", 0): 1}, {("Y", 0): 0}, {("EX", 0): 1.0}):
        want = enumerate_cf(g, cpts, exo, worlds, query, {k: int(v) for k, v in ev.items()})
        got = counterfactual_from_model(scm, exo, worlds, query, ev)
        assert torch.allclose(got, want, atol=1e-12), ev
    with pytest.raises(ArgumentError, match="support"):
        counterfactual_from_model(scm, exo, [{}, {"X": 5}], query)
    with pytest.raises(ArgumentError, match="sites of the model"):
        counterfactual_from_model(scm, exo, [{}, {"Q": 0}], query)
