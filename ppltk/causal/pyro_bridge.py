"""Pyro bridge: surgery as an effect handler, and discrete Pyro models as diagrams.

:class:`DoMessenger` (``do(model, {site: value | distribution})``) is ``cut`` on a Pyro
program: the sample statement of an intervened site keeps its name, but its distribution
is replaced by the intervention state — a point mass ``δ_v`` (hard) or the given
distribution (soft/stochastic) — independent of the site's parents.  The trace records the
intervened value, the new distribution (so the trace's log-density is that of the cut
model) and ``msg["infer"]["do"]``.  Unlike :func:`pyro.poutine.do`, no counterfactual
sibling site is created.

:func:`model_to_cpts` reads the tables of a discrete Pyro model by parallel enumeration
(each site gets its own broadcast dimension; a site's table depends on the dimensions its
``log_prob`` varies along), :func:`cpts_to_model` goes back, and
:func:`exact_interventional` answers ``P(query | do, evidence)`` exactly by one einsum.
:func:`sample_interventional` is the Monte Carlo route for continuous models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import networkx as nx
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from ppltk._rng import child_seed, make_generator, pyro_seed
from ppltk.causal.diagram import Diagram
from ppltk.causal.surgery import interventional
from ppltk.errors import ArgumentError, ModelStructureError

__all__ = [
    "DoMessenger",
    "do",
    "DiscreteCausalModel",
    "model_to_cpts",
    "cpts_to_model",
    "exact_interventional",
    "sample_interventional",
    "monte_carlo_mean",
]


class DoMessenger(Messenger):
    """Replace the distribution of each intervened site by its intervention state.

    Preserves every other site's conditional distribution (the boxes not cut); the laws
    ``do(do(m, I), I) = do(m, I)`` and ``convert(do(m, I)) = cut(convert(m))`` are tested.
    With nested handlers on the same site the outermost intervention wins.
    """

    def __init__(self, interventions: Mapping[str, object]):
        super().__init__()
        if not isinstance(interventions, Mapping):
            raise ArgumentError(f"Expected `interventions` to be a dict, got {interventions!r}")
        self.interventions = dict(interventions)

    def _pyro_sample(self, msg: dict) -> None:
        name = msg["name"]
        if name not in self.interventions:
            return
        if msg["is_observed"]:
            raise ModelStructureError(f"Expected site {name!r} to be latent to intervene on it")
        # nested ``do`` on the same site: the outermost intervention wins, the original stays
        fn = msg["infer"].get("do_original", msg["fn"])
        spec = self.interventions[name]
        msg["infer"] = {**msg["infer"], "do": spec, "do_original": fn}
        if isinstance(spec, torch.distributions.Distribution):
            msg["fn"] = spec
            return
        msg["fn"] = dist.Delta(_as_value(spec, fn), event_dim=fn.event_dim)


def _as_value(spec, fn) -> torch.Tensor:
    if torch.is_tensor(spec):
        return spec
    if fn.has_enumerate_support:
        return torch.as_tensor(spec, dtype=fn.enumerate_support(expand=False).dtype)
    return torch.as_tensor(spec, dtype=torch.get_default_dtype())


def do(model: Callable, interventions: Mapping[str, object]) -> Callable:
    """``model`` with ``cut`` applied at the named sites (hard value or a distribution)."""
    return DoMessenger(interventions)(model)


class DiscreteCausalModel(NamedTuple):
    """A discrete Pyro model as a DAG, tables ``{var: (parents, T)}`` and site supports."""

    graph: nx.DiGraph
    cpts: dict
    supports: dict

    @property
    def diagram(self) -> Diagram:
        """The string diagram of the model (one box per site, inputs its parents)."""
        return Diagram.from_graph(self.graph)


class _EnumerateTables(Messenger):
    """Give the ``k``-th site the values of its support along dimension ``-(k+1)``."""

    def __init__(self):
        super().__init__()
        self.order: list[str] = []
        self.tables: dict[str, torch.Tensor] = {}
        self.supports: dict[str, torch.Tensor] = {}

    def _pyro_sample(self, msg: dict) -> None:
        name, fn = msg["name"], msg["infer"].get("do_original", msg["fn"])
        if msg["is_observed"]:
            raise ModelStructureError(
                f"Expected no observed sites, but found {name!r}; pass it as `evidence=`"
            )
        if msg["cond_indep_stack"] or isinstance(msg["fn"], _Subsample):
            raise ModelStructureError(f"Expected no plates, but site {name!r} is in a plate")
        if not fn.has_enumerate_support:
            raise ModelStructureError(
                f"Expected discrete sites with finite support, but {name!r} is {type(fn).__name__}"
            )
        support = fn.enumerate_support(expand=False).reshape(-1)
        k = len(self.order)
        msg["value"] = support.reshape((-1,) + (1,) * k)
        msg["done"] = True
        self.order.append(name)
        self.supports[name] = support

    def _pyro_post_sample(self, msg: dict) -> None:
        name = msg["name"]
        if name not in self.supports or name in self.tables:
            return
        value, spec = msg["value"], msg["infer"].get("do", None)
        if spec is None or isinstance(spec, torch.distributions.Distribution):
            table = msg["fn"].log_prob(value).exp()
        else:
            hit = value == _as_value(spec, msg["infer"]["do_original"])
            table = hit.to(torch.get_default_dtype())
        self.tables[name] = table


def _to_cpt(table: torch.Tensor, k: int, order: list[str]) -> tuple[tuple[str, ...], torch.Tensor]:
    table = table.reshape((1,) * (k + 1 - table.ndim) + tuple(table.shape))
    # axis a holds site k - a; a site is a parent when the table varies along its axis
    parents = [i for i in range(k) if table.shape[k - i] > 1]
    idx = tuple(slice(None) if (k - a) in parents or a == 0 else 0 for a in range(k + 1))
    sub = table[idx]
    sub = sub.permute(*reversed(range(sub.ndim)))
    return tuple(order[i] for i in parents), sub.contiguous()


def model_to_cpts(model: Callable, *args, **kwargs) -> DiscreteCausalModel:
    """Read the DAG and conditional tables of a discrete, plate-free Pyro model.

    The model must broadcast like a model for parallel enumeration (index tables with the
    parents' values).  Table axis ``i`` of a site indexes ``supports[site][i]``.
    """
    tracer = _EnumerateTables()
    with tracer:
        model(*args, **kwargs)
    graph, cpts = nx.DiGraph(), {}
    for k, name in enumerate(tracer.order):
        parents, table = _to_cpt(tracer.tables[name], k, tracer.order)
        graph.add_node(name)
        graph.add_edges_from((p, name) for p in parents)
        cpts[name] = (parents, table)
    return DiscreteCausalModel(graph, cpts, tracer.supports)


def cpts_to_model(cpts: Mapping[str, tuple], order: Sequence[str] | None = None) -> Callable:
    """A Pyro model sampling each variable from ``Categorical(T[parents' values])``."""
    graph = nx.DiGraph()
    for v, (parents, table) in cpts.items():
        if table.ndim != len(parents) + 1:
            raise ArgumentError(f"Expected unbatched cpts[{v!r}], found {tuple(table.shape)}")
        graph.add_node(v)
        graph.add_edges_from((p, v) for p in parents)
    order = list(order) if order is not None else list(nx.topological_sort(graph))

    def model() -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = {}
        for v in order:
            parents, table = cpts[v]
            probs = table[tuple(values[p] for p in parents)] if parents else table
            values[v] = pyro.sample(v, dist.Categorical(probs=probs))
        return values

    return model


def exact_interventional(
    model: Callable,
    query: Sequence[str],
    interventions: Mapping[str, object] | None = None,
    evidence: Mapping[str, object] | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
) -> torch.Tensor:
    """Exact ``P(query | do, evidence)`` of a discrete Pyro model (axes index the supports).

    The model is converted by :func:`model_to_cpts` *after* ``do`` (so the intervened sites
    are state boxes) and evaluated by one einsum; ``evidence`` values are support indices.
    """
    dm = model_to_cpts(do(model, interventions or {}), *model_args, **(model_kwargs or {}))
    return interventional(dm.graph, dm.cpts, query, evidence=evidence)


def sample_interventional(
    model: Callable,
    interventions: Mapping[str, object],
    num_samples: int,
    seed: int | torch.Generator | None = None,
    max_plate_nesting: int = 0,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
) -> dict[str, torch.Tensor]:
    """``num_samples`` joint draws of every site of ``do(model, interventions)``.

    Vectorised by an outer plate at dim ``-(max_plate_nesting + 1)``.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ArgumentError(f"Expected `num_samples` a positive int, but found {num_samples!r}")
    gen = make_generator(seed)
    with pyro_seed(child_seed(gen)):
        with poutine.trace() as tr:
            with pyro.plate("_ppltk_mc", num_samples, dim=-(max_plate_nesting + 1)):
                do(model, interventions)(*model_args, **(model_kwargs or {}))
    trace = tr.trace
    return {
        n: s["value"] for n, s in trace.nodes.items() if s["type"] == "sample" and n != "_ppltk_mc"
    }


def monte_carlo_mean(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and Monte Carlo standard error ``sd / sqrt(n)`` along the first axis."""
    n = samples.shape[0]
    x = samples.to(torch.float64)
    return x.mean(0), x.std(0) / n**0.5
