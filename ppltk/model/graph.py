"""Capture a batched log-density as a static graph of tensor operations.

Evaluating a Pyro model re-runs its Python code and Pyro's handler stack at every call.  For
models whose control flow does not depend on the values of their latent variables (the usual
case) the same tensor operations run each time, so they can be recorded once with
``torch.fx.experimental.proxy_tensor.make_fx`` -- forward and backward -- and replayed without
any Python-level model code (``"fx"``), or further compiled by ``torch.compile``
(``"inductor"``, after a one-off compilation of tens of seconds).

A captured graph is checked against the eager computation at fresh random points before it is
used; a mismatch (value-dependent control flow, randomness inside the model) falls back to
eager evaluation with a :class:`~ppltk.errors.VectorisationWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ppltk.errors import VectorisationWarning

BACKENDS = ("auto", "eager", "fx", "inductor")


class GraphCache:
    """Captured graphs of ``fn`` keyed by the input's shape, dtype and device.

    Parameters
    ----------
    fn
        The eager function ``z [B, D] -> tensor or tuple of tensors``.
    backend
        ``"fx"`` (replay the recorded operations) or ``"inductor"`` (``torch.compile`` them).
    name
        Used in the fallback warning.
    """

    def __init__(self, fn: Callable, backend: str, name: str) -> None:
        self.fn, self.backend, self.name = fn, backend, name
        self.graphs: dict[tuple, Callable] = {}
        self.failed = False

    def __call__(self, z: torch.Tensor):
        if self.failed:
            return self.fn(z)
        key = (tuple(z.shape), z.dtype, z.device)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self._capture(z)
            if graph is None:
                return self.fn(z)
            self.graphs[key] = graph
        return graph(z)

    def _capture(self, z: torch.Tensor) -> Callable | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # vmap/loop fallback warnings are re-raised eagerly
                graph = make_fx(lambda x: self.fn(x))(z.detach())
            graph.graph.eliminate_dead_code()
            graph.recompile()
            probe = z.detach() + 0.1 * torch.randn(z.shape, dtype=z.dtype, device=z.device)
            if not _agree(graph(probe), self.fn(probe)) or not _agree(graph(z), self.fn(z)):
                raise RuntimeError("the captured graph disagrees with the eager model")
        except Exception as error:  # noqa: BLE001 - any capture failure means eager evaluation
            self.failed = True
            warnings.warn(
                f"{self.name}: the model could not be captured as a static graph ({error!r:.160}); "
                "evaluating it eagerly (slower). Pass backend='eager' to silence this.",
                VectorisationWarning,
                stacklevel=4,
            )
            return None
        if self.backend == "inductor":
            return _compiled_or_fx(graph, z, self.name)
        return graph


def _compiled_or_fx(graph: Callable, z: torch.Tensor, name: str) -> Callable:
    """``torch.compile`` the captured graph; keep the plain graph if compilation fails
    (e.g. no C compiler on the machine)."""
    compiled = torch.compile(graph, dynamic=False, fullgraph=True)
    try:
        if not _agree(compiled(z.detach()), graph(z.detach())):
            raise RuntimeError("the compiled graph disagrees with the captured graph")
    except Exception as error:  # noqa: BLE001 - any compiler failure keeps the fx graph
        warnings.warn(
            f"{name}: torch.compile failed ({error!r:.160}); using the captured graph uncompiled.",
            VectorisationWarning,
            stacklevel=5,
        )
        return graph
    return compiled


def _agree(a, b) -> bool:
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    tol = 1e-10 if a[0].dtype == torch.float64 else 1e-4
    return all(
        torch.allclose(x, y, rtol=tol, atol=tol, equal_nan=True) for x, y in zip(a, b, strict=True)
    )
