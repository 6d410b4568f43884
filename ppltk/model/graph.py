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
import contextvars
import functools
import hashlib
import math
import os
import sys
import warnings
from collections.abc import Callable
from unittest import mock

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


def _users_inductor_cache() -> str | None:
    """``TORCHINDUCTOR_CACHE_DIR`` if the user set it.  TorchInductor writes its own default
    (``/tmp/torchinductor_$USER``) into the variable the first time it compiles or traces, so
    the variable is read when ppltk is imported, and a value equal to that default written by
    a TorchInductor loaded earlier (``torch.compile`` used first) is not the user's choice."""
    value = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    loaded = sys.modules.get("torch._inductor.runtime.cache_dir_utils")
    if value and loaded is not None:
        if os.path.abspath(value) == os.path.abspath(loaded.default_cache_dir()):
            return None
    return value


_USER_INDUCTOR_CACHE = _users_inductor_cache()


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


_ON_COMPILE: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "ppltk_on_compile", default=None
)


@contextlib.contextmanager
def on_compile(callback: Callable[[], None]):
    """Within the block, call ``callback()`` whenever something is about to be traced and
    compiled (seconds) rather than found on disk (milliseconds): e.g. to tell a user why the
    first run of a model waits."""
    token = _ON_COMPILE.set(callback)
    try:
        yield
    finally:
        _ON_COMPILE.reset(token)


def _announce_compilation() -> None:
    callback = _ON_COMPILE.get()
    if callback is not None:
        callback()


def compile_graph(
    graph: torch.fx.GraphModule,
    example_inputs: list[torch.Tensor],
    probe_cpu: bool = False,
    check_layouts: bool = True,
) -> Callable:
    """Compile a captured aten graph with TorchInductor, without TorchDynamo (the graph is
    already captured, so there is nothing to trace and no guards to check at each call: a
    call costs about 15 us instead of about 45 us through ``torch.compile``).  On the CPU
    the wrapper around the kernels is generated in C++ too (allocations and kernel calls
    without the Python interpreter), and the CPU's vector instruction sets are taken from
    its own report unless ``probe_cpu`` (see :func:`_trusted_vec_isa`).  Without
    ``check_layouts`` the code does not check its inputs' shapes and strides at each call (a
    microsecond or two): the caller guarantees them.  A small CPU graph (at most
    :data:`SCALAR_CODE_MAX_ELEMENTS` elements made or read per call) is compiled without
    vector instructions: its loops are a few vectors long, and leaving out ATen's vector
    templates halves the C++ compiler's time.  On the CPU the intermediate buffers of a call
    are views of one allocation (a NUTS leaf of eight schools allocated 30 small tensors per
    call, a fifth of its run time); each output keeps its own, so that keeping one output
    (a draw) does not keep the others alive.  Compiled kernels persist in
    :func:`inductor_cache_dir` (set for the compilation only: the rest of the process keeps
    TorchInductor's own setting)."""
    from torch._inductor import compile as inductor_compile
    from torch._inductor import config as _config

    on_cpu = all(t.device.type == "cpu" for t in example_inputs)
    options: dict = {}
    if on_cpu:  # intermediate buffers carved from one allocation per call (see the docstring)
        options.update(cpp_wrapper=True, memory_planning=True, memory_pool="intermediates")
    if on_cpu and _is_small(graph, example_inputs):
        options["cpp.simdlen"] = 0
    if not check_layouts:
        options.update(size_asserts=False, alignment_asserts=False, scalar_asserts=False)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_inductor_cache())
        stack.enter_context(warnings.catch_warnings())
        stack.enter_context(_tracing_context(graph, example_inputs))
        stack.enter_context(_config.patch(options))
        if on_cpu and not probe_cpu:
            stack.enter_context(_trusted_vec_isa())
        warnings.simplefilter("ignore")  # the compiler's deprecation notices are not ours
        return inductor_compile(graph, list(example_inputs))


SCALAR_CODE_MAX_ELEMENTS = 2**16
"""CPU graphs that make or read at most this many tensor elements per call, all tensors
counted, are compiled to scalar code.  Measured on NUTS transitions (eight schools, 4 to 64
chains; a 50-group hierarchical and an N=1000, D=25 logistic regression, 4 chains): at 13k and
52k elements scalar code compiled 2-3 s faster and ran 5-8% faster; at 206k-300k it compiled
1.5-2 s faster but ran 25-65% slower."""


