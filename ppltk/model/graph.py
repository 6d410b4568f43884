"""Capture a batched log-density as a static graph of tensor operations.

Evaluating a Pyro model re-runs its Python code and Pyro's handler stack at every call.  For
models whose control flow does not depend on the values of their latent variables (the usual
case) the same tensor operations run each time, so they can be recorded once with
``torch.fx.experimental.proxy_tensor.make_fx`` -- forward and backward -- and replayed without
any Python-level model code (``"fx"``), or further compiled by TorchInductor
(``"inductor"``, after a one-off compilation of tens of seconds).

A captured graph is checked against the eager computation at fresh random points before it is
used; a mismatch (value-dependent control flow, randomness inside the model) falls back to
eager evaluation with a :class:`~ppltk.errors.VectorisationWarning`.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ppltk.errors import VectorisationWarning

BACKENDS = ("auto", "eager", "fx", "inductor")

EVALUATION_ERRORS: tuple[type[BaseException], ...] = (
    torch.linalg.LinAlgError,  # e.g. a Cholesky factorisation inside the model failed
    ValueError,  # e.g. a distribution's parameter validation
    RuntimeError,
    ArithmeticError,
)
"""Exceptions that mean "the model cannot be evaluated at this point" (zero density there)."""


class GraphCache:
    """Captured graphs of ``fn`` keyed by the input's shape, dtype and device.

    Parameters
    ----------
    fn
        The eager function ``z [B, D] -> tensor or tuple of tensors``.
    backend
        ``"fx"`` (replay the recorded operations) or ``"inductor"`` (compile them, see :func:`compile_graph`).
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
                graph = trace(lambda x: self.fn(x), z.detach())
        except Exception as error:  # noqa: BLE001 - any capture failure means eager evaluation
            self.fn(z)  # a model that cannot be evaluated at z raises its own error here
            return self._give_up(
                f"the model could not be captured as a static graph ({error!r:.160})"
            )
        graph.graph.eliminate_dead_code()
        graph.recompile()
        gen = torch.Generator(device=z.device).manual_seed(0)
        probe = z.detach() + 0.1 * torch.randn(
            z.shape, generator=gen, dtype=z.dtype, device=z.device
        )
        points = [z.detach()]
        try:
            reference = self.fn(probe)
            points.append(probe)
        except EVALUATION_ERRORS:  # the model fails at the probe: check at z only
            reference = None
        for point in points:
            eager = self.fn(point) if point is not probe else reference
            try:
                replay = graph(point)
            except Exception as error:  # noqa: BLE001
                return self._give_up(f"the captured static graph failed ({error!r:.160})")
            tol = tolerance(self.fn, point, eager)
            diff = relative_difference(replay, eager)
            if not diff <= tol:
                return self._give_up(
                    f"the captured static graph differs from the eager model by {diff:.2g} (relative), "
                    f"more than the tolerance {tol:.2g} for {z.dtype} at this conditioning; "
                    "the model's control flow may depend on latent values"
                )
        if self.backend == "inductor":
            return _compiled_or_fx(graph, z, self.name, tolerance(self.fn, z.detach(), None))
        return graph

    def _give_up(self, reason: str) -> None:
        self.failed = True
        warnings.warn(
            f"{self.name}: {reason}. Lost: the captured/compiled graph (replaying it is about 2x, "
            "compiled about 10-20x, faster than re-running the model); evaluating the model "
            "eagerly instead. Pass backend='eager' to silence this.",
            VectorisationWarning,
            stacklevel=5,
        )
        return None


_USER_INDUCTOR_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
# read at import: TorchInductor sets the variable to its own default the first time any graph
# is traced (make_fx), so later it no longer tells what the user asked for


def inductor_cache_dir() -> str:
    """Where compiled kernels persist between runs: ``TORCHINDUCTOR_CACHE_DIR`` if the user
    set it, else ``$PPLTK_CACHE_DIR/inductor``, else ``$XDG_CACHE_HOME/ppltk/inductor``
    (``~/.cache/ppltk/inductor``).  TorchInductor's FX-graph and AOT-autograd caches live
    there, so a second run of the same model (same graph, shapes and data) skips code
    generation and the C++ compiler."""
    if _USER_INDUCTOR_CACHE:
        return _USER_INDUCTOR_CACHE
    root = os.environ.get("PPLTK_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "ppltk",
    )
    return os.path.join(root, "inductor")


