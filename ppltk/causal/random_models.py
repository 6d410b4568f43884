"""Random causal models (DAG + tables) for tests, benchmarks and demos."""

from __future__ import annotations

import networkx as nx
import torch

from ppltk._rng import make_generator

__all__ = ["random_causal_model"]


def random_causal_model(
    n_nodes: int,
    edge_prob: float = 0.4,
    max_card: int = 3,
    n_latent: int = 0,
    concentration: float = 1.0,
    seed: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
):
    """A random DAG on ``X0..X{n-1}`` with Dirichlet tables and ``n_latent`` hidden nodes.

    Edges ``Xi -> Xj`` (``i < j``) appear with probability ``edge_prob``; hidden nodes are
    chosen among nodes with at least two children (confounders) when possible.

    Returns
    -------
    graph, cpts, latent : networkx.DiGraph, dict, set
    """
    gen = make_generator(seed)
    names = [f"X{i}" for i in range(n_nodes)]
    g = nx.DiGraph()
    g.add_nodes_from(names)
    for j in range(n_nodes):
        for i in range(j):
            if torch.rand((), generator=gen).item() < edge_prob:
                g.add_edge(names[i], names[j])
    card = {v: int(torch.randint(2, max_card + 1, (), generator=gen)) for v in names}
    cpts = {}
    for v in names:
        parents = tuple(sorted(g.predecessors(v), key=lambda s: int(s[1:])))
        shape = (*(card[p] for p in parents), card[v])
        gam = torch._standard_gamma(torch.full(shape, concentration, dtype=dtype), generator=gen)
        cpts[v] = (parents, gam / gam.sum(-1, keepdim=True))
    confounders = [v for v in names if g.out_degree(v) >= 2] or names
    perm = torch.randperm(len(confounders), generator=gen).tolist()
    latent = {confounders[i] for i in perm[:n_latent]}
    return g, cpts, latent
