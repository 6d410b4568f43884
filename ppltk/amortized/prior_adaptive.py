r"""Prior adaptation: a Distribution-Transformer head from a Gaussian-mixture prior to a posterior.

After "Distribution Transformers: Fast Approximate Bayesian Inference With On-The-Fly Prior
Adaptation": the prior over the model's unconstrained latents is given at inference time as a
Gaussian mixture :math:`\pi(z) = \sum_k w_k \mathcal N(z; m_k, \operatorname{diag} s_k^2)`;
each component is a token, the tokens attend to each other and, by cross-attention, to the
embedded observations, and each comes out as a posterior component
:math:`(w'_k, m'_k, L'_k)`:

.. math::

    q(z \mid y, \pi) = \sum_k w'_k\, \mathcal N(z; m'_k, L'_k L'^\top_k).

Trained on :math:`(\pi_i, z_i, y_i)` with a random mixture prior :math:`\pi_i` (around the
model's own prior), :math:`z_i \sim \pi_i` and :math:`y_i \sim p(y \mid T(z_i))` from the
model's likelihood (its own latent sites conditioned on :math:`T(z_i)`), by minimising
:math:`-\log q(z_i \mid y_i, \pi_i)`; the minimiser is the exact posterior
:math:`\propto \pi(z)\, p(y \mid T(z))` for every prior in the training distribution, so the
prior can change without retraining, and a posterior can serve as the next step's prior
(sequential fusion; :meth:`PriorAdaptivePosterior.posterior_mixture` returns it as a mixture).
The posterior is on the unconstrained :math:`z` with the mixture as the prior *of z* (no
Jacobian term: the prior is specified in that space).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import nn

from ppltk._progress import progress_bar
from ppltk._rng import child_seed, make_generator, pyro_seed
from ppltk.amortized.networks import _mlp
from ppltk.amortized.posterior import _check_int, _robust_scale
from ppltk.amortized.simulate import _SIM_PLATE, _plate_dim, observed_sites, simulate
from ppltk.calibration.simulate import unobserve
from ppltk.errors import ArgumentError, ModelStructureError, ShapeError
from ppltk.model import ModelBridge

__all__ = ["GaussianMixturePrior", "PriorAdaptivePosterior", "fit_prior_adaptive"]


@dataclass
class GaussianMixturePrior:
    """A Gaussian mixture over the unconstrained latents: ``weights [K]``, ``loc [K, D]``,
    ``scale [K, D]`` (diagonal), or batched with a leading dim ``[B, ...]``."""

    weights: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor

    def distribution(self) -> dist.Distribution:
        """The mixture as a Pyro distribution (event ``[D]``)."""
        comp = dist.Normal(self.loc, self.scale).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(probs=self.weights), comp)

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """One draw per batch row: ``[B, D]`` (the prior must be batched)."""
        k = torch.multinomial(self.weights, 1, generator=generator)[:, 0]
        rows = torch.arange(self.loc.shape[0], device=self.loc.device)
        eps = torch.randn(
            self.loc.shape[0], self.loc.shape[-1], generator=generator,
            device=self.loc.device, dtype=self.loc.dtype,
        )  # fmt: skip
        return self.loc[rows, k] + self.scale[rows, k] * eps


class _Block(nn.Module):
    """Self-attention among prior tokens, cross-attention to the observations, an MLP."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.mlp = _mlp([hidden, 2 * hidden, hidden])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden) for _ in range(3)])

    def forward(self, tokens: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        h = self.norms[0](tokens)
        tokens = tokens + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.norms[1](tokens)
        tokens = tokens + self.cross_attn(h, points, points, need_weights=False)[0]
        return tokens + self.mlp(self.norms[2](tokens))


class _DistributionTransformer(nn.Module):
    def __init__(self, point_dim: int, dim: int, hidden: int, heads: int, layers: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_tril = dim * (dim + 1) // 2
        self.embed_points = _mlp([point_dim, hidden, hidden])
        self.embed_tokens = _mlp([1 + 2 * dim, hidden, hidden])
        self.blocks = nn.ModuleList([_Block(hidden, heads) for _ in range(layers)])
        self.out = nn.Linear(hidden, 1 + dim + self.num_tril)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
        rows, cols = torch.tril_indices(dim, dim)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def forward(self, points, log_w, loc, log_scale):
        """Standardised inputs -> posterior mixture (log-weights, means, Cholesky factors)."""
        tokens = self.embed_tokens(torch.cat([log_w[..., None], loc, log_scale], -1))
        h = self.embed_points(points)
        for block in self.blocks:
            tokens = block(tokens, h)
        raw = self.out(tokens)
        logits = torch.log_softmax(log_w + raw[..., 0], -1)
        post_loc = loc + raw[..., 1 : 1 + self.dim]
        flat = raw[..., 1 + self.dim :]
        b, k, d = loc.shape
        tril = flat.new_zeros(b, k, d, d)
        tril[..., self._rows, self._cols] = flat
        diag = log_scale + tril.diagonal(dim1=-2, dim2=-1)  # starts at the prior's scale
        tril = torch.tril(tril, -1) + torch.diag_embed(diag.exp() + 1e-4)
        return logits, post_loc, tril


class PriorAdaptivePosterior:
    """An amortized posterior that takes the prior (a :class:`GaussianMixturePrior` over the
    unconstrained latents) as an input at inference time. Made by :func:`fit_prior_adaptive`.
    """

    def __init__(self, bridge, observed, config, stats) -> None:
        self.bridge, self.observed, self.config, self.stats = bridge, list(observed), config, stats
        shape = tuple(bridge.observed[self.observed[0]].shape)
        self.point_dim = math.prod(shape[1:]) if len(shape) > 1 else 1
        self.net = _DistributionTransformer(
            self.point_dim, bridge.dim, config["hidden"], config["heads"], config["layers"]
        ).to(bridge.device, bridge.dtype)
        self.history: dict[str, list[float]] = {"train": [], "validation": []}
        self.timings: dict[str, float] = {}

    def _inputs(self, y: torch.Tensor, prior: GaussianMixturePrior):
        st = self.stats
        b, n = y.shape[0], y.shape[1]
        points = (y.reshape(b, n, -1).to(self.bridge.dtype) - st["y_loc"]) / st["y_scale"]
        loc = (prior.loc - st["z_loc"]) / st["z_scale"]
        log_scale = (prior.scale / st["z_scale"]).log()
        return points, prior.weights.clamp_min(1e-30).log(), loc, log_scale

    def _mixture(self, y, prior):
        logits, loc, tril = self.net(*self._inputs(y, prior))
        return logits, loc, tril

    def _log_prob(self, z, y, prior) -> torch.Tensor:
        logits, loc, tril = self._mixture(y, prior)
        x = (z - self.stats["z_loc"]) / self.stats["z_scale"]
        comp = dist.MultivariateNormal(loc, scale_tril=tril)
        lp = torch.logsumexp(comp.log_prob(x[:, None]) + logits, -1)
        return lp - self.stats["z_scale"].log().sum()

    def _check(self, y, prior: GaussianMixturePrior):
        y = torch.as_tensor(y).to(self.bridge.device)
        shape = tuple(self.bridge.observed[self.observed[0]].shape)
        single = y.dim() == len(shape)
        if single:
            y = y[None]
        if y.dim() != len(shape) + 1 or y.shape[2:] != shape[1:]:
            raise ShapeError(
                f"Expected `y` of shape {list(shape)} or [B, {', '.join(map(str, shape))}], "
                f"but found {list(y.shape)}"
            )
        d = self.bridge.dim
        w, m, s = prior.weights, prior.loc, prior.scale
        if w.dim() == 1:
            w, m, s = w[None], m[None], s[None]
        if m.shape[-1] != d or m.shape != s.shape or w.shape != m.shape[:-1]:
            raise ShapeError(
                f"Expected prior weights [K], loc and scale [K, {d}] (optionally batched), but "
                f"found {list(w.shape)}, {list(m.shape)}, {list(s.shape)}"
            )
        if not bool((s > 0).all()) or not bool((w >= 0).all()):
            raise ArgumentError("Expected positive prior scales and non-negative weights")
        dev = dict(device=self.bridge.device, dtype=self.bridge.dtype)
        w = (w / w.sum(-1, keepdim=True)).to(**dev)
        prior = GaussianMixturePrior(w.expand(y.shape[0], -1), m.to(**dev).expand(y.shape[0], -1, -1),
                                     s.to(**dev).expand(y.shape[0], -1, -1))  # fmt: skip
        return y, prior, single

    def posterior_mixture(self, y, prior: GaussianMixturePrior) -> dict[str, torch.Tensor]:
        """The posterior mixture over the unconstrained latents: ``weights [B, K]``,
        ``loc [B, K, D]``, ``scale_tril [B, K, D, D]`` (no batch dim for one data set).
        ``GaussianMixturePrior(weights, loc, scale_tril.diagonal(...))`` of it is a
        diagonal approximation usable as the next step's prior."""
        y, prior, single = self._check(y, prior)
        with torch.no_grad():
            logits, loc, tril = self._mixture(y, prior)
        zl, zs = self.stats["z_loc"], self.stats["z_scale"]
        out = {
            "weights": logits.exp(),
            "loc": zl + zs * loc,
            "scale_tril": zs[:, None] * tril,
        }
        return {k: v[0] for k, v in out.items()} if single else out

    def sample(self, y, prior: GaussianMixturePrior, num_samples: int = 1000, seed=None):
        """Unconstrained posterior draws ``[S, D]`` (or ``[B, S, D]``)."""
        _check_int("num_samples", num_samples, 1)
        y, prior, single = self._check(y, prior)
        gen = make_generator(seed, self.bridge.device)
        with torch.no_grad():
            logits, loc, tril = self._mixture(y, prior)
        b = y.shape[0]
        k = torch.multinomial(logits.exp(), num_samples, replacement=True, generator=gen)
        eps = torch.randn(b, num_samples, self.bridge.dim, generator=gen,
                          device=loc.device, dtype=loc.dtype)  # fmt: skip
        rows = torch.arange(b, device=loc.device)[:, None]
        x = loc[rows, k] + (tril[rows, k] @ eps[..., None])[..., 0]
        z = self.stats["z_loc"] + self.stats["z_scale"] * x
        return z[0] if single else z

    def posterior(self, y, prior: GaussianMixturePrior, num_samples: int = 1000, seed=None):
        """A :class:`ppltk.Result` (one chain) for one data set under ``prior``."""
        z = self.sample(y, prior, num_samples, seed)
        if z.dim() != 2:
            raise ShapeError("Expected one data set in `y` for posterior()")
        return self.bridge.to_result(z[None], method="amortized-prior-adaptive")


def _random_priors(num, k, z_loc, z_scale, gen) -> GaussianMixturePrior:
    """Mixture priors around the model's own prior: ``K`` components with Dirichlet(1) weights,
    means at ``z_loc + 1.5 z_scale N(0, 1)`` and scales ``z_scale * exp(U(-2, 0.3))``."""
    d = z_loc.shape[0]
    opts = dict(generator=gen, device=z_loc.device, dtype=z_loc.dtype)
    weights = -torch.rand(num, k, **opts).clamp_min(1e-12).log()
    weights = weights / weights.sum(-1, keepdim=True)
    loc = z_loc + 1.5 * z_scale * torch.randn(num, k, d, **opts)
    scale = z_scale * (torch.rand(num, k, d, **opts) * 2.3 - 2.0).exp()
    return GaussianMixturePrior(weights, loc, scale)


def _simulate_likelihood(bridge, observed: str, z: torch.Tensor, gen) -> torch.Tensor:
    """``y_i ~ p(y | T(z_i))`` for all rows at once: the model's latent sites conditioned on
    the constrained ``z`` inside an outer plate."""
    values = bridge.constrain(z)
    with pyro_seed(0), poutine.block():
        probe = poutine.trace(unobserve(bridge.model, [observed])).get_trace(
            *bridge.args, **bridge.kwargs
        )
    dim = _plate_dim(probe)
    num = z.shape[0]
    data = {}
    for name, site in bridge.sites.items():
        pad = -dim - 1 - (len(probe.nodes[name]["fn"].batch_shape))
        value = values[name].reshape((num,) + (1,) * max(pad, 0) + site.shape)
        data[name] = value
    model = unobserve(poutine.condition(bridge.model, data=data), [observed])
    with pyro_seed(child_seed(gen)), poutine.block(), pyro.validation_enabled(False):
        with pyro.plate(_SIM_PLATE, num, dim=dim):
            trace = poutine.trace(model).get_trace(*bridge.args, **bridge.kwargs)
    y = trace.nodes[observed]["value"]
    shape = tuple(bridge.observed[observed].shape)
    if y.shape[0] != num or y.numel() != num * math.prod(shape):
        raise ModelStructureError(
            f"Expected the model batched by an outer plate to give '{observed}' of shape "
            f"[{num}, {', '.join(map(str, shape))}], but found {list(y.shape)}; prior-adaptive "
            "training needs a model written with plates"
        )
    return y.reshape((num,) + shape)


def fit_prior_adaptive(
    model: Callable,
    *args: Any,
    kwargs: dict | None = None,
    observed: Sequence[str] | None = None,
    num_components: int = 2,
    num_simulations: int = 10_000,
    hidden: int = 64,
    heads: int = 4,
    layers: int = 2,
    batch_size: int = 256,
    lr: float = 1e-3,
    max_epochs: int = 100,
    patience: int = 10,
    validation_fraction: float = 0.1,
    seed: int | torch.Generator | None = None,
    progress: bool = True,
) -> PriorAdaptivePosterior:
    r"""Train a :class:`PriorAdaptivePosterior` of ``model(*args, **kwargs)`` over random
    ``num_components``-component Gaussian-mixture priors on its unconstrained latents.

    One set-valued observed site (observations along its leading dim); the model must be
    batchable by an outer plate. The training priors are centred on the model's own prior
    (moments of its unconstrained draws); priors far outside that family are extrapolation.
    """
    for name, value, low in (
        ("num_components", num_components, 1),
        ("num_simulations", num_simulations, 10),
        ("hidden", hidden, 1),
        ("heads", heads, 1),
        ("layers", layers, 1),
        ("batch_size", batch_size, 1),
        ("max_epochs", max_epochs, 1),
        ("patience", patience, 1),
    ):
        _check_int(name, value, low)
    if hidden % heads:
        raise ArgumentError(f"Expected `hidden` divisible by `heads`, found {hidden}, {heads}")
    bridge = ModelBridge(model, args, kwargs)
    gen = make_generator(seed, bridge.device)
    if observed is None:
        with pyro_seed(0), poutine.block():
            trace = poutine.trace(model).get_trace(*args, **(kwargs or {}))
        observed = observed_sites(trace)
    observed = list(observed)
    if len(observed) != 1 or len(bridge.observed.get(observed[0], torch.zeros(())).shape) < 1:
        raise ModelStructureError(
            f"Expected one set-valued observed site, but found {observed} with shapes "
            f"{[list(bridge.observed[s].shape) for s in observed if s in bridge.observed]}"
        )
    t0 = time.perf_counter()
    try:
        own = simulate(bridge, 2000, gen, observed, path="plate")
    except Exception as error:  # noqa: BLE001 - named below
        raise ModelStructureError(
            "Prior-adaptive training runs the model batched by an outer plate, which failed "
            f"({error!r:.200}); write the model with plates (no .expand over observations)"
        ) from error
    z_loc, z_scale = own.z.mean(0), own.z.std(0).clamp_min(1e-6)
    priors = _random_priors(num_simulations, num_components, z_loc, z_scale, gen)
    z = priors.sample(gen)
    y = _simulate_likelihood(bridge, observed[0], z, gen)
    finite = torch.isfinite(z).all(-1) & torch.isfinite(y.reshape(len(y), -1)).all(-1)
    z, y = z[finite], y[finite]
    priors = GaussianMixturePrior(priors.weights[finite], priors.loc[finite], priors.scale[finite])
    n = len(z)
    y_loc, y_scale = _robust_scale(y.reshape(-1, 1 if y.dim() == 2 else y[0, 0].numel()))
    stats = {"z_loc": z_loc, "z_scale": z_scale, "y_loc": y_loc, "y_scale": y_scale}
    config = dict(hidden=hidden, heads=heads, layers=layers, num_components=num_components)
    with pyro_seed(child_seed(gen)):
        post = PriorAdaptivePosterior(bridge, observed, config, stats)
    post.timings["simulate"] = time.perf_counter() - t0
    perm = torch.randperm(n, generator=gen, device=gen.device).to(z.device)
    n_val = max(1, int(round(validation_fraction * n)))

    def part(index):
        p = GaussianMixturePrior(priors.weights[index], priors.loc[index], priors.scale[index])
        return z[index], y[index], p

    valid, train_idx = part(perm[:n_val]), perm[n_val:]
    optim = torch.optim.Adam(post.net.parameters(), lr=lr)
    best, best_state, waited = math.inf, copy.deepcopy(post.net.state_dict()), 0
    t0 = time.perf_counter()
    with progress_bar(max_epochs, "prior-adaptive training", progress) as bar:
        for _ in range(max_epochs):
            post.net.train()
            order = train_idx[torch.randperm(len(train_idx), generator=gen, device=gen.device)]
            total = 0.0
            for start in range(0, len(order), batch_size):
                zb, yb, pb = part(order[start : start + batch_size])
                loss = -post._log_prob(zb, yb, pb).mean()
                optim.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(post.net.parameters(), 10.0)
                optim.step()
                total += float(loss.detach()) * len(zb)
            post.net.eval()
            with torch.no_grad():
                val = float(-post._log_prob(*valid).mean())
            post.history["train"].append(total / len(order))
            post.history["validation"].append(val)
            bar.update(1)
            if val < best - 1e-4:
                best, best_state, waited = val, copy.deepcopy(post.net.state_dict()), 0
            else:
                waited += 1
                if waited >= patience:
                    break
    post.net.load_state_dict(best_state)
    post.timings["train"] = time.perf_counter() - t0
    return post
