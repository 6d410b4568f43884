r"""Density estimators fitted to posterior samples, returned as Pyro distributions.

Each estimator takes samples :math:`\theta_{1:N} \sim p(\theta \mid \mathcal D_{1:t})` of a
flat parameter vector, holds out a random fraction of them, fits on the rest and returns a
:class:`FittedDensity`: a Pyro distribution :math:`q(\theta)` with event shape ``[D]`` (usable
as the next task's prior, differentiable in :math:`\theta`) and its held-out average
log-likelihood :math:`\frac{1}{N_\text{ho}} \sum_{i \in \text{ho}} \log q(\theta_i)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch

from ppltk._rng import child_seed, make_generator, pyro_seed
from ppltk.errors import ArgumentError, NotPositiveDefiniteError, ShapeError

__all__ = ["FittedDensity", "fit_gaussian", "fit_gmm", "fit_flow", "fit_density"]


@dataclass
class FittedDensity:
    """A fitted density: ``distribution`` (event shape ``[D]``) and its held-out log-likelihood.

    Attributes
    ----------
    distribution
        Pyro distribution over the flat vector, parameters detached (no gradient flows to them).
    heldout_loglik
        Mean log-density of the held-out samples under ``distribution``.
    kind
        ``"gaussian"``, ``"gmm"`` or ``"flow"``.
    info
        Extra facts (e.g. the chosen number of mixture components and each candidate's score).
    """

    distribution: dist.Distribution
    heldout_loglik: float
    kind: str
    info: dict


def _check_samples(samples: torch.Tensor, heldout_fraction: float) -> None:
    if not isinstance(samples, torch.Tensor) or samples.ndim != 2:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples)
        raise ShapeError(f"Expected `samples` to be a tensor [N, D], but found {shape}")
    if samples.shape[0] < 4:
        raise ShapeError(
            f"Expected at least 4 samples [N >= 4, D], but found {tuple(samples.shape)}"
        )
    if not torch.isfinite(samples).all():
        raise ArgumentError("Expected finite `samples`, but found NaN or inf entries")
    if not 0.0 < heldout_fraction < 1.0:
        raise ArgumentError(f"Expected `heldout_fraction` in (0, 1), but found {heldout_fraction}")


def _split(samples: torch.Tensor, heldout_fraction: float, gen: torch.Generator):
    n = samples.shape[0]
    perm = torch.randperm(n, generator=gen, device=gen.device).to(samples.device)
    n_ho = max(1, int(round(heldout_fraction * n)))
    return samples[perm[n_ho:]], samples[perm[:n_ho]]


def _heldout(distribution: dist.Distribution, heldout: torch.Tensor) -> float:
    with torch.no_grad():
        return float(distribution.log_prob(heldout).mean())


def _gaussian_params(x: torch.Tensor, shrinkage: str | float | None):
    """Mean and (shrunk) covariance of ``x`` [N, D], float64 on ``x``'s device."""
    from sklearn.covariance import ledoit_wolf

    x64 = x.detach().to(torch.float64)
    mean = x64.mean(0)
    centred = x64 - mean
    cov = centred.T @ centred / max(x64.shape[0] - 1, 1)
    if shrinkage == "ledoit-wolf":
        _, alpha = ledoit_wolf(centred.cpu().numpy(), assume_centered=True)
    else:
        alpha = float(shrinkage or 0.0)
    target = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device) * cov.diagonal().mean()
    cov = (1.0 - alpha) * cov + alpha * target
    cov = cov + 1e-9 * cov.diagonal().mean() * torch.eye(
        cov.shape[0], dtype=cov.dtype, device=cov.device
    )
    return mean, cov


