"""Bridge from a Pyro model to what gradient-based and particle inference need.

The model is traced once.  Each continuous latent site :math:`x_s` is mapped to an
unconstrained vector :math:`u_s` by Pyro's ``biject_to(support)``, and all sites are laid
end to end in one flat vector :math:`z \\in \\mathbb{R}^D`.  The target density on ``z`` is

.. math::

    \\log \\pi(z) = \\sum_s \\big[\\log p(x_s \\mid \\cdot) + \\log|\\det J_{T_s}(u_s)|\\big]
                 + \\sum_o \\log p(y_o \\mid x), \\qquad x_s = T_s(u_s),

split into a *prior* part (latent sites plus log-Jacobians) and a *likelihood* part
(observed sites and ``pyro.factor`` terms).  Points come in batches ``z [B, D]`` whose
leading dimension is chains or particles; the model is vectorised over it with
``torch.func.vmap`` (one Pyro trace per batch, not per point), falling back to a loop with a
:class:`~ppltk.errors.VectorisationWarning` when a model cannot be vectorised.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from ppltk.model.graph import BACKENDS, GraphCache

__all__ = ["ModelBridge", "SiteInfo"]


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
        A Pyro model (a callable that calls ``pyro.sample``).
    args, kwargs
        Arguments the model is called with (observed data usually among them).
    seed
        Seed of the one tracing run that discovers the sites.
    allow_discrete
        When false (default), a discrete latent site raises
        :class:`~ppltk.errors.DiscreteLatentError`.
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
        with pyro_seed(seed), poutine.block():
            trace = poutine.trace(model).get_trace(*self.args, **self.kwargs)
        self.sites: dict[str, SiteInfo] = {}
        self.observed: dict[str, torch.Tensor] = {}
        self.discrete_sites: list[str] = []
        self._collect_sites(trace, allow_discrete)
        values = [s["value"] for s in trace.nodes.values() if s["type"] == "sample"]
        reference = values[0] if values else torch.zeros(())
        self.dtype = reference.dtype if reference.is_floating_point() else torch.get_default_dtype()
        self.device = reference.device
        if backend == "auto":
            backend = "eager" if self._subsampled(trace) else "fx"
        self.backend = backend
        self._graph_density_and_grad = GraphCache(
            self._eager_density_and_grad, backend, "ModelBridge"
        )
        self._graph_parts = GraphCache(self._parts_checked, backend, "ModelBridge")
        self._graph_parts_and_grads = GraphCache(
            self._eager_parts_and_grads, backend, "ModelBridge"
        )

    # ------------------------------------------------------------------ structure
    def _collect_sites(self, trace, allow_discrete: bool) -> None:
        offset = 0
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if site["is_observed"]:
                self.observed[name] = site["value"]
                continue
            fn = site["fn"]
            if fn.support.is_discrete:
                if not allow_discrete:
                    raise DiscreteLatentError(
                        f"Latent site '{name}' is discrete ({type(fn).__name__}); gradient-based "
                        "methods need continuous latents. Marginalise it out (e.g. with "
                        "pyro.infer.config_enumerate / TraceEnum), condition on it, or use an "
                        "SMC or MH method."
                    )
                self.discrete_sites.append(name)
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
        if self.dim == 0 and not self.discrete_sites:
            raise ModelStructureError("The model has no latent sample sites to infer.")

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
        """Constrained site values ``{site: [..., *shape]}`` for flat points ``z [..., D]``."""
        lead = z.shape[:-1]
        return {s.name: s.transform(s.slot(z)).reshape(lead + s.shape) for s in self.sites.values()}

    def unconstrain(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Flat unconstrained points ``[B, D]`` from constrained values ``{site: [B, *shape]}``."""
        blocks = []
        for s in self.sites.values():
            if s.name not in values:
                raise ArgumentError(f"Expected a value for site '{s.name}' in `values`")
            value = values[s.name]
            batch = value.shape[: value.ndim - len(s.shape)]
            blocks.append(s.transform.inv(value).reshape(batch + (s.size,)))
        return torch.cat(blocks, dim=-1)

    # ------------------------------------------------------------------ densities
    def _point_parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prior + log-Jacobian, likelihood) for one flat point ``z [D]``."""
        values, log_jac = {}, z.new_zeros(())
        for s in self.sites.values():
            u = s.slot(z)
            x = s.transform(u)
            values[s.name] = x
            log_jac = log_jac + s.transform.log_abs_det_jacobian(u, x).sum()
        prior, lik = log_jac, z.new_zeros(())
        for name, term in self._site_terms(values):
            if name in self.sites:
                prior = prior + term
            elif name not in self.discrete_sites:
                lik = lik + term
        return prior, lik

    def _site_terms(self, values: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """Per-site summed log-probabilities of the model conditioned on ``values``."""
        with pyro.validation_enabled(False), poutine.block():
            trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(
                *self.args, **self.kwargs
            )
            trace.compute_log_prob()  # Pyro applies each site's scale and mask
            return [
                (name, site["log_prob_sum"])
                for name, site in trace.nodes.items()
                if site["type"] == "sample" and not site_is_subsample(site)
            ]

    def _parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._check_batch(z)
        if self.backend != "eager" and not (torch.is_grad_enabled() and z.requires_grad):
            return self._graph_parts(z)
        return self._parts_checked(z)

    def _parts_checked(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._mode != "loop":
            try:
                return torch.func.vmap(self._point_parts)(z)
            except Exception as error:  # noqa: BLE001 - any vmap failure falls back
                if self._mode == "vmap":
                    raise
                self._mode = "loop"
                warnings.warn(
                    f"The model could not be vectorised with torch.func.vmap ({error!r:.200}); "
                    "evaluating points in a Python loop, which is slower.",
                    VectorisationWarning,
                    stacklevel=3,
                )
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
        if self.backend == "eager":
            return self._eager_density_and_grad(z)
        return self._graph_density_and_grad(z)

    def log_prior_and_likelihood_and_grads(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        r"""``(prior [B], likelihood [B], grad prior [B, D], grad likelihood [B, D])`` from one
        model evaluation, all detached: what a tempered target
        :math:`\log p(x) + \beta \log p(y \mid x)` and its gradient need for any
        :math:`\beta`."""
        z = self._check_batch(z).detach()
        if self.backend == "eager":
            return self._eager_parts_and_grads(z)
        return self._graph_parts_and_grads(z)

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
        raise NonFiniteLogDensityError(self._explain_non_finite(z[bad][0], max_tries))

    def _uniform(self, num: int, generator: torch.Generator, radius: float) -> torch.Tensor:
        u = torch.rand(
            num, self.dim, generator=generator, dtype=self.dtype, device=generator.device
        )
        return ((2 * u - 1) * radius).to(self.device)

    def _explain_non_finite(self, z: torch.Tensor, tries: int) -> str:
        values = {s.name: s.transform(s.slot(z)) for s in self.sites.values()}
        bad = [name for name, term in self._site_terms(values) if not torch.isfinite(term)]
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
    ):
        """A :class:`ppltk.Result` from flat draws ``z [chain, draw, D]``."""
        from ppltk.results import Result

        if z.ndim != 3 or z.shape[-1] != self.dim:
            raise ShapeError(
                f"Expected `z` of shape [chain, draw, {self.dim}], found {list(z.shape)}"
            )
        with torch.no_grad():
            draws = self.constrain(z)
        observed = {k: v for k, v in self.observed.items() if _is_data(v)}
        return Result(draws, stats or {}, log_evidence, observed, method, attrs or {})


def _is_data(value: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.numel() > 0 and math.prod(value.shape) < 10**7
