r"""Amortized posterior inference: a network trained on a Pyro model's own simulations.

Neural posterior estimation (Papamakarios & Murray 2016; Greenberg et al. 2019; the
prior-data fitted networks of Müller et al., "Transformers Can Do Bayesian Inference", 2022):
draw :math:`(\theta_i, y_i) \sim p(\theta)\, p(y \mid \theta)` from the model and fit
:math:`q_\psi(z \mid y)` over the bridge's unconstrained :math:`z = T^{-1}(\theta)` by

.. math::

    \min_\psi\ -\frac1N \sum_{i=1}^N \log q_\psi(z_i \mid y_i)
    \;\approx\; \mathbb E_{p(y)}\big[\mathrm{KL}\big(p(z \mid y)\,\|\,q_\psi(z \mid y)\big)\big]
    + \text{const},

whose minimiser over all conditional densities is the exact posterior :math:`p(z \mid y)` for
every :math:`y` in the support of the prior predictive. After training, a posterior for new
data costs one forward pass. What is preserved is only as good as the fit, so it is checked:
simulation-based calibration on fresh simulations (:meth:`AmortizedPosterior.calibrate`) and,
per data set, importance weights against the exact model density
(:meth:`AmortizedPosterior.importance_sample`), which make the estimates consistent whatever
the network's error, with the effective sample size telling how far off it is.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro.poutine as poutine
import torch

from ppltk._progress import progress_bar
from ppltk._rng import child_seed, make_generator, pyro_seed
from ppltk.amortized.networks import DeepSetEncoder, MixtureHead
from ppltk.amortized.simulate import Simulations, observed_sites, simulate, simulate_units
from ppltk.calibration.ranks import scalar_names, uniformity_pvalue
from ppltk.calibration.sbc import SBCResult
from ppltk.calibration.simulate import condition_on
from ppltk.errors import (
    ArgumentError,
    CalibrationWarning,
    CheckpointMismatchError,
    DegenerateWeightsError,
    FileFormatError,
    ModelStructureError,
    ShapeError,
)
from ppltk.model import ModelBridge
from ppltk.results import Result

__all__ = [
    "AmortizedPosterior",
    "CalibrationWarning",
    "ImportanceSample",
    "fit_amortized",
]

_HEADS = ("gaussian", "mixture")
_FORMAT = "ppltk.amortized/1"


@dataclass
class ImportanceSample:
    r"""Draws of the amortized posterior weighted against the exact model density.

    .. math::

        w_s \propto \frac{p(z_s, y)}{q(z_s \mid y)}, \qquad z_s \sim q(\cdot \mid y),

    with :math:`p(z, y)` the joint density of the unconstrained latents (log-Jacobian
    included, :meth:`ppltk.model.ModelBridge.log_density`). Self-normalised averages under
    :math:`w` are consistent for posterior expectations as the number of draws grows.

    Attributes
    ----------
    z
        Proposal draws, ``[S, D]`` (unconstrained).
    values
        The same draws in constrained space, ``{site: [S, *shape]}``.
    log_weights
        Normalised log-weights ``[S]`` (``logsumexp = 0``).
    ess
        Kish's effective sample size :math:`(\sum w)^2 / \sum w^2`.
    log_evidence
        :math:`\log \frac1S \sum_s p(z_s, y)/q(z_s \mid y)`, an estimate of :math:`\log p(y)`
        (unbiased on the natural scale).
    """

    z: torch.Tensor
    values: dict[str, torch.Tensor]
    log_weights: torch.Tensor
    ess: float
    log_evidence: float

    def mean(self, site: str) -> torch.Tensor:
        """Self-normalised importance estimate of :math:`E[\\theta_{site} \\mid y]`."""
        w = self.log_weights.exp()
        value = self.values[site]
        return (w.reshape((-1,) + (1,) * (value.dim() - 1)) * value).sum(0)

    def sd(self, site: str) -> torch.Tensor:
        """Self-normalised importance estimate of the posterior standard deviation."""
        w = self.log_weights.exp()
        value = self.values[site]
        w = w.reshape((-1,) + (1,) * (value.dim() - 1))
        mean = (w * value).sum(0)
        return ((w * (value - mean) ** 2).sum(0)).sqrt()


@dataclass
class _DataLayout:
    """How observed sites become encoder inputs: set-valued sites share a leading dim ``n``
    (one row of features per observation), scalar sites are global features."""

    sites: list[str]
    shapes: dict[str, tuple[int, ...]]
    set_sites: list[str] = field(default_factory=list)
    global_sites: list[str] = field(default_factory=list)

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> _DataLayout:
        layout = cls(list(shapes), dict(shapes))
        layout.set_sites = [s for s in shapes if len(shapes[s]) >= 1]
        layout.global_sites = [s for s in shapes if len(shapes[s]) == 0]
        sizes = {shapes[s][0] for s in layout.set_sites}
        if len(sizes) > 1:
            raise ShapeError(
                "Expected every set-valued observed site to have the same leading (observation) "
                f"dim, but found { ({s: list(shapes[s]) for s in layout.set_sites}) }"
            )
        return layout

    @property
    def num_obs(self) -> int | None:
        return self.shapes[self.set_sites[0]][0] if self.set_sites else None

    def point_dim(self) -> int:
        return sum(math.prod(self.shapes[s][1:]) for s in self.set_sites)


class AmortizedPosterior:
    """A trained amortized posterior :math:`q(z \\mid y)` of a Pyro model.

    Made by :func:`fit_amortized` (or :meth:`load`). For data ``y`` of the shape the model
    was trained on, :meth:`posterior` returns a :class:`ppltk.Result` in one forward pass;
    :meth:`sample` gives draws for a batch of data sets; :meth:`importance_sample` weights
    draws against the exact density; :meth:`calibrate` runs SBC on fresh simulations.

    Attributes
    ----------
    bridge
        The :class:`~ppltk.model.ModelBridge` of the model with its training arguments.
    observed
        The data sites.
    history
        ``{"train": [...], "validation": [...]}``: mean negative log-density per epoch.
    calibration
        The :class:`~ppltk.calibration.SBCResult` of the check run after training (or
        ``None``).
    timings
        Seconds spent simulating and training.
    """

    def __init__(
        self,
        bridge: ModelBridge,
        observed: Sequence[str],
        config: dict[str, Any],
        covariates: torch.Tensor | None = None,
    ) -> None:
        self.bridge = bridge
        self.observed = list(observed)
        self.config = dict(config)
        self.layout = _DataLayout.from_shapes(
            {s: tuple(bridge.observed[s].shape) for s in self.observed}
        )
        self.device, self.dtype = bridge.device, bridge.dtype
        self.covariates = _check_covariates(covariates, self.layout, self.device, self.dtype)
        cov_dim = 0 if self.covariates is None else self.covariates.shape[-1]
        point_dim = self.layout.point_dim() + cov_dim
        global_dim = len(self.layout.global_sites)
        self.encoder = DeepSetEncoder(
            point_dim,
            global_dim,
            config["hidden"],
            config["context_dim"],
            config["depth"],
        )
        self.head = MixtureHead(config["context_dim"], bridge.dim, config["num_components"])
        self.encoder.to(self.device, self.dtype)
        self.head.to(self.device, self.dtype)
        d = bridge.dim
        self.stats = {
            "z_loc": torch.zeros(d, device=self.device, dtype=self.dtype),
            "z_scale": torch.ones(d, device=self.device, dtype=self.dtype),
            "point_loc": torch.zeros(point_dim, device=self.device, dtype=self.dtype),
            "point_scale": torch.ones(point_dim, device=self.device, dtype=self.dtype),
            "global_loc": torch.zeros(global_dim, device=self.device, dtype=self.dtype),
            "global_scale": torch.ones(global_dim, device=self.device, dtype=self.dtype),
        }
        self.history: dict[str, list[float]] = {"train": [], "validation": []}
        self.calibration: SBCResult | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ data
    def _features(
        self, data: Mapping[str, torch.Tensor], raw: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Encoder inputs for batched data ``{site: [B, *shape]}``: each feature robustly
        standardised, :math:`(x - m) / s` (median, IQR), and with ``squash`` mapped by
        :math:`\operatorname{asinh}` (linear near the bulk, logarithmic in heavy tails such as
        Cauchy-like prior predictives); the untransformed features when ``raw``."""
        lay = self.layout
        b = next(iter(data.values())).shape[0]
        points, globals_ = None, None
        if lay.set_sites or self.covariates is not None:
            n = data[lay.set_sites[0]].shape[1]
            cols = [data[s].reshape(b, n, -1).to(self.dtype) for s in lay.set_sites]
            if self.covariates is not None:
                cols.append(self.covariates.expand(b, -1, -1))
            points = torch.cat(cols, -1)
            if not raw:
                points = self._squash(
                    (points - self.stats["point_loc"]) / self.stats["point_scale"]
                )
        if lay.global_sites:
            g = torch.stack([data[s].reshape(b).to(self.dtype) for s in lay.global_sites], -1)
            globals_ = g
            if not raw:
                globals_ = self._squash((g - self.stats["global_loc"]) / self.stats["global_scale"])
        return points, globals_

    def _squash(self, x: torch.Tensor) -> torch.Tensor:
        return torch.asinh(x) if self.config.get("squash") else x

    def _set_stats(self, sims: Simulations) -> None:
        """Standardisation of inputs and outputs from the training simulations."""
        z = sims.z
        self.stats["z_loc"] = z.mean(0)
        self.stats["z_scale"] = z.std(0).clamp_min(1e-6)
        points, globals_ = self._features(sims.data, raw=True)
        if points is not None:
            loc, scale = _robust_scale(points.reshape(-1, points.shape[-1]))
            self.stats["point_loc"], self.stats["point_scale"] = loc, scale
        if globals_ is not None:
            loc, scale = _robust_scale(globals_)
            self.stats["global_loc"], self.stats["global_scale"] = loc, scale

    def _as_data(self, y: Any) -> tuple[dict[str, torch.Tensor], bool]:
        """``({site: [B, *shape]}, batched)`` from one data set or a batch of them."""
        if isinstance(y, torch.Tensor):
            if len(self.observed) != 1:
                raise ArgumentError(
                    f"Expected `y` to be a dict over the observed sites {self.observed}, but "
                    "found a single tensor"
                )
            y = {self.observed[0]: y}
        if not isinstance(y, Mapping):
            raise ArgumentError(f"Expected `y` to be a tensor or a dict, but found {type(y)}")
        missing = [s for s in self.observed if s not in y]
        if missing:
            raise ArgumentError(f"Expected data for the observed sites {missing} in `y`")
        out, batched, n = {}, None, None
        for site in self.observed:
            value = torch.as_tensor(y[site]).to(self.device)
            shape = self.layout.shapes[site]
            if value.dim() == len(shape) and value.shape[1:] == shape[1:]:
                is_batch = False
                value = value[None]
            elif value.dim() == len(shape) + 1 and value.shape[2:] == shape[1:]:
                is_batch = True
            else:
                raise ShapeError(
                    f"Observed site '{site}': expected one data set of shape {list(shape)} (or "
                    f"[batch, {', '.join(map(str, shape))}]), but found {list(value.shape)}"
                )
            if batched is not None and is_batch != batched:
                raise ShapeError("Expected every observed site batched alike in `y`")
            batched = is_batch
            if shape and site in self.layout.set_sites:
                if n is not None and value.shape[1] != n:
                    raise ShapeError(
                        f"Expected the same number of observations at every site, but found "
                        f"{n} and {value.shape[1]} at '{site}'"
                    )
                n = value.shape[1]
            out[site] = value
        if n is not None and self.covariates is not None and n != self.covariates.shape[0]:
            raise ShapeError(
                f"Expected {self.covariates.shape[0]} observations (one per covariate row), but "
                f"found {n}"
            )
        return out, bool(batched)

    # ------------------------------------------------------------------ density
    def _context(self, data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(*self._features(data))

    def _log_prob_std(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = (z - self.stats["z_loc"]) / self.stats["z_scale"]
        return self.head.log_prob(x, context) - self.stats["z_scale"].log().sum()

    def log_prob(self, z: torch.Tensor, y: Any) -> torch.Tensor:
        """``log q(z | y)`` in the unconstrained space; ``z [S, D]`` for one data set
        (-> ``[S]``) or ``[B, S, D]`` for a batch (-> ``[B, S]``); differentiable in ``z`` when
        ``z.requires_grad``."""
        data, batched = self._as_data(y)
        if z.shape[-1] != self.bridge.dim or z.dim() != (3 if batched else 2):
            raise ShapeError(
                f"Expected `z` of shape {'[B, S, D]' if batched else '[S, D]'} with "
                f"D={self.bridge.dim}, but found {list(z.shape)}"
            )
        z = z if batched else z[None]
        with torch.set_grad_enabled(torch.is_grad_enabled() and z.requires_grad):
            lp = self._log_prob_std(z.to(self.device, self.dtype), self._context(data))
        return lp if batched else lp[0]

    def sample_unconstrained(
        self, y: Any, num_samples: int = 1000, seed: int | torch.Generator | None = None
    ) -> torch.Tensor:
        """``num_samples`` draws of ``z`` per data set: ``[S, D]`` for one, ``[B, S, D]`` for a
        batch of data sets (one forward pass)."""
        _check_int("num_samples", num_samples, 1)
        data, batched = self._as_data(y)
        gen = make_generator(seed, self.device)
        z = self._sample(data, num_samples, gen)
        return z if batched else z[0]

    def _sample(self, data, num: int, gen: torch.Generator, chunk: int = 1024) -> torch.Tensor:
        out = []
        b = next(iter(data.values())).shape[0]
        with torch.no_grad():
            for start in range(0, b, chunk):
                part = {k: v[start : start + chunk] for k, v in data.items()}
                x = self.head.sample(self._context(part), num, gen)
                out.append(self.stats["z_loc"] + self.stats["z_scale"] * x)
        return torch.cat(out)

    def sample(
        self, y: Any, num_samples: int = 1000, seed: int | torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Constrained draws ``{site: [S, *shape]}`` (one data set) or ``[B, S, *shape]``."""
        z = self.sample_unconstrained(y, num_samples, seed)
        with torch.no_grad():
            return self.bridge.constrain(z)

    # ------------------------------------------------------------------ results
    def posterior(
        self,
        y: Any,
        num_samples: int = 1000,
        seed: int | torch.Generator | None = None,
        correct: bool = False,
    ) -> Result | list[Result]:
        """The amortized posterior of data ``y`` as a :class:`ppltk.Result` (one chain).

        Parameters
        ----------
        y
            One data set (a tensor for a single observed site, else ``{site: tensor}``) of the
            training shape (the number of observations may differ), or a batch of them with a
            leading dim (then a list of results is returned).
        num_samples
            Draws per data set.
        seed
            Seed or generator.
        correct
            When true, draw ``num_samples`` proposals, weight them against the exact model
            density (:meth:`importance_sample`) and resample ``num_samples`` draws
            multinomially; ``attrs`` carries ``ess`` and ``ess_fraction`` and
            ``log_evidence`` the importance estimate of :math:`\\log p(y)`; a
            :class:`CalibrationWarning` is issued when the ESS is below 5% of the proposals.
        """
        _check_int("num_samples", num_samples, 1)
        data, batched = self._as_data(y)
        gen = make_generator(seed, self.device)
        if correct:
            rows = [
                {k: v[i] for k, v in data.items()} for i in range(len(next(iter(data.values()))))
            ]
            results = [self._corrected(row, num_samples, gen) for row in rows]
            return results if batched else results[0]
        z = self._sample(data, num_samples, gen)
        results = []
        for i in range(z.shape[0]):
            row = {k: v[i] for k, v in data.items()}
            bridge = self.bridge if not self.bridge.deterministic else self._bridge_for(row)
            result = bridge.to_result(z[i][None], method="amortized")
            result.observed_data = {k: v.detach().cpu().numpy() for k, v in row.items()}
            results.append(result)
        return results if batched else results[0]

    def _bridge_for(self, data: dict[str, torch.Tensor]) -> ModelBridge:
        model = condition_on(self.bridge.model, data)
        return ModelBridge(model, self.bridge.args, self.bridge.kwargs, backend="eager")

    def importance_sample(
        self, y: Any, num_samples: int = 1000, seed: int | torch.Generator | None = None
    ) -> ImportanceSample:
        """Proposals from ``q(. | y)`` weighted by the exact joint density of one data set.

        Raises
        ------
        DegenerateWeightsError
            If every weight is zero or NaN.
        """
        _check_int("num_samples", num_samples, 1)
        data, batched = self._as_data(y)
        if batched and next(iter(data.values())).shape[0] != 1:
            raise ShapeError("Expected one data set in `y` for importance_sample, found a batch")
        return self._importance({k: v[0] for k, v in data.items()}, num_samples,
                                make_generator(seed, self.device))  # fmt: skip

    def _importance(
        self, row, num: int, gen: torch.Generator, bridge: ModelBridge | None = None
    ) -> ImportanceSample:
        z = self._sample({k: v[None] for k, v in row.items()}, num, gen)[0]
        bridge = bridge or self._bridge_for(row)
        with torch.no_grad():
            log_p = bridge.log_density(z)
            log_q = self._log_prob_std(
                z[None], self._context({k: v[None] for k, v in row.items()})
            )[0]
        log_w = (log_p - log_q).to(torch.float64)
        log_w = torch.where(torch.isnan(log_w), torch.full_like(log_w, -math.inf), log_w)
        total = torch.logsumexp(log_w, 0)
        if not torch.isfinite(total):
            raise DegenerateWeightsError(
                f"Every importance weight is zero or not finite (log-weights {log_w[:5].tolist()})"
            )
        norm = log_w - total
        ess = float(1.0 / norm.exp().pow(2).sum())
        with torch.no_grad():
            values = bridge.constrain(z)
        return ImportanceSample(z, values, norm, ess, float(total - math.log(num)))

    def _corrected(self, row, num: int, gen: torch.Generator) -> Result:
        bridge = self._bridge_for(row)
        sample = self._importance(row, num, gen, bridge)
        if sample.ess < 0.05 * num:
            warnings.warn(
                f"Importance correction: ESS {sample.ess:.1f} of {num} proposals; the amortized "
                "posterior is far from the exact one for these data (draws are unreliable)",
                CalibrationWarning,
                stacklevel=3,
            )
        index = torch.multinomial(sample.log_weights.exp().to(self.dtype), num, replacement=True,
                                  generator=gen)  # fmt: skip
        attrs = {"ess": sample.ess, "ess_fraction": sample.ess / num, "num_proposals": num}
        return bridge.to_result(
            sample.z[index][None], method="amortized-is", log_evidence=sample.log_evidence,
            attrs=attrs,
        )  # fmt: skip

    # ------------------------------------------------------------------ calibration
    def calibrate(
        self,
        num_simulations: int = 200,
        num_draws: int = 99,
        seed: int | torch.Generator | None = 0,
        num_bins: int | None = None,
    ) -> SBCResult:
        r"""Simulation-based calibration on fresh simulations, batched.

        Draws :math:`(\tilde\theta_n, \tilde y_n)` from the prior predictive, ``num_draws``
        amortized posterior draws per :math:`\tilde y_n` (one forward pass for all), and tests
        the ranks of every scalar component of :math:`\tilde\theta_n` for uniformity
        (Talts et al. 2018; :func:`ppltk.calibration.uniformity_pvalue`). The ranks are uniform
        when :math:`q = p(\theta \mid y)`.
        """
        _check_int("num_simulations", num_simulations, 2)
        _check_int("num_draws", num_draws, 1)
        gen = make_generator(seed, self.device)
        sims = simulate(self.bridge, num_simulations, gen, self.observed)
        z = self._sample(sims.data, num_draws, gen)
        with torch.no_grad():
            truth = self.bridge.constrain(sims.z)
            post = self.bridge.constrain(z)
        ranks, prior = {}, {}
        m = len(sims)
        for site, value in truth.items():
            t = value.reshape(m, -1)
            p = post[site].reshape(m, num_draws, -1)
            less = (p < t[:, None]).sum(1)
            ties = (p == t[:, None]).sum(1)
            u = torch.rand(less.shape, generator=gen, device=less.device, dtype=torch.float64)
            rank = less + torch.floor(u * (ties + 1)).long()
            names = scalar_names(site, tuple(value.shape[1:]))
            for j, name in enumerate(names):
                ranks[name] = rank[:, j].cpu().numpy().astype(np.int64)
                prior[name] = t[:, j].detach().cpu().double().numpy()
        bins = num_bins or max(2, min(20, m // 5, num_draws + 1))
        p_values = {n: uniformity_pvalue(r, num_draws, bins) for n, r in ranks.items()}
        attrs = {"num_dropped": sims.num_dropped, "path": sims.path}
        return SBCResult(ranks, p_values, num_draws, bins, prior, "amortized", attrs)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Weights, standardisation, configuration and the model's structure (plain types and
        tensors only, so :func:`torch.load` with ``weights_only=True`` reads it)."""
        return {
            "format": _FORMAT,
            "config": dict(self.config),
            "observed": list(self.observed),
            "structure": _plain(self.bridge.structure()),
            "encoder": self.encoder.state_dict(),
            "head": self.head.state_dict(),
            "stats": {k: v.detach().cpu() for k, v in self.stats.items()},
            "covariates": None if self.covariates is None else self.covariates.detach().cpu(),
            "history": {k: list(v) for k, v in self.history.items()},
        }

    def save(self, path: str | Path) -> Path:
        """Write the weights and configuration to ``path`` with :func:`torch.save`."""
        path = Path(path)
        torch.save(self.state_dict(), path)
        return path

    @classmethod
    def load(
        cls, path: str | Path, model: Callable, *args: Any, kwargs: dict | None = None
    ) -> AmortizedPosterior:
        """Read a posterior written by :meth:`save` for ``model(*args, **kwargs)``.

        The file is read with ``torch.load(weights_only=True)``.

        Raises
        ------
        FileFormatError
            If the file is missing or not such a checkpoint.
        CheckpointMismatchError
            If the model's latent/observed structure differs from the one trained on.
        """
        path = Path(path)
        if not path.is_file():
            raise FileFormatError(f"Expected an amortized-posterior file at {path}, none found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file
            raise FileFormatError(
                f"Expected a torch checkpoint written by AmortizedPosterior.save at {path}, "
                f"but it could not be read: {error!r:.200}"
            ) from error
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise FileFormatError(f"Expected a {_FORMAT!r} checkpoint at {path}")
        bridge = ModelBridge(model, args, kwargs)
        if _plain(bridge.structure()) != state["structure"]:
            raise CheckpointMismatchError(
                f"Expected the model structure {state['structure']}, but found "
                f"{_plain(bridge.structure())}"
            )
        self = cls(bridge, state["observed"], state["config"], state["covariates"])
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.stats = {k: v.to(self.device, self.dtype) for k, v in state["stats"].items()}
        self.history = {k: list(v) for k, v in state["history"].items()}
        return self

    def __repr__(self) -> str:
        return (
            f"AmortizedPosterior(sites={list(self.bridge.sites)}, observed={self.observed}, "
            f"D={self.bridge.dim}, head={self.config['head']!r}, "
            f"epochs={len(self.history['train'])})"
        )


def _robust_scale(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Median and a robust scale (IQR / 1.349, the sd for Gaussian data; the sd where the IQR
    is 0, e.g. for sparse binary features) of each column of ``x [M, F]``."""
    x = x[:200_000]
    q = torch.quantile(x, torch.tensor([0.25, 0.5, 0.75], dtype=x.dtype, device=x.device), dim=0)
    iqr = (q[2] - q[0]) / 1.349
    scale = torch.where(iqr > 1e-6 * (1 + q[1].abs()), iqr, x.std(0))
    return q[1], scale.clamp_min(1e-6)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ArgumentError(f"Expected `{name}` to be an int >= {low}, but found {value!r}")


def _check_covariates(covariates, layout: _DataLayout, device, dtype) -> torch.Tensor | None:
    if covariates is None:
        return None
    if not isinstance(covariates, torch.Tensor):
        raise ArgumentError(f"Expected `covariates` to be a tensor, but found {type(covariates)}")
    if layout.num_obs is None:
        raise ArgumentError("Expected set-valued observed sites when `covariates` are given")
    cov = covariates.to(device, dtype)
    if cov.dim() == 1:
        cov = cov[:, None]
    if cov.dim() != 2 or cov.shape[0] != layout.num_obs:
        raise ShapeError(
            f"Expected `covariates` of shape [{layout.num_obs}, C] (one row per observation), "
            f"but found {list(covariates.shape)}"
        )
    return cov


def fit_amortized(
    model: Callable,
    *args: Any,
    kwargs: dict | None = None,
    observed: Sequence[str] | None = None,
    covariates: torch.Tensor | None = None,
    num_simulations: int = 10_000,
    simulations: Simulations | None = None,
    executor: Any = None,
    head: str = "gaussian",
    num_components: int = 4,
    hidden: int = 64,
    context_dim: int = 32,
    depth: int = 2,
    squash: bool = False,
    batch_size: int = 256,
    lr: float = 1e-3,
    max_epochs: int = 200,
    patience: int = 15,
    validation_fraction: float = 0.1,
    calibrate: bool = True,
    calibration_simulations: int = 200,
    seed: int | torch.Generator | None = None,
    progress: bool = True,
) -> AmortizedPosterior:
    r"""Train an amortized posterior of ``model(*args, **kwargs)`` on its own simulations.

    Parameters
    ----------
    model, args, kwargs
        A Pyro model and the arguments it runs with; its observed sites fix the data's shape
        (their values are not used for training).
    observed
        The data sites (default: every observed sample site with data).
    covariates
        Fixed per-observation features ``[n, C]`` (e.g. a regression's design matrix) that
        are appended to each observation's row, so the set encoder sees the pairs
        :math:`(x_i, y_i)`.
    num_simulations
        Prior-predictive draws :math:`(\theta, y)` to train on (a ``validation_fraction`` of
        them held out for early stopping).
    simulations
        Pre-drawn :class:`~ppltk.amortized.Simulations` instead.
    executor
        When given (``"dask"``, a scheduler address, a Client or a cluster), the simulations
        run there in work units of 5,000 (:func:`~ppltk.amortized.simulate_units`; the same
        draws on every executor for a given ``seed``).
    head
        ``"gaussian"`` (one full-covariance Gaussian over the unconstrained latents) or
        ``"mixture"`` (``num_components`` of them).
    hidden, context_dim, depth
        Sizes of the set encoder (:class:`~ppltk.amortized.DeepSetEncoder`).
    squash
        Map each standardised input feature by :math:`\operatorname{asinh}`: for data with
        heavy-tailed prior predictives (e.g. a half-Cauchy scale), which otherwise put a few
        huge values into the mean over observations. Off by default because it bends the
        linear sufficient statistics of Gaussian models.
    batch_size, lr, max_epochs, patience
        Adam on minibatches of the negative log-density; training stops after ``patience``
        epochs without improvement of the held-out loss and restores the best weights.
    calibrate, calibration_simulations
        After training, run :meth:`AmortizedPosterior.calibrate` on fresh simulations; a
        :class:`CalibrationWarning` is issued when its ranks fail the uniformity test at
        level 0.01 (Bonferroni over the parameters).
    seed
        Seed or generator for the simulations, the initial weights, the minibatches and the
        calibration.
    progress
        Show a tqdm bar over epochs.

    Returns
    -------
    AmortizedPosterior

    Examples
    --------
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("data", 5):
    ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> q = fit_amortized(model, torch.zeros(5), num_simulations=500, max_epochs=2,
    ...                   calibrate=False, seed=0, progress=False)
    >>> q.posterior(torch.ones(5), num_samples=10).draws["mu"].shape
    (1, 10)
    """
    if head not in _HEADS:
        raise ArgumentError(f"Expected `head` in {_HEADS}, but found {head!r}")
    for name, value, low in (
        ("num_simulations", num_simulations, 10),
        ("num_components", num_components, 1),
        ("hidden", hidden, 1),
        ("context_dim", context_dim, 1),
        ("depth", depth, 1),
        ("batch_size", batch_size, 1),
        ("max_epochs", max_epochs, 1),
        ("patience", patience, 1),
        ("calibration_simulations", calibration_simulations, 2),
    ):
        _check_int(name, value, low)
    if not 0.0 < validation_fraction < 1.0:
        raise ArgumentError(
            f"Expected `validation_fraction` in (0, 1), but found {validation_fraction!r}"
        )
    if not lr > 0:
        raise ArgumentError(f"Expected `lr` > 0, but found {lr!r}")
    bridge = ModelBridge(model, args, kwargs)
    gen = make_generator(seed, bridge.device)
    if observed is None:
        with pyro_seed(0), poutine.block():
            trace = poutine.trace(model).get_trace(*args, **(kwargs or {}))
        observed = observed_sites(trace)
    observed = list(observed)
    if not observed:
        raise ModelStructureError("Expected observed sites (data) in the model, but found none")
    unknown = [s for s in observed if s not in bridge.observed]
    if unknown:
        raise ArgumentError(
            f"Expected `observed` among the model's observed sites {list(bridge.observed)}, "
            f"but found {unknown}"
        )
    config = dict(
        head=head,
        num_components=1 if head == "gaussian" else num_components,
        hidden=hidden,
        context_dim=context_dim,
        depth=depth,
        squash=bool(squash),
    )
    t0 = time.perf_counter()
    if simulations is None and executor is not None:
        simulations = simulate_units(
            bridge, num_simulations, observed, executor, seed=child_seed(gen), progress=progress
        )
    elif simulations is None:
        simulations = simulate(bridge, num_simulations, gen, observed)
    elif not isinstance(simulations, Simulations):
        raise ArgumentError(
            f"Expected `simulations` to be a Simulations, but found {type(simulations)}"
        )
    t_sim = time.perf_counter() - t0
    n = len(simulations)
    n_val = max(1, int(round(validation_fraction * n)))
    if n - n_val < 2:
        raise ArgumentError(f"Expected at least 3 finite simulations, but found {n}")
    with pyro_seed(child_seed(gen)):  # initial weights from the caller's seed
        posterior = AmortizedPosterior(bridge, observed, config, covariates)
    posterior.timings["simulate"] = t_sim
    perm = torch.randperm(n, generator=gen, device=gen.device).to(bridge.device)
    valid, train = simulations.subset(perm[:n_val]), simulations.subset(perm[n_val:])
    posterior._set_stats(train)
    t0 = time.perf_counter()
    _train(posterior, train, valid, batch_size, lr, max_epochs, patience, gen, progress)
    posterior.timings["train"] = time.perf_counter() - t0
    if calibrate:
        result = posterior.calibrate(calibration_simulations, seed=child_seed(gen))
        posterior.calibration = result
        if not result.passed(0.01):
            warnings.warn(
                f"The amortized posterior failed simulation-based calibration (ranks of "
                f"{result.failed(0.01)} not uniform, min p = {min(result.p_values.values()):.2g}): "
                "train longer, on more simulations, or with a larger network / mixture head",
                CalibrationWarning,
                stacklevel=2,
            )
    return posterior


def _train(
    posterior: AmortizedPosterior,
    train: Simulations,
    valid: Simulations,
    batch_size: int,
    lr: float,
    max_epochs: int,
    patience: int,
    gen: torch.Generator,
    progress: bool,
) -> None:
    """Adam on the mean negative log-density with early stopping on the held-out set."""
    modules = torch.nn.ModuleList([posterior.encoder, posterior.head])
    optim = torch.optim.Adam(modules.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optim, factor=0.5, patience=max(1, patience // 3)
    )

    def loss_of(sims: Simulations) -> torch.Tensor:
        return -posterior._log_prob_std(sims.z, posterior._context(sims.data)).mean()

    best, best_state, waited = math.inf, copy.deepcopy(modules.state_dict()), 0
    n = len(train)
    with progress_bar(max_epochs, "amortized training", progress) as bar:
        for _ in range(max_epochs):
            modules.train()
            perm = torch.randperm(n, generator=gen, device=gen.device).to(train.z.device)
            total = 0.0
            for start in range(0, n, batch_size):
                batch = train.subset(perm[start : start + batch_size])
                loss = loss_of(batch)
                optim.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(modules.parameters(), 10.0)
                optim.step()
                total += float(loss.detach()) * len(batch)
            modules.eval()
            with torch.no_grad():
                val = float(loss_of(valid))
            posterior.history["train"].append(total / n)
            posterior.history["validation"].append(val)
            sched.step(val)
            bar.update(1)
            bar.set_postfix(train=f"{total / n:.3f}", validation=f"{val:.3f}")
            if val < best - 1e-4:
                best, best_state, waited = val, copy.deepcopy(modules.state_dict()), 0
            else:
                waited += 1
                if waited >= patience:
                    break
    modules.load_state_dict(best_state)