def fit_gaussian(
    samples: torch.Tensor,
    heldout_fraction: float = 0.2,
    shrinkage: str | float | None = "ledoit-wolf",
    seed: int | torch.Generator = 0,
) -> FittedDensity:
    r"""Full-covariance Gaussian :math:`\mathcal N(\hat\mu, \hat\Sigma)` fitted by moments.

    :math:`\hat\Sigma = (1-\alpha) S + \alpha\,\bar s I` with the sample covariance :math:`S`,
    :math:`\bar s = \operatorname{tr} S / D` and Ledoit-Wolf's :math:`\alpha` (or a given one);
    with :math:`N \gg D`, :math:`\alpha \to 0` and the fit is the maximum-likelihood Gaussian.

    Parameters
    ----------
    samples
        ``[N, D]`` draws (e.g. pooled HMC chains).
    heldout_fraction
        Fraction of the draws (chosen at random) held out to score the fit.
    shrinkage
        ``"ledoit-wolf"``, a fixed :math:`\alpha \in [0, 1]`, or ``None`` (no shrinkage).
    seed
        Seed or generator of the held-out split.
    """
    _check_samples(samples, heldout_fraction)
    gen = make_generator(seed)
    train, heldout = _split(samples, heldout_fraction, gen)
    mean, cov = _gaussian_params(train, shrinkage)
    scale_tril, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise NotPositiveDefiniteError(
            f"Expected a positive-definite sample covariance [{cov.shape[0]}, {cov.shape[1]}], "
            f"but found a singular one from {train.shape[0]} draws; use shrinkage='ledoit-wolf'"
        )
    d = dist.MultivariateNormal(mean.to(samples.dtype), scale_tril=scale_tril.to(samples.dtype))
    return FittedDensity(d, _heldout(d, heldout), "gaussian", {"mean": mean, "cov": cov})


def fit_gmm(
    samples: torch.Tensor,
    max_components: int = 4,
    heldout_fraction: float = 0.2,
    reg_covar: float = 1e-6,
    seed: int | torch.Generator = 0,
) -> FittedDensity:
    r"""Gaussian mixture :math:`\sum_k \pi_k \mathcal N(\mu_k, \Sigma_k)`, K by held-out likelihood.

    Mixtures with :math:`K = 1, \dots, K_\max` full-covariance components are fitted by EM
    (scikit-learn's ``GaussianMixture``) on the training part and scored on the held-out part;
    the smallest K within one standard error of the best held-out mean log-likelihood is kept
    (the one-standard-error rule) and converted to ``pyro.distributions.MixtureSameFamily``.

    Parameters
    ----------
    samples
        ``[N, D]`` draws.
    max_components
        Largest K tried.
    heldout_fraction
        Fraction of the draws held out to choose K and score the fit.
    reg_covar
        Ridge added to every component covariance (needed when :math:`N \lesssim D`).
    seed
        Seed or generator (split and EM initialisation).
    """
    from sklearn.mixture import GaussianMixture

    _check_samples(samples, heldout_fraction)
    if not isinstance(max_components, int) or max_components < 1:
        raise ArgumentError(f"Expected `max_components` >= 1, but found {max_components!r}")
    gen = make_generator(seed)
    train, heldout = _split(samples, heldout_fraction, gen)
    xtr = train.detach().cpu().to(torch.float64).numpy()
    xho = heldout.detach().cpu().to(torch.float64).numpy()
    fits, per_point = {}, {}
    for k in range(1, min(max_components, len(xtr)) + 1):
        gm = GaussianMixture(
            k,
            covariance_type="full",
            reg_covar=reg_covar,
            n_init=1,
            random_state=child_seed(gen) % (2**31),
        )
        fits[k] = gm.fit(xtr)
        per_point[k] = gm.score_samples(xho)
    scores = {k: float(v.mean()) for k, v in per_point.items()}
    # One-standard-error rule: the smallest K whose held-out score is within one standard
    # error (of the paired difference to the best K) of the best score.
    k_best = max(scores, key=scores.get)
    k = min(
        k
        for k in scores
        if scores[k_best] - scores[k]
        <= np.std(per_point[k_best] - per_point[k]) / np.sqrt(len(xho))
    )
    gm = fits[k]
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=samples.dtype, device=samples.device)  # noqa: E731
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=as_t(gm.weights_)),
        dist.MultivariateNormal(
            as_t(gm.means_), scale_tril=as_t(np.linalg.cholesky(gm.covariances_))
        ),
    )
    info = {"num_components": k, "scores": scores}
    return FittedDensity(mixture, _heldout(mixture, heldout), "gmm", info)


