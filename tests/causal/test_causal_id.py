"""Complete identification (ID / IDC) against independent oracles.

* Values: brute-force truncated factorisation on the full model with its hidden nodes, by
  broadcasting the tables to the full joint (no einsum, no code of ppltk.causal):
  ``P(q, e | do(x)) = Σ_{v ∖ (q, e)} Π_{V ∉ X} P(v | pa_V) |_{X = x}``, normalised over ``q``.
* Identifiability: Tian & Pearl's (2002) c-component criterion, written here independently:
  ``P(y | do x)`` is identifiable iff for every district ``D_i`` of ``G[An(Y)_{G[V∖X]}]`` the
  recursion ``Identify(D_i, S)`` (``A = An(C)_{G[T]}``: ``A = C`` succeeds, ``A = T`` fails,
  else recurse on the district of ``G[A]`` containing ``C``) succeeds; complete by Huang &
  Valtorta (2006) and Shpitser & Pearl (2006).
* Refusals: the hedge named in the message is checked against the definition (two c-forests
  ``F' ⊂ F`` with the same roots, ``F`` meets the treatments, ``F'`` does not).
"""

import itertools
import re

import networkx as nx
import pytest
import torch

from ppltk.causal import NoFullSupportError, NotIdentifiableError, effect_from_joint, identify
from ppltk.causal.id_algorithm import ADMG, effect_value, id_expression
from ppltk.errors import ArgumentError

# --------------------------------------------------------------------------- oracles


def _full_joint_factors(graph, cpts, nodes):
    """Each table broadcast to the full joint's shape (axes in ``nodes`` order)."""
    card = {v: cpts[v][1].shape[-1] for v in nodes}
    out = {}
    for v in nodes:
        parents, table = cpts[v]
        axes = list(parents) + [v]
        perm = sorted(range(len(axes)), key=lambda i: nodes.index(axes[i]))
        t = table.permute(*perm)
        out[v] = t.reshape([card[u] if u in axes else 1 for u in nodes])
    return out, card


def truth(graph, cpts, query, do, evidence=None):
    """``P(query | do, evidence)`` by truncated factorisation over all nodes, hidden included."""
    evidence = evidence or {}
    nodes = list(nx.topological_sort(graph))
    factors, card = _full_joint_factors(graph, cpts, nodes)
    full = torch.ones([card[v] for v in nodes], dtype=torch.float64)
    for v in nodes:
        if v not in do:
            full = full * factors[v]
    index = []
    for v in nodes:
        if v in do:
            index.append(do[v])
        elif v in evidence:
            index.append(evidence[v])
        else:
            index.append(slice(None))
    sub = full[tuple(index)]
    rest = [v for v in nodes if v not in do and v not in evidence]
    drop = tuple(i for i, v in enumerate(rest) if v not in query)
    marg = sub.sum(drop) if drop else sub
    kept = [v for v in rest if v in query]
    marg = marg.permute(*[kept.index(q) for q in query])
    return marg / marg.sum()


def observational(graph, cpts, observed):
    return truth(graph, cpts, tuple(observed), {})


def random_semi_markovian(gen, n_obs, p_edge=0.45, max_conf=3, max_card=2):
    """Observed ``V0..V{n-1}`` (DAG) plus hidden roots ``U*`` with two observed children each."""
    names = [f"V{i}" for i in range(n_obs)]
    g = nx.DiGraph()
    g.add_nodes_from(names)
    for j in range(n_obs):
        for i in range(j):
            if torch.rand((), generator=gen).item() < p_edge:
                g.add_edge(names[i], names[j])
    n_conf = int(torch.randint(0, max_conf + 1, (), generator=gen))
    latent = set()
    for k in range(n_conf):
        a, b = torch.randperm(n_obs, generator=gen)[:2].tolist()
        u = f"U{k}"
        g.add_edges_from([(u, names[a]), (u, names[b])])
        latent.add(u)
    cpts = {}
    for v in nx.topological_sort(g):
        parents = tuple(sorted(g.predecessors(v)))
        k = int(torch.randint(2, max_card + 1, (), generator=gen))
        shape = [cpts[p][1].shape[-1] for p in parents] + [k]
        t = torch.rand(*shape, generator=gen, dtype=torch.float64) + 0.05
        cpts[v] = (parents, t / t.sum(-1, keepdim=True))
    return g, cpts, latent, names


