"""A kernel's inner step, the log-density included, as one compiled function.

On small and medium models a sampler spends most of its time between log-density calls: each
leapfrog step of NUTS is several dozen small batched tensor operations (momentum and position
updates, the non-finite guard, the energy, the multinomial draw, the U-turn checks), each a
separate dispatch of a few microseconds.  A :class:`FusedStep` records such a step -- a pure
function of tensors that calls the log-density -- as one static graph (``make_fx``) and
compiles it with TorchInductor (:func:`ppltk.model.graph.compile_graph`), so the step is one
call of generated C++ (or Triton) code.

Inside the compiled step the raw log-density is called (no per-row error handling), and a
point where its value or gradient is not finite gets :math:`\\log\\pi=-\\infty` and a zero
gradient, as :class:`~ppltk.mcmc.GuardedDensity` gives it.  The compiled step is checked
against the uncompiled one at the capture point and at a perturbed point; any failure to
capture, compile or agree (e.g. control flow that depends on latent values) turns
compilation off for that density with a :class:`~ppltk.errors.VectorisationWarning`, and a
step at which the compiled code raises (e.g. a failed Cholesky inside the model) is
recomputed uncompiled through the guarded density, so only the failing chains are rejected.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from ppltk.errors import VectorisationWarning
from ppltk.mcmc._base import LogDensityFn
from ppltk.model.graph import EVALUATION_ERRORS, compile_function, relative_difference

__all__ = ["FusedStep", "guarded_call"]


def guarded_call(fn: LogDensityFn, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``fn(z)`` with non-finite points set to :math:`-\\infty` and a zero gradient; returns
    ``(lp, grad, bad)``.  Traceable (no host synchronisation), so it can be compiled."""
    lp, grad = fn(z)
    bad = ~torch.isfinite(lp + grad.sum(-1))
    lp = torch.where(bad, -math.inf, lp)
    grad = torch.where(bad.unsqueeze(-1), 0.0, grad)
    return lp, grad, bad


def _identity(fn: Callable) -> tuple[int, int]:
    """What makes two log-densities the same function: a bound method is created anew at
    each attribute access, so its object and function are compared instead."""
    return id(getattr(fn, "__self__", fn)), id(getattr(fn, "__func__", fn))


