"""Syntax: causal string diagrams built from boxes, copies and discards.

A causal structure is a string diagram in a free copy-discard category (Jacobs, Kissinger,
Zanasi, FoSSaCS 2019, Sect. 3).  Wires are named by the variable they carry.  A *box*
``f_X : Pa(X) -> X`` has one output wire (its variable) and one input wire per parent; a
*cut* box (a state) has no inputs.  The copy and discard generators are determined by how
often a wire is used: a wire consumed by ``k`` boxes and/or exposed as an output is copied
``k``-fold (a :class:`Copy` of arity ``k``), a wire used nowhere is discarded (a
:class:`Discard`).  Latent (hidden) variables are wires that are never outputs.

Surgery ``cut_X`` (:func:`cut`) is structure preserving: it replaces the box of ``X`` by a
state box of the same type ``I -> X`` and leaves every other generator untouched; the
inputs of the old box become discarded if nothing else used them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx

from ppltk.errors import ArgumentError, ModelStructureError

__all__ = ["Box", "Copy", "Discard", "Diagram", "cut"]


@dataclass(frozen=True)
class Box:
    """A generator ``f : inputs -> name``; ``kind`` is ``"mechanism"`` or ``"state"`` (cut)."""

    name: str
    inputs: tuple[str, ...] = ()
    kind: str = "mechanism"


@dataclass(frozen=True)
class Copy:
    """The copy generator on wire ``wire`` with ``arity`` outputs (arity >= 2)."""

    wire: str
    arity: int


@dataclass(frozen=True)
class Discard:
    """The discard (ground) generator on wire ``wire``."""

    wire: str


@dataclass(frozen=True)
class Diagram:
    """A causal string diagram in normal form.

    Parameters
    ----------
    boxes : tuple of Box
        Boxes in a topological order (every input is an open input or an earlier box).
    outputs : tuple of str
        Wires exposed at the top of the diagram (the observed variables, in order).
    inputs : tuple of str
        Open input wires at the bottom (empty for a closed diagram, i.e. a state).
    latent : frozenset of str
        Variables declared hidden; they are never outputs.
    """

    boxes: tuple[Box, ...]
    outputs: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    latent: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        seen = set(self.inputs)
        for box in self.boxes:
            missing = [w for w in box.inputs if w not in seen]
            if missing:
                raise ModelStructureError(
                    f"Expected the inputs of box {box.name!r} to be open inputs or earlier boxes, "
                    f"but found undefined wires {missing}"
                )
            if box.name in seen:
                raise ModelStructureError(f"Expected one box per wire, but {box.name!r} repeats")
            seen.add(box.name)
        bad = [w for w in self.outputs if w not in seen]
        if bad:
            raise ModelStructureError(f"Expected outputs among the wires, but found {bad}")
        hidden = sorted(set(self.outputs) & set(self.latent))
        if hidden:
            raise ModelStructureError(f"Expected latent wires never to be outputs, found {hidden}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_graph(
        cls, graph: nx.DiGraph, latent: Iterable[str] = (), outputs: Iterable[str] | None = None
    ) -> Diagram:
        """Build the diagram of a DAG: one box per node, inputs its parents (sorted order).

        ``latent`` nodes are hidden wires; ``outputs`` defaults to all other nodes.
        """
        if not isinstance(graph, nx.DiGraph) or not nx.is_directed_acyclic_graph(graph):
            raise ArgumentError(f"Expected `graph` to be a networkx DAG, but found {graph!r}")
        latent = frozenset(latent)
        unknown = sorted(latent - set(graph.nodes))
        if unknown:
            raise ArgumentError(f"Expected `latent` to be graph nodes, but found {unknown}")
        order = list(nx.lexicographical_topological_sort(graph, key=str))
        boxes = tuple(Box(v, tuple(sorted(graph.predecessors(v), key=str))) for v in order)
        if outputs is None:
            outputs = [v for v in order if v not in latent]
        return cls(boxes, tuple(outputs), (), latent)

    @classmethod
    def box(cls, name: str, inputs: Iterable[str] = ()) -> Diagram:
        """The diagram of a single box ``inputs -> name`` with its inputs left open."""
        inputs = tuple(inputs)
        return cls((Box(name, inputs),), (name,), inputs)

    # ------------------------------------------------------------------ queries
    @property
    def variables(self) -> tuple[str, ...]:
        """Output wires of all boxes, in diagram order."""
        return tuple(b.name for b in self.boxes)

    def get(self, name: str) -> Box:
        """The box whose output wire is ``name``."""
        for b in self.boxes:
            if b.name == name:
                return b
        raise ArgumentError(f"Expected a variable of the diagram, but found {name!r}")

    def uses(self) -> Counter:
        """How many times each wire is used (by boxes and as an output)."""
        count: Counter = Counter({w: 0 for w in (*self.inputs, *self.variables)})
        for b in self.boxes:
            count.update(b.inputs)
        count.update(self.outputs)
        return count

    def generators(self) -> list[Box | Copy | Discard]:
        """The generators of the normal form: boxes, then a copy or discard per wire."""
        gens: list[Box | Copy | Discard] = list(self.boxes)
        for wire, n in self.uses().items():
            if n == 0:
                gens.append(Discard(wire))
            elif n > 1:
                gens.append(Copy(wire, n))
        return gens

    def to_graph(self) -> nx.DiGraph:
        """The DAG of the diagram (edges parent -> child); cut boxes have no parents."""
        g = nx.DiGraph()
        g.add_nodes_from(self.inputs)
        for b in self.boxes:
            g.add_node(b.name, kind=b.kind, latent=b.name in self.latent)
            g.add_edges_from((p, b.name) for p in b.inputs)
        return g

    # ------------------------------------------------------------------ composition
    def then(self, other: Diagram) -> Diagram:
        """Sequential composition with copying (``self ; (id ⊗ other) ∘ copy``).

        Every open input of ``other`` is plugged into the output of ``self`` with the same
        name (copied, so it stays an output); the result outputs ``self.outputs`` followed
        by ``other.outputs``.  This is how a Bayesian network is built box by box.
        """
        missing = [w for w in other.inputs if w not in self.outputs]
        if missing:
            raise ModelStructureError(
                f"Expected the inputs of `other` among the outputs {list(self.outputs)}, "
                f"but found unmatched {missing}"
            )
        self._check_disjoint(other, "then")
        return Diagram(
            self.boxes + other.boxes,
            self.outputs + other.outputs,
            self.inputs,
            self.latent | other.latent,
        )

    def tensor(self, other: Diagram) -> Diagram:
        """Parallel composition: disjoint boxes side by side (inputs and outputs concatenated)."""
        self._check_disjoint(other, "tensor")
        return Diagram(
            self.boxes + other.boxes,
            self.outputs + other.outputs,
            self.inputs + tuple(w for w in other.inputs if w not in self.inputs),
            self.latent | other.latent,
        )

    __rshift__ = then
    __matmul__ = tensor

    def _check_disjoint(self, other: Diagram, op: str) -> None:
        clash = sorted(set(self.variables) & set(other.variables))
        if clash:
            raise ModelStructureError(
                f"Expected `{op}` of diagrams with disjoint boxes, but both define {clash}"
            )

    def hide(self, wires: Iterable[str]) -> Diagram:
        """Mark ``wires`` latent: they are discarded instead of output."""
        wires = frozenset(wires)
        unknown = sorted(wires - set(self.variables))
        if unknown:
            raise ArgumentError(f"Expected variables of the diagram, but found {unknown}")
        outs = tuple(w for w in self.outputs if w not in wires)
        return Diagram(self.boxes, outs, self.inputs, self.latent | wires)

    def marginal(self, keep: Iterable[str]) -> Diagram:
        """Discard every output not in ``keep`` (order of ``keep`` kept)."""
        keep = tuple(keep)
        bad = [w for w in keep if w not in self.variables]
        if bad:
            raise ArgumentError(f"Expected `keep` among the variables, but found {bad}")
        return Diagram(self.boxes, keep, self.inputs, self.latent)

    def prune(self, needed: Iterable[str]) -> Diagram:
        """Drop boxes that are not ancestors of ``needed`` wires.

        Sound by causality of every box (discard ∘ f = discard): a box whose output is
        discarded and feeds nothing needed can be removed together with its inputs.
        """
        keep: set[str] = set()
        stack = [w for w in needed]
        by_name = {b.name: b for b in self.boxes}
        while stack:
            w = stack.pop()
            if w in keep:
                continue
            keep.add(w)
            if w in by_name:
                stack.extend(by_name[w].inputs)
        boxes = tuple(b for b in self.boxes if b.name in keep)
        outs = tuple(w for w in self.outputs if w in keep)
        return Diagram(boxes, outs, tuple(w for w in self.inputs if w in keep), self.latent)


def cut(diagram: Diagram, variables: Iterable[str]) -> Diagram:
    """String-diagram surgery ``cut_X``: replace each box ``f_X`` by a state box ``I -> X``.

    The result has exactly the same generators except that the cut boxes lose their
    inputs (their former input wires are copied once less, or discarded).  Interpreting the
    state box by a point state ``δ_x`` gives Pearl's ``do(X = x)``; by a distribution, a
    stochastic intervention.  ``cut`` is idempotent and commutes with itself.
    """
    if isinstance(variables, str):
        variables = (variables,)
    targets = set(variables)
    unknown = sorted(targets - set(diagram.variables))
    if unknown:
        raise ArgumentError(
            f"Expected `variables` among the diagram's boxes {list(diagram.variables)}, "
            f"but found {unknown}"
        )
    boxes = tuple(Box(b.name, (), "state") if b.name in targets else b for b in diagram.boxes)
    return Diagram(boxes, diagram.outputs, diagram.inputs, diagram.latent)
