"""Compiled graphs (``ppltk.model.graph``): scalar constants folded, the model's data lifted to
inputs, the library reused from disk for the same graph on new data, and found again from the
fingerprint of a function's operations without tracing it (no TorchDynamo import)."""

import copy
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from ppltk.model import graph as graph_module
from ppltk.model._fingerprint import fingerprint
from ppltk.model.graph import (
    compile_function,
    compile_validated,
    inline_scalar_constants,
    lift_constants,
    relative_difference,
    trace,
)

needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="needs a C++ compiler"
)


def _density(data: torch.Tensor):
    """A Gaussian log-density around ``data`` and its gradient, with scalar constants."""

    def fn(z):
        scale = torch.tensor(2.0, dtype=z.dtype)
        lp = -0.5 * (((z - data) / scale) ** 2).sum(-1) - torch.tensor(3.0, dtype=z.dtype)
        return lp, -(z - data) / scale**2

    return fn


def _attribute_tensors(graph):
    return [n for n in graph.graph.nodes if n.op == "get_attr"]


def test_constants_are_folded_or_lifted_and_the_graph_computes_the_same():
    data = torch.linspace(-1.0, 1.0, 3, dtype=torch.float64)
    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    graph = trace(_density(data), z)
    expected = graph(z)
    assert len(_attribute_tensors(graph)) >= 3  # two scalars and the data
    assert inline_scalar_constants(graph) >= 2
    constants = lift_constants(graph)
    assert _attribute_tensors(graph) == []
    assert len(constants) == 1 and torch.equal(constants[0], data)
    assert relative_difference(graph(z, *constants), expected) == 0.0


@needs_compiler
def test_compiled_library_is_reused_for_new_data(tmp_path, monkeypatch, empty_cache):
    """The same model on data of the same shape reuses the library on disk: no second
    compilation, one library, and the values follow the new data."""
    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    results = []
    for k, data in enumerate((torch.zeros(3, dtype=torch.float64), torch.ones(3) * 5.0)):
        data = data.to(torch.float64)
        fn = _density(data)
        if k == 1:  # the second model must not reach the compiler

            def refuse(*args, **kwargs):
                raise AssertionError("compiled again")

            monkeypatch.setattr("torch._inductor.compile", refuse)
            monkeypatch.setattr(graph_module, "compile_graph", refuse)
        checked = []
        compiled = compile_validated(trace(fn, z), [z], checked.append)
        assert checked  # the caller's check ran on the compiled function
        results.append((compiled(z), fn(z)))
    libraries = list((tmp_path / "inductor" / "ppltk-lib").glob("*.so"))
    assert len(libraries) == 1
    for got, expected in results:
        assert relative_difference(got, expected) < 1e-12


