"""Interventional distributions by surgery on the diagram of a causal model.

``P(Q | do(X = σ), E = e)`` is the cut diagram ``cut_X(D)`` interpreted with the state ``σ``
at ``X`` (a point state ``δ_x`` for a hard intervention), conditioned on ``e``:

.. math::

    P(q \\mid do(σ), e) = \\frac{\\sum_x σ(x) \\sum_{v \\setminus \\{q, e\\}}
        \\prod_{V \\notin X} P(v \\mid pa_V)}{\\text{same summed over } q},

which is Pearl's truncated factorisation.  The second route (``route="condition"``)
interprets the cut box by the *uniform* state and then conditions on ``X`` with likelihood
``σ``; since the cut ``X`` has no ancestors the two agree exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import networkx as nx
import torch

from ppltk.causal.diagram import Diagram, cut
from ppltk.causal.identification import check_dag
from ppltk.causal.semantics import CPTs, as_state, evaluate, validate_cpts
from ppltk.errors import ArgumentError

__all__ = ["CausalModel", "interventional", "normalise"]


def normalise(joint: torch.Tensor, n_axes: int, what: str = "evidence") -> torch.Tensor:
    """Divide by the sum over the last ``n_axes`` axes; a clear error when it is zero."""
    dims = tuple(range(joint.ndim - n_axes, joint.ndim))
    z = joint.sum(dims, keepdim=True) if dims else joint
    if (z <= 0).any():
        raise ArgumentError(f"Expected {what} of positive probability, but it has probability 0")
    return joint / z


def _check_names(graph: nx.DiGraph, names: Sequence[str], arg: str) -> None:
    bad = [v for v in names if v not in graph]
    if bad:
        raise ArgumentError(f"Expected `{arg}` to name nodes of `graph`, but found {bad}")


class CausalModel:
    """A validated causal model (DAG with latents + tables) answering interventional queries.

    Validation and the diagram are built once; each query is surgery + one einsum whose
    contraction path is cached, so repeated queries are cheap.
    """

    def __init__(self, graph: nx.DiGraph | Diagram, cpts: CPTs):
        if isinstance(graph, Diagram):
            self.diagram, self.graph = graph, graph.to_graph()
        else:
            self.diagram, self.graph = Diagram.from_graph(check_dag(graph)), graph
        self.card = validate_cpts(cpts, self.graph)
        self.cpts = dict(cpts)
        self._like = next(iter(self.cpts.values()))[1]

    def interventional(
        self,
        query: Sequence[str],
        do: Mapping[str, object] | None = None,
        evidence: Mapping[str, object] | None = None,
        route: str = "point",
    ) -> torch.Tensor:
        """``P(query | do, evidence)``; see :func:`interventional`."""
        if isinstance(query, str) or not query:
            raise ArgumentError(f"Expected `query` to be a non-empty tuple of names, got {query!r}")
        for arg, value in (("do", do), ("evidence", evidence)):
            if value is not None and not isinstance(value, Mapping):
                raise ArgumentError(
                    f"Expected `{arg}` to be a mapping {{variable: value}} such as {{'X': 1}}, "
                    f"but found {type(value).__name__} {value!r}"
                )
        query, do, evidence = tuple(query), dict(do or {}), dict(evidence or {})
        if route not in ("point", "condition"):
            raise ArgumentError(f"Expected `route` in ('point', 'condition'), but found {route!r}")
        for arg, names in (("query", query), ("do", do), ("evidence", evidence)):
            _check_names(self.graph, names, arg)
        if len(set(query)) != len(query):
            raise ArgumentError(f"Expected `query` without repeated names, but found {query}")
        card, like = self.card, self._like
        sigma = {x: as_state(v, card[x], like, f"do[{x!r}]") for x, v in do.items()}
        lam = {
            e: as_state(v, card[e], like, f"evidence[{e!r}]", normalised=False)
            for e, v in evidence.items()
        }
        if route == "point":
            states = sigma
        else:
            states = {
                x: torch.full((card[x],), 1.0 / card[x], dtype=like.dtype, device=like.device)
                for x in do
            }
            lam = {**lam, **{x: s * lam[x] if x in lam else s for x, s in sigma.items()}}
        joint = evaluate(cut(self.diagram, do.keys()), self.cpts, query, states, lam)
        return normalise(joint, len(query))


def interventional(
    graph: nx.DiGraph | Diagram,
    cpts: CPTs,
    query: Sequence[str],
    do: Mapping[str, object] | None = None,
    evidence: Mapping[str, object] | None = None,
    route: str = "point",
) -> torch.Tensor:
    """``P(query | do, evidence)`` on the true model, by string-diagram surgery.

    Parameters
    ----------
    graph : networkx.DiGraph or Diagram
        The causal DAG including latent nodes (their tables given in ``cpts``).
    cpts : dict
        ``{var: (parents, tensor)}`` with tensor axes ``(*batch, *parents, var)``.
    query : sequence of str
        Variables of the answer, in axis order.
    do : dict, optional
        ``{var: int | int tensor | probability vector}``; an int is a hard intervention, a
        vector a stochastic one (batched values allowed: leading axes broadcast).
    evidence : dict, optional
        ``{var: int | likelihood vector}`` observed after the intervention.
    route : {"point", "condition"}
        Interpret the cut box by the intervention state (``"point"``) or by the uniform
        state followed by conditioning on the intervention (``"condition"``).

    Returns
    -------
    torch.Tensor
        Shape ``(*batch, *card[query])``, normalised over the query axes.

    Examples
    --------
    >>> import networkx as nx, torch
    >>> g = nx.DiGraph([("X", "Y")])
    >>> cpts = {"X": ((), torch.tensor([0.5, 0.5])),
    ...         "Y": (("X",), torch.tensor([[0.9, 0.1], [0.2, 0.8]]))}
    >>> interventional(g, cpts, ("Y",), {"X": 1})
    tensor([0.2000, 0.8000])
    """
    return CausalModel(graph, cpts).interventional(query, do, evidence, route)
