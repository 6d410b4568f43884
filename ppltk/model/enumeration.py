r"""Discrete latent sites marginalised by parallel enumeration (Pyro's TraceEnum machinery).

A model with continuous latents :math:`x`, discrete latents :math:`k` of finite support and
data :math:`y` is seen by gradient-based samplers through its marginal

.. math::

    \log p(x, y) = \log \sum_{k} p(x, k, y),

computed exactly by Pyro: ``config_enumerate`` marks each discrete site with
``has_enumerate_support`` for parallel enumeration (a site the user configured keeps its own
setting), ``poutine.enum(first_available_dim=-1 - max_plate_nesting)`` puts each enumerated
site's support along its own dimension left of the plates (reusing dimensions along
``pyro.markov`` chains), and ``pyro.ops.contract.contract_to_tensor`` sums the packed
log-factors over the enumerated dimensions and multiplies over the plates (variable
elimination: the forward algorithm for an HMM, a per-point logsumexp for a mixture).  The
discrete sites are drawn back afterwards from :math:`p(k \mid x, y)` by
``pyro.infer.infer_discrete(temperature=1)`` (forward filtering, backward sampling).

The contraction runs in a log-space einsum backend that ``torch.func.vmap`` accepts
(:mod:`ppltk.model._log_einsum`), and Pyro's ``EnumMessenger`` -- which reads ``value.data``,
forbidden under vmap -- sees a plain stand-in of each batched site value
(:class:`_HideBatched`), so the bridge still evaluates all chains in one vectorised call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, contextmanager

import pyro
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.infer.discrete import _sample_posterior_from_trace
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

from ppltk._rng import pyro_seed
from ppltk.errors import DiscreteLatentError, ModelStructureError
from ppltk.model._log_einsum import _safe_log

__all__ = ["Enumeration", "max_plate_nesting"]


class _VmapLogRing(LogRing):
    """Pyro's log-space sum-product ring on the vmap-safe einsum backend."""

    _backend = "ppltk.model._log_einsum"


class _HideBatched(Messenger):
    """Swaps a vmap-batched site value for a plain tensor of the same shape while Pyro's
    ``EnumMessenger`` post-processes the site (it reads ``value.data``), and back.

    ``hide=True`` goes outside ``poutine.enum`` (its post-processing runs first),
    ``hide=False`` inside (runs after, restoring the value the model receives).
    """

    def __init__(self, hide: bool) -> None:
        super().__init__()
        self.hide = hide

    def _pyro_post_sample(self, msg) -> None:
        if not self.hide:
            if "_ppltk_batched" in msg:
                msg["value"] = msg.pop("_ppltk_batched")
            return
        value = msg["value"]
        if isinstance(value, torch.Tensor) and torch._C._functorch.is_batchedtensor(value):
            msg["_ppltk_batched"] = value
            msg["value"] = torch.zeros(value.shape, dtype=value.dtype, device=value.device)


def max_plate_nesting(trace) -> int:
    """How many plate dimensions the model uses (``-min(frame.dim)`` over vectorised plates),
    as Pyro's ``_guess_max_plate_nesting`` infers it."""
    dims = [
        frame.dim
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims) if dims else 0