def _build_flow(mean, scale, dim, num_layers, flow, hidden_dims):
    base = dist.Normal(torch.zeros_like(mean), torch.ones_like(mean)).to_event(1)
    layers = []
    for _ in range(num_layers):
        if flow == "spline":
            ar = T.spline_autoregressive(dim, hidden_dims=hidden_dims, count_bins=8)
        else:
            ar = T.affine_autoregressive(dim, hidden_dims=hidden_dims)
        layers.append(ar.to(dtype=mean.dtype, device=mean.device))
    # `ar` maps data -> noise in parallel; its inverse (sampling direction) is sequential, so
    # log_prob (which calls the forward pass of `ar`) costs one network evaluation per layer.
    # reverse the coordinate order between layers so every coordinate gets conditioned
    flip = T.Permute(torch.arange(dim - 1, -1, -1, device=mean.device))
    transforms = []
    for i, ar in enumerate(layers):
        transforms += [flip, ar.inv] if i % 2 else [ar.inv]
    transforms.append(T.AffineTransform(mean, scale, event_dim=1))
    return dist.TransformedDistribution(base, transforms), layers


def fit_flow(
    samples: torch.Tensor,
    flow: str = "affine",
    num_layers: int = 2,
    hidden_dims: list[int] | None = None,
    num_steps: int = 500,
    lr: float = 5e-3,
    heldout_fraction: float = 0.2,
    seed: int | torch.Generator = 0,
) -> FittedDensity:
    r"""Masked autoregressive flow fitted by maximum likelihood (Adam on :math:`-\log q`).

    :math:`\theta = \hat\mu + \hat\sigma \odot f^{-1}(z)`, :math:`z \sim \mathcal N(0, I)`,
    where :math:`f` is a stack of Pyro autoregressive transforms (``affine_autoregressive`` or
    ``spline_autoregressive``) mapping standardised samples to noise, so
    :math:`\log q(\theta) = \log \mathcal N(f(u); 0, I) + \log|\det J_f(u)| - \sum \log\hat\sigma`,
    :math:`u = (\theta - \hat\mu)/\hat\sigma` (the coordinate order is reversed between
    layers; permutations have unit Jacobian). The final parameters are frozen.

    Parameters
    ----------
    samples
        ``[N, D]`` draws.
    flow
        ``"affine"`` (masked affine autoregressive) or ``"spline"`` (rational-quadratic).
    num_layers, hidden_dims
        Autoregressive layers and the hidden sizes of each layer's MADE network
        (default ``[2 D + 8]``).
    num_steps, lr
        Full-batch Adam steps on the training draws and learning rate.
    heldout_fraction
        Fraction of the draws held out to score the fit.
    seed
        Seed or generator (split and network initialisation).
    """
    _check_samples(samples, heldout_fraction)
    if flow not in ("affine", "spline"):
        raise ArgumentError(f"Expected `flow` in ('affine', 'spline'), but found {flow!r}")
    gen = make_generator(seed)
    train, heldout = _split(samples, heldout_fraction, gen)
    dim = samples.shape[1]
    train = train.detach()
    mean, scale = train.mean(0), train.std(0).clamp_min(1e-6)
    with pyro_seed(child_seed(gen)):
        q, layers = _build_flow(mean, scale, dim, num_layers, flow, hidden_dims or [2 * dim + 8])
    params = [p for layer in layers for p in layer.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    loss = torch.zeros(())
    for _ in range(num_steps):
        opt.zero_grad()
        loss = -q.log_prob(train).mean()
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    return FittedDensity(q, _heldout(q, heldout), "flow", {"train_loglik": -float(loss.detach())})


def fit_density(samples: torch.Tensor, kind: str, seed: int | torch.Generator = 0, **kwargs):
    """Dispatch to :func:`fit_gaussian`, :func:`fit_gmm` or :func:`fit_flow` by ``kind``."""
    fitters = {"gaussian": fit_gaussian, "gmm": fit_gmm, "flow": fit_flow}
    if kind not in fitters:
        raise ArgumentError(f"Expected `density` in {tuple(fitters)}, but found {kind!r}")
    return fitters[kind](samples, seed=seed, **kwargs)
