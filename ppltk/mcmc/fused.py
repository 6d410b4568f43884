"""One leapfrog step, the log-density, its gradient and the energy as one compiled kernel.

NUTS spends most of its time per leapfrog step outside the model on small models: a dozen
batched tensor operations (momentum and position updates, the non-finite guard, the velocity
:math:`M^{-1}p` and the energy), each a separate dispatch of a few microseconds.  A
:class:`FusedLeapfrog` records the whole step, with the log-density, as one static graph
(``make_fx``) and compiles it with TorchInductor (:func:`ppltk.model.graph.compile_graph`),
so a step is one call of generated C++ (or Triton) code:

.. math::
    p_{1/2} = p + \\tfrac{\\epsilon}{2}\\nabla\\log\\pi(z),\\quad
    z' = z + \\epsilon M^{-1}p_{1/2},\\quad
    p' = p_{1/2} + \\tfrac{\\epsilon}{2}\\nabla\\log\\pi(z'),\\quad
    -H' = \\log\\pi(z') - \\tfrac12 p'^\\top M^{-1} p'.

A point where the log-density or its gradient is not finite gets :math:`\\log\\pi=-\\infty`
and a zero gradient, as :class:`~ppltk.mcmc.GuardedDensity` gives it.  The compiled step is
checked against the uncompiled one at the capture point and at a perturbed point; any failure
to capture, compile or agree (e.g. control flow that depends on latent values) turns fusion
off for that density with a :class:`~ppltk.errors.VectorisationWarning`, and a step at which
the compiled code raises (e.g. a failed Cholesky inside the model) is recomputed unfused, so
the failing chains alone are rejected.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ppltk.errors import VectorisationWarning
from ppltk.mcmc._base import LogDensityFn
from ppltk.model.graph import EVALUATION_ERRORS, compile_graph, relative_difference

__all__ = ["FusedLeapfrog"]

_FLOAT_OUTPUTS = 6  # z', grad', p', p'#, lp', -H' (then the bool outputs within, bad)


def _leaf_function(fn: LogDensityFn, dense: bool) -> Callable:
    def leaf(z, g, p, half, scale, minv, threshold):
        p_half = torch.addcmul(p, half, g)
        if dense:
            z_new = torch.addcmul(z, scale, torch.matmul(minv, p_half.unsqueeze(-1)).squeeze(-1))
        else:
            z_new = torch.addcmul(z, scale, p_half)
        lp, g_new = fn(z_new)
        bad = ~torch.isfinite(lp + g_new.sum(-1))
        lp = torch.where(bad, -math.inf, lp)
        g_new = torch.where(bad.unsqueeze(-1), 0.0, g_new)
        p_new = torch.addcmul(p_half, half, g_new)
        if dense:
            sharp = torch.matmul(minv, p_new.unsqueeze(-1)).squeeze(-1)
        else:
            sharp = minv * p_new
        neg_h = torch.sub(lp, torch.linalg.vecdot(p_new, sharp), alpha=0.5)
        return z_new, g_new, p_new, sharp, lp, neg_h, neg_h >= threshold, bad

    return leaf


class FusedLeapfrog:
    """Compiled leapfrog steps, one per log-density and input shape.

    ``step(ld, z, g, p, half, scale, minv, threshold)`` returns ``(z', grad', p', p'#, lp',
    -H', within, bad)`` for a batch of chains, where ``half`` is :math:`\\epsilon/2`
    ``[C, 1]``, ``scale`` is :math:`\\epsilon M^{-1}` ``[C, D]`` (diagonal metric) or
    :math:`\\epsilon` ``[C, 1]`` (dense ``minv [C, D, D]``), ``within`` is
    :math:`-H' \\ge` ``threshold`` and ``bad`` marks non-finite points; or ``None`` when the
    step cannot be fused (the caller then takes the unfused path).  When ``ld`` is a
    :class:`~ppltk.mcmc.GuardedDensity`, its own function is fused and its per-chain
    non-finite counts are updated.
    """

    def __init__(self) -> None:
        self._steps: dict[tuple, tuple[Callable, Callable] | None] = {}

    def __getstate__(self) -> dict:  # compiled code does not pickle: rebuilt where used
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def step(self, ld, z, g, p, half, scale, minv, threshold):
        fn = getattr(ld, "fn", ld)
        # compiled code assumes the strides it was compiled for (edges arrive as views)
        args = (z.contiguous(), g.contiguous(), p.contiguous(), half, scale, minv, threshold)
        key = (id(fn), minv.dim(), scale.shape[-1], z.shape, z.dtype, z.device)
        entry = self._steps.get(key, False)
        if entry is False:
            entry = self._steps[key] = self._build(fn, minv.dim() == 3, args)
        if entry is None:
            return None
        try:
            out = entry[1](*args)
        except AssertionError:  # an input with other strides than at compilation
            out = entry[1](*(a.contiguous() for a in args))
        except EVALUATION_ERRORS:  # some chain's point raised: recompute this step unfused
            return None
        nonfinite = getattr(ld, "nonfinite", None)
        if nonfinite is not None and nonfinite.shape == out[7].shape:
            ld.nonfinite = nonfinite + out[7]
        return out

    def _build(self, fn, dense: bool, args) -> tuple[Callable, Callable] | None:
        leaf = _leaf_function(fn, dense)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = make_fx(leaf)(*args)
            graph.graph.eliminate_dead_code()
            graph.recompile()
            compiled = compile_graph(graph, list(args))
            gen = torch.Generator(device=args[0].device).manual_seed(0)
            probe = args[0] + 0.1 * torch.randn(
                args[0].shape, generator=gen, dtype=args[0].dtype, device=args[0].device
            )
            for point in (args, (probe, *args[1:])):
                try:
                    eager = leaf(*point)
                except EVALUATION_ERRORS:  # the model fails at the probe: check at z only
                    continue
                diff = relative_difference(
                    tuple(compiled(*point))[:_FLOAT_OUTPUTS], eager[:_FLOAT_OUTPUTS]
                )
                tol = 1e-6 if args[0].dtype == torch.float64 else 1e-3
                if not diff <= tol:
                    raise RuntimeError(
                        f"the compiled step differs from the uncompiled one by {diff:.2g} "
                        f"(relative, tolerance {tol:g}); the log-density's control flow may "
                        "depend on its input"
                    )
        except Exception as error:  # noqa: BLE001 - any failure means the unfused path
            warnings.warn(
                f"NUTS: the leapfrog step could not be compiled ({error!r:.200}). Lost: about "
                "3x speed per step on small models; using the unfused step.",
                VectorisationWarning,
                stacklevel=4,
            )
            return None
        return fn, compiled