def _is_small(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> bool:
    """Whether ``graph`` compiles to scalar code (:data:`SCALAR_CODE_MAX_ELEMENTS`); not when
    it cannot be evaluated at ``example_inputs`` (e.g. a factorisation fails there): then
    TorchInductor's default."""
    try:
        return elements_touched(graph, example_inputs) <= SCALAR_CODE_MAX_ELEMENTS
    except Exception:  # noqa: BLE001 - any evaluation error: keep the default
        return False


def elements_touched(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> int:
    """How many tensor elements ``graph`` reads and makes in one call on ``example_inputs``
    (the sum of the sizes of its inputs and of every operation's outputs)."""
    sizes = [t.numel() for t in example_inputs]

    class Counting(torch.fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if node.op not in ("placeholder", "output"):
                leaves = torch.utils._pytree.tree_leaves(value)
                sizes.extend(t.numel() for t in leaves if isinstance(t, torch.Tensor))
            return value

    with torch.no_grad():
        Counting(graph).run(*example_inputs)
    return sum(sizes)


def _library_of(compiled: Callable, example_inputs: list[torch.Tensor]) -> str:
    """The shared library behind a function :func:`compile_graph` returned on the CPU (the
    Python extension module its generated wrapper calls), once checked to take exactly
    ``example_inputs`` (TorchInductor passes tensors registered on the graph as extra leading
    inputs, which a caller of the library alone would not: it would read past its inputs)."""
    call = getattr(compiled, "current_callable", None)
    names = getattr(call, "__globals__", {})
    entry, get_args = names.get("inductor_entry"), names.get("get_args")
    path = getattr(getattr(entry, "__self__", None), "__file__", None)
    if not isinstance(path, str) or not os.path.exists(path) or get_args is None:
        raise RuntimeError("TorchInductor's library was not found")
    expected = [(tuple(t.shape), t.dtype) for t in get_args()]
    if expected != [(tuple(t.shape), t.dtype) for t in example_inputs]:
        raise RuntimeError("TorchInductor's library takes other inputs than the graph")
    return path


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
        _drop_unused_tensors(graph)
        graph.graph.lint()
        graph.recompile()
    return inlined


def _drop_unused_tensors(graph: torch.fx.GraphModule) -> None:
    """Delete the tensors registered on ``graph`` that no node reads (left by inlining or
    dead-code elimination): TorchInductor would pass each one to the compiled code as a
    leading input, which a caller of the library on its own does not know of."""
    used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    named = [*graph.named_buffers(), *graph.named_parameters()]
    for name in {name for name, _ in named} - used:
        *path, leaf = name.split(".")
        owner = graph.get_submodule(".".join(path)) if path else graph
        delattr(owner, leaf)


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
            constants.append(value)
        node.replace_all_uses_with(lifted[node.target])
        graph.graph.erase_node(node)
    for name in lifted:
        delattr(graph, name)
    _drop_unused_tensors(graph)
    graph.graph.lint()
    graph.recompile()
    return constants


LIBRARY_SCHEME = "ppltk-lib-5"
"""Version of how :func:`compile_cached` builds its libraries (part of their key)."""

_ENTRY = "inductor_entry_cpp"  # the entry point of TorchInductor's C++ wrapper


def compile_cached(
    graph: torch.fx.GraphModule,
    example_inputs: list[torch.Tensor],
    trailing: list[torch.Tensor] | tuple = (),
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """Compile a captured CPU graph (no tensor constants: see :func:`lift_constants`) with
    TorchInductor's C++ wrapper into one shared library, kept in
    ``inductor_cache_dir()/ppltk-lib`` under a key made of the graph's code, its inputs'
    shapes, dtypes and strides, torch's version and the CPU's instruction sets.  A later run
    that builds the same graph loads the library in under a millisecond, without importing
    TorchInductor or TorchDynamo (about 2 s of imports), and a call costs a few
    microseconds of overhead.  Returns ``run(*inputs) -> tuple of outputs``, ``inputs``
    being ``example_inputs`` less their last ``len(trailing)``, which ``run`` passes itself."""
    import shutil
    import tempfile

    facts = [
        LIBRARY_SCHEME,
        graph.code,
        [(tuple(t.shape), str(t.dtype), t.stride(), str(t.device)) for t in example_inputs],
        torch.__version__,
        _vec_isa_key(),
    ]
    key = "ppltk_" + hashlib.sha256(repr(facts).encode()).hexdigest()[:40]
    path = _library_path(key)
    if not os.path.exists(path):
        built = _library_of(
            compile_graph(graph, example_inputs, check_layouts=False), example_inputs
        )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=os.path.dirname(path), suffix=".tmp", delete=False
        ) as file:
            temporary = file.name
        shutil.copyfile(built, temporary)
        os.replace(temporary, path)  # atomically: a concurrent run sees all of it or nothing
    return _load_library(key, trailing)


def _library_path(key: str, suffix: str = ".so") -> str:
    return os.path.join(inductor_cache_dir(), "ppltk-lib", key + suffix)


def _load_library(key: str, trailing: list[torch.Tensor] | tuple = ()) -> Callable:
    """``run(*inputs) -> tuple of outputs`` calling the library ``key`` of
    :func:`compile_cached`, with ``trailing`` passed after ``inputs`` (one Python call per
    evaluation: this is the innermost loop of a compiled NUTS transition)."""
    name = f"{key}.{_ENTRY}"
    module = sys.modules.get(name)
    if module is None:
        module = _import_extension(_library_path(key), name)
    entry = getattr(module, _ENTRY)
    to_handles = torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors
    from_handles = torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs
    trailing = list(trailing)

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(from_handles(entry(to_handles([*inputs, *trailing]))))

    run.library = key  # type: ignore[attr-defined]
    return run


def _import_extension(path: str, name: str):
    """Import the Python extension module at ``path`` as ``name`` (what TorchInductor's
    loader does, without importing it)."""
    import importlib.util

    # the address the generated bindings read tensors' data through
    os.environ["_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR"] = str(
        torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr
    )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the compiled library {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def _vec_isa_key() -> list[str] | None:
    """This machine's x86 vector instruction sets as the CPU and the operating system report
    them (what TorchInductor compiles for), with what decides whether they build (torch and
    its compiler); ``None`` elsewhere.  Imports no TorchInductor module."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    cpu = torch.cpu
    flags = {
        "avx2": cpu._is_avx2_supported(),
        "avx512": cpu._is_avx512_supported(),
        "avx512_vnni": cpu._is_avx512_supported() and cpu._is_vnni_supported(),
        "amx_tile": cpu._is_amx_tile_supported(),
    }
    return [torch.__version__, os.environ.get("CXX", ""), *sorted(k for k, v in flags.items() if v)]


@contextlib.contextmanager
def _trusted_vec_isa():
    """Compile for the vector instruction sets the x86 CPU reports, without TorchInductor's
    probe: it builds a test library per instruction set and extension (AVX-512, VNNI, BF16)
    and loads each in a fresh Python process, about 8 s in every process that compiles.
    Should the compiler not support one, the build fails and :func:`compile_validated`
    compiles again with the probe."""
    from torch._inductor import config as _config
    from torch._inductor import cpu_vec_isa

    if _vec_isa_key() is None:
        yield
        return
    with (
        _config.patch({"cpp.vec_isa_ok": True}),
        mock.patch.object(cpu_vec_isa.VecISA, "check_build", lambda self, code: True),
    ):
        yield


def trace(fn: Callable, *inputs: torch.Tensor) -> torch.fx.GraphModule:
    """``make_fx(fn)(*inputs)`` on real tensors, without the fake-tensor metadata ``make_fx``
    records for each node: nothing here reads it (TorchInductor traces the graph again with
    its own fake tensors, :func:`_tracing_context`), and making it costs a fake-tensor
    operation per node.  ``make_fx`` imports TorchDynamo (about a second): a run that finds
    its compiled library on disk does not trace (:func:`compile_function`)."""
    from torch.fx.experimental import proxy_tensor

    extract_val = proxy_tensor.extract_val

    def without_real_tensors(val, include_real=False):
        if isinstance(val, torch.Tensor) and not proxy_tensor.is_fake(val):
            return None
        return extract_val(val, include_real)

    with mock.patch.object(proxy_tensor, "extract_val", without_real_tensors):
        return make_fx(fn)(*inputs)


def _tracing_context(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
    """The context TorchDynamo would provide: TorchInductor's on-disk FX-graph cache looks
    compiled graphs up only under a tracing context with a shape environment (static shapes
    here, so the environment stays empty).  ``graph``'s inputs get their fake values in its
    fake-tensor mode (:func:`trace` records none), so that every input's shape is static."""
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    fake_mode = FakeTensorMode(shape_env=ShapeEnv(), static_shapes=True)
    placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
    for node, example in zip(placeholders, example_inputs):
        node.meta["val"] = fake_mode.from_tensor(example, static_shapes=True)
    return tracing(TracingContext(fake_mode))


def compile_validated(
    graph: torch.fx.GraphModule,
    example_inputs: list[torch.Tensor],
    check: Callable[[Callable], None],
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The captured ``graph`` compiled, as ``f(*inputs) -> tuple of outputs``: on the CPU
    into a library kept on disk and loaded without TorchInductor (:func:`compile_cached`),
    else -- or when that fails -- in this process only (:func:`compile_graph`, on the CPU
    probing the compiler's vector instruction sets).  Scalar constants are
    folded into the code and the model's data become trailing inputs (passed by the
    returned function), so the compiled code does not depend on the data's values.
    ``check(f)`` raises when ``f`` disagrees with the uncompiled graph; the first compiled
    version that passes it is returned, else the last error is raised.  ``graph`` itself
    is left as it was."""
    import copy

    _announce_compilation()
    graph = copy.deepcopy(graph)
    inline_scalar_constants(graph)
    transpose_matmul_outputs(graph)
    constants = lift_constants(graph)
    inputs = [*example_inputs, *constants]

    def in_process(graph, inputs, trailing, probe_cpu=False):
        run = compile_graph(graph, inputs, probe_cpu=probe_cpu)

        def compiled(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(run(*args, *trailing))

        compiled.library = None  # type: ignore[attr-defined]
        return compiled

    builders: list[Callable] = [in_process]
    if all(t.device.type == "cpu" for t in inputs):
        builders = [compile_cached, functools.partial(in_process, probe_cpu=True)]
    error: Exception = RuntimeError("no compiler")
    for build in builders:
        try:
            compiled = build(copy.deepcopy(graph), inputs, constants)
            check(compiled)
            compiled.constants = constants  # type: ignore[attr-defined]
            return compiled
        except Exception as caught:  # noqa: BLE001 - try the next compiler
            error = caught
    raise error


def count_operations(fn: Callable, *inputs: torch.Tensor) -> int:
    """How many ATen operations one evaluation of ``fn(*inputs)`` runs (about the size of its
    captured graph, without capturing it)."""
    from ppltk.model._fingerprint import fingerprint

    return fingerprint(fn, *inputs).num_operations


def compile_function(
    fn: Callable[..., tuple[torch.Tensor, ...]],
    inputs: list[torch.Tensor],
    check: Callable[[Callable], None],
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """``fn`` compiled for inputs shaped, typed and laid out as ``inputs``: traced
    (:func:`trace`) and compiled (:func:`compile_validated`, ``check`` as there).  On the CPU,
    once a library is on disk for ``fn``'s computation, a later run finds it from the
    fingerprint of ``fn``'s operations (:func:`ppltk.model._fingerprint.fingerprint`: one
    evaluation of ``fn``) without tracing or compiling -- and without importing TorchDynamo,
    about a second per process."""
    from ppltk.model._fingerprint import fingerprint

    manifest = held = None
    if all(t.device.type == "cpu" for t in inputs):
        key, held, _ = fingerprint(fn, *inputs)
        facts = [LIBRARY_SCHEME, key, torch.__version__, _vec_isa_key()]
        manifest = _library_path(hashlib.sha256(repr(facts).encode()).hexdigest()[:40], ".json")
        compiled = _load_manifest(manifest, held, check)
        if compiled is not None:
            return compiled
    _announce_compilation()
    graph = trace(fn, *inputs)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    compiled = compile_validated(graph, inputs, check)
    if manifest is not None and compiled.library is not None:
        _write_manifest(manifest, compiled.library, compiled.constants, held)
    return compiled


def _write_manifest(path: str, library: str, constants: list[torch.Tensor], held) -> None:
    """Record which library computes a fingerprint, and which of the tensors the function
    holds are its trailing inputs; nothing when one of them cannot be told apart."""
    import json

    positions = [next((i for i, t in enumerate(held) if _same(t, c)), None) for c in constants]
    if None in positions:
        return
    try:
        with open(path, "w") as file:
            json.dump({"library": library, "inputs": positions}, file)
    except OSError:  # a read-only cache: trace again next time
        pass


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same tensor, or equal values in the same layout (the library reads it so)."""
    return a is b or (
        (a.shape, a.stride(), a.dtype, a.device) == (b.shape, b.stride(), b.dtype, b.device)
        and torch.equal(a, b)
    )


def _load_manifest(path: str, held, check) -> Callable | None:
    """The library a manifest names, with the held tensors it takes, if it passes ``check``."""
    import json

    try:
        with open(path) as file:
            manifest = json.load(file)
        compiled = _load_library(manifest["library"], [held[i] for i in manifest["inputs"]])
    except (OSError, ValueError, KeyError, IndexError, ImportError):
        return None
    try:
        check(compiled)
    except Exception:  # noqa: BLE001 - e.g. a held tensor's layout changed: trace again
        return None
    return compiled


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
