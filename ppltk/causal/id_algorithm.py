"""Complete identification: the Shpitser–Pearl ID and IDC algorithms on the latent projection.

A causal DAG with hidden nodes is first projected onto its observed nodes (Verma's latent
projection: ``a → b`` when a directed path from ``a`` to ``b`` runs through hidden nodes only,
``a ↔ b`` when a hidden node reaches both along hidden-only directed paths).  Identification
only depends on this acyclic directed mixed graph (ADMG).

``ID(y, x, P, G)`` (Shpitser & Pearl, AAAI 2006, Fig. 3; Tian & Pearl 2002) returns an
expression for ``P(y | do(x))`` in terms of the observational joint, built from the
c-components (districts, bidirected-connected sets) of ``G``:

1. ``x = ∅``: ``Σ_{v∖y} P(v)``;
2. drop non-ancestors of ``Y``;
3. add to ``x`` the nodes ``W`` that are not ancestors of ``Y`` once ``X`` is cut (rule 3);
4. several districts of ``G ∖ X``: ``Σ_{v∖(y∪x)} Π_i ID(s_i, v∖s_i)``;
5. ``G`` one district: **fail** with the hedge ``(F, F') = (G, G ∖ X)``;
6. the district ``S`` of ``G ∖ X`` is a district of ``G``: ``Σ_{s∖y} Π_{v_i ∈ S} P(v_i | v^{(i-1)})``;
7. ``S ⊂ S'`` a district of ``G``: recurse on ``G[S']`` with
   ``Q[S'] = Π_{v_i ∈ S'} P(v_i | v^{(i-1)})``.

The algorithm is sound and complete: it fails exactly when a *hedge* exists (two
``R``-rooted c-forests ``F' ⊂ F`` with ``F ∩ X ≠ ∅ = F' ∩ X``), and the hedge it fails on is
reported in :class:`NotIdentifiableError`.  ``IDC(y, x, z)`` (Shpitser & Pearl, UAI 2006)
moves every ``Z`` with ``Y ⊥ Z | X, Z∖{Z}`` in ``G_{\\bar X \\underline Z}`` into the
intervention (rule 2) and returns ``P'(y, z) / Σ_y P'(y, z)`` with ``P' = ID(y ∪ z, x)``.

Expressions (:class:`Expr`) are evaluated on an observational joint tensor by
``torch.einsum`` over named axes (batch axes lead and broadcast), and printed as a readable
formula (:func:`render`).  The evaluation is exact: it only marginalises, multiplies and
divides tables of the observed joint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import opt_einsum
import torch

from ppltk.errors import ArgumentError, NotIdentifiableError

__all__ = [
    "ADMG",
    "Expr",
    "Hedge",
    "id_expression",
    "evaluate_expression",
    "render",
    "effect_value",
]


# --------------------------------------------------------------------------- the ADMG
class ADMG:
    """An acyclic directed mixed graph: ordered ``nodes``, ``parents`` and ``bidirected`` pairs.

    ``nodes`` is a topological order of the directed part (used as the order ``π`` of ID).
    """

    def __init__(
        self,
        nodes: Sequence[str],
        parents: Mapping[str, Iterable[str]],
        bidirected: Iterable[frozenset],
    ):
        self.nodes = tuple(nodes)
        keep = set(self.nodes)
        self.parents = {v: frozenset(p for p in parents.get(v, ()) if p in keep) for v in nodes}
        self.bidirected = frozenset(
            frozenset(e) for e in bidirected if len(e) == 2 and set(e) <= keep
        )

    @classmethod
    def from_dag(cls, graph: nx.DiGraph, observed: Iterable[str]) -> ADMG:
        """The latent projection of ``graph`` onto ``observed`` (all other nodes are hidden)."""
        observed = set(observed)
        order = [v for v in nx.lexicographical_topological_sort(graph, key=str) if v in observed]
        hidden_reach: dict = {}

        def reach(h) -> frozenset:
            """Observed nodes reached from hidden ``h`` along hidden-only directed paths."""
            if h not in hidden_reach:
                out: set = set()
                for c in graph.successors(h):
                    out |= {c} if c in observed else reach(c)
                hidden_reach[h] = frozenset(out)
            return hidden_reach[h]

        parents: dict = {v: set() for v in order}
        for a in order:
            for c in graph.successors(a):
                for b in {c} if c in observed else reach(c):
                    parents[b].add(a)
        bidirected = set()
        for h in graph.nodes:
            if h not in observed:
                r = sorted(reach(h), key=str)
                bidirected |= {frozenset((a, b)) for i, a in enumerate(r) for b in r[i + 1 :]}
        return cls(order, parents, bidirected)

    def sub(self, keep: Iterable[str]) -> ADMG:
        """The induced subgraph ``G[keep]``."""
        keep = set(keep)
        return ADMG([v for v in self.nodes if v in keep], self.parents, self.bidirected)

    def children(self, v: str) -> list[str]:
        return [c for c in self.nodes if v in self.parents[c]]

    def ancestors(self, ys: Iterable[str], cut_in: Iterable[str] = ()) -> frozenset:
        """``An(Y)`` (``Y`` included), in the graph with the edges into ``cut_in`` removed."""
        cut_in = set(cut_in)
        out, stack = set(), list(ys)
        while stack:
            v = stack.pop()
            if v in out:
                continue
            out.add(v)
            if v not in cut_in:
                stack.extend(self.parents[v])
        return frozenset(out)

    def districts(self) -> list[frozenset]:
        """The c-components (bidirected-connected sets), in order of their first node."""
        seen: set = set()
        out = []
        nbrs: dict = {v: set() for v in self.nodes}
        for e in self.bidirected:
            a, b = tuple(e)
            nbrs[a].add(b)
            nbrs[b].add(a)
        for v in self.nodes:
            if v in seen:
                continue
            comp, stack = set(), [v]
            while stack:
                u = stack.pop()
                if u not in comp:
                    comp.add(u)
                    stack.extend(nbrs[u])
            seen |= comp
            out.append(frozenset(comp))
        return out

    def canonical_dag(self) -> nx.DiGraph:
        """A DAG with one hidden root per bidirected edge (for d-separation tests)."""
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from((p, v) for v in self.nodes for p in self.parents[v])
        for i, e in enumerate(sorted(self.bidirected, key=lambda e: sorted(map(str, e)))):
            u = ("__bidirected__", i)
            g.add_edges_from((u, v) for v in e)
        return g

    def __repr__(self) -> str:
        d = sorted(f"{p}->{v}" for v in self.nodes for p in self.parents[v])
        b = sorted("<->".join(sorted(map(str, e))) for e in self.bidirected)
        return f"ADMG(nodes={list(self.nodes)}, directed={d}, bidirected={b})"


# --------------------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Expr:
    """A term of an identification formula (see the subclasses)."""


@dataclass(frozen=True)
class Joint(Expr):
    """The observational joint ``P(v)`` over ``variables``."""

    variables: tuple


@dataclass(frozen=True)
class Named(Expr):
    """A (conditional) distribution over ``dvars`` defined by ``body``, printed as ``label``."""

    label: str
    body: Expr
    dvars: tuple


@dataclass(frozen=True)
class Marg(Expr):
    """``Σ`` of the distribution ``dist`` (a Joint or Named) over its variables not in ``keep``."""

    dist: Expr
    keep: tuple


@dataclass(frozen=True)
class Cond(Expr):
    """``dist(target | given) = Marg(dist, target ∪ given) / Marg(dist, given)``."""

    dist: Expr
    target: tuple
    given: tuple


@dataclass(frozen=True)
class Prod(Expr):
    factors: tuple


@dataclass(frozen=True)
class Sum(Expr):
    over: tuple
    body: Expr


def _dvars(p: Expr) -> tuple:
    if isinstance(p, Joint):
        return p.variables
    if isinstance(p, Named):
        return p.dvars
    if isinstance(p, Marg):
        return p.keep
    raise TypeError(f"not a distribution: {p!r}")  # pragma: no cover - internal


class _Order:
    """Sorts names by the global topological order (deterministic formulas and axes)."""

    def __init__(self, nodes: Sequence[str]):
        self.index = {v: i for i, v in enumerate(nodes)}

    def __call__(self, names: Iterable[str]) -> tuple:
        return tuple(sorted(set(names), key=lambda v: self.index[v]))


def _marg(p: Expr, keep: Iterable[str], order: _Order) -> Expr:
    if isinstance(p, Marg):
        p = p.dist
    keep = order(set(keep) & set(_dvars(p)))
    if set(keep) == set(_dvars(p)):
        return p
    return Marg(p, keep)


def _cond(p: Expr, target: Iterable[str], given: Iterable[str], order: _Order) -> Expr:
    if isinstance(p, Marg):
        p = p.dist
    return Cond(p, order(target), order(given))


def _sum(over: Iterable[str], body: Expr, order: _Order) -> Expr:
    over = order(over)
    if not over:
        return body
    if isinstance(body, Sum):
        return Sum(order(set(over) | set(body.over)), body.body)
    return Sum(over, body)


def _prod(factors: Iterable[Expr]) -> Expr:
    flat: list = []
    for f in factors:
        flat.extend(f.factors if isinstance(f, Prod) else [f])
    return flat[0] if len(flat) == 1 else Prod(tuple(flat))


# --------------------------------------------------------------------------- ID / IDC
class Hedge(Exception):
    """Internal: ID failed on line 5 with the hedge ``(F, F')`` for ``P(roots | do(x))``."""

    def __init__(self, forest: frozenset, sub_forest: frozenset, roots: frozenset, x: frozenset):
        super().__init__(forest, sub_forest, roots, x)
        self.forest, self.sub_forest, self.roots, self.x = forest, sub_forest, roots, x


def _id(y: frozenset, x: frozenset, p: Expr, g: ADMG, order: _Order, names: list) -> Expr:
    v = frozenset(g.nodes)
    if not x:  # line 1
        return _marg(p, y, order)
    an = g.ancestors(y)
    if an != v:  # line 2
        return _id(y, x & an, _marg(p, an, order), g.sub(an), order, names)
    w = (v - x) - g.ancestors(y, cut_in=x)
    if w:  # line 3
        return _id(y, x | w, p, g, order, names)
    sx = g.sub(v - x).districts()
    if len(sx) > 1:  # line 4
        parts = [_id(s, v - s, p, g, order, names) for s in sx]
        return _sum(v - (y | x), _prod(parts), order)
    s = sx[0]
    dg = g.districts()
    if len(dg) == 1:  # line 5
        raise Hedge(v, s, y, x)

    def q(block: frozenset) -> list:
        # P(v_i | v^(i-1)) = P(v_i | (T_i ∪ Pa(T_i)) ∖ {v_i}), T_i the district of v_i in
        # G[v^(i)] (Tian & Pearl 2002, Lemma 4): same value, shorter conditioning sets
        out = []
        for i, node in enumerate(g.nodes):
            if node in block:
                prefix = g.sub(g.nodes[: i + 1])
                t = next(d for d in prefix.districts() if node in d)
                given = (t | {u for w in t for u in prefix.parents[w]}) - {node}
                out.append(_cond(p, (node,), given, order))
        return out

    if s in dg:  # line 6
        return _sum(s - y, _prod(q(s)), order)
    s2 = next(d for d in dg if s <= d)  # line 7
    label = f"Q{len(names) + 1}"
    named = Named(label, _prod(q(s2)), order(s2))
    names.append(named)
    return _id(y, x & s2, named, g.sub(s2), order, names)


def _dsep_admg(g: ADMG, a: Iterable, b: Iterable, given: Iterable) -> bool:
    return nx.is_d_separator(g.canonical_dag(), set(a), set(b), set(given))


def _cut_admg(g: ADMG, cut_in: Iterable[str] = (), cut_out: Iterable[str] = ()) -> ADMG:
    """``G_{\\bar X \\underline Z}``: edges into ``cut_in`` (both kinds), out of ``cut_out``."""
    cut_in, cut_out = set(cut_in), set(cut_out)
    parents = {v: (set() if v in cut_in else g.parents[v] - cut_out) for v in g.nodes}
    bid = [e for e in g.bidirected if not e & cut_in]
    return ADMG(g.nodes, parents, bid)


@dataclass
class IDResult:
    """An identification formula: the expression, its free axes and a readable string."""

    expression: Expr
    do: tuple
    query: tuple
    evidence: tuple
    moved: tuple  # evidence moved into the intervention by rule 2 (IDC)
    definitions: tuple  # Named intermediate distributions (Q1, Q2, …)
    formula: str
    arbitrary: tuple = ()  # free variables the value does not depend on (added by line 3)


def _hedge_error(h: Hedge, x, y, z, treated: set, order: _Order) -> NotIdentifiableError:
    def fmt(s):
        return "{" + ", ".join(map(str, order(s))) + "}"

    head = f"P({', '.join(map(str, y))} | do({', '.join(map(str, x))})"
    head += f", {', '.join(map(str, z))})" if z else ")"
    err = NotIdentifiableError(
        f"Expected an identifiable query, but {head} is not identifiable from the observational "
        f"joint: the hedge F = {fmt(h.forest)} ⊃ F' = {fmt(h.sub_forest)} blocks it (two "
        f"c-forests: each bidirected-connected, every node an ancestor of the root set "
        f"R = {fmt(h.roots)} inside it; F contains the treatments {fmt(h.forest & treated)}, "
        f"F' none), so two models with the same observational joint give different answers"
    )
    err.hedge = (frozenset(h.forest), frozenset(h.sub_forest), frozenset(h.roots))
    return err


def id_expression(
    g: ADMG, do: Iterable[str], query: Iterable[str], evidence: Iterable[str] = ()
) -> IDResult:
    """Identify ``P(query | do(do), evidence)`` in the ADMG ``g`` (ID, or IDC with evidence).

    Raises
    ------
    NotIdentifiableError
        When no formula exists; the message names the hedge ``F ⊃ F'`` (node sets of the two
        c-forests), their root set and the treatments it contains.
    """
    order = _Order(g.nodes)
    x, y, z = tuple(do), tuple(query), tuple(evidence)  # user order (output axes)
    names: list = []
    x_set, z_set = set(x), set(z)
    moved = []
    changed = True
    while changed:  # IDC, rule 2: move Z into the intervention while Y ⊥ Z | X, Z∖{Z}
        changed = False
        for zz in order(z_set):
            cut = _cut_admg(g, cut_in=x_set, cut_out=(zz,))
            if _dsep_admg(cut, y, (zz,), x_set | (z_set - {zz})):
                x_set.add(zz)
                z_set.discard(zz)
                moved.append(zz)
                changed = True
                break
    joint = Joint(tuple(g.nodes))
    try:
        expr = _id(frozenset(y) | z_set, frozenset(x_set), joint, g, order, names)
    except Hedge as h:
        raise _hedge_error(h, x, y, z, set(x_set), order) from None
    if z_set:
        label = f"P_{{{','.join(map(str, order(x_set)))}}}"
        named = Named(label, expr, order(set(y) | z_set))
        names.append(named)
        expr = _cond(named, y, z_set, order)
    extra = order(_free(expr) - set(x) - set(y) - set(z))
    result = IDResult(expr, x, y, z, order(moved), tuple(names), "", extra)
    result.formula = render(result)
    return result


# --------------------------------------------------------------------------- rendering
def _args(names: Sequence[str]) -> str:
    return ", ".join(map(str, names))


def _render(e: Expr, top: bool = False) -> str:
    if isinstance(e, Joint):
        return f"P({_args(e.variables)})"
    if isinstance(e, Named):
        return f"{e.label}({_args(e.dvars)})"
    if isinstance(e, Marg):
        name = "P" if isinstance(e.dist, Joint) else e.dist.label
        return f"{name}({_args(e.keep)})"
    if isinstance(e, Cond):
        name = "P" if isinstance(e.dist, Joint) else e.dist.label
        given = f" | {_args(e.given)}" if e.given else ""
        return f"{name}({_args(e.target)}{given})"
    if isinstance(e, Prod):
        return " ".join(_render(f) for f in e.factors)
    if isinstance(e, Sum):
        text = f"Σ_{{{_args(e.over)}}} {_render(e.body)}"
        return text if top else f"[{text}]"
    raise TypeError(f"unknown expression {e!r}")  # pragma: no cover - internal


def render(result: IDResult) -> str:
    """``P(y | do(x), z) = <formula>`` followed by the definitions of ``Q1, Q2, …``."""
    lhs = f"P({_args(result.query)} | do({_args(result.do)})"
    lhs += f", {_args(result.evidence)})" if result.evidence else ")"
    out = f"{lhs} = "
    if result.moved:  # IDC's rule 2: observing these equals intervening on them
        rest = [v for v in result.evidence if v not in result.moved]
        out += f"P({_args(result.query)} | do({_args(result.do + result.moved)})"
        out += f", {_args(rest)}) = " if rest else ") = "
    out += _render(result.expression, top=True)
    defs = []
    for n in result.definitions:
        body = n.body
        if isinstance(body, Named):  # pragma: no cover - not produced
            body = body.body
        defs.append(f"{n.label}({_args(n.dvars)}) = {_render(body, top=True)}")
    if defs:
        out += ", where " + "; ".join(defs)
    if result.arbitrary:
        a = _args(result.arbitrary)
        out += f" (for any value of {a}; evaluated as the average over P({a}))"
    return out


def _free(e: Expr) -> set:
    """The free variables (axes) of an expression."""
    if isinstance(e, Joint):
        return set(e.variables)
    if isinstance(e, Named):
        return _free(e.body)
    if isinstance(e, Marg):
        return _free(e.dist) - (set(_dvars(e.dist)) - set(e.keep))
    if isinstance(e, Cond):
        return _free(e.dist) - (set(_dvars(e.dist)) - set(e.target) - set(e.given))
    if isinstance(e, Prod):
        return set().union(*(_free(f) for f in e.factors))
    if isinstance(e, Sum):
        return _free(e.body) - set(e.over)
    raise TypeError(f"unknown expression {e!r}")  # pragma: no cover - internal


# --------------------------------------------------------------------------- evaluation
class _Evaluator:
    """Evaluate expressions on a joint with named trailing axes (leading batch axes)."""

    def __init__(self, joint: torch.Tensor, variables: Sequence[str], on_zero):
        self.joint, self.variables = joint, tuple(variables)
        self.order = _Order(self.variables)
        n = len(self.variables)
        self.card = {v: joint.shape[joint.ndim - n + i] for i, v in enumerate(self.variables)}
        self.sym = {v: opt_einsum.get_symbol(i) for i, v in enumerate(self.variables)}
        self.on_zero = on_zero
        self.memo: dict = {}

    def einsum(self, ops: Sequence[tuple], out_axes: Iterable[str]) -> tuple:
        out_axes = self.order(out_axes)
        terms = ["..." + "".join(self.sym[a] for a in axes) for _, axes in ops]
        eq = ",".join(terms) + "->..." + "".join(self.sym[a] for a in out_axes)
        return torch.einsum(eq, *[t for t, _ in ops]), out_axes

    def __call__(self, e: Expr) -> tuple:
        if e not in self.memo:
            self.memo[e] = self._eval(e)
        return self.memo[e]

    def _eval(self, e: Expr) -> tuple:
        if isinstance(e, Joint):
            return self.einsum([(self.joint, self.variables)], e.variables)
        if isinstance(e, Named):
            return self(e.body)
        if isinstance(e, Marg):
            t, axes = self(e.dist)
            drop = set(_dvars(e.dist)) - set(e.keep)
            return self.einsum([(t, axes)], [a for a in axes if a not in drop])
        if isinstance(e, Cond):
            num, nax = self(_marg(e.dist, e.target + e.given, self.order))
            if not e.given and isinstance(e.dist, Joint):
                return num, nax
            den, dax = self(_marg(e.dist, e.given, self.order))
            shape = [self.card[a] if a in dax else 1 for a in nax]
            den = den.reshape(*den.shape[: den.ndim - len(dax)], *shape)
            if (den <= 0).any():
                self.on_zero(_render(e), _render(_marg(e.dist, e.given, self.order)))
            return num / den, nax
        if isinstance(e, Prod):
            ops = [self(f) for f in e.factors]
            return self.einsum(ops, set().union(*(a for _, a in ops)))
        if isinstance(e, Sum):
            body = e.body.factors if isinstance(e.body, Prod) else (e.body,)
            ops = [self(f) for f in body]
            axes = set().union(*(a for _, a in ops))
            missing = set(e.over) - axes
            if missing:  # pragma: no cover - internal consistency
                raise RuntimeError(f"summing over {missing} absent from the summand")
            return self.einsum(ops, axes - set(e.over))
        raise TypeError(f"unknown expression {e!r}")  # pragma: no cover - internal


def evaluate_expression(
    expr: Expr, joint: torch.Tensor, variables: Sequence[str], on_zero=None
) -> tuple[torch.Tensor, tuple]:
    """Evaluate ``expr`` on ``joint`` (trailing axes ``variables``): ``(tensor, axis names)``.

    The returned tensor has the leading batch axes of ``joint`` followed by one axis per free
    variable of the expression, in the order of ``variables``.  ``on_zero(term, denominator)``
    is called when a denominator has a zero entry (default: raise ``ArgumentError``).
    """

    return _Evaluator(joint, variables, on_zero or _raise_zero)(expr)


def effect_value(
    result: IDResult,
    joint: torch.Tensor,
    variables: Sequence[str],
    sigma: Mapping[str, torch.Tensor],
    evidence: Mapping[str, torch.Tensor],
    on_zero=None,
) -> torch.Tensor:
    """``Σ_x σ(x) P(query | do(x), z = e)`` from the identified formula, axes ``query``.

    ``sigma`` maps each intervened variable to a state ``σ[..., card]`` (one-hot for a hard
    intervention), ``evidence`` each evidence variable to a one-hot vector ``δ_e``.  Both may
    carry batch axes, broadcast with those of ``joint``.
    """
    ev = _Evaluator(joint, variables, on_zero or _raise_zero)
    t, axes = ev(result.expression)
    ops = [(t, axes)]
    if result.arbitrary:  # the value is the same for every w: average it over P(w)
        w, wax = ev(Joint(tuple(result.arbitrary)))
        total = w.sum(tuple(range(w.ndim - len(wax), w.ndim)), keepdim=True)
        ops.append((w / total, wax))
    ops += [(s, (v,)) for v, s in sigma.items()]
    ops += [(lam, (v,)) for v, lam in evidence.items()]
    out_order = tuple(result.query)
    terms = ["..." + "".join(ev.sym[a] for a in a_) for _, a_ in ops]
    eq = ",".join(terms) + "->..." + "".join(ev.sym[a] for a in out_order)
    return torch.einsum(eq, *[o for o, _ in ops])


def _raise_zero(term, den):
    raise ArgumentError(
        f"Expected a joint with full support, but the denominator {den} of {term} is 0"
    )
