"""Brute-force oracle shared by the causal tests (imported in rootdir mode, like
``tests/filtering/_filtering_helpers.py``)."""

from __future__ import annotations

from itertools import product

import torch


def brute(graph, cpts, query, do, evidence=None):
    """``P(query | do, evidence)`` by enumerating every joint assignment in plain Python:

    P(q, e | do(x)) = Σ_{v ∖ (q, e)} Π_{V ∉ X} P(v | pa_V)  with X fixed to x,

    normalised over ``query``; ``cpts[v] = (parents, table[*parents, v])``.
    """
    evidence = evidence or {}
    names = list(graph.nodes)
    card = {v: cpts[v][1].shape[-1] for v in names}
    out = torch.zeros(*(card[q] for q in query), dtype=torch.float64)
    for vals in product(*(range(card[v]) for v in names)):
        a = dict(zip(names, vals))
        if any(a[x] != val for x, val in {**do, **evidence}.items()):
            continue
        p = 1.0
        for v in names:
            if v not in do:
                parents, table = cpts[v]
                p *= float(table[tuple(a[u] for u in parents) + (a[v],)])
        out[tuple(a[q] for q in query)] += p
    return out / out.sum()