def compile_graph(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
    """Compile a captured aten graph with TorchInductor, without TorchDynamo (the graph is
    already captured, so there is nothing to trace and no guards to check at each call: a
    call costs about 15 us instead of about 45 us through ``torch.compile``).  Compiled
    kernels persist in :func:`inductor_cache_dir` (set for the compilation only: the rest of
    the process keeps TorchInductor's own setting)."""
    from torch._inductor import compile as inductor_compile
    from torch._inductor import config as _config

    on_cpu = all(t.device.type == "cpu" for t in example_inputs)
    # on the CPU, the generated wrapper in C++ (allocations and the kernel call without the
    # Python interpreter: about 2x less overhead per call on small graphs)
    options = {"cpp_wrapper": True, **_known_vec_isa()} if on_cpu else {}
    with _inductor_cache(), warnings.catch_warnings(), _tracing_context(), _config.patch(options):
        warnings.simplefilter("ignore")  # the compiler's deprecation notices are not ours
        return inductor_compile(graph, list(example_inputs))


@contextlib.contextmanager
def _inductor_cache():
    """TorchInductor's cache in :func:`inductor_cache_dir` while compiling (it reads the
    variable at each lookup); the rest of the process keeps its own setting."""
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache_dir()
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def inline_scalar_constants(graph: torch.fx.GraphModule) -> int:
    """Replace each one-element tensor constant of ``graph`` (a distribution's ``0.0`` or
    ``5.0``, recorded as an attribute by ``make_fx``) by an operation that creates it, so
    TorchInductor folds it into the generated code instead of passing it as an input at
    every call (an argument, a check and often a buffer per constant).  Returns how many
    constants were inlined; the graph computes the same values."""
    inlined = 0
    for node in list(graph.graph.nodes):
        if node.op != "get_attr":
            continue
        value = getattr(graph, node.target, None)
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or value.requires_grad:
            continue
        with graph.graph.inserting_before(node):
            full = graph.graph.call_function(
                torch.ops.aten.full.default,
                (list(value.shape), value.item()),
                {"dtype": value.dtype, "device": value.device},
            )
        node.replace_all_uses_with(full)
        graph.graph.erase_node(node)
        inlined += 1
    if inlined:
        used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
        for name, _ in list(graph.named_buffers()):
            if name not in used and "." not in name:
                delattr(graph, name)  # else it would still be passed in at every call
        graph.graph.lint()
        graph.recompile()
    return inlined


def transpose_matmul_outputs(graph: torch.fx.GraphModule) -> int:
    """Rewrite :math:`(AB)^\top` as :math:`B^\top A^\top` where a matrix product is only
    read transposed: batching chains gives ``mm(X, W^T)`` (``[N, C]``) read as ``[C, N]``,
    and the code generated for what follows then runs over the short chain dimension
    innermost (vector lanes mostly masked); the rewritten product is laid out ``[C, N]``.
    Returns how many products were rewritten; the values are the same up to rounding."""
    permute, mm = torch.ops.aten.permute.default, torch.ops.aten.mm.default
    rewritten = 0
    for node in list(graph.graph.nodes):
        if node.target is not permute or list(node.args[1]) != [1, 0]:
            continue
        product = node.args[0]
        if getattr(product, "target", None) is not mm or len(product.users) != 1:
            continue
        a, b = product.args
        with graph.graph.inserting_before(node):
            b_t = graph.graph.call_function(permute, (b, [1, 0]))
            a_t = graph.graph.call_function(permute, (a, [1, 0]))
            swapped = graph.graph.call_function(mm, (b_t, a_t))
        node.replace_all_uses_with(swapped)
        graph.graph.erase_node(node)
        graph.graph.erase_node(product)
        rewritten += 1
    if rewritten:
        graph.graph.lint()
        graph.recompile()
    return rewritten


def lift_constants(graph: torch.fx.GraphModule) -> list[torch.Tensor]:
    """Turn each tensor constant of ``graph`` (the model's data, recorded as attributes by
    ``make_fx``) into a new trailing input; returns the constants, to be passed after the
    original inputs.  The compiled code then depends on the data's shapes only, not on
    their values, so the same model on new data of the same shapes reuses it."""
    placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
    example = placeholders[0].meta.get("val") if placeholders else None
    fake_mode = getattr(example, "fake_mode", None)
    last = placeholders[-1] if placeholders else None
    lifted: dict[str, torch.fx.Node] = {}
    constants: list[torch.Tensor] = []
    for node in list(graph.graph.nodes):
        if node.op != "get_attr" or not isinstance(getattr(graph, node.target), torch.Tensor):
            continue
        if node.target not in lifted:
            value = getattr(graph, node.target)
            with graph.graph.inserting_after(last):
                last = lifted[node.target] = graph.graph.placeholder(f"constant_{len(constants)}")
            if fake_mode is not None:
                last.meta["val"] = fake_mode.from_tensor(value)
            constants.append(value)
        node.replace_all_uses_with(lifted[node.target])
        graph.graph.erase_node(node)
    for name in lifted:
        delattr(graph, name)
    graph.graph.lint()
    graph.recompile()
    return constants


AOT_SCHEME = "ppltk-aot-1"
"""Version of how :func:`aot_compile_cached` builds its libraries (part of their key)."""


def aot_compile_cached(
    graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]
) -> Callable[..., list[torch.Tensor]]:
    """Compile a captured CPU graph (no tensor constants: see :func:`lift_constants`) ahead
    of time with AOTInductor into a shared library kept in
    ``inductor_cache_dir()/ppltk-aot``, keyed by the graph's code, its inputs' shapes,
    dtypes and strides, torch's version and the CPU's instruction sets.  A later run that
    builds the same graph loads the library in about a millisecond, without importing
    TorchInductor (about 2 s saved per process), and a call costs a few microseconds of
    overhead.  Returns ``run(*inputs) -> list of outputs``."""
    import hashlib
    import shutil
    import tempfile

    facts = [
        AOT_SCHEME,
        graph.code,
        [(tuple(t.shape), str(t.dtype), t.stride(), str(t.device)) for t in example_inputs],
        torch.__version__,
        _vec_isa_key(),
    ]
    key = hashlib.sha256(repr(facts).encode()).hexdigest()[:40]
    folder = os.path.join(inductor_cache_dir(), "ppltk-aot")
    path = os.path.join(folder, f"{key}.so")
    if not os.path.exists(path):
        from torch._inductor import aot_compile
        from torch._inductor import config as _config

        with _inductor_cache(), warnings.catch_warnings(), _config.patch(_known_vec_isa()):
            warnings.simplefilter("ignore")
            built = aot_compile(graph, tuple(example_inputs))
        os.makedirs(folder, exist_ok=True)
        # the library, and the description of the operations it calls back into PyTorch
        # for (e.g. a Cholesky factorisation) that the runner reads from ``<name>.json``;
        # the library last, atomically: a concurrent run sees all of it or nothing
        for source, target in ((built[:-3] + ".json", path[:-3] + ".json"), (built, path)):
            if os.path.exists(source):
                with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as file:
                    temporary = file.name
                shutil.copyfile(source, temporary)
                os.replace(temporary, target)
    runner = torch._C._aoti.AOTIModelContainerRunnerCpu(path, 1)

    def run(*inputs: torch.Tensor) -> list[torch.Tensor]:
        return runner.run(list(inputs))

    return run


