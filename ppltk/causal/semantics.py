"""Semantics: interpret a diagram in stochastic matrices and evaluate it by one einsum.

An interpretation maps each box ``f_X : Pa(X) -> X`` to a conditional probability tensor
``cpts[X] = (parents, T)`` with ``T[..., pa_1, ..., pa_k, x] = P(X = x | Pa = pa)``; the
leading ``...`` are optional batch dimensions shared by all tensors (broadcast).  A state
box (after :func:`~ppltk.causal.cut`) is interpreted by a vector ``σ[..., x]``.

Evaluating a closed diagram with outputs ``Q`` and evidence ``E = e`` is the contraction

.. math::

    \\tilde P(q, e) = \\sum_{v \\setminus q} \\prod_{X \\text{ box}} T_X(x \\mid pa_X)
        \\prod_{X \\text{ cut}} σ_X(x) \\prod_{E} λ_E(e),

written as a single einsum whose equation is read off the diagram: one index per wire, one
operand per generator, copies are repeated indices and discards are summed indices.  It runs
on torch tensors along opt_einsum's contraction path (the optimiser behind ``torch.einsum``),
cached per equation; no joint table over all variables is ever built, the result is
differentiable in every tensor and batched over ``...``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import networkx as nx
import opt_einsum
import torch

from ppltk.causal.diagram import Diagram
from ppltk.errors import ArgumentError, ShapeError

__all__ = ["validate_cpts", "cardinalities", "evaluate", "as_state"]

CPTs = Mapping[str, tuple[tuple[str, ...], torch.Tensor]]


def _tolerance(t: torch.Tensor) -> float:
    return 1e-9 if t.dtype == torch.float64 else 1e-5


def _check_entry(var: str, entry) -> tuple[tuple[str, ...], torch.Tensor]:
    if not (isinstance(entry, tuple) and len(entry) == 2):
        raise ArgumentError(
            f"Expected cpts[{var!r}] to be a tuple (parents, tensor), but found {type(entry)}"
        )
    parents, table = entry
    if isinstance(parents, str) or not all(isinstance(p, str) for p in parents):
        raise ArgumentError(f"Expected cpts[{var!r}][0] to be a tuple of names, got {parents!r}")
    if not torch.is_tensor(table) or not table.is_floating_point():
        raise ArgumentError(f"Expected cpts[{var!r}] to hold a float tensor, but found {table!r}")
    parents = tuple(parents)
    if table.ndim < len(parents) + 1:
        raise ShapeError(
            f"Expected cpts[{var!r}] with axes (*parents, {var}) of ndim >= {len(parents) + 1}, "
            f"but found shape {tuple(table.shape)}"
        )
    return parents, table


def _check_stochastic(var: str, table: torch.Tensor) -> None:
    if not torch.isfinite(table).all() or (table < 0).any():
        raise ArgumentError(
            f"Expected cpts[{var!r}] to be finite and non-negative, but found min "
            f"{table.min().item():.3g} (shape {tuple(table.shape)})"
        )
    err = (table.sum(-1) - 1).abs().max().item()
    if err > _tolerance(table):
        raise ArgumentError(
            f"Expected cpts[{var!r}] to sum to one along its last axis ({var}), but found a "
            f"maximum deviation {err:.3g} (shape {tuple(table.shape)})"
        )


def cardinalities(cpts: CPTs) -> dict[str, int]:
    """Number of states of each variable, read from the last axis of its table."""
    return {v: int(t.shape[-1]) for v, (_, t) in cpts.items()}


def validate_cpts(cpts: CPTs, graph: nx.DiGraph | None = None) -> dict[str, int]:
    """Check an interpretation and return the cardinalities.

    Checks: every entry is ``(parents, tensor)``; the tensor is non-negative, finite and sums
    to one along the child axis; each parent axis has the parent's cardinality; when
    ``graph`` is given, parents equal the graph's predecessors and every node has a table.
    """
    if not isinstance(cpts, Mapping):
        raise ArgumentError(
            f"Expected `cpts` to be a dict {{var: (parents, tensor)}}, got {cpts!r}"
        )
    checked = {v: _check_entry(v, e) for v, e in cpts.items()}
    card = {v: int(t.shape[-1]) for v, (_, t) in checked.items()}
    for var, (parents, table) in checked.items():
        _check_stochastic(var, table)
        for i, p in enumerate(parents):
            if p not in card:
                raise ArgumentError(f"Expected a table for parent {p!r} of {var!r}, found none")
            size = table.shape[table.ndim - 1 - len(parents) + i]
            if size != card[p]:
                raise ShapeError(
                    f"Expected axis {i} of cpts[{var!r}] (parent {p!r}) to have size {card[p]}, "
                    f"but found shape {tuple(table.shape)}"
                )
    if graph is not None:
        _check_against_graph(checked, graph)
    return card


def _check_against_graph(checked: dict, graph: nx.DiGraph) -> None:
    missing = sorted(set(graph.nodes) - set(checked), key=str)
    if missing:
        raise ArgumentError(f"Expected a table for every graph node, but found none for {missing}")
    for var, (parents, _) in checked.items():
        if var not in graph:
            raise ArgumentError(f"Expected cpts only for graph nodes, but found {var!r}")
        if set(parents) != set(graph.predecessors(var)):
            raise ArgumentError(
                f"Expected the parents of {var!r} to be {sorted(graph.predecessors(var), key=str)}"
                f" as in `graph`, but found {list(parents)}"
            )


def as_state(
    value, card: int, like: torch.Tensor, name: str = "value", normalised: bool = True
) -> torch.Tensor:
    """A vector ``σ[..., card]`` from an int/int tensor (point state) or a float vector.

    ``normalised=True`` requires a probability vector (a state); ``False`` accepts any
    non-negative likelihood (soft evidence, an effect in the diagram's terms).
    """
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) or (torch.is_tensor(value) and not value.is_floating_point()):
        v = torch.as_tensor(value, device=like.device)
        if (v < 0).any() or (v >= card).any():
            raise ArgumentError(f"Expected {name} in [0, {card}), but found {value!r}")
        return torch.nn.functional.one_hot(v.long(), card).to(like.dtype)
    try:
        v = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ArgumentError(
            f"Expected {name} to be an int or a probability vector, but found {value!r}"
        ) from error
    if not bool(torch.isfinite(v).all()):
        raise ArgumentError(f"Expected {name} to be finite, but found {v}")
    if v.ndim == 0 or v.shape[-1] != card:
        raise ShapeError(
            f"Expected {name} to be an int or a probability vector of size {card}, but found "
            f"shape {tuple(v.shape)}"
        )
    if (v < 0).any() or (normalised and ((v.sum(-1) - 1).abs() > 1e-6).any()):
        kind = "a probability vector" if normalised else "non-negative"
        raise ArgumentError(f"Expected {name} to be {kind}, but found {v}")
    return v


def _symbols(names) -> dict[str, str]:
    return {n: opt_einsum.get_symbol(i) for i, n in enumerate(names)}


def einsum_equation(
    diagram: Diagram,
    cpts: CPTs,
    states: Mapping[str, torch.Tensor],
    likelihoods: Mapping[str, torch.Tensor],
    outputs: tuple[str, ...],
) -> tuple[str, list[torch.Tensor]]:
    """Read the einsum equation and operands off the (pruned) diagram."""
    sym = _symbols([b.name for b in diagram.boxes])
    terms, operands = [], []
    for box in diagram.boxes:
        if box.kind == "state":
            if box.name not in states:
                raise ArgumentError(f"Expected a state for the cut variable {box.name!r}")
            terms.append("..." + sym[box.name])
            operands.append(states[box.name])
            continue
        parents, table = cpts[box.name]
        if set(parents) != set(box.inputs):
            raise ArgumentError(
                f"Expected cpts[{box.name!r}] to have parents {list(box.inputs)}, "
                f"but found {list(parents)}"
            )
        terms.append("..." + "".join(sym[p] for p in parents) + sym[box.name])
        operands.append(table)
    for var, lam in likelihoods.items():
        terms.append("..." + sym[var])
        operands.append(lam)
    eq = ",".join(terms) + "->..." + "".join(sym[v] for v in outputs)
    dtypes = {op.dtype for op in operands}
    if len(dtypes) == 1:
        return eq, operands
    dtype = functools.reduce(torch.promote_types, dtypes)
    return eq, [op if op.dtype == dtype else op.to(dtype) for op in operands]


def evaluate(
    diagram: Diagram,
    cpts: CPTs,
    outputs: tuple[str, ...] | None = None,
    states: Mapping[str, torch.Tensor] | None = None,
    likelihoods: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The (unnormalised when ``likelihoods`` are given) state of a closed diagram.

    Parameters
    ----------
    diagram : Diagram
        A closed diagram (no open inputs).
    cpts : dict
        Tables of the mechanism boxes ``{var: (parents, tensor)}``.
    outputs : tuple of str, optional
        Wires to keep (default ``diagram.outputs``); all others are discarded.
    states : dict, optional
        ``{var: σ[..., card]}`` for the state (cut) boxes.
    likelihoods : dict, optional
        ``{var: λ[..., card]}`` effects multiplied in (one-hot for hard evidence).

    Returns
    -------
    torch.Tensor
        Shape ``(*batch, *card[outputs])``: ``Σ_{others} Π tables · Π states · Π λ``.
    """
    if diagram.inputs:
        raise ArgumentError(f"Expected a closed diagram, but it has inputs {diagram.inputs}")
    outputs = tuple(diagram.outputs if outputs is None else outputs)
    states = dict(states or {})
    likelihoods = dict(likelihoods or {})
    unknown = [v for v in (*outputs, *likelihoods) if v not in diagram.variables]
    if unknown:
        raise ArgumentError(f"Expected variables of the diagram, but found {unknown}")
    pruned = diagram.prune([*outputs, *likelihoods])
    eq, operands = einsum_equation(pruned, cpts, states, likelihoods, outputs)
    out = contract(eq, operands)
    # pruned boxes may carry batch axes too: the answer is constant along them
    tables = [cpts[b.name] for b in diagram.boxes if b.kind != "state" and b.name in cpts]
    batch = torch.broadcast_shapes(
        *(t.shape[: t.ndim - len(p) - 1] for p, t in tables),
        *(v.shape[:-1] for v in (*states.values(), *likelihoods.values())),
    )
    return out.expand(*batch, *out.shape[out.ndim - len(outputs) :])


@functools.lru_cache(maxsize=4096)
def _expression(eq: str, shapes: tuple[tuple[int, ...], ...]):
    return opt_einsum.contract_expression(eq, *shapes, optimize="greedy")


def contract(eq: str, operands: list[torch.Tensor]) -> torch.Tensor:
    """Evaluate the einsum ``eq`` (one contraction; path found once per equation and shapes).

    The contraction order is opt_einsum's greedy path (the optimiser ``torch.einsum`` uses),
    cached per equation, so repeated queries skip path search; any number of indices works.
    """
    expr = _expression(eq, tuple(tuple(op.shape) for op in operands))
    return expr(*operands, backend="torch")
