"""Syntax: diagrams from DAGs and by composition, generators, surgery laws, drawing."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ppltk.causal import Box, Copy, Diagram, Discard, cut, draw  # noqa: E402
from ppltk.errors import ArgumentError, ModelStructureError  # noqa: E402

SMOKING = nx.DiGraph([("H", "S"), ("H", "C"), ("S", "T"), ("T", "C")])


def test_causal_from_graph_generators():
    d = Diagram.from_graph(SMOKING, latent={"H"})
    assert d.outputs == ("S", "T", "C") and d.latent == {"H"}
    gens = d.generators()
    assert Box("C", ("H", "T")) in gens and Box("H", ()) in gens
    # H feeds S and C; S feeds T and the output; T feeds C and the output; C is an output
    assert {g for g in gens if isinstance(g, Copy)} == {Copy("H", 2), Copy("S", 2), Copy("T", 2)}
    assert not [g for g in gens if isinstance(g, Discard)]
    assert set(d.to_graph().edges) == set(SMOKING.edges)


def test_causal_cut_is_structure_preserving_idempotent_and_commutes():
    d = Diagram.from_graph(SMOKING, latent={"H"})
    c = cut(d, ["S"])
    assert [b for b in c.boxes if b.name != "S"] == [b for b in d.boxes if b.name != "S"]
    assert c.get("S") == Box("S", (), "state")
    assert c.outputs == d.outputs and c.latent == d.latent
    # H is now copied once (only C uses it): the copy generator on H disappears
    assert Copy("H", 2) not in c.generators()
    assert cut(c, ["S"]) == c
    assert cut(cut(d, ["S"]), ["T"]) == cut(cut(d, ["T"]), ["S"]) == cut(d, ["S", "T"])
    # cutting T leaves S discarded when nothing else consumes it... except the output
    only_c = cut(d.marginal(["C"]), ["T"])
    assert Discard("S") in only_c.generators()


def test_causal_sequential_and_parallel_composition_build_the_same_diagram():
    h = Diagram.box("H")
    built = (
        h >> (Diagram.box("S", ["H"])) >> Diagram.box("T", ["S"]) >> Diagram.box("C", ["H", "T"])
    )
    built = built.hide(["H"])
    assert built.boxes == Diagram.from_graph(SMOKING, latent={"H"}).boxes
    assert built.outputs == ("S", "T", "C")
    par = Diagram.box("A") @ Diagram.box("B")
    assert par.outputs == ("A", "B") and par.inputs == ()
    proc = Diagram.box("Y", ["A", "B"])
    assert proc.inputs == ("A", "B")
    assert (par >> proc).outputs == ("A", "B", "Y")


def test_causal_composition_errors():
    with pytest.raises(ModelStructureError, match="unmatched"):
        Diagram.box("A") >> Diagram.box("Y", ["B"])
    with pytest.raises(ModelStructureError, match="disjoint"):
        Diagram.box("A") @ Diagram.box("A")
    with pytest.raises(ArgumentError, match="networkx DAG"):
        Diagram.from_graph(nx.DiGraph([("a", "b"), ("b", "a")]))
    with pytest.raises(ArgumentError, match="latent"):
        Diagram.from_graph(SMOKING, latent={"Q"})
    with pytest.raises(ArgumentError, match="among the diagram"):
        cut(Diagram.from_graph(SMOKING), ["Q"])


def test_causal_draw_before_and_after_surgery():
    d = Diagram.from_graph(SMOKING, latent={"H"})
    fig, axes = plt.subplots(1, 2)
    a = draw(d, axes[0], title="before")
    b = draw(cut(d, "S"), axes[1], title="after")
    assert a is axes[0] and b is axes[1]
    assert len(a.patches) == 4 and len(b.patches) == 4  # one patch per box
    # the state triangle has 3 vertices (plus closing point), boxes are rectangles
    kinds = sorted(type(p).__name__ for p in b.patches)
    assert kinds == ["Polygon", "Rectangle", "Rectangle", "Rectangle"]
    plt.close(fig)
    assert draw(d).figure is not None
    plt.close("all")


@st.composite
def _dags(draw):
    n = draw(st.integers(2, 7))
    edges = [(f"V{i}", f"V{j}") for j in range(n) for i in range(j) if draw(st.booleans())]
    g = nx.DiGraph(edges)
    g.add_nodes_from(f"V{i}" for i in range(n))
    latent = draw(st.sets(st.sampled_from(sorted(g.nodes)), max_size=2))
    cuts = draw(st.lists(st.sampled_from(sorted(g.nodes)), max_size=3))
    return g, latent, cuts


@settings(max_examples=40, deadline=None)
@given(_dags())
def test_causal_cut_laws_on_random_diagrams(case):
    g, latent, cuts = case
    d = Diagram.from_graph(g, latent=latent)
    c = cut(d, cuts)
    # structure preserving: only the cut boxes change, and they become input-free states
    for b, b2 in zip(d.boxes, c.boxes):
        assert b2 == (Box(b.name, (), "state") if b.name in cuts else b)
    assert cut(c, cuts) == c
    assert cut(cut(d, cuts[:1]), cuts[1:]) == c
    # the graph of the cut diagram is the mutilated graph G with edges into the cuts removed
    mutilated = {(u, v) for u, v in g.edges if v not in cuts}
    assert set(c.to_graph().edges) == mutilated
    # wire uses: every use is a consumer box or an output
    uses = c.uses()
    for w in c.variables:
        consumers = sum(w in b.inputs for b in c.boxes) + (w in c.outputs)
        assert uses[w] == consumers