class FusedStep:
    """A step ``step(density, *tensors) -> tuple of tensors`` that calls ``density(z)`` as
    :func:`guarded_call` does, compiled per log-density and input shapes when ``compile``.

    Parameters
    ----------
    step
        ``step(density, *tensors)``; pure (no host synchronisation, no randomness: pass
        uniforms in), returning a tuple of tensors whose first ``num_checked`` entries are
        floating point (compared when validating the compiled code).
    compile
        Compile with TorchInductor; ``False`` runs ``step`` as it is.
    num_checked
        Number of leading outputs compared between compiled and uncompiled code.
    feedback
        Number of leading outputs the caller feeds back as the leading inputs of the next
        call (a loop's state): the compiled code must return them in the layouts it reads
        them in, as it does not check its inputs' layouts.
    name
        Used in the fallback warning.

    ``fused.bind(ld, *tensors)`` returns the step with the log-density ``ld`` bound, for
    inputs shaped as ``tensors``: compiled, it calls ``ld``'s raw function ``ld.fn`` (built on
    first use, then one lookup per binding, none per call); uncompiled -- or at a step where
    the compiled code raises (e.g. a failed Cholesky inside the model) -- the guarded density
    ``ld.uncounted`` (a :class:`~ppltk.mcmc.GuardedDensity`, robust per chain).  Neither
    counts non-finite points: the step reports them (``guarded_call``'s ``bad``) and its
    caller counts them.  ``fused(ld, *tensors)`` binds and calls once.
    """

    def __init__(
        self, step: Callable, compile: bool, num_checked: int, name: str, feedback: int = 0
    ) -> None:
        self.step, self.compile, self.num_checked, self.name = step, compile, num_checked, name
        self.feedback = feedback
        self._compiled: dict[tuple, tuple[Callable, Callable] | None] = {}

    def __getstate__(self) -> dict:  # compiled code does not pickle: rebuilt where used
        return {**self.__dict__, "_compiled": {}}

    def __call__(self, ld, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.bind(ld, *tensors)(*tensors)

    def bind(self, ld, *tensors: torch.Tensor) -> Callable[..., tuple[torch.Tensor, ...]]:
        """The step with ``ld`` bound, for inputs shaped, typed and placed as ``tensors``."""
        eager_ld = getattr(ld, "uncounted", ld)

        def eager(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.step(eager_ld, *args)

        compiled = self._compiled_for(ld, tensors)
        if compiled is None:
            return eager

        def call(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            try:
                return compiled(*args)
            except AssertionError:  # an input with other strides than at compilation
                return compiled(*(t.contiguous() for t in args))
            except EVALUATION_ERRORS:  # some chain's point raised: this step, uncompiled
                return eager(*args)

        return call

    def compiles(self, ld, *tensors: torch.Tensor) -> bool:
        """Whether the step compiles for ``ld`` and inputs shaped as ``tensors`` (built, or
        loaded from disk, now if need be)."""
        return self._compiled_for(ld, tensors) is not None

    def _compiled_for(self, ld, tensors) -> Callable | None:
        """The compiled step for ``ld`` and inputs laid out as ``tensors`` (built on first
        use); ``None`` when not compiling or when it cannot be compiled."""
        if not self.compile:
            return None
        fn = getattr(ld, "fn", ld)
        # compiled code assumes the layouts it was built for (the library kept on disk does
        # not check them): a non-contiguous input gets its own entry
        key = (_identity(fn), tensors[0].device, *((t.shape, t.dtype, t.stride()) for t in tensors))
        entry = self._compiled.get(key, False)
        if entry is False:
            entry = self._compiled[key] = self._build(fn, tensors)
        return None if entry is None else entry[1]

    def _build(self, fn, tensors) -> tuple[Callable, Callable] | None:
        """Capture, compile and validate the step for ``fn``; ``None`` (with a warning) when
        that fails.  On the CPU the step is compiled into a library kept on disk and found
        again by later runs without tracing (:func:`~ppltk.model.graph.compile_function`),
        else -- or when that fails -- in this process only
        (:func:`~ppltk.model.graph.compile_graph`)."""

        def step(*args):
            return self.step(fn, *args)

        # distinct buffers: code compiled for inputs that alias each other (the same tensor
        # passed twice) would assume they always do
        tensors = tuple(t.clone() for t in tensors)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = compile_function(
                    step, list(tensors), lambda f: self._validate(step, f, tensors)
                )
        except Exception as error:  # noqa: BLE001 - any failure means the uncompiled step
            warnings.warn(
                f"{self.name}: the step could not be compiled ({error!r:.200}). Lost: "
                "several-fold speed per step on small models; running it uncompiled.",
                VectorisationWarning,
                stacklevel=4,
            )
            return None
        return fn, compiled

    def _validate(self, step, compiled, tensors) -> None:
        """Raise unless the compiled step agrees with the uncompiled one at the capture point
        and at a perturbed point (control flow that depends on the input would not)."""
        z = tensors[0]
        gen = torch.Generator(device=z.device).manual_seed(0)
        probe = z + 0.1 * torch.randn(z.shape, generator=gen, dtype=z.dtype, device=z.device)
        tol = 1e-6 if z.dtype == torch.float64 else 1e-3
        for point in (tensors, (probe, *tensors[1:])):
            try:
                eager = step(*point)
            except EVALUATION_ERRORS:  # the model fails at the probe: check at z only
                continue
            n, k = self.num_checked, self.feedback
            got = tuple(compiled(*point))
            if [(o.shape, o.stride()) for o in got[:k]] != [
                (t.shape, t.stride()) for t in point[:k]
            ]:
                raise RuntimeError("the compiled step returns its state in another layout")
            diff = relative_difference(got[:n], tuple(eager)[:n])
            if not diff <= tol:
                raise RuntimeError(
                    f"the compiled step differs from the uncompiled one by {diff:.2g} "
                    f"(relative, tolerance {tol:g}); the log-density's control flow may "
                    "depend on its input"
                )
