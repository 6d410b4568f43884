"""Bad tables, bad queries and non-identifiable effects raise clear errors."""

import networkx as nx
import pytest
import torch

from ppltk.causal import (
    NoFullSupportError,
    effect_from_joint,
    interventional,
    validate_cpts,
)
from ppltk.errors import ArgumentError, NotIdentifiableError, ShapeError

G = nx.DiGraph([("A", "B")])


def _good():
    return {
        "A": ((), torch.tensor([0.4, 0.6], dtype=torch.float64)),
        "B": (("A",), torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], dtype=torch.float64)),
    }


def test_causal_valid_tables_pass():
    assert validate_cpts(_good(), G) == {"A": 2, "B": 3}


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda c: c.update(A=((), torch.tensor([-0.1, 1.1]))), ArgumentError, "non-negative"),
        (lambda c: c.update(A=((), torch.tensor([0.3, 0.6]))), ArgumentError, "sum to one"),
        (lambda c: c.update(A=((), torch.tensor([1, 0]))), ArgumentError, "float tensor"),
        (lambda c: c.update(B=(("A",), torch.ones(3, 3) / 3)), ShapeError, "parent 'A'"),
        (lambda c: c.update(B=(("A",), torch.ones(3) / 3)), ShapeError, "ndim >= 2"),
        (lambda c: c.update(B=((), torch.ones(3) / 3)), ArgumentError, "parents of 'B'"),
        (lambda c: c.pop("A"), ArgumentError, "parent 'A'"),
        (lambda c: c.update(B=("A", torch.ones(2, 3) / 3)), ArgumentError, "tuple of names"),
        (lambda c: c.update(B=[("A",)]), ArgumentError, r"tuple \(parents, tensor\)"),
        (lambda c: c.update(A=((), torch.tensor([float("nan"), 1.0]))), ArgumentError, "finite"),
    ],
)
def test_causal_bad_tables_raise(mutate, error, match):
    cpts = _good()
    mutate(cpts)
    with pytest.raises(error, match=match):
        validate_cpts(cpts, G)


def test_causal_missing_table_for_graph_node():
    cpts = _good()
    with pytest.raises(ArgumentError, match="every graph node"):
        validate_cpts(cpts, nx.DiGraph([("A", "B"), ("B", "Z")]))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"query": ("Q",), "do": {"A": 0}}, ArgumentError, "`query`"),
        ({"query": ("B",), "do": {"A": 2}}, ArgumentError, r"do\['A'\] in \[0, 2\)"),
        ({"query": ("B",), "do": {"A": torch.ones(3) / 3}}, ShapeError, "size 2"),
        ({"query": ("B",), "do": {"A": torch.tensor([0.2, 0.2])}}, ArgumentError, "probability"),
        ({"query": ("B",), "do": {"A": 0}, "route": "x"}, ArgumentError, "route"),
        ({"query": ("A",), "do": {"A": 0}, "evidence": {"A": 1}}, ArgumentError, "probability 0"),
    ],
)
def test_causal_bad_queries_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        interventional(G, _good(), **kwargs)


def test_causal_bow_graph_is_not_identifiable_with_explanation():
    graph = nx.DiGraph([("U", "X"), ("U", "Y"), ("X", "Y")])
    joint = torch.full((2, 2), 0.25, dtype=torch.float64)
    with pytest.raises(NotIdentifiableError, match=r"direct edges \[\('X', 'Y'\)\]"):
        effect_from_joint(graph, {"U"}, joint, ("X", "Y"), ("Y",), {"X": 1})


def test_causal_front_door_broken_by_confounded_mediator():
    graph = nx.DiGraph([("U", "X"), ("U", "Y"), ("X", "M"), ("M", "Y"), ("U", "M")])
    joint = torch.full((2, 2, 2), 0.125, dtype=torch.float64)
    with pytest.raises(NotIdentifiableError, match="comb conditions"):
        effect_from_joint(graph, {"U"}, joint, ("X", "M", "Y"), ("Y",), {"X": 1})