def test_transposed_matrix_products_are_rewritten_and_compute_the_same():
    """A product read only transposed, as batched chains give it (``mm(X, W^T)`` read as
    ``[C, N]``), becomes ``mm(W, X^T)``: same values, laid out with ``N`` innermost."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 5, dtype=torch.float64, generator=gen)
    w = torch.randn(4, 5, dtype=torch.float64, generator=gen)

    def fn(w):
        return (torch.mm(x, w.T).T.exp().sum(-1),)

    graph = trace(fn, w)
    expected = graph(w)
    assert graph_module.transpose_matmul_outputs(graph) == 1
    got = graph(w)
    assert relative_difference(got, expected) < 1e-14
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(graph).propagate(w)
    products = [n for n in graph.graph.nodes if n.target is torch.ops.aten.mm.default]
    assert [tuple(n.meta["tensor_meta"].shape) for n in products] == [(4, 50)]


def test_fingerprint_depends_on_operations_and_scalars_not_on_data_values():
    """Same operations on data of the same shape: same key, and the data are what the function
    holds; another operation, another data shape or another scalar constant: another key."""
    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    data = torch.linspace(-1.0, 1.0, 3, dtype=torch.float64)
    base = fingerprint(_density(data), z)
    assert fingerprint(_density(data + 7.0), z).key == base.key
    assert any(t is data for t in base.held)
    assert base.num_operations > 5
    assert fingerprint(_density(torch.zeros(4, 3, dtype=torch.float64)), z).key != base.key

    def other_scalar(z):
        return (-0.5 * ((z - data) / 3.0) ** 2).sum(-1), z

    def other_operation(z):
        return (-0.5 * ((z - data) / 2.0).abs()).sum(-1), z

    def same_as_other_scalar(z):
        return (-0.5 * ((z - data) / 3.0) ** 2).sum(-1), z

    keys = {fingerprint(f, z).key for f in (other_scalar, other_operation)}
    assert len(keys | {base.key}) == 3
    assert fingerprint(same_as_other_scalar, z).key == fingerprint(other_scalar, z).key


@needs_compiler
def test_compiled_function_is_found_again_without_tracing(tmp_path, monkeypatch, empty_cache):
    """A second compilation of the same computation on new data values finds the library
    from the fingerprint: neither the tracer nor a compiler runs, and the values follow the
    new data."""
    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    announced = []
    for k, data in enumerate((torch.zeros(3), torch.arange(3.0))):
        fn = _density(data.to(torch.float64))
        if k == 1:

            def refuse(*args, **kwargs):
                raise AssertionError("traced or compiled again")

            for name in ("trace", "compile_validated", "compile_graph"):
                monkeypatch.setattr(graph_module, name, refuse)
        checked = []
        with graph_module.on_compile(lambda k=k: announced.append(k)):
            compiled = compile_function(fn, [z], checked.append)
        assert checked
        assert relative_difference(compiled(z), fn(z)) < 1e-12
    assert len(list((tmp_path / "inductor" / "ppltk-lib").glob("*.json"))) == 1
    assert set(announced) == {0}  # a compilation is announced, a library found is not


@needs_compiler
def test_second_run_of_a_model_imports_neither_tracer_nor_compiler(tmp_path):
    """``sample`` with a compiled NUTS: the second process finds its library without
    importing TorchDynamo or TorchInductor (about a second), and draws the same values."""
    script = textwrap.dedent(
        """
        import sys, torch, pyro, pyro.distributions as dist
        torch.set_num_threads(1)
        from ppltk.mcmc import sample

        def model(y):
            mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
            with pyro.plate("n", y.shape[0]):
                pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

        y = torch.linspace(-1.0, 2.0, 10, dtype=torch.float64)
        res = sample(model, y, num_chains=2, num_warmup=50, num_samples=50, seed=0,
                     progress=False, backend="inductor")
        print(float(res.draws["mu"].sum()), "torch._dynamo" in sys.modules,
              "torch._inductor" in sys.modules)
        """
    )
    env = {**os.environ, "PPLTK_CACHE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    outs = [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert outs[0][1:] == ["True", "True"]  # the first run compiled
    assert outs[1][1:] == ["False", "False"]
    assert outs[1][0] == outs[0][0]


@needs_compiler
def test_tensors_left_on_the_graph_do_not_become_hidden_inputs(empty_cache):
    """Tensors registered on a traced graph that no operation reads (a Pyro model left a
    ``[0]`` and a ``[]`` float32 constant on one posteriordb model's step) are dropped before
    compiling: TorchInductor would pass each as an extra leading input that a caller of the
    library does not know of (that model crashed reading past its inputs)."""
    data = torch.linspace(-1.0, 1.0, 3, dtype=torch.float64)

    def fn(z):
        return ((z - data) ** 2).sum(-1), z * 3.0

    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    graph = trace(fn, z)
    graph.register_buffer("stale_empty", torch.zeros(0))
    graph.register_buffer("stale_scalar", torch.tensor(0.5))
    lifted = copy.deepcopy(graph)
    assert [tuple(t.shape) for t in lift_constants(lifted)] == [(3,)]
    assert list(lifted.buffers()) == [] and list(lifted.parameters()) == []
    compiled = compile_validated(graph, [z], lambda f: None)
    assert compiled.library is not None  # the library, not the in-process fallback
    assert relative_difference(compiled(z), fn(z)) < 1e-12


def test_elements_touched_counts_inputs_and_every_output():
    x = torch.ones(10, dtype=torch.float64)

    def fn(x):
        return ((x + 1.0) * 2.0).sum(), x[:3]

    # inputs 10, add 10, mul 10, sum 1, slice 3
    assert graph_module.elements_touched(trace(fn, x), [x]) == 34


def test_a_graph_that_fails_at_its_example_inputs_keeps_vector_code():
    """Counting elements evaluates the graph; where that raises (a factorisation of a matrix
    that is not positive definite at this point), the choice is TorchInductor's default."""
    a = torch.eye(2, dtype=torch.float64)
    graph = trace(lambda a: (torch.linalg.cholesky(a).sum(),), a)
    assert graph_module._is_small(graph, [a])
    assert not graph_module._is_small(graph, [-a])


@needs_compiler
@pytest.mark.parametrize("limit, vector_code", [(0, True), (10**9, False)])
def test_small_graphs_compile_to_scalar_code_and_compute_the_same(
    tmp_path, monkeypatch, empty_cache, limit, vector_code
):
    """Above ``SCALAR_CODE_MAX_ELEMENTS`` the generated C++ uses ATen's vector types, at or
    below it plain loops; both compute what the graph does."""
    monkeypatch.setattr(graph_module, "SCALAR_CODE_MAX_ELEMENTS", limit)
    data = torch.linspace(-1.0, 1.0, 64, dtype=torch.float64)
    z = torch.randn(4, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fn = _density(data)
    compiled = compile_validated(trace(fn, z), [z], lambda f: None)
    assert relative_difference(compiled(z), fn(z)) < 1e-12
    sources = [p.read_text() for p in (tmp_path / "inductor").rglob("*.cpp")]
    assert sources
    assert any("at::vec::" in s for s in sources) == vector_code


@needs_compiler
def test_a_compiled_call_allocates_its_intermediates_at_once(tmp_path, empty_cache):
    """On the CPU the intermediate buffers of a call (here the sorts' and the reductions') are
    carved from one allocation, and each output has its own: a small NUTS leaf otherwise
    spends a fifth of its time allocating, and a kept output must not hold the others."""
    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def fn(z):
        centred = z - z.mean(-1, keepdim=True)
        scale = centred.square().sum(-1, keepdim=True).sqrt()
        w = torch.softmax(centred / scale, -1)
        m = torch.cummax(w, -1).values
        s = torch.sort(m * z, -1).values
        t = torch.sort(s.exp() - w, -1).values
        return (w * m * t).sum(-1), centred * scale

    compiled = compile_validated(trace(fn, z), [z], lambda f: None)
    got = compiled(z)
    assert relative_difference(got, fn(z)) < 1e-12
    assert got[0].untyped_storage().data_ptr() != got[1].untyped_storage().data_ptr()
    (source,) = [p.read_text() for p in (tmp_path / "inductor").rglob("*.main.cpp")]
    assert source.count("aoti_torch_empty_strided(") == len(got) + 1  # the outputs, one pool


def test_cache_folder_is_ppltks_when_torchinductor_set_its_default_first(tmp_path):
    """TorchInductor writes its default cache folder into ``TORCHINDUCTOR_CACHE_DIR`` the
    first time it runs; imported after that, ppltk still keeps its libraries in its own
    folder, while a folder the user chose is honoured."""
    script = textwrap.dedent(
        """
        import os, sys
        from torch._inductor.runtime import cache_dir_utils
        if sys.argv[1] == "user":
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = sys.argv[2]
        cache_dir_utils.cache_dir()  # what TorchInductor does when it first compiles
        from ppltk.model.graph import inductor_cache_dir
        print(inductor_cache_dir())
        """
    )
    env = {**os.environ, "PPLTK_CACHE_DIR": str(tmp_path / "ppltk")}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    chosen = str(tmp_path / "chosen")
    folders = [
        subprocess.run(
            [sys.executable, "-c", script, who, chosen], env=env, capture_output=True,
            text=True, check=True,
        ).stdout.strip()
        for who in ("torch", "user")
    ]  # fmt: skip
    assert folders == [str(tmp_path / "ppltk" / "inductor"), chosen]
