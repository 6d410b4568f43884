"""Compiled graphs (``ppltk.model.graph``): scalar constants folded, the model's data lifted to
inputs, and the ahead-of-time library reused from disk for the same graph on new data."""

import shutil

import pytest
import torch

from ppltk.model import graph as graph_module
from ppltk.model.graph import (
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
def test_ahead_of_time_library_is_reused_for_new_data(tmp_path, monkeypatch):
    """The same model on data of the same shape reuses the library on disk: no second
    compilation, one library, and the values follow the new data."""
    monkeypatch.setenv("PPLTK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(graph_module, "_USER_INDUCTOR_CACHE", None)
    z = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    results = []
    for k, data in enumerate((torch.zeros(3, dtype=torch.float64), torch.ones(3) * 5.0)):
        data = data.to(torch.float64)
        fn = _density(data)
        if k == 1:  # the second model must not reach the compiler

            def refuse(*args, **kwargs):
                raise AssertionError("compiled again")

            monkeypatch.setattr("torch._inductor.aot_compile", refuse)
            monkeypatch.setattr(graph_module, "compile_graph", refuse)
        checked = []
        compiled = compile_validated(trace(fn, z), [z], checked.append)
        assert checked  # the caller's check ran on the compiled function
        results.append((compiled(z), fn(z)))
    libraries = list((tmp_path / "inductor" / "ppltk-aot").glob("*.so"))
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