class Projection:
    """Semi-Markovian projection: observed DAG edges plus ``a ↔ b`` for shared hidden roots."""

    def __init__(self, graph, latent):
        self.obs = [v for v in nx.topological_sort(graph) if v not in latent]
        self.dag = graph.subgraph(self.obs).copy()
        self.bi = set()
        for u in latent:
            ch = sorted(graph.successors(u))
            self.bi |= {frozenset(p) for p in itertools.combinations(ch, 2)}

    def ancestors(self, ys, within, cut_in=()):
        out, stack = set(), list(ys)
        while stack:
            v = stack.pop()
            if v in out:
                continue
            out.add(v)
            if v not in cut_in:
                stack.extend(p for p in self.dag.predecessors(v) if p in within)
        return out

    def districts(self, within):
        h = nx.Graph()
        h.add_nodes_from(within)
        h.add_edges_from(tuple(e) for e in self.bi if e <= set(within))
        return [set(c) for c in nx.connected_components(h)]

    def reaches(self, nodes, roots):
        """Every node of ``nodes`` has a directed path inside ``nodes`` to ``roots``."""
        return self.ancestors(roots, set(nodes)) >= set(nodes)


def tian_identifiable(proj, x, y):
    v = set(proj.obs)
    d = proj.ancestors(y, v - set(x))

    def ident(c, t):
        a = proj.ancestors(c, t)
        if a == c:
            return True
        if a == t:
            return False
        return ident(c, next(s for s in proj.districts(a) if c <= s))

    for di in proj.districts(d):
        s = next(s for s in proj.districts(v) if di <= s)
        if not ident(di, s):
            return False
    return True


def parse_hedge(message):
    m = re.search(r"F = \{([^}]*)\} ⊃ F' = \{([^}]*)\}.*root set R = \{([^}]*)\}", message)
    assert m, message
    return [set(s.split(", ")) if s else set() for s in m.groups()]


def check_hedge(proj, message, x, y):
    f, f2, roots = parse_hedge(message)
    assert f2 < f and roots <= f2
    assert f & set(x) and not f2 & set(x)
    assert len(proj.districts(f)) == 1 and len(proj.districts(f2)) == 1
    assert proj.reaches(f, roots) and proj.reaches(f2, roots)
    assert roots <= proj.ancestors(y, set(proj.obs), cut_in=set(x))


def _random_model_queries(seed, n_queries=3, evidence=False):
    gen = torch.Generator().manual_seed(seed)
    n_obs = 4 + seed % 4
    graph, cpts, latent, obs = random_semi_markovian(gen, n_obs)
    out = []
    for _ in range(n_queries):
        perm = torch.randperm(n_obs, generator=gen).tolist()
        nx_, ny = (
            1 + int(torch.rand((), generator=gen) < 0.4),
            1 + int(torch.rand((), generator=gen) < 0.3),
        )
        x, y = [obs[i] for i in perm[:nx_]], [obs[i] for i in perm[nx_ : nx_ + ny]]
        z = [obs[perm[nx_ + ny]]] if evidence and n_obs > nx_ + ny else []
        do = {v: int(torch.randint(cpts[v][1].shape[-1], (), generator=gen)) for v in x}
        ev = {v: int(torch.randint(cpts[v][1].shape[-1], (), generator=gen)) for v in z}
        out.append((do, y, ev))
    return graph, cpts, latent, obs, out


def _check_random_graphs(seeds):
    counts = {"identified": 0, "refused": 0, "via_id": 0}
    for seed in seeds:
        graph, cpts, latent, obs, queries = _random_model_queries(seed)
        proj = Projection(graph, latent)
        joint = observational(graph, cpts, obs)
        for do, y, _ in queries:
            expect = tian_identifiable(proj, list(do), y)
            try:
                res = effect_from_joint(
                    graph, latent, joint, obs, tuple(y), do, return_details=True
                )
            except NotIdentifiableError as err:
                assert not expect, (seed, graph.edges, latent, do, y, str(err))
                check_hedge(proj, str(err), list(do), y)
                counts["refused"] += 1
                continue
            assert expect, (seed, graph.edges, latent, do, y, res.formula)
            want = truth(graph, cpts, tuple(y), do)
            assert torch.allclose(res.value, want, atol=1e-9, rtol=0), (
                seed,
                graph.edges,
                latent,
                do,
                y,
                res.formula,
            )
            counts["identified"] += 1
            counts["via_id"] += res.method == "id"
    return counts