class Enumeration:
    r"""The enumerated discrete sites of a model and the exact marginal over them.

    Parameters
    ----------
    model, args, kwargs
        The Pyro model and its arguments.
    prior_trace
        A trace of the model with every site sampled (sets the plate nesting and the shapes
        of the discrete sites' draws).
    names
        The discrete latent sites to enumerate (each has ``has_enumerate_support``).
    seed, init
        Seed and extra handler (e.g. values for improper sites) of the one enumerated
        prototype trace that checks the configuration.

    Raises
    ------
    DiscreteLatentError
        When a site in ``names`` is configured for anything but parallel enumeration
        (``infer={"enumerate": "sequential"}`` or ``None``).
    """

    def __init__(
        self,
        model: Callable,
        args: tuple,
        kwargs: dict,
        prior_trace,
        names: Iterable[str],
        seed: int = 0,
        init: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        self.args, self.kwargs = args, kwargs
        self.names = list(names)
        self.shapes = {n: tuple(prior_trace.nodes[n]["value"].shape) for n in self.names}
        self.max_plate_nesting = max_plate_nesting(prior_trace)
        self.first_available_dim = -1 - self.max_plate_nesting
        self.configured = config_enumerate(model, default="parallel")
        with pyro_seed(seed), poutine.block(), pyro.validation_enabled(False):
            enumerated = poutine.enum(self.configured, self.first_available_dim)
            if init is not None:
                enumerated = init()(enumerated)
            trace = poutine.trace(enumerated).get_trace(*args, **kwargs)
        for name in self.names:
            site = trace.nodes.get(name)
            if site is None or site["infer"].get("_enumerate_dim") is None:
                setting = None if site is None else site["infer"].get("enumerate")
                raise DiscreteLatentError(
                    f"Latent site '{name}' is discrete and configured with "
                    f"infer={{'enumerate': {setting!r}}}; expected 'parallel' (or no setting, "
                    "which ppltk enumerates in parallel). Gradient-based methods marginalise "
                    "discrete sites by parallel enumeration only; remove the setting, or use "
                    "an SMC or MH method."
                )

    # ------------------------------------------------------------------ densities
    def trace(self, values: dict[str, torch.Tensor], wrap: Callable | None = None):
        """An enumerated trace with the continuous sites set to ``values`` (``wrap`` adds a
        handler around the conditioned model, e.g. for latent-dependent supports)."""
        inner = _HideBatched(hide=False)(self.configured)
        model = poutine.condition(poutine.enum(inner, self.first_available_dim), data=values)
        if wrap is not None:
            model = wrap(model)
        model = _HideBatched(hide=True)(model)
        with pyro.validation_enabled(False), poutine.block():
            return poutine.trace(model).get_trace(*self.args, **self.kwargs)

    def log_parts(
        self, trace, continuous: set[str], zero: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(log p(x), log p(y | x))`` of an enumerated trace, the discrete sites summed out.

        With :math:`F_c` the continuous latent sites' factors, :math:`F_k` the enumerated
        sites' and :math:`F_o` the observed sites' (and ``pyro.factor``'s),

        .. math::

            \log p(x) = \log \sum_k \prod_{F_c \cup F_k} f, \qquad
            \log p(y \mid x) = \log \sum_k \prod_{F_c \cup F_k \cup F_o} f - \log p(x).

        When no continuous factor depends on an enumerated site (mixtures, HMMs with
        continuous parameters), :math:`\sum_k \prod_{F_k} f = 1` and this is one contraction:
        :math:`\log p(x) = \sum_{F_c} \log f`,
        :math:`\log p(y \mid x) = \log \sum_k \prod_{F_k \cup F_o} f`.
        """
        with pyro.validation_enabled(False):
            trace.compute_log_prob()  # Pyro applies each site's scale and mask
        trace.pack_tensors()
        plates = trace.plate_to_symbol
        sum_dims = set(trace.symbol_to_dim) - set(plates.values())
        groups: dict[str, OrderedDict] = {
            "c": OrderedDict(),
            "k": OrderedDict(),
            "o": OrderedDict(),
        }
        coupled = False
        for name, site in trace.nodes.items():
            if (
                site["type"] != "sample"
                or site_is_subsample(site)
                or site["infer"].get("_deterministic")
            ):
                continue
            ordinal = frozenset(plates[f.name] for f in site["cond_indep_stack"] if f.vectorized)
            term = site["packed"]["log_prob"]
            role = "c" if name in continuous else "k" if name in self.names else "o"
            if role == "c" and sum_dims.intersection(term._pyro_dims):
                coupled = True
            groups[role].setdefault(ordinal, []).append(term)
        if not coupled:
            prior = zero + sum((t.sum() for ts in groups["c"].values() for t in ts), zero)
            return prior, self._contract([groups["k"], groups["o"]], sum_dims)
        prior = self._contract([groups["c"], groups["k"]], sum_dims)
        joint = self._contract([groups["c"], groups["k"], groups["o"]], sum_dims)
        return prior, joint - prior

    @staticmethod
    def _contract(trees: list[OrderedDict], sum_dims: set[str]) -> torch.Tensor:
        merged: OrderedDict = OrderedDict()
        for tree in trees:
            for ordinal, terms in tree.items():
                merged.setdefault(ordinal, []).extend(terms)
        return contract_to_tensor(merged, sum_dims, ring=_VmapLogRing())

    # ------------------------------------------------------------------ draws
    def sample(
        self,
        values: dict[str, torch.Tensor],
        extra: Iterable[str],
        seed: int,
        vectorise: str = "auto",
        chunk: int = 1024,
    ) -> dict[str, torch.Tensor]:
        r"""One draw of the enumerated sites from :math:`p(k \mid x, y)` for each row of the
        continuous ``values {site: [N, *shape]}``, ``{site: [N, *shape]}``, by Pyro's
        ``infer_discrete`` machinery at temperature 1 (the forward pass of the contraction,
        then backward sampling: forward filtering, backward sampling for an HMM), plus the
        values of the sites ``extra`` (e.g. ``pyro.deterministic``) in the same run.

        Rows are drawn with ``torch.func.vmap`` in chunks (Pyro's ``safe_log``, which vmap
        refuses, is swapped for :func:`ppltk.model._log_einsum._safe_log` -- same values --
        for the duration of the call), else one at a time.  Pyro samples from torch's global
        generator, seeded by ``seed`` for the call and restored afterwards.  ``vectorise``:
        ``"auto"`` (vmap, else a loop), ``"vmap"`` (no fallback) or ``"loop"``.
        """
        extra = list(extra)
        n = next(iter(values.values())).shape[0] if values else 0
        names = self.names + extra
        with pyro_seed(seed), pyro.validation_enabled(False), poutine.block():
            try:
                if vectorise == "loop":
                    raise _UseLoop
                with _vmap_safe_log():
                    parts = [
                        torch.func.vmap(
                            lambda v: self._sample_one(v, extra), randomness="different"
                        )({k: v[i : i + chunk] for k, v in values.items()})
                        for i in range(0, n, chunk)
                    ]
                return {k: torch.cat([p[k] for p in parts]) for k in names}
            except Exception:  # noqa: BLE001 - models vmap cannot batch: one row at a time
                if vectorise == "vmap":
                    raise
                rows = [
                    self._sample_one({k: v[i] for k, v in values.items()}, extra) for i in range(n)
                ]
                return {k: torch.stack([r[k] for r in rows]) for k in names}

    def _sample_one(self, values: dict[str, torch.Tensor], extra: list[str]) -> dict:
        """The enumerated (and ``extra``) sites' values in one posterior draw at ``values``."""
        enum_trace = prune_subsample_sites(self.trace(values))
        enum_trace.compute_log_prob()
        enum_trace.pack_tensors()
        replay = poutine.trace(poutine.condition(self.configured, data=values))
        trace = _sample_posterior_from_trace(
            replay.get_trace, enum_trace, 1, False, *self.args, **self.kwargs
        )
        out = {n: _to_shape(trace.nodes[n]["value"], self.shapes[n]) for n in self.names}
        out.update({n: trace.nodes[n]["value"] for n in extra})
        return out

    def check_supported(self, dynamic: list[str], subsampled: bool) -> None:
        """Refuse the combinations enumeration does not handle exactly."""
        if dynamic:
            raise ModelStructureError(
                f"Site(s) {', '.join(map(repr, dynamic))} have a support that depends on "
                "other latents; this is not supported together with enumerated discrete sites "
                f"({', '.join(map(repr, self.names))}). Give them a fixed support or "
                "marginalise the discrete sites by hand."
            )
        if subsampled:
            raise ModelStructureError(
                "A plate subsamples; the enumerated discrete sites "
                f"({', '.join(map(repr, self.names))}) need the full data (a subsample's "
                "scale does not commute with the sum over discrete values). Remove "
                "`subsample_size`."
            )


class _UseLoop(Exception):
    """Internal: draw row by row."""


@contextmanager
def _vmap_safe_log():
    """Pyro's sampling einsum takes its logarithm with ``pyro.ops.special.safe_log`` (an
    ``autograd.Function`` that ``torch.func.vmap`` refuses); swap in a vmap-safe one with the
    same values while sampling without gradients, and restore it."""
    import pyro.ops.einsum.torch_log as torch_log

    original = torch_log.safe_log
    torch_log.safe_log = _safe_log
    try:
        yield
    finally:
        torch_log.safe_log = original


def _to_shape(value: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A sampled value (enumeration may leave out broadcast or leading size-1 dimensions)
    in the site's own shape."""
    while value.dim() > len(shape) and value.shape[0] == 1:
        value = value[0]
    return torch.broadcast_to(value, shape).clone()