_VEC_ISA_FILE = "ppltk_vec_isa.json"


def _vec_isa_key() -> list[str] | None:
    """This machine's vector instruction sets that TorchInductor would try (x86 only), with
    what decides whether they build and load (torch and its compiler, the CPU's flags)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    from torch._inductor import cpu_vec_isa

    flags = cpu_vec_isa.x86_isa_checker()
    candidates = [
        str(isa)
        for isa in cpu_vec_isa.supported_vec_isa_list
        if all(flag in flags for flag in str(isa).split())
    ]
    return [torch.__version__, os.environ.get("CXX", ""), *sorted(flags), "|", *candidates]


def _known_vec_isa() -> dict:
    """Inductor option that skips its probe of the CPU's vector instruction sets (it builds
    a test library and loads it in fresh Python processes: about 1 s in every process that
    compiles) once a run on this machine found all of them working.  The first run probes
    before compiling, so every run compiles with the same options (they are part of the
    compile cache's key)."""
    import json

    from torch._inductor import cpu_vec_isa

    key = _vec_isa_key()
    if key is None:
        return {}
    path = os.path.join(inductor_cache_dir(), _VEC_ISA_FILE)
    try:
        with open(path) as file:
            if json.load(file) == key:
                return {"cpp.vec_isa_ok": True}
    except (OSError, ValueError):
        pass
    candidates = key[key.index("|") + 1 :]
    if [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()] != candidates:
        return {}  # some instruction set fails here: TorchInductor keeps probing
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as file:
            json.dump(key, file)
    except OSError:  # a read-only cache: probe again next time
        pass
    return {"cpp.vec_isa_ok": True}


def trace(fn: Callable, *inputs: torch.Tensor) -> torch.fx.GraphModule:
    """``make_fx(fn)(*inputs)`` (real tensors), recording each node's metadata with one shared
    fake-tensor mode instead of a new one per node (each costs a stack-trace capture: about
    half a second for a graph of a thousand operations)."""
    with _tracing_context():
        return make_fx(fn)(*inputs)


def _tracing_context():
    """The context TorchDynamo would provide: TorchInductor's on-disk FX-graph cache looks
    compiled graphs up only under a tracing context with a shape environment (static shapes
    here, so the environment stays empty)."""
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    return tracing(TracingContext(FakeTensorMode(shape_env=ShapeEnv(), static_shapes=True)))


def compile_validated(
    graph: torch.fx.GraphModule,
    example_inputs: list[torch.Tensor],
    check: Callable[[Callable], None],
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The captured ``graph`` compiled, as ``f(*inputs) -> tuple of outputs``: ahead of time
    on the CPU (:func:`aot_compile_cached`: kept on disk, loaded without TorchInductor), else
    -- or when that fails -- just in time (:func:`compile_graph`).  Scalar constants are
    folded into the code and the model's data become trailing inputs (passed by the
    returned function), so the compiled code does not depend on the data's values.
    ``check(f)`` raises when ``f`` disagrees with the uncompiled graph; the first compiled
    version that passes it is returned, else the last error is raised.  ``graph`` itself
    is left as it was."""
    import copy

    graph = copy.deepcopy(graph)
    inline_scalar_constants(graph)
    transpose_matmul_outputs(graph)
    constants = lift_constants(graph)
    inputs = [*example_inputs, *constants]
    builders = [compile_graph]
    if all(t.device.type == "cpu" for t in inputs):
        builders.insert(0, aot_compile_cached)
    error: Exception = RuntimeError("no compiler")
    for build in builders:
        try:
            run = build(copy.deepcopy(graph), inputs)

            def compiled(*args: torch.Tensor, run=run) -> tuple[torch.Tensor, ...]:
                return tuple(run(*args, *constants))

            check(compiled)
            return compiled
        except Exception as caught:  # noqa: BLE001 - try the next compiler
            error = caught
    raise error


def _compiled_or_fx(graph: Callable, z: torch.Tensor, name: str, tol: float) -> Callable:
    """Compile the captured graph; keep the plain graph if compilation fails (e.g. no C
    compiler on the machine) or disagrees beyond ``tol``."""
    z = z.detach()

    def check(compiled: Callable) -> None:
        diff = relative_difference(compiled(z), graph(z))
        if not diff <= tol:
            raise RuntimeError(
                f"the compiled graph differs from the captured graph by {diff:.2g} (relative), "
                f"more than the tolerance {tol:.2g}"
            )

    try:
        compiled = compile_validated(graph, [z], check)
    except Exception as error:  # noqa: BLE001 - any compiler failure keeps the fx graph
        warnings.warn(
            f"{name}: compilation failed ({error!r:.200}). Lost: compilation (about 5-30x "
            "per evaluation); using the captured graph uncompiled.",
            VectorisationWarning,
            stacklevel=5,
        )
        return graph
    return compiled


def _as_tuple(a) -> tuple:
    return tuple(a) if isinstance(a, (tuple, list)) else (a,)


def relative_difference(a, b) -> float:
    """Largest difference between two outputs relative to each output tensor's scale
    (NaN/inf must match exactly); ``inf`` when they disagree there."""
    worst = 0.0
    for x, y in zip(_as_tuple(a), _as_tuple(b), strict=True):
        x, y = x.detach(), y.detach()
        finite = torch.isfinite(x) & torch.isfinite(y)
        if not torch.equal(finite, torch.isfinite(x)) or not torch.equal(
            x[~finite].nan_to_num(0.0, 1.0, -1.0), y[~finite].nan_to_num(0.0, 1.0, -1.0)
        ):
            return math.inf
        if finite.any():
            scale = y[finite].abs().max().clamp(min=1.0)
            worst = max(worst, float((x[finite] - y[finite]).abs().max() / scale))
    return worst


def tolerance(fn: Callable, z: torch.Tensor, out=None) -> float:
    r"""Agreement tolerance for a replayed graph: rounding (``eps`` of the dtype) amplified by
    the computation's condition number, estimated from the relative change of ``fn`` under a
    relative input perturbation of size :math:`\sqrt{\epsilon}` in a random direction,

    .. math:: \mathrm{tol} = \min\big(\max(\mathrm{base}, 256\,\epsilon\,\hat\kappa),
              \epsilon^{0.4}\big),

    with ``base`` 1e-10 (float64) or 1e-4 (float32): value-dependent control flow gives
    differences of order one, far above it."""
    eps = torch.finfo(z.dtype).eps
    base = 1e-10 if z.dtype == torch.float64 else 1e-4
    delta = math.sqrt(eps)
    try:
        out = fn(z) if out is None else out
        gen = torch.Generator(device=z.device).manual_seed(1)
        direction = torch.randn(z.shape, generator=gen, dtype=z.dtype, device=z.device)
        shifted = fn(z + delta * (1.0 + z.abs()) * direction)
        kappa = relative_difference(shifted, out) / delta
    except EVALUATION_ERRORS:
        kappa = 1.0
    kappa = min(kappa, 1.0 / eps) if math.isfinite(kappa) else 1.0 / eps
    return min(max(base, 256.0 * eps * kappa), eps**0.4)