# --------------------------------------------------------------------------- random graphs


def test_causal_id_random_semi_markovian_graphs_match_truncated_factorisation():
    counts = _check_random_graphs(range(150))
    # both outcomes and the complete-algorithm route all occur, so no check is vacuous
    assert counts["identified"] >= 150 and counts["refused"] >= 25 and counts["via_id"] >= 20, (
        counts
    )


@pytest.mark.slow
def test_causal_id_random_semi_markovian_graphs_many():
    counts = _check_random_graphs(range(150, 1350))
    assert counts["identified"] >= 1000 and counts["refused"] >= 200, counts


def _check_conditional(seeds):
    counts = {"identified": 0, "refused": 0}
    for seed in seeds:
        graph, cpts, latent, obs, queries = _random_model_queries(10_000 + seed, evidence=True)
        proj = Projection(graph, latent)
        joint = observational(graph, cpts, obs)
        for do, y, ev in queries:
            if not ev:
                continue
            try:
                got = effect_from_joint(graph, latent, joint, obs, tuple(y), do, evidence=ev)
            except NotIdentifiableError:
                # IDC is complete: a refusal implies P(y, z | do x) is not identifiable either
                assert not tian_identifiable(proj, list(do), y + list(ev)), (seed, do, y, ev)
                counts["refused"] += 1
                continue
            want = truth(graph, cpts, tuple(y), do, ev)
            assert torch.allclose(got, want, atol=1e-9, rtol=0), (seed, graph.edges, do, y, ev)
            counts["identified"] += 1
    return counts


def test_causal_idc_random_conditional_queries_match_truncated_factorisation():
    counts = _check_conditional(range(80))
    assert counts["identified"] >= 80 and counts["refused"] >= 10, counts


@pytest.mark.slow
def test_causal_idc_random_conditional_queries_many():
    counts = _check_conditional(range(80, 600))
    assert counts["identified"] >= 500, counts


def test_causal_id_without_hidden_variables_identifies_every_query():
    gen = torch.Generator().manual_seed(7)
    for trial in range(12):
        graph, cpts, _, obs = random_semi_markovian(gen, 5, p_edge=0.6, max_conf=0)
        joint = observational(graph, cpts, obs)
        for x1, x2, y in itertools.permutations(obs, 3):
            if (trial + obs.index(x1)) % 3:
                continue  # a third of the ordered triples keeps this under a second
            do = {x1: 1, x2: 0}
            got = effect_from_joint(graph, (), joint, obs, (y,), do)
            assert torch.allclose(got, truth(graph, cpts, (y,), do), atol=1e-9, rtol=0)


def test_causal_fast_paths_agree_with_id():
    seen = set()
    for seed in range(120):
        graph, cpts, latent, obs, queries = _random_model_queries(5000 + seed)
        joint = observational(graph, cpts, obs)
        admg = ADMG.from_dag(graph, obs)
        for do, y, _ in queries:
            try:
                fast = effect_from_joint(
                    graph, latent, joint, obs, tuple(y), do, return_details=True
                )
            except NotIdentifiableError:
                continue
            if fast.method in ("id", "idc"):
                continue
            seen.add(fast.method)
            res = id_expression(admg, list(do), y)
            card = {v: joint.shape[i] for i, v in enumerate(obs)}
            sigma = {
                v: torch.nn.functional.one_hot(torch.tensor(k), card[v]).double()
                for v, k in do.items()
            }
            by_id = effect_value(res, joint, obs, sigma, {})
            assert torch.allclose(fast.value, by_id, atol=1e-10, rtol=0), (seed, fast.method)
    assert seen >= {"no-effect", "back-door"}, seen


# --------------------------------------------------------------------------- named cases


def _tables(graph, seed, card=None):
    gen = torch.Generator().manual_seed(seed)
    card = card or {}
    cpts = {}
    for v in nx.topological_sort(graph):
        parents = tuple(sorted(graph.predecessors(v)))
        shape = [cpts[p][1].shape[-1] for p in parents] + [card.get(v, 2)]
        t = torch.rand(*shape, generator=gen, dtype=torch.float64) + 0.1
        cpts[v] = (parents, t / t.sum(-1, keepdim=True))
    return cpts


