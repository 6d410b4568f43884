"""A fingerprint of the tensor computation a function performs, without tracing it into a graph.

Tracing with ``make_fx`` imports TorchDynamo (about a second per process).  A run whose compiled
library is already on disk only needs to know *which* library computes its function, and which
of the tensors the function reads (the model's data) to pass in: :func:`fingerprint` runs the
function once under a dispatch mode that writes down every ATen operation with where each of
its tensor arguments comes from (an input, an earlier operation's output, or a tensor the
function holds -- with its value when it has one element, as those are compiled into the code).
Equal fingerprints mean the same operations on the same kinds of tensors; the values of the
held tensors with more than one element are not part of it (they are passed to the library).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map


def _layout(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), str(t.dtype), t.stride(), str(t.device))


class _Recorder(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # else torch wraps the handler, importing TorchDynamo
        return False

    def __init__(self, inputs: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.names: dict[int, str] = {}
        self.alive: list[torch.Tensor] = []  # keeps ids unique while recording
        self.constants: list[torch.Tensor] = []
        self.lines: list[str] = [repr([_layout(t) for t in inputs])]
        for i, t in enumerate(inputs):
            self._name(t, f"in{i}")

    def _name(self, t: torch.Tensor, name: str) -> None:
        self.names[id(t)] = name
        self.alive.append(t)

    def _ref(self, x):
        if not isinstance(x, torch.Tensor):
            return repr(x)
        name = self.names.get(id(x))
        if name is None:  # a tensor the function holds (data) or made outside any operation
            name = f"c{len(self.constants)}{_layout(x)}"
            if x.numel() == 1:
                name += f"={x.item()!r}"
            self.constants.append(x)
            self._name(x, name)
        return name

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        line = f"{func}{tree_map(self._ref, (args, kwargs))}"
        out = func(*args, **kwargs)
        outputs, _ = tree_flatten(out)
        names = []
        for t in outputs:
            if isinstance(t, torch.Tensor):
                names.append(f"v{len(self.lines)}_{len(names)}")
                self._name(t, names[-1])
        self.lines.append(f"{','.join(names)}={line}")
        return out


class Fingerprint(NamedTuple):
    key: str
    """Hex digest of the operations (see the module's description)."""
    held: list[torch.Tensor]
    """The tensors the function holds, in the order it first reads them."""
    num_operations: int
    """How many ATen operations one evaluation runs."""


def fingerprint(fn: Callable, *inputs: torch.Tensor) -> Fingerprint:
    """Run ``fn(*inputs)`` once, recording its operations."""
    recorder = _Recorder(inputs)
    with recorder:
        result = fn(*inputs)
    outputs, _ = tree_flatten(result)
    recorder.lines.append(repr([recorder._ref(t) for t in outputs]))
    key = hashlib.sha256("\n".join(recorder.lines).encode()).hexdigest()[:40]
    return Fingerprint(key, recorder.constants, len(recorder.lines) - 2)