def test_causal_joint_without_full_support():
    graph = nx.DiGraph([("H", "S"), ("H", "C"), ("S", "T"), ("T", "C")])
    joint = torch.full((2, 2, 2), 1 / 8, dtype=torch.float64)
    joint[1, 0, :] = 0.0  # smokers always have tar: ω(s, t⊥) = 0
    with pytest.raises(NoFullSupportError, match="full support"):
        effect_from_joint(graph, {"H"}, joint, ("S", "T", "C"), ("C",), {"S": 1})


@pytest.mark.parametrize(
    "args, error, match",
    [
        (dict(joint=torch.ones(2, 2) / 4), ShapeError, "trailing axes"),
        (dict(joint=-torch.ones(2, 2, 2)), ArgumentError, "non-negative"),
        (dict(variables=("S", "T", "Q")), ArgumentError, "distinct observed"),
        (dict(latent={"Q"}), ArgumentError, "`latent`"),
        (dict(query=("S",), do={"S": 1}), ArgumentError, "disjoint"),
        (dict(do={"H": 1}), ArgumentError, "observed"),
    ],
)
def test_causal_effect_from_joint_argument_errors(args, error, match):
    graph = nx.DiGraph([("H", "S"), ("H", "C"), ("S", "T"), ("T", "C")])
    kw = dict(
        latent={"H"},
        joint=torch.ones(2, 2, 2) / 8,
        variables=("S", "T", "C"),
        query=("C",),
        do={"S": 1},
    )
    kw.update(args)
    with pytest.raises(error, match=match):
        effect_from_joint(graph, **kw)


CYCLIC = nx.DiGraph([("X", "M"), ("M", "Y"), ("Y", "M")])


def test_cyclic_graph_is_named_cyclic_everywhere():
    from ppltk.causal import identify

    with pytest.raises(ArgumentError, match="is cyclic: .*M"):
        identify(CYCLIC, {"X", "M", "Y"}, ["X"], ["Y"])
    with pytest.raises(ArgumentError, match="is cyclic"):
        # a two-node cycle used to be reported as "not identifiable"
        identify(nx.DiGraph([("X", "Y"), ("Y", "X")]), {"X", "Y"}, ["X"], ["Y"])
    with pytest.raises(ArgumentError, match="is cyclic"):
        joint = torch.full((2, 2, 2), 1 / 8, dtype=torch.float64)
        effect_from_joint(CYCLIC, (), joint, ("X", "M", "Y"), ("Y",), {"X": 1})
    with pytest.raises(ArgumentError, match="is cyclic"):
        cpts = {v: (tuple(CYCLIC.predecessors(v)), None) for v in CYCLIC}
        interventional(CYCLIC, cpts, ("Y",), {"X": 1})


def test_a_string_where_a_mapping_or_names_belong_is_named():
    from ppltk.causal import identify, smoking_graph, smoking_joint

    graph, joint = smoking_graph(), smoking_joint()
    with pytest.raises(ArgumentError, match="`do` to be a mapping"):
        effect_from_joint(graph, {"H"}, joint, ("S", "T", "C"), ("C",), "Smoke")
    with pytest.raises(ArgumentError, match="`do` to be a mapping"):
        interventional(G, _good(), ("B",), "A")
    with pytest.raises(ArgumentError, match="`evidence` to be a mapping"):
        interventional(G, _good(), ("B",), {"A": 1}, "A")
    with pytest.raises(ArgumentError, match="the string 'Smoke'"):
        identify(graph, {"S", "T", "C"}, "Smoke", ["C"])
    with pytest.raises(ArgumentError, match="the string 'S'"):
        identify(graph, {"S", "T", "C"}, "S", ["C"])  # used to iterate it as characters


def test_observed_names_missing_from_the_graph_are_named():
    from ppltk.causal import identify, smoking_graph

    with pytest.raises(ArgumentError, match=r"`observed`.*\['Z'\]"):
        identify(smoking_graph(), {"S", "T", "C", "Z"}, ["S"], ["C"])


def test_non_finite_intervention_state_is_refused_not_nan():
    with pytest.raises(ArgumentError, match="finite"):
        interventional(G, _good(), ("B",), {"A": torch.tensor([float("nan"), 1.0])})


def test_repeated_query_names_are_named():
    with pytest.raises(ArgumentError, match="repeated"):
        interventional(G, _good(), ("B", "B"), {"A": 1})