NAPKIN = nx.DiGraph(
    [("W1", "W2"), ("W2", "X"), ("X", "Y"), ("U1", "W1"), ("U1", "X"), ("U2", "W1"), ("U2", "Y")]
)


def test_causal_napkin_is_identified():
    cpts = _tables(NAPKIN, 0, {"Y": 3, "W2": 3})
    obs = ["W1", "W2", "X", "Y"]
    joint = observational(NAPKIN, cpts, obs)
    for x in range(2):
        res = effect_from_joint(
            NAPKIN, {"U1", "U2"}, joint, obs, ("Y",), {"X": x}, return_details=True
        )
        assert res.method == "id" and "do(X)" in res.formula
        assert torch.allclose(res.value, truth(NAPKIN, cpts, ("Y",), {"X": x}), atol=1e-12)
    # the napkin with X <-> Y as well is refused, naming a hedge
    g = NAPKIN.copy()
    g.add_edges_from([("U3", "X"), ("U3", "Y")])
    with pytest.raises(NotIdentifiableError, match=r"hedge F = \{.*X.*\} ⊃ F' = \{"):
        effect_from_joint(g, {"U1", "U2", "U3"}, joint, obs, ("Y",), {"X": 0})


def test_causal_sequential_treatments_g_formula():
    # X1 -> Z -> X2 -> Y, X1 -> Y, Z -> Y, hidden U confounds Z and Y (X1, X2 unconfounded)
    g = nx.DiGraph(
        [("X1", "Z"), ("Z", "X2"), ("X2", "Y"), ("X1", "Y"), ("Z", "Y"), ("X1", "X2")]
        + [("U", "Z"), ("U", "Y")]
    )
    cpts = _tables(g, 1)
    obs = ["X1", "Z", "X2", "Y"]
    joint = observational(g, cpts, obs)
    for x1, x2 in itertools.product(range(2), repeat=2):
        do = {"X1": x1, "X2": x2}
        got = effect_from_joint(g, {"U"}, joint, obs, ("Y",), do)
        assert torch.allclose(got, truth(g, cpts, ("Y",), do), atol=1e-12)
    # with no hidden variable: the g-formula Σ_z P(z | x1) P(y | x1, z, x2), written out here
    h = g.copy()
    h.remove_node("U")
    cpts = _tables(h, 2)
    joint = observational(h, cpts, obs)
    res = effect_from_joint(h, (), joint, obs, ("Y",), {"X1": 1, "X2": 0}, return_details=True)
    p_z = joint.sum((2, 3))[1] / joint.sum((1, 2, 3))[1]
    p_y = joint[1, :, 0, :] / joint[1, :, 0, :].sum(-1, keepdim=True)
    assert torch.allclose(res.value, (p_z[:, None] * p_y).sum(0), atol=1e-12)


FRONT_DOOR = nx.DiGraph([("U", "X"), ("U", "Y"), ("X", "M"), ("M", "Y")])


def test_causal_joint_query_on_front_door_graph():
    cpts = _tables(FRONT_DOOR, 3, {"M": 3})
    obs = ["X", "M", "Y"]
    joint = observational(FRONT_DOOR, cpts, obs)
    for x in range(2):
        got = effect_from_joint(FRONT_DOOR, {"U"}, joint, obs, ("M", "Y"), {"X": x})
        assert torch.allclose(got, truth(FRONT_DOOR, cpts, ("M", "Y"), {"X": x}), atol=1e-12)
        got = effect_from_joint(FRONT_DOOR, {"U"}, joint, obs, ("Y", "M"), {"X": x})
        assert torch.allclose(got, truth(FRONT_DOOR, cpts, ("Y", "M"), {"X": x}), atol=1e-12)
    # conditional: P(y | do(x), m) and P(m | do(x), y)
    for m in range(3):
        got = effect_from_joint(FRONT_DOOR, {"U"}, joint, obs, ("Y",), {"X": 0}, evidence={"M": m})
        want = truth(FRONT_DOOR, cpts, ("Y",), {"X": 0}, {"M": m})
        assert torch.allclose(got, want, atol=1e-12)
    got = effect_from_joint(FRONT_DOOR, {"U"}, joint, obs, ("M",), {"X": 1}, evidence={"Y": 0})
    assert torch.allclose(got, truth(FRONT_DOOR, cpts, ("M",), {"X": 1}, {"Y": 0}), atol=1e-12)
    # P(y | do(m), x) is identified by IDC; P(x | do(m)) has no effect
    got = effect_from_joint(FRONT_DOOR, {"U"}, joint, obs, ("Y",), {"M": 2}, evidence={"X": 1})
    assert torch.allclose(got, truth(FRONT_DOOR, cpts, ("Y",), {"M": 2}, {"X": 1}), atol=1e-12)


