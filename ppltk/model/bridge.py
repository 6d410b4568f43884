"""Bridge from a Pyro model to what gradient-based and particle inference need.

The model is traced once.  Each continuous latent site :math:`x_s` is mapped to an
unconstrained vector :math:`u_s` by Pyro's ``biject_to(support)``, and all sites are laid
end to end in one flat vector :math:`z \\in \\mathbb{R}^D`.  The target density on ``z`` is

.. math::

    \\log \\pi(z) = \\sum_s \\big[\\log p(x_s \\mid \\cdot) + \\log|\\det J_{T_s}(u_s)|\\big]
                 + \\sum_o \\log p(y_o \\mid x), \\qquad x_s = T_s(u_s),

split into a *prior* part (latent sites plus log-Jacobians) and a *likelihood* part
(observed sites and ``pyro.factor`` terms).  Discrete latent sites :math:`k` with a finite
support are summed out exactly by parallel enumeration (:mod:`ppltk.model.enumeration`), so
that :math:`\\log \\pi` is the marginal :math:`\\log \\sum_k p(x, k, y)` on the continuous
sites only, with :math:`\\log p(x) = \\log \\sum_k p(x, k)` as its prior part.  Points come
in batches ``z [B, D]`` whose leading dimension is chains or particles; the model is
vectorised over it with ``torch.func.vmap`` (one Pyro trace per batch, not per point),
falling back to a loop with a
:class:`~ppltk.errors.VectorisationWarning` when a model cannot be vectorised.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from ppltk._rng import child_seed, pyro_seed
from ppltk.errors import (
    ArgumentError,
    DiscreteLatentError,
    ModelStructureError,
    NonFiniteLogDensityError,
    ShapeError,
    VectorisationWarning,
)
from ppltk.model.enumeration import Enumeration
from ppltk.model.graph import BACKENDS, EVALUATION_ERRORS, GraphCache

__all__ = ["ModelBridge", "SiteInfo", "EVALUATION_ERRORS", "evaluate_rows"]


def evaluate_rows(
    fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    z: torch.Tensor,
    layout: tuple[str, ...] = ("value", "grad"),
    fallback: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
    failures: list | None = None,
) -> tuple[torch.Tensor, ...]:
    """``fn(z [B, D])`` where a point at which the model raises one of
    :data:`EVALUATION_ERRORS` gets ``-inf`` values and zero gradients instead of failing the
    whole batch.

    ``layout`` names ``fn``'s outputs: ``"value"`` (``[B]``) or ``"grad"`` (``[B, D]``).  A
    batched evaluation raises for all rows when one row fails (vmap, a batched Cholesky), so on
    an error the batch is bisected (with ``fallback``, e.g. an eager evaluation that does not
    capture a graph for every sub-batch shape) down to the failing rows: ``O(k log B)`` extra
    calls for ``k`` failing rows, none when nothing fails.  Each error caught is appended to
    ``failures`` when given.
    """
    try:
        return fn(z)
    except EVALUATION_ERRORS as error:
        if failures is not None:
            failures.append(error)
        if z.shape[0] == 1 and fallback is None:
            return _failed_rows(layout, z)
    inner = fallback if fallback is not None else fn
    if z.shape[0] == 1:
        return evaluate_rows(inner, z, layout, None, failures)
    half = z.shape[0] // 2
    parts = [evaluate_rows(inner, rows, layout, None, failures) for rows in (z[:half], z[half:])]
    return tuple(torch.cat(pair, 0) for pair in zip(*parts, strict=True))


def _failed_rows(layout: tuple[str, ...], z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``-inf`` values ``[B]`` and zero gradients ``[B, D]``."""
    minus_inf = torch.full(z.shape[:1], -math.inf, dtype=z.dtype, device=z.device)
    return tuple(minus_inf if kind == "value" else torch.zeros_like(z) for kind in layout)


@dataclass(frozen=True)
class SiteInfo:
    """One continuous latent site and its slot in the flat unconstrained vector."""

    name: str
    shape: tuple[int, ...]
    unconstrained_shape: tuple[int, ...]
    support: Any
    transform: Any
    offset: int
    size: int

    def slot(self, z: torch.Tensor) -> torch.Tensor:
        """The site's unconstrained block of ``z [..., D]``, shaped ``[..., *unconstrained_shape]``."""
        block = z[..., self.offset : self.offset + self.size]
        return block.reshape(z.shape[:-1] + self.unconstrained_shape)


