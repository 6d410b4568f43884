"""Counterfactuals by twin-network (n-world) surgery on string diagrams, exact for discrete SCMs.

A structural causal model here is a causal DAG whose **exogenous** nodes (noise, shared by
every world) carry distributions and whose **endogenous** nodes are deterministic functions
of their parents (0/1 tables).  The n-world network (Balke & Pearl 1994; Shpitser & Pearl
2007) copies every endogenous box once per world, ``V ↦ V@k``, keeps one copy of every
exogenous wire (copied into all worlds: the copy generator of the diagram), and performs
the surgery ``cut_{X@k}`` for the intervention of world ``k``:

.. math::

    P(y_{x} \\mid e) = \\frac{\\sum_u P(u)\\, [Y_{x}(u) = y]\\, [E(u) = e]}
                          {\\sum_u P(u)\\, [E(u) = e]},

evaluated by one einsum over the network (:func:`ppltk.causal.interventional`), never by
enumerating ``u``.  Counterfactuals are not determined by the conditional tables of a causal
Bayesian network: :func:`response_function_scm` turns such a model into an SCM with one
response-function noise per variable under the *independent* coupling, a documented choice;
bounds that hold for every coupling are :func:`pns_bounds` (Tian & Pearl 2000).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import networkx as nx
import torch

from ppltk.causal.identification import check_dag
from ppltk.causal.semantics import CPTs, validate_cpts
from ppltk.causal.surgery import CausalModel
from ppltk.errors import ArgumentError, ModelStructureError

__all__ = [
    "twin_network",
    "counterfactual",
    "counterfactual_from_model",
    "response_function_scm",
    "pns_bounds",
]


def _world_name(v: str, k: int) -> str:
    return f"{v}@{k}"


def _check_scm(graph: nx.DiGraph, cpts: CPTs, exogenous: set) -> None:
    check_dag(graph)
    validate_cpts(cpts, graph)
    bad = sorted((str(u) for u in exogenous if u not in graph), key=str)
    if bad:
        raise ArgumentError(f"Expected `exogenous` to name nodes of `graph`, but found {bad}")
    with_parents = sorted((str(u) for u in exogenous if graph.in_degree(u)), key=str)
    if with_parents:
        raise ModelStructureError(
            f"Expected exogenous nodes to be roots (noise), but found parents of {with_parents}"
        )
    for v, (_, table) in cpts.items():
        if v in exogenous:
            continue
        if not bool(((table == 0) | (table == 1)).all()):
            raise ModelStructureError(
                f"Expected a deterministic mechanism (a 0/1 table) for the endogenous variable "
                f"{v!r} given its parents, but found entries strictly between 0 and 1: give it "
                f"an explicit exogenous noise parent, or build an SCM with "
                f"response_function_scm(graph, cpts)"
            )


def twin_network(
    graph: nx.DiGraph, cpts: CPTs, exogenous: Iterable[str], n_worlds: int = 2
) -> tuple[nx.DiGraph, dict]:
    """The n-world network: exogenous nodes shared, endogenous ``V`` copied as ``V@k``.

    Returns the DAG and tables of the network; world ``k``'s copy of ``V`` is ``f"{V}@{k}"``.
    """
    exogenous = set(check_exogenous(exogenous))
    _check_scm(graph, cpts, exogenous)
    if not isinstance(n_worlds, int) or n_worlds < 1:
        raise ArgumentError(f"Expected `n_worlds` to be a positive int, but found {n_worlds!r}")
    g = nx.DiGraph()
    out: dict = {}
    for u in exogenous:
        g.add_node(u)
        out[u] = cpts[u]
    for k in range(n_worlds):
        for v in graph.nodes:
            if v in exogenous:
                continue
            parents, table = cpts[v]
            mapped = tuple(p if p in exogenous else _world_name(p, k) for p in parents)
            g.add_node(_world_name(v, k))
            g.add_edges_from((p, _world_name(v, k)) for p in mapped)
            out[_world_name(v, k)] = (mapped, table)
    return g, out


def check_exogenous(exogenous) -> tuple:
    if isinstance(exogenous, (str, bytes)):
        raise ArgumentError(
            f"Expected `exogenous` to be a collection of node names such as [{exogenous!r}], "
            f"but found the string {exogenous!r}"
        )
    return tuple(exogenous)


def _world_key(key, n_worlds: int, arg: str) -> tuple[str, int]:
    if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], int)):
        raise ArgumentError(
            f"Expected the entries of `{arg}` to be (variable, world) pairs such as ('Y', 1), "
            f"but found {key!r}"
        )
    if not 0 <= key[1] < n_worlds:
        raise ArgumentError(f"Expected worlds in [0, {n_worlds}) in `{arg}`, but found {key!r}")
    return key


def counterfactual(
    graph: nx.DiGraph,
    cpts: CPTs,
    exogenous: Iterable[str],
    worlds: Sequence[Mapping[str, object]],
    query: Sequence[tuple[str, int]],
    evidence: Mapping[tuple[str, int], object] | None = None,
) -> torch.Tensor:
    """``P(query | evidence)`` across worlds, each world with its own intervention.

    Parameters
    ----------
    graph, cpts : networkx.DiGraph, dict
        The SCM: exogenous roots with distributions, endogenous nodes with 0/1 tables.
    exogenous : collection of str
        The noise nodes shared by all worlds.
    worlds : sequence of dict
        ``worlds[k]`` is the intervention ``{var: int | probability vector}`` of world ``k``
        (``{}`` for the factual world).
    query : sequence of (var, world)
        Variables of the answer, e.g. ``[("Y", 1)]`` for ``Y_x`` in world 1.
    evidence : dict, optional
        ``{(var, world): int | likelihood}``, e.g. ``{("X", 0): 0, ("Y", 0): 1}``.

    Returns
    -------
    torch.Tensor
        Shape ``(*batch, *card[query])``, normalised.

    Examples
    --------
    Probability of necessity ``P(Y_{x=0} = 0 | X = 1, Y = 1)``:
    ``counterfactual(g, cpts, {"U_X", "U_Y"}, [{}, {"X": 0}], [("Y", 1)],
    {("X", 0): 1, ("Y", 0): 1})[0]``.
    """
    if isinstance(worlds, Mapping) or not isinstance(worlds, Sequence) or not worlds:
        raise ArgumentError(
            f"Expected `worlds` to be a non-empty list of intervention dicts such as "
            f"[{{}}, {{'X': 1}}], but found {worlds!r}"
        )
    exogenous = set(check_exogenous(exogenous))
    n = len(worlds)
    if isinstance(query, (str, bytes)) or not query:
        raise ArgumentError(f"Expected `query` to be a list of (variable, world), got {query!r}")
    query = [_world_key(q, n, "query") for q in query]
    evidence = dict(evidence or {})
    keys = [_world_key(e, n, "evidence") for e in evidence]
    net, tables = twin_network(graph, cpts, exogenous, n)
    do: dict = {}
    for k, w in enumerate(worlds):
        if not isinstance(w, Mapping):
            raise ArgumentError(f"Expected worlds[{k}] to be a dict, but found {w!r}")
        for v, val in w.items():
            if v not in graph or v in exogenous:
                raise ArgumentError(
                    f"Expected worlds[{k}] to intervene on endogenous nodes, but found {v!r}"
                )
            do[_world_name(v, k)] = val

    def name(v, k):
        if v not in graph:
            raise ArgumentError(f"Expected nodes of `graph`, but found {v!r}")
        return v if v in exogenous else _world_name(v, k)

    q = tuple(name(v, k) for v, k in query)
    ev = {name(v, k): val for (v, k), val in zip(keys, evidence.values())}
    return CausalModel(net, tables).interventional(q, do, ev)


def response_function_scm(
    graph: nx.DiGraph, cpts: CPTs, max_functions: int = 4096
) -> tuple[nx.DiGraph, dict, set]:
    """An SCM reproducing a causal Bayesian network, with independent response-function noise.

    Each variable ``V`` gets a root ``U_V`` ranging over all functions ``f : pa(V) → V``
    (``card(V)^{#pa-configurations}`` states) with the independent coupling
    ``P(U_V = f) = Π_{pa} P(V = f(pa) | pa)``, and ``V = f(pa)``.  Interventional and
    observational distributions equal the network's; counterfactuals are those of this
    particular coupling (others are compatible with the same tables).

    Returns
    -------
    graph, cpts, exogenous
    """
    check_dag(graph)
    validate_cpts(cpts, graph)
    g = graph.copy()
    out: dict = {}
    exo = set()
    for v in graph.nodes:
        parents, table = cpts[v]
        k = table.shape[-1]
        pa_shape = tuple(table.shape[table.ndim - 1 - len(parents) : -1])
        configs = list(itertools.product(*(range(c) for c in pa_shape)))
        n_f = k ** len(configs)
        if n_f > max_functions:
            raise ArgumentError(
                f"Expected at most {max_functions} response functions for {v!r}, but it has "
                f"{n_f} ({k} states, {len(configs)} parent configurations)"
            )
        if table.ndim != len(parents) + 1:
            raise ArgumentError(f"Expected unbatched tables, but cpts[{v!r}] has batch axes")
        funcs = list(itertools.product(range(k), repeat=len(configs)))
        probs = torch.ones(n_f, dtype=table.dtype)
        det = torch.zeros(n_f, *pa_shape, k, dtype=table.dtype)
        for i, f in enumerate(funcs):
            for c, val in zip(configs, f):
                probs[i] = probs[i] * table[c + (val,)]
                det[(i, *c, val)] = 1.0
        u = f"U_{v}"
        if u in graph:
            raise ArgumentError(f"Expected no node named {u!r} in `graph` (noise names clash)")
        g.add_edge(u, v)
        exo.add(u)
        out[u] = ((), probs)
        out[v] = ((u, *parents), det)
    return g, out, exo


def pns_bounds(
    p_y_do_x: float,
    p_y_do_xp: float,
    p_xy: float | None = None,
    p_xpyp: float | None = None,
    p_y: float | None = None,
) -> dict[str, tuple[float, float]]:
    """Tian–Pearl (2000) bounds on PNS, and on PN when observational terms are given.

    ``PNS = P(y_x, y'_{x'})``: ``max(0, P(y_x) − P(y_{x'})) ≤ PNS ≤ min(P(y_x), P(y'_{x'}))``.
    ``PN = P(y'_{x'} | x, y)`` with ``p_xy = P(x, y)``, ``p_xpyp = P(x', y')``, ``p_y = P(y)``:
    ``max(0, (P(y) − P(y_{x'})) / P(x, y)) ≤ PN ≤ min(1, (P(y'_{x'}) − P(x', y')) / P(x, y))``.
    """
    out = {
        "PNS": (max(0.0, p_y_do_x - p_y_do_xp), min(p_y_do_x, 1.0 - p_y_do_xp)),
    }
    if p_xy is not None and p_xpyp is not None and p_y is not None:
        out["PN"] = (
            max(0.0, (p_y - p_y_do_xp) / p_xy),
            min(1.0, (1.0 - p_y_do_xp - p_xpyp) / p_xy),
        )
    return out


def _index(supports: Mapping[str, torch.Tensor], var: str, value, what: str):
    """The support index of ``value`` (ints, tensors of values, or probability vectors)."""
    support = supports[var]
    if torch.is_tensor(value) and value.is_floating_point() and value.ndim >= 1:
        if value.shape[-1] == len(support) and not torch.equal(value, value.round()):
            return value  # a probability vector / likelihood over the support
    v = torch.as_tensor(value, dtype=support.dtype)
    hit = v.unsqueeze(-1) == support
    if not bool(hit.any(-1).all()):
        raise ArgumentError(
            f"Expected {what} in the support {support.tolist()} of {var!r}, but found {value!r}"
        )
    out = hit.to(torch.long).argmax(-1)
    return int(out) if out.ndim == 0 else out


def counterfactual_from_model(
    model,
    exogenous: Iterable[str],
    worlds: Sequence[Mapping[str, object]],
    query: Sequence[tuple[str, int]],
    evidence: Mapping[tuple[str, int], object] | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
) -> torch.Tensor:
    """:func:`counterfactual` for a discrete, plate-free Pyro SCM (values in site supports).

    Exogenous sites are the noise; every other site must be deterministic given its parents
    (e.g. ``Categorical`` with one-hot probabilities).  The tables are read by enumeration
    (:func:`ppltk.causal.model_to_cpts`); interventions and evidence are given as values of
    the sites' supports; the answer's axes index those supports.
    """
    from ppltk.causal.pyro_bridge import model_to_cpts

    dm = model_to_cpts(model, *model_args, **(model_kwargs or {}))
    sup = dm.supports
    if isinstance(worlds, Mapping) or not isinstance(worlds, Sequence):
        raise ArgumentError(f"Expected `worlds` to be a list of intervention dicts, got {worlds!r}")
    for w in worlds:
        unknown = [v for v in w if v not in sup] if isinstance(w, Mapping) else []
        if unknown:
            raise ArgumentError(f"Expected sites of the model in `worlds`, but found {unknown}")
    worlds = [
        {v: _index(sup, v, val, f"worlds[{k}][{v!r}]") for v, val in w.items()}
        if isinstance(w, Mapping)
        else w
        for k, w in enumerate(worlds)
    ]
    ev = {}
    for key, val in dict(evidence or {}).items():
        var = key[0] if isinstance(key, tuple) and key else key
        if var not in sup:
            raise ArgumentError(f"Expected sites of the model in `evidence`, but found {var!r}")
        ev[key] = _index(sup, var, val, f"evidence[{key!r}]")
    exo = set(check_exogenous(exogenous))
    cpts = {}
    for v, (parents, t) in dm.cpts.items():
        tol = 16 * torch.finfo(t.dtype).eps  # Pyro clamps one-hot probabilities to [eps, 1-eps]
        if v not in exo and bool(((t <= tol) | (t >= 1 - tol)).all()):
            t = (t > 0.5).to(t.dtype)
        cpts[v] = (parents, t)
    return counterfactual(dm.graph, cpts, exo, worlds, query, ev)