def test_causal_id_refusals_name_the_hedge():
    bow = nx.DiGraph([("U", "X"), ("U", "Y"), ("X", "Y")])
    joint = torch.full((2, 2), 0.25, dtype=torch.float64)
    with pytest.raises(NotIdentifiableError) as info:
        effect_from_joint(bow, {"U"}, joint, ("X", "Y"), ("Y",), {"X": 1})
    f, f2, roots = parse_hedge(str(info.value))
    assert (f, f2, roots) == ({"X", "Y"}, {"Y"}, {"Y"})
    assert info.value.hedge == (frozenset({"X", "Y"}), frozenset({"Y"}), frozenset({"Y"}))
    assert "[]" not in str(info.value).split("Fast paths")[0]
    # the confounded mediator: hedge {X, M, Y} ⊃ {M, Y}
    g = nx.DiGraph([("U", "X"), ("U", "Y"), ("X", "M"), ("M", "Y"), ("V", "M"), ("V", "Y")])
    with pytest.raises(NotIdentifiableError) as info:
        identify(g, {"X", "M", "Y"}, ["X"], ["Y"])
    proj = Projection(g, {"U", "V"})
    check_hedge(proj, str(info.value), ["X"], ["Y"])


def test_causal_id_soft_interventions_batches_and_hard_evidence_only():
    cpts = _tables(NAPKIN, 4)
    obs = ["W1", "W2", "X", "Y"]
    joint = observational(NAPKIN, cpts, obs)
    sigma = torch.tensor([0.3, 0.7], dtype=torch.float64)
    got = effect_from_joint(NAPKIN, {"U1", "U2"}, joint, obs, ("Y",), {"X": sigma})
    want = sum(sigma[i] * truth(NAPKIN, cpts, ("Y",), {"X": i}) for i in range(2))
    assert torch.allclose(got, want, atol=1e-12)
    other = observational(NAPKIN, _tables(NAPKIN, 5), obs)
    both = torch.stack([joint, other])
    batched = effect_from_joint(NAPKIN, {"U1", "U2"}, both, obs, ("Y",), {"X": 1})
    for b, j in enumerate((joint, other)):
        single = effect_from_joint(NAPKIN, {"U1", "U2"}, j, obs, ("Y",), {"X": 1})
        assert torch.allclose(batched[b], single, atol=1e-14)
    with pytest.raises(ArgumentError, match="hard"):
        effect_from_joint(
            FRONT_DOOR,
            {"U"},
            observational(FRONT_DOOR, _tables(FRONT_DOOR, 0), ["X", "M", "Y"]),
            ["X", "M", "Y"],
            ("Y",),
            {"X": sigma},
            evidence={"M": 0},
        )
    with pytest.raises(ArgumentError, match="disjoint"):
        identify(FRONT_DOOR, {"X", "M", "Y"}, ["X"], ["Y"], evidence=["X"])
    with pytest.raises(ArgumentError, match="`evidence`"):
        effect_from_joint(NAPKIN, {"U1", "U2"}, joint, obs, ("Y",), {"X": 1}, evidence="W1")


def test_causal_id_formula_needs_support_where_it_divides():
    cpts = _tables(NAPKIN, 6)
    obs = ["W1", "W2", "X", "Y"]
    joint = observational(NAPKIN, cpts, obs).clone()
    joint[1, 0, :, :] = 0.0  # W1 = 1 never with W2 = 0: P(x | w1, w2) undefined there
    with pytest.raises(NoFullSupportError, match="full support"):
        effect_from_joint(NAPKIN, {"U1", "U2"}, joint, obs, ("Y",), {"X": 1})