class ModelBridge:
    """A Pyro model seen as a batched log-density on a flat unconstrained vector.

    Parameters
    ----------
    model
        A Pyro model (a callable that calls ``pyro.sample``).  Observed values are checked
        once at trace time: outside their distribution's support (unless its bounds depend on
        latents) they raise :class:`~ppltk.errors.ArgumentError`, and data that a plate would
        broadcast into a larger log-probability (``[n, 1]`` in a plate of ``n``) raises
        :class:`~ppltk.errors.ShapeError`, both naming the site.  ``pyro.deterministic``
        sites are not observations: :meth:`to_result` returns them as draws.  A latent site
        whose support depends on other latents (``Uniform(0, 1 - a)``) has its transform
        re-derived from the support at every evaluation.  A point where the model raises
        (``ppltk.model.graph.EVALUATION_ERRORS``) gets :math:`-\\infty` and a zero
        gradient; the rest of the batch is unaffected.
    args, kwargs
        Arguments the model is called with (observed data usually among them).
    seed
        Seed of the one tracing run that discovers the sites.
    allow_discrete
        When true, discrete latent sites are left alone (listed in ``discrete_sites``, not
        enumerated, not in the density): for methods that handle them themselves.
    enumerate_discrete
        When true (default, and ``allow_discrete`` false), each discrete latent site with
        ``has_enumerate_support`` (Bernoulli, Categorical, Binomial, ...) is marginalised by
        parallel enumeration, as Pyro's and NumPyro's NUTS do: a site without a setting is
        enumerated (``config_enumerate``), a user's ``infer={"enumerate": "parallel"}`` is kept,
        ``pyro.markov`` chains reuse enumeration dimensions (an HMM costs the forward
        algorithm, linear in its length) and :meth:`to_result` draws the sites from their exact
        conditional given each continuous draw.  A discrete site without finite support
        (``Poisson``), one configured otherwise (``"sequential"``), or any discrete site when
        this is false, raises :class:`~ppltk.errors.DiscreteLatentError` naming it.  The
        enumerated sites are in :attr:`enumerated`.  Enumerated models are evaluated batched
        (vmap) and captured by the ``"fx"``/``"inductor"`` backends like any other; a plate
        that subsamples or a support that depends on other latents is refused
        (:class:`~ppltk.errors.ModelStructureError`) in such a model.
    vectorise
        ``"auto"`` (vmap, with a loop fallback), ``"vmap"`` (no fallback) or ``"loop"``.
    backend
        How batched evaluations run. ``"fx"`` records the model's tensor operations (forward
        and gradient) once per batch shape and replays them without re-running the model's
        Python code (about 2x faster); ``"inductor"`` also compiles that graph with
        ``torch.compile`` (10-30 s once, then about 10x faster again); ``"eager"`` runs the
        model every time. ``"auto"`` (default) is ``"fx"`` unless a plate subsamples. A graph
        is checked against eager evaluation before use and falls back to eager on mismatch
        (e.g. control flow that depends on latent values).

    Examples
    --------
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> bridge = ModelBridge(model, (torch.tensor(0.5),))
    >>> bridge.dim
    1
    >>> bridge.log_density(torch.zeros(3, 1)).shape
    torch.Size([3])

    A two-component mixture: the assignments ``k`` are summed out, ``D`` counts ``w``
    (one unconstrained coordinate), ``loc`` (two) and nothing else.

    >>> def mixture(y):
    ...     w = pyro.sample("w", dist.Dirichlet(torch.ones(2)))
    ...     loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 5.0).to_event(1))
    ...     with pyro.plate("data", len(y)):
    ...         k = pyro.sample("k", dist.Categorical(w))
    ...         pyro.sample("y", dist.Normal(loc[k], 1.0), obs=y)
    >>> bridge = ModelBridge(mixture, (torch.tensor([-1.0, 2.0, 2.5]),))
    >>> bridge.dim, bridge.enumerated
    (3, ['k'])
    """

    def __init__(
        self,
        model: Callable,
        args: tuple = (),
        kwargs: dict | None = None,
        seed: int = 0,
        allow_discrete: bool = False,
        vectorise: str = "auto",
        backend: str = "auto",
        enumerate_discrete: bool = True,
    ) -> None:
        if not callable(model):
            raise ArgumentError(f"Expected `model` to be callable, but found {type(model)}")
        if vectorise not in ("auto", "vmap", "loop"):
            raise ArgumentError(
                f"Expected `vectorise` in 'auto'|'vmap'|'loop', found {vectorise!r}"
            )
        self.model = model
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        if backend not in BACKENDS:
            raise ArgumentError(f"Expected `backend` in {BACKENDS}, but found {backend!r}")
        self._mode = vectorise
        self.num_evaluation_errors = 0  # batched evaluations in which some point raised
        self.last_evaluation_error: BaseException | None = None
        trace = self._first_trace(seed)
        self.sites: dict[str, SiteInfo] = {}
        self.observed: dict[str, torch.Tensor] = {}
        self.deterministic: dict[str, tuple[int, ...]] = {}
        self.discrete_sites: list[str] = []
        self.enumerated: list[str] = []
        self._collect_sites(trace, allow_discrete, enumerate_discrete)
        varying = self._varying_supports(trace, seed)
        self.dynamic = [name for name in self.sites if name in varying]
        self._enumeration: Enumeration | None = None
        if self.enumerated:
            self._enumeration = Enumeration(
                model, self.args, self.kwargs, trace, self.enumerated, seed, self._improper_init
            )
            self._enumeration.check_supported(self.dynamic, self._subsampled(trace))
        self._validate_observed(trace, varying)
        values = [s["value"] for s in trace.nodes.values() if s["type"] == "sample"]
        reference = values[0] if values else torch.zeros(())
        self.dtype = reference.dtype if reference.is_floating_point() else torch.get_default_dtype()
        self.device = reference.device
        if backend == "auto":
            backend = "eager" if self._subsampled(trace) else "fx"
        self.set_backend(backend)

    def set_backend(self, backend: str) -> None:
        """Evaluate with ``backend`` (``"eager"``, ``"fx"`` or ``"inductor"``) from now on;
        graphs are captured (and compiled) again at the next evaluation."""
        if backend not in BACKENDS or backend == "auto":
            raise ArgumentError(
                f"Expected `backend` in ('eager', 'fx', 'inductor'), but found {backend!r}"
            )
        self.backend = backend
        self._graph_density_and_grad = GraphCache(
            self._eager_density_and_grad, backend, "ModelBridge"
        )
        self._graph_parts = GraphCache(self._parts_checked, backend, "ModelBridge")
        self._graph_parts_and_grads = GraphCache(
            self._eager_parts_and_grads, backend, "ModelBridge"
        )

    # ------------------------------------------------------------------ structure
    def _first_trace(self, seed: int, tries: int = 10):
        """A prior trace of the model; a draw at which the model raises (a failed Cholesky,
        a validation error) is retried with the next seed, ``tries`` times in all."""
        for k in range(tries):
            try:
                with pyro_seed(seed + k), poutine.block(), self._improper_init():
                    return poutine.trace(self.model).get_trace(*self.args, **self.kwargs)
            except EVALUATION_ERRORS as error:
                last = error
        raise NonFiniteLogDensityError(
            f"The model raised at each of {tries} draws from its prior, the last time "
            f"{type(last).__name__}: {str(last)[:300]}"
        ) from last

    def _collect_sites(self, trace, allow_discrete: bool, enumerate_discrete: bool) -> None:
        offset = 0
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if site["infer"].get("_deterministic"):
                self.deterministic[name] = tuple(site["value"].shape)
                continue
            if site["is_observed"]:
                self.observed[name] = site["value"]
                continue
            fn = site["fn"]
            if fn.support.is_discrete:
                if allow_discrete:
                    self.discrete_sites.append(name)
                elif enumerate_discrete and fn.has_enumerate_support:
                    self.enumerated.append(name)
                elif enumerate_discrete:
                    raise DiscreteLatentError(
                        f"Latent site '{name}' is discrete ({type(fn).__name__}) without a "
                        "finite support to enumerate (has_enumerate_support is False), so it "
                        "cannot be summed out; gradient-based methods need continuous latents "
                        "or enumerable discrete ones. Give it a finite support (e.g. a "
                        "Categorical over 0..K), marginalise it by hand, condition on it, or "
                        "use an SMC or MH method."
                    )
                else:
                    raise DiscreteLatentError(
                        f"Latent site '{name}' is discrete ({type(fn).__name__}); gradient-based "
                        "methods need continuous latents. Marginalise it out (e.g. with "
                        "pyro.infer.config_enumerate / TraceEnum), condition on it, or use an "
                        "SMC or MH method."
                    )
                continue
            transform = biject_to(fn.support)
            value = site["value"]
            unconstrained = transform.inv(value)
            size = unconstrained.numel()
            self.sites[name] = SiteInfo(
                name,
                tuple(value.shape),
                tuple(unconstrained.shape),
                fn.support,
                transform,
                offset,
                size,
            )
            offset += size
        self.dim = offset
        if self.dim == 0 and not self.discrete_sites and not self.enumerated:
            raise ModelStructureError("The model has no latent sample sites to infer.")

    def _improper_init(self) -> _ImproperInit:
        """Values for improper-prior sites (``ImproperUniform``) in the discovery traces."""
        tensors = [*self.args, *self.kwargs.values()]
        like = next((t for t in tensors if torch.is_tensor(t) and t.is_floating_point()), None)
        return _ImproperInit(like)

    def _varying_supports(self, trace, seed: int) -> set[str]:
        """Sites whose support differs between two prior traces: their bounds depend on other
        latent values (e.g. ``Uniform(0, 1 - a)``), so their transform is re-derived from the
        support at every evaluation instead of being fixed at trace time."""
        try:
            with (
                pyro_seed(seed + 1),
                poutine.block(),
                pyro.validation_enabled(False),
                self._improper_init(),
            ):
                other = poutine.trace(self.model).get_trace(*self.args, **self.kwargs)
        except Exception:  # noqa: BLE001 - a second trace is only a probe
            return set()
        varying = set()
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site) or name not in other.nodes:
                continue
            support = getattr(site["fn"], "support", None)
            other_support = getattr(other.nodes[name]["fn"], "support", None)
            if support is None or other_support is None:
                continue
            a, b = _support_key(support), _support_key(other_support)
            if len(a) != len(b) or not all(_same(x, y) for x, y in zip(a, b)):
                varying.add(name)
        return varying

    def _validate_observed(self, trace, varying: set[str]) -> None:
        """Observed values inside their distribution's support and not broadcast by the
        plates into a larger log-probability (e.g. ``[n, 1]`` data in a plate of ``n``)."""
        for name in self.observed:
            site = trace.nodes[name]
            fn, value = site["fn"], site["value"]
            if type(fn).__name__ == "Unit" or not isinstance(value, torch.Tensor):
                continue  # pyro.factor
            event_dim = len(fn.event_shape)
            value_batch = tuple(value.shape[: value.dim() - event_dim])
            try:  # NumPy's: torch's imports its symbolic-shape machinery (a quarter second)
                full = np.broadcast_shapes(value_batch, tuple(fn.batch_shape))
            except ValueError:
                full = None
            if full is None or math.prod(full) > max(
                math.prod(value_batch), math.prod(fn.batch_shape)
            ):
                raise ShapeError(
                    f"Observed site '{name}': expected data of shape {list(fn.shape())} "
                    f"(batch {list(fn.batch_shape)}, event {list(fn.event_shape)}), but found "
                    f"{list(value.shape)}, which broadcasts against the distribution to batch "
                    f"{list(full) if full is not None else 'an error'}; reshape the data "
                    "(e.g. drop a trailing dimension of size 1)."
                )
            if name in varying or fn.support is None:
                continue  # bounds depend on latents: out-of-bounds data is zero likelihood
            try:
                inside = fn.support.check(value)
            except Exception:  # noqa: BLE001 - supports that cannot be checked are skipped
                continue
            mask = site.get("mask")
            if isinstance(mask, torch.Tensor):
                inside = inside | ~mask.bool()
            if not bool(torch.as_tensor(inside).all()):
                bad = value[~torch.as_tensor(inside).expand(value_batch)] if value_batch else value
                raise ArgumentError(
                    f"Observed site '{name}': expected values in the support {fn.support} of "
                    f"{type(fn).__name__}, but found {bad.reshape(-1)[:5].tolist()} outside it."
                )

    def structure(self) -> list:
        """Latent sites (name, shape, support), observed and deterministic sites: what a
        checkpoint's fingerprint compares."""
        latent = [(s.name, list(s.shape), str(s.support)) for s in self.sites.values()]
        observed = [(n, list(v.shape)) for n, v in self.observed.items()]
        discrete = list(self.discrete_sites) + [f"{n} (enumerated)" for n in self.enumerated]
        return [latent, observed, sorted(self.deterministic), discrete]

    @staticmethod
    def _subsampled(trace) -> bool:
        """True when a plate subsamples (its random indices must not be baked into a graph)."""
        return any(
            site_is_subsample(site)
            and site["fn"].subsample_size is not None
            and site["fn"].subsample_size < site["fn"].size
            for site in trace.nodes.values()
            if site["type"] == "sample"
        )

    def describe(self) -> str:
        """A short table of the latent sites, their shapes, supports and flat slots."""
        lines = [f"{'site':<20}{'shape':<16}{'support':<34}slot"]
        for s in self.sites.values():
            lines.append(
                f"{s.name:<20}{str(list(s.shape)):<16}{str(s.support):<34}"
                f"[{s.offset}:{s.offset + s.size}]"
            )
        if self.dynamic:
            lines.append(
                f"support depends on other latents (re-derived): {', '.join(self.dynamic)}"
            )
        if self.deterministic:
            lines.append(f"deterministic (returned as draws): {', '.join(self.deterministic)}")
        if self.enumerated:
            lines.append(f"discrete, summed out by enumeration: {', '.join(self.enumerated)}")
        lines.append(f"observed: {', '.join(self.observed) or '-'}; flat dimension D={self.dim}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ transforms
    def _check_batch(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor):
            raise ArgumentError(f"Expected `z` to be a torch.Tensor, but found {type(z)}")
        if z.ndim != 2 or z.shape[-1] != self.dim:
            raise ShapeError(
                f"Expected `z` of shape [batch, {self.dim}], but found {list(z.shape)}"
            )
        return z

    def constrain(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Constrained site values ``{site: [..., *shape]}`` for flat points ``z [..., D]``
        (sites with latent-dependent supports are mapped by running the model)."""
        lead = z.shape[:-1]
        out = {
            s.name: s.transform(s.slot(z)).reshape(lead + s.shape)
            for s in self.sites.values()
            if s.name not in self.dynamic
        }
        if self.dynamic:
            flat = self._run_rows(z.reshape(-1, self.dim), self.dynamic)
            out.update({k: v.reshape(lead + self.sites[k].shape) for k, v in flat.items()})
            out = {name: out[name] for name in self.sites}
        return out

    def unconstrain(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Flat unconstrained points ``[B, D]`` from constrained values ``{site: [B, *shape]}``."""
        blocks = []
        for s in self.sites.values():
            if s.name not in values:
                raise ArgumentError(f"Expected a value for site '{s.name}' in `values`")
            value = values[s.name]
            batch = value.shape[: value.ndim - len(s.shape)]
            if s.name in self.dynamic:
                transform = self._support_transform_rows(values, s, batch)
                blocks.append(transform.reshape(batch + (s.size,)))
            else:
                blocks.append(s.transform.inv(value).reshape(batch + (s.size,)))
        return torch.cat(blocks, dim=-1)

    def _support_transform_rows(self, values, site: SiteInfo, batch) -> torch.Tensor:
        """Unconstrained values of a dynamic-support site, its transform taken from the
        support it has when the model runs on ``values``."""

        def one(row: dict[str, torch.Tensor]) -> torch.Tensor:
            trace = self._trace_at(row)
            return biject_to(trace.nodes[site.name]["fn"].support).inv(row[site.name])

        n = math.prod(batch)
        rows = {k: v.reshape((n,) + self.sites[k].shape) for k, v in values.items()
                if k in self.sites}  # fmt: skip
        try:
            return torch.func.vmap(one)(rows)
        except Exception:  # noqa: BLE001 - fall back to a loop
            return torch.stack([one({k: v[i] for k, v in rows.items()}) for i in range(n)])

    # ------------------------------------------------------------------ densities
    def _point_parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prior + log-Jacobian, likelihood) for one flat point ``z [D]``."""
        values, log_jac = {}, z.new_zeros(())
        for s in self.sites.values():
            if s.name in self.dynamic:
                continue  # set while the model runs (its support depends on other latents)
            u = s.slot(z)
            x = s.transform(u)
            values[s.name] = x
            log_jac = log_jac + s.transform.log_abs_det_jacobian(u, x).sum()
        if self._enumeration is not None:  # discrete sites summed out (no dynamic sites)
            trace = self._enumeration.trace(values)
            prior, lik = self._enumeration.log_parts(trace, set(self.sites), z.new_zeros(()))
            return log_jac + prior, lik
        terms, dynamic_log_jac = self._site_terms(values, z)
        if dynamic_log_jac is not None:
            log_jac = log_jac + dynamic_log_jac
        prior, lik = log_jac, z.new_zeros(())
        for name, term in terms:
            if name in self.sites:
                prior = prior + term
            elif name not in self.discrete_sites and name not in self.deterministic:
                lik = lik + term
        return prior, lik

    def _trace_at(self, values: dict[str, torch.Tensor], z: torch.Tensor | None = None):
        """A trace of the model with latent ``values`` (and the dynamic-support sites set
        from ``z``); returns the trace (and the dynamic sites' log-Jacobian as
        ``trace.dynamic_log_jac``)."""
        model = poutine.condition(self.model, data=values)
        dynamic = None
        if self.dynamic and z is not None:
            dynamic = _DynamicSupports([self.sites[n] for n in self.dynamic], z)
            model = dynamic(model)
        with pyro.validation_enabled(False), poutine.block():
            trace = poutine.trace(model).get_trace(*self.args, **self.kwargs)
        trace.dynamic_log_jac = dynamic.log_jac if dynamic is not None else None
        return trace

    def _site_terms(
        self, values: dict[str, torch.Tensor], z: torch.Tensor | None = None
    ) -> tuple[list[tuple[str, torch.Tensor]], torch.Tensor | None]:
        """Per-site summed log-probabilities of the model conditioned on ``values`` (dynamic
        sites from ``z``), and the dynamic sites' log-Jacobian."""
        trace = self._trace_at(values, z)
        with pyro.validation_enabled(False):
            trace.compute_log_prob()  # Pyro applies each site's scale and mask
        terms = [
            (name, site["log_prob_sum"])
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)
        ]
        return terms, trace.dynamic_log_jac

    def _point_values(self, z: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """Values of sites ``names`` (deterministic or dynamic-support) at one point ``z``."""
        values = {
            s.name: s.transform(s.slot(z)).reshape(s.shape)
            for s in self.sites.values()
            if s.name not in self.dynamic
        }
        trace = self._trace_at(values, z)
        return {n: trace.nodes[n]["value"] for n in names}

    def _run_rows(self, z: torch.Tensor, names: list[str], chunk: int = 4096) -> dict:
        """Values of sites ``names`` at every row of ``z [N, D]`` (vmap in chunks, else a
        loop)."""
        if z.shape[0] == 0:
            return {n: z.new_zeros((0,)) for n in names}
        out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        for rows in z.split(chunk):
            try:
                part = torch.func.vmap(lambda r: self._point_values(r, names))(rows)
            except Exception:  # noqa: BLE001 - models vmap cannot batch: one row at a time
                each = [self._point_values(r, names) for r in rows]
                part = {n: torch.stack([torch.as_tensor(e[n]) for e in each]) for n in names}
            for n in names:
                out[n].append(part[n])
        return {n: torch.cat(v) for n, v in out.items()}

    def _parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._check_batch(z)
        if torch.is_grad_enabled() and z.requires_grad:  # differentiable: errors propagate
            return self._parts_checked(z)
        fn = self._parts_checked if self.backend == "eager" else self._graph_parts
        return self._robust(fn, z, ("value", "value"), self._parts_checked)

    def _parts_checked(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._mode != "loop":
            try:
                return torch.func.vmap(self._point_parts)(z)
            except Exception as error:  # noqa: BLE001 - any vmap failure falls back
                if self._mode == "vmap":
                    raise
                # the loop re-raises the model's own error when a point cannot be evaluated
                # (e.g. a failed Cholesky): that is not a vectorisation failure
                parts = self._loop_parts(z)
                self._mode = "loop"
                warnings.warn(
                    f"The model could not be vectorised with torch.func.vmap ({error!r:.200}); "
                    "evaluating points in a Python loop, which is slower.",
                    VectorisationWarning,
                    stacklevel=3,
                )
                return parts
        return self._loop_parts(z)

    def _loop_parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [self._point_parts(row) for row in z]
        return torch.stack([p for p, _ in parts]), torch.stack([q for _, q in parts])

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """Joint log-density with log-Jacobian, ``[B]``, differentiable in ``z [B, D]``."""
        prior, lik = self._parts(z)
        return prior + lik

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """Latent sites' log-probability plus log-Jacobian, ``[B]``."""
        return self._parts(z)[0]

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """Observed sites' and ``pyro.factor`` log-probability, ``[B]``."""
        return self._parts(z)[1]

    def log_prior_and_likelihood(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both parts from one model evaluation, ``([B], [B])``."""
        return self._parts(z)

    def log_density_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log pi(z) [B], grad [B, D])``, both detached; non-finite values are kept.

        With ``backend="fx"``/``"inductor"`` this replays the captured graph (forward and
        backward) of the model instead of re-running its Python code.
        """
        z = self._check_batch(z).detach()
        fn = (
            self._eager_density_and_grad
            if self.backend == "eager"
            else self._graph_density_and_grad
        )
        return self._robust(fn, z, ("value", "grad"), self._eager_density_and_grad)

    def log_prior_and_likelihood_and_grads(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        r"""``(prior [B], likelihood [B], grad prior [B, D], grad likelihood [B, D])`` from one
        model evaluation, all detached: what a tempered target
        :math:`\log p(x) + \beta \log p(y \mid x)` and its gradient need for any
        :math:`\beta`."""
        z = self._check_batch(z).detach()
        fn = self._eager_parts_and_grads if self.backend == "eager" else self._graph_parts_and_grads
        layout = ("value", "value", "grad", "grad")
        return self._robust(fn, z, layout, self._eager_parts_and_grads)

    def _robust(self, fn, z, layout, fallback):
        """``fn(z)`` with points where the model raises (a failed Cholesky, a validation error)
        given ``-inf`` and zero gradients; counted in :attr:`num_evaluation_errors`."""
        failures: list[BaseException] = []
        out = evaluate_rows(fn, z, layout, fallback, failures)
        if failures:
            self.num_evaluation_errors += 1
            self.last_evaluation_error = failures[-1]
        return out

    def _eager_parts_and_grads(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            prior, lik = self._parts_checked(z)
            grad_prior, grad_lik = (
                torch.autograd.grad(part.sum(), z, retain_graph=True)[0] for part in (prior, lik)
            )
        return prior.detach(), lik.detach(), grad_prior, grad_lik

    def _eager_density_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            prior, lik = self._parts_checked(z)
            lp = prior + lik
            (grad,) = torch.autograd.grad(lp.sum(), z)
        return lp.detach(), grad

    # ------------------------------------------------------------------ points
    def initial_points(
        self, num: int, generator: torch.Generator, radius: float = 2.0, max_tries: int = 100
    ) -> torch.Tensor:
        """``num`` points uniform in ``(-radius, radius)^D`` with finite log-density and gradient.

        Raises
        ------
        NonFiniteLogDensityError
            If no finite point is found; the message names the offending site(s).
        """
        if not isinstance(num, int) or num < 1:
            raise ArgumentError(f"Expected `num` to be a positive int, but found {num!r}")
        z = self._uniform(num, generator, radius)
        for _ in range(max_tries):
            lp, grad = self.log_density_and_grad(z)
            bad = ~(torch.isfinite(lp) & torch.isfinite(grad).all(-1))
            if not bad.any():
                return z
            z = torch.where(bad[:, None], self._uniform(num, generator, radius), z)
        message = self._explain_non_finite(z[bad][0], max_tries)
        raise NonFiniteLogDensityError(message) from self.last_evaluation_error

    def _uniform(self, num: int, generator: torch.Generator, radius: float) -> torch.Tensor:
        u = torch.rand(
            num, self.dim, generator=generator, dtype=self.dtype, device=generator.device
        )
        return ((2 * u - 1) * radius).to(self.device)

    def _explain_non_finite(self, z: torch.Tensor, tries: int) -> str:
        values = {s.name: s.transform(s.slot(z)) for s in self.sites.values()}
        try:
            terms, _ = self._site_terms(values, z)
            bad = [name for name, term in terms if not torch.isfinite(term)]
        except EVALUATION_ERRORS as error:
            return (
                f"The model could not be evaluated at any of {tries} random initial points; "
                f"the last attempt raised {type(error).__name__}: {str(error)[:300]}"
            )
        where = ", ".join(f"'{n}'" for n in bad) or "(the log-Jacobian or gradient)"
        return (
            f"The log-density is not finite at any of {tries} random initial points; "
            f"non-finite terms at site(s) {where}. Check the data and the parameters of "
            "those sites' distributions."
        )

    def sample_prior(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """``num`` unconstrained draws ``[num, D]`` from the prior (observed sites ignored).

        Pyro samples from torch's global generator, so it is seeded from ``generator`` for the
        duration of the call and restored afterwards.
        """

        def draw_one(_):
            with pyro.validation_enabled(False), poutine.block():
                trace = poutine.trace(self.model).get_trace(*self.args, **self.kwargs)
            return {n: trace.nodes[n]["value"] for n in self.sites}

        with pyro_seed(child_seed(generator)):
            try:
                index = torch.arange(num, device=self.device)
                stacked = torch.func.vmap(draw_one, randomness="different")(index)
            except Exception:  # noqa: BLE001 - models vmap cannot batch are drawn one by one
                draws = [draw_one(None) for _ in range(num)]
                stacked = {n: torch.stack([d[n] for d in draws]) for n in self.sites}
        return self.unconstrain(stacked).to(self.dtype)

    # ------------------------------------------------------------------ results
    def to_result(
        self,
        z: torch.Tensor,
        stats: dict[str, torch.Tensor] | None = None,
        method: str = "",
        log_evidence: float | None = None,
        attrs: dict | None = None,
        seed: int | torch.Generator | None = None,
    ):
        r"""A :class:`ppltk.Result` from flat draws ``z [chain, draw, D]``.

        Enumerated discrete sites get one draw each per row of ``z``, from their exact
        conditional :math:`p(k \mid x, y)` given that row's continuous values :math:`x`
        (``pyro.infer.infer_discrete(temperature=1)``), so that the pairs :math:`(x, k)` are
        draws from the joint posterior; ``pyro.deterministic`` sites are computed from the same
        run.  ``seed`` (int or :class:`torch.Generator`) drives those draws; ``None``
        (default) derives it from a hash of ``z``, so equal draws give equal discrete draws.
        """
        from ppltk.results import Result

        if z.ndim != 3 or z.shape[-1] != self.dim:
            raise ShapeError(
                f"Expected `z` of shape [chain, draw, {self.dim}], found {list(z.shape)}"
            )
        with torch.no_grad():
            draws = self.constrain(z)
            if self._enumeration is not None:
                draws.update(self._discrete_draws(draws, z, seed))
            elif self.deterministic:
                flat = self._run_rows(z.reshape(-1, self.dim), list(self.deterministic))
                lead = z.shape[:-1]
                draws.update({k: v.reshape(lead + v.shape[1:]) for k, v in flat.items()})
        observed = {k: v for k, v in self.observed.items() if _is_data(v)}
        return Result(draws, stats or {}, log_evidence, observed, method, attrs or {})

    def _discrete_draws(
        self, draws: dict[str, torch.Tensor], z: torch.Tensor, seed: int | torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Enumerated and deterministic sites' draws ``[chain, draw, ...]`` for the
        continuous ``draws``."""
        if seed is None:
            digest = hashlib.sha256(z.detach().cpu().contiguous().numpy().tobytes()).digest()
            seed = int.from_bytes(digest[:4], "little")
        elif isinstance(seed, torch.Generator):
            seed = child_seed(seed)
        elif not isinstance(seed, int) or isinstance(seed, bool):
            raise ArgumentError(
                f"Expected `seed` to be an int, a torch.Generator or None, but found {seed!r}"
            )
        lead = z.shape[:-1]
        n = math.prod(lead)
        flat = {k: v.reshape((n,) + self.sites[k].shape) for k, v in draws.items()}
        sampled = self._enumeration.sample(flat, list(self.deterministic), seed, self._mode)
        return {k: v.reshape(lead + v.shape[1:]) for k, v in sampled.items()}


def _is_data(value: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.numel() > 0 and math.prod(value.shape) < 10**7


def _support_key(constraint) -> list:
    """The parameters of a constraint (bounds etc.), recursively, for comparison."""
    out: list = [type(constraint).__name__]
    for _, value in sorted(vars(constraint).items(), key=lambda item: item[0]):
        if hasattr(value, "check") and not isinstance(value, torch.Tensor):
            out += _support_key(value)
        elif isinstance(value, (torch.Tensor, int, float, bool)):
            out.append(value)
    return out


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return a.shape == b.shape and bool((a == b).all())
    return a == b


class _DynamicSupports(pyro.poutine.messenger.Messenger):
    """Sets the value of each site in ``sites`` from its unconstrained block of ``z`` through
    the transform of the support *as the site has it in this run*, and sums the
    log-Jacobians: what a support whose bounds depend on other latents needs."""

    def __init__(self, sites: list[SiteInfo], z: torch.Tensor):
        super().__init__()
        self.sites = {s.name: s for s in sites}
        self.z = z
        self.log_jac = z.new_zeros(())
        self.values: dict[str, torch.Tensor] = {}

    def _pyro_sample(self, msg):
        site = self.sites.get(msg["name"])
        if site is None or msg["is_observed"]:
            return
        u = site.slot(self.z)
        transform = biject_to(msg["fn"].support)
        x = transform(u)
        self.log_jac = self.log_jac + transform.log_abs_det_jacobian(u, x).sum()
        self.values[site.name] = x
        msg["value"] = x
        msg["is_observed"] = True


class _ImproperInit(pyro.poutine.messenger.Messenger):
    """Gives each latent ``ImproperUniform`` site (Stan's implicit flat prior; it cannot be
    sampled) a value :math:`T(u)`, :math:`u \\sim \\mathrm{U}(-2, 2)` in the unconstrained
    space of its support, so that the discovery traces see every site.  Dtype and device follow
    the first floating-point tensor among the model's arguments (default dtype otherwise)."""

    def __init__(self, like: torch.Tensor | None):
        super().__init__()
        self.dtype = like.dtype if like is not None else torch.get_default_dtype()
        self.device = like.device if like is not None else None

    def _pyro_sample(self, msg):
        fn = msg["fn"]
        if msg["is_observed"] or msg["value"] is not None or not _is_improper(fn):
            return
        transform = biject_to(fn.support)
        shape = transform.inverse_shape(fn.batch_shape + fn.event_shape)
        u = 4 * torch.rand(shape, dtype=self.dtype, device=self.device) - 2
        msg["value"] = transform(u)
        msg["done"] = True


def _is_improper(fn) -> bool:
    """Whether ``fn`` is an ``ImproperUniform``, possibly inside ``Independent``/``Masked``/
    ``Expanded`` wrappers."""
    while fn is not None:
        if isinstance(fn, pyro.distributions.ImproperUniform):
            return True
        fn = getattr(fn, "base_dist", None)
    return False
