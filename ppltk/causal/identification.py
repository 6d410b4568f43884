"""Sufficient graphical conditions for computing ``P(Y | do(X))`` from observational data.

Every condition is an instance of a rule of Pearl's do-calculus, checked by d-separation in
a mutilated graph (``G_{\\bar X}``: edges into ``X`` removed; ``G_{\\underline X}``: edges out
of ``X`` removed), so a returned :class:`Identification` is sound by construction.

* **no effect** (rule 3): ``Y ⊥ X`` in ``G_{\\bar X}``  ⇒  ``P(y | do x) = P(y)``.
* **back-door** (rule 2 + rule 3): ``Z`` observed non-descendants of ``X`` with
  ``Y ⊥ X | Z`` in ``G_{\\underline X}``  ⇒  ``P(y | do x) = Σ_z P(z) P(y | x, z)``.
* **front-door / comb** with bridge ``M`` (observed descendants of ``X`` intercepting every
  directed path ``X → Y``) and observed context ``C`` (non-descendants of ``X``):

  1. ``M ⊥ X | C`` in ``G_{\\underline X}``  (``P(m | do x, c) = P(m | x, c)``),
  2. ``Y ⊥ M | X, C`` in ``G_{\\bar X \\underline M}``  (``P(y | do x, m, c) = P(y | do x, do m, c)``),
  3. ``Y ⊥ X | M, C`` in ``G_{\\bar X \\bar M}``  (``= P(y | do m, c)``),
  4. ``X ⊥ M | C`` in ``G_{\\bar M}``  (``P(x | do m, c) = P(x | c)``),
  5. ``Y ⊥ M | X, C`` in ``G_{\\underline M}``  (``P(y | do m, x, c) = P(y | m, x, c)``),

  ⇒ ``P(y | do x) = Σ_c P(c) Σ_m P(m | x, c) Σ_{x'} P(x' | c) P(y | x', m, c)``, which is the
  comb disintegration of Jacobs–Kissinger–Zanasi (2019, Sects. 4–5) with context wires ``C``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx

from ppltk.causal.id_algorithm import ADMG, IDResult, id_expression
from ppltk.errors import ArgumentError, NotIdentifiableError

__all__ = ["Identification", "identify", "is_backdoor_set", "is_frontdoor_set"]


def check_dag(graph, name: str = "graph") -> nx.DiGraph:
    """Check that ``graph`` is a networkx ``DiGraph`` without cycles (naming a cycle if not)."""
    if not isinstance(graph, nx.DiGraph):
        raise ArgumentError(
            f"Expected `{name}` to be a networkx.DiGraph, but found {type(graph).__name__}"
        )
    if not nx.is_directed_acyclic_graph(graph):
        cycle = " -> ".join(str(u) for u, _ in nx.find_cycle(graph))
        first = str(nx.find_cycle(graph)[0][0])
        raise ArgumentError(
            f"Expected `{name}` to be acyclic (a causal DAG), but it is cyclic: {cycle} -> {first}"
        )
    return graph


def check_names(value, name: str) -> tuple:
    """``value`` as a tuple of names; a single string is refused (it is not a collection)."""
    if isinstance(value, (str, bytes)):
        raise ArgumentError(
            f"Expected `{name}` to be a collection of variable names such as [{value!r}], but "
            f"found the string {value!r}"
        )
    try:
        return tuple(value)
    except TypeError:
        raise ArgumentError(
            f"Expected `{name}` to be a collection of variable names, but found "
            f"{type(value).__name__}"
        ) from None


@dataclass(frozen=True)
class Identification:
    """How an effect is computed: ``method``, adjustment/context set, mediators, formula.

    ``method`` is ``"no-effect"``, ``"back-door"``, ``"front-door"`` (fast paths) or
    ``"id"``/``"idc"`` (the complete Shpitser–Pearl algorithms; ``expression`` holds the
    :class:`~ppltk.causal.id_algorithm.IDResult` and ``formula`` its readable form).
    """

    method: str
    adjustment_set: tuple[str, ...]
    mediators: tuple[str, ...]
    formula: str
    expression: IDResult | None = None


def _mutilate(g: nx.DiGraph, cut_in: Iterable[str] = (), cut_out: Iterable[str] = ()):
    h = g.copy()
    h.remove_edges_from([(u, v) for v in cut_in for u in g.predecessors(v)])
    h.remove_edges_from([(u, v) for u in cut_out for v in g.successors(u)])
    return h


def _dsep(g: nx.DiGraph, a, b, z) -> bool:
    return nx.is_d_separator(g, set(a), set(b), set(z))


def _descendants(g: nx.DiGraph, xs) -> set[str]:
    out = set(xs)
    for x in xs:
        out |= nx.descendants(g, x)
    return out


def _ancestors(g: nx.DiGraph, ys) -> set[str]:
    out = set(ys)
    for y in ys:
        out |= nx.ancestors(g, y)
    return out


def is_backdoor_set(g: nx.DiGraph, x, y, z) -> bool:
    """Back-door criterion: ``Z ∩ De(X) = ∅`` and ``Y ⊥ X | Z`` in ``G_{\\underline X}``."""
    if set(z) & _descendants(g, x):
        return False
    return _dsep(_mutilate(g, cut_out=x), y, x, z)


def is_frontdoor_set(g: nx.DiGraph, x, y, m, c=()) -> bool:
    """The five do-calculus conditions of the (conditional) front-door / comb formula."""
    x, y, m, c = set(x), set(y), set(m), set(c)
    de_x = _descendants(g, x)
    if not m or not m <= de_x - x or c & de_x:
        return False
    return (
        _dsep(_mutilate(g, cut_out=x), m, x, c)
        and _dsep(_mutilate(g, cut_in=x, cut_out=m), y, m, x | c)
        and _dsep(_mutilate(g, cut_in=x | m), y, x, m | c)
        and _dsep(_mutilate(g, cut_in=m), x, m, c)
        and _dsep(_mutilate(g, cut_out=m), y, m, x | c)
    )


def _subsets(items: list[str], sizes: Iterable[int]):
    for k in sizes:
        yield from itertools.combinations(items, k)


def _search_backdoor(g, x, y, cands, max_size):
    tried = 0
    for z in itertools.chain(_subsets(cands, range(min(max_size, len(cands)) + 1)), [cands]):
        tried += 1
        if is_backdoor_set(g, x, y, z):
            return tuple(z), tried
    return None, tried


def _search_frontdoor(g, x, y, m_cands, c_cands, max_size, budget):
    tried = 0
    m_sets = list(_subsets(m_cands, range(1, min(max_size, len(m_cands)) + 1))) + [m_cands]
    c_sets = list(_subsets(c_cands, range(min(max_size, len(c_cands)) + 1))) + [c_cands]
    for m in m_sets:
        for c in c_sets:
            tried += 1
            if tried > budget:
                return None, tried
            if m and is_frontdoor_set(g, x, y, m, c):
                return (tuple(m), tuple(c)), tried
    return None, tried


def _check_args(g: nx.DiGraph, observed: set[str], x: tuple, y: tuple) -> None:
    check_dag(g)
    missing = sorted((str(v) for v in observed if v not in g), key=str)
    if missing:
        raise ArgumentError(f"Expected `observed` to name nodes of `graph`, but found {missing}")
    if not x or not y:
        raise ArgumentError(
            f"Expected non-empty `do` and `query`, but found {list(x)} and {list(y)}"
        )
    for arg, names in (("do", x), ("query", y)):
        bad = [v for v in names if v not in observed]
        if bad:
            raise ArgumentError(f"Expected `{arg}` to name observed variables, but found {bad}")
    both = sorted(set(x) & set(y))
    if both:
        raise ArgumentError(f"Expected `query` and `do` to be disjoint, but both contain {both}")


def identify(
    graph: nx.DiGraph,
    observed: Iterable[str],
    do: Iterable[str],
    query: Iterable[str],
    max_set_size: int = 3,
    budget: int = 20000,
    *,
    evidence: Iterable[str] = (),
) -> Identification:
    """Identify ``P(query | do)`` (or ``P(query | do, evidence)``) from observational data.

    The fast paths (no effect, back-door, front-door comb) are tried first; sets are searched
    smallest first (sizes up to ``max_set_size``, then the full candidate set), restricted to
    observed ancestors of ``do ∪ query``.  When none applies, or ``evidence`` is given, the
    complete ID/IDC algorithm (:mod:`ppltk.causal.id_algorithm`) decides.

    Raises
    ------
    NotIdentifiableError
        When the query is not identifiable; the message names the hedge (the node sets of
        the two c-forests) that blocks it and why the fast paths fail.
    """
    g, observed = graph, set(check_names(observed, "observed"))
    x, y = check_names(do, "do"), check_names(query, "query")
    _check_args(g, observed, x, y)
    ev = check_names(evidence, "evidence")
    if ev:
        _check_evidence(observed, x, y, ev)
        res = id_expression(ADMG.from_dag(g, observed), x, y, ev)
        return Identification("idc", (), (), res.formula, res)
    xs = ", ".join(x)
    if _dsep(_mutilate(g, cut_in=x), y, x, ()):
        ys = ", ".join(y)
        return Identification("no-effect", (), (), f"P({ys} | do({xs})) = P({ys})")
    de_x, an = _descendants(g, x), _ancestors(g, set(x) | set(y))
    rel = sorted((observed & an) - set(x) - set(y), key=str)
    z, n_bd = _search_backdoor(g, x, y, [v for v in rel if v not in de_x], max_set_size)
    if z is not None:
        return Identification("back-door", z, (), "Σ_z P(z) P(y | x, z)")
    m_cands = [v for v in rel if v in de_x]
    c_cands = [v for v in rel if v not in de_x]
    found, n_fd = _search_frontdoor(g, x, y, m_cands, c_cands, max_set_size, budget)
    if found is not None:
        m, c = found
        return Identification(
            "front-door", c, m, "Σ_c P(c) Σ_m P(m | x, c) Σ_x' P(x' | c) P(y | x', m, c)"
        )
    try:
        res = id_expression(ADMG.from_dag(g, observed), x, y)
    except NotIdentifiableError as err:
        why = _explain(g, observed, x, y, m_cands, c_cands, n_bd, n_fd)
        refusal = NotIdentifiableError(f"{err}. Fast paths: {why}")
        refusal.hedge = getattr(err, "hedge", None)  # (F, F', R) node sets
        raise refusal from None
    return Identification("id", (), (), res.formula, res)


def _check_evidence(observed: set, x: tuple, y: tuple, ev: tuple) -> None:
    bad = [v for v in ev if v not in observed]
    if bad:
        raise ArgumentError(f"Expected `evidence` to name observed variables, but found {bad}")
    both = sorted(set(ev) & (set(x) | set(y)), key=str)
    if both:
        raise ArgumentError(
            f"Expected `evidence` disjoint from `do` and `query`, but found {both} in both"
        )


def _explain(g, observed, x, y, m_cands, c_cands, n_bd, n_fd) -> str:
    hidden = sorted(set(g.nodes) - observed, key=str)
    reasons = [
        f"Expected an observed adjustment set or bridge for P({', '.join(y)} | do({', '.join(x)})),"
        " but found none:",
        f"back-door: in G with the edges out of {list(x)} removed, {list(x)} and {list(y)} stay "
        f"d-connected given each of {n_bd} candidate sets of observed non-descendants "
        f"{c_cands} (an open path runs through hidden variables {hidden});",
    ]
    direct = [(a, b) for a in x for b in y if g.has_edge(a, b)]
    if direct:
        reasons.append(f"front-door: the direct edges {direct} bypass every bridge.")
    elif not m_cands:
        reasons.append(
            "front-door: no observed descendant of the intervened variables can "
            "serve as a bridge (mediator)."
        )
    else:
        reasons.append(
            f"front-door: none of {n_fd} (bridge ⊆ {m_cands}, context ⊆ {c_cands}) "
            "pairs satisfies the comb conditions (a bridge must intercept every "
            "directed path and be unconfounded with the treatment and the outcome)."
        )
    return " ".join(reasons)
