"""Convert between ppltk tables ``{var: (parents, T)}`` and pgmpy discrete Bayesian networks.

pgmpy is an optional dependency (the ``test``/``bench`` extras); it is imported lazily.
pgmpy stores ``values[child_state, parent_configuration]`` with the first parent varying
slowest, i.e. our ``T`` with axes ``(*parents, child)`` moved to ``(child, *parents)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import torch

__all__ = ["from_pgmpy", "to_pgmpy"]


def from_pgmpy(model, dtype: torch.dtype = torch.float64):
    """``(graph, cpts, state_names)`` of a pgmpy ``DiscreteBayesianNetwork``."""
    graph, cpts, states = nx.DiGraph(), {}, {}
    graph.add_nodes_from(model.nodes())
    for cpd in model.get_cpds():
        var, parents = cpd.variable, tuple(cpd.variables[1:])
        values = torch.as_tensor(cpd.values, dtype=dtype)  # (child, *parents)
        table = values.permute(*range(1, values.ndim), 0).contiguous()
        table = table / table.sum(-1, keepdim=True)  # pgmpy files carry rounding error
        cpts[var] = (parents, table)
        graph.add_edges_from((p, var) for p in parents)
        states[var] = list(cpd.state_names[var])
    return graph, cpts, states


def to_pgmpy(graph: nx.DiGraph, cpts: Mapping[str, tuple], latents=()):
    """A pgmpy ``DiscreteBayesianNetwork`` with states ``0..k-1`` (optionally with latents)."""
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.models import DiscreteBayesianNetwork

    model = DiscreteBayesianNetwork(list(graph.edges), latents=set(latents))
    model.add_nodes_from(graph.nodes)
    card = {v: int(t.shape[-1]) for v, (_, t) in cpts.items()}
    for var, (parents, table) in cpts.items():
        k = card[var]
        values = table.detach().double().reshape(-1, k).T.cpu().numpy()
        cpd = TabularCPD(
            var,
            k,
            values,
            evidence=list(parents) or None,
            evidence_card=[card[p] for p in parents] or None,
        )
        model.add_cpds(cpd)
    return model
