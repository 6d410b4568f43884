r"""Sequential Bayesian inference for continual learning (Kessler et al., Entropy 2023).

After task :math:`t` the exact posterior is :math:`p(\theta \mid \mathcal D_{1:t}) \propto
p(\mathcal D_t \mid \theta)\, p(\theta \mid \mathcal D_{1:t-1})`. :class:`SequentialBayes`
replaces the previous posterior by a density :math:`q_{t-1}` fitted to its HMC/NUTS samples,

.. math:: \theta^{(s)} \sim \pi_t(\theta) \propto p(\mathcal D_t\mid\theta)\, q_{t-1}(\theta),
          \qquad q_t = \text{fit}(\theta^{(1:S)}),

with :math:`q_0` the base prior. If :math:`q_{t-1}` equals the previous posterior and the
sampler is exact, :math:`\pi_t` is the joint posterior; the paper's point is that the density
estimation error compounds and old tasks are forgotten. :class:`JointHMC` samples the joint
posterior on all data so far (the upper bound).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyro.distributions as dist
import torch

from ppltk._rng import child_seed
from ppltk.continual._learner import ContinualLearner
from ppltk.continual.bnn import make_logdensity_and_grad
from ppltk.continual.densities import FittedDensity, fit_density
from ppltk.errors import ArgumentError
from ppltk.mcmc import Kernel, sample_flat

__all__ = ["SequentialBayes", "JointHMC"]

Sampler = Callable[..., torch.Tensor]


class _PosteriorSampling(ContinualLearner):
    """Common part: sample the posterior of the flat parameters under a prior on given data.

    The constructor (also :class:`JointHMC`'s) takes the parameters of :class:`SequentialBayes`
    without the density.
    """

    def __init__(
        self,
        network,
        sampler: str | Sampler = "nuts",
        num_chains: int = 4,
        num_warmup: int = 200,
        num_samples: int = 200,
        prior_scale: float = 1.0,
        num_predictive: int = 100,
        seed: int | torch.Generator = 0,
        progress: bool = False,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__(seed=seed, dtype=dtype)
        if not (callable(sampler) or isinstance(sampler, Kernel) or sampler in ("nuts", "hmc")):
            raise ArgumentError(
                f"Expected `sampler` in ('nuts', 'hmc'), a ppltk.mcmc kernel or a callable, "
                f"but found {sampler!r}"
            )
        for name, value in (
            ("num_chains", num_chains),
            ("num_samples", num_samples),
            ("num_predictive", num_predictive),
        ):
            if not isinstance(value, int) or value < 1:
                raise ArgumentError(f"Expected `{name}` to be a positive int, but found {value!r}")
        custom = hasattr(network, "log_likelihood") and hasattr(network, "dim")
        self.model = network if custom else self._wrap(network)
        self.classifier = not custom or hasattr(network, "predict_proba")
        self.sampler = sampler
        self.num_chains, self.num_warmup, self.num_samples = num_chains, num_warmup, num_samples
        self.num_predictive, self.progress = num_predictive, progress
        self.device = getattr(self.model, "device", torch.device("cpu"))
        loc = torch.zeros(self.model.dim, dtype=dtype, device=self.device)
        self.base_prior = dist.Normal(loc, prior_scale).to_event(1)
        self.samples: torch.Tensor | None = None  # [C, S, D] of the latest task
        self.sample_times: list[float] = []
        self.sampler_info: list[dict] = []

    def _init_points(self) -> torch.Tensor:
        c, d = self.num_chains, self.model.dim
        if self.samples is None:
            eps = torch.randn(c, d, generator=self.generator, dtype=self.dtype)
            return 0.1 * eps.to(self.device)
        pooled = self.samples.flatten(0, 1)
        idx = torch.randint(0, pooled.shape[0], (c,), generator=self.generator)
        return pooled[idx].clone()

    def _sample(self, prior: dist.Distribution, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Draw ``[C, S, D]`` from ``prior x likelihood``; record the wall time and a small info
        dict (divergences after warm-up and mean sampler statistics; no divergence warnings)."""
        k = self.num_classes
        lp_fn = make_logdensity_and_grad(prior, lambda z: self.model.log_likelihood(z, X, y, k))
        kwargs = dict(
            num_warmup=self.num_warmup,
            num_samples=self.num_samples,
            seed=child_seed(self.generator),
        )
        start = time.perf_counter()
        init = self._init_points()
        if callable(self.sampler) and not isinstance(self.sampler, Kernel):
            samples, info = self.sampler(lp_fn, init, **kwargs), {}
        else:
            out = sample_flat(
                lp_fn,
                init,
                kernel=self.sampler,
                progress=self.progress,
                warn_divergences=False,
                **kwargs,
            )
            samples, info = out.positions, {"num_divergences": out.num_divergences}
            for name in ("accept_prob", "step_size", "n_steps", "tree_depth"):
                if name in out.stats:
                    info[f"mean_{name}"] = float(out.stats[name].double().mean())
        self.sample_times.append(time.perf_counter() - start)
        self.sampler_info.append(info)
        self.samples = samples.detach()
        return self.samples

    def _predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        if not hasattr(self.model, "predict_proba"):
            raise ArgumentError(
                f"Expected a classifier network for predict_proba, but found {type(self.model).__name__} "
                "without `predict_proba(theta, X, num_classes)`"
            )
        pooled = self.samples.flatten(0, 1)
        idx = torch.linspace(0, pooled.shape[0] - 1, min(self.num_predictive, pooled.shape[0]))
        return self.model.predict_proba(pooled[idx.round().long()], X, self.num_classes)


class SequentialBayes(_PosteriorSampling):
    """Sequential posterior: HMC/NUTS per task, a fitted density as the next task's prior.

    Parameters
    ----------
    network
        A ``torch.nn.Module`` (classifier with at least as many outputs as classes), or any
        object with ``dim`` and ``log_likelihood(theta [B, D], X, y, num_classes) -> [B]``.
    density
        ``"gaussian"`` (full covariance), ``"gmm"`` (K by held-out likelihood) or ``"flow"``.
    sampler
        ``"nuts"`` or ``"hmc"`` or a kernel object of ``ppltk.mcmc`` (step size and diagonal
        mass adapted afresh for every task), or a
        callable ``sampler(logdensity_and_grad, init [C, D], num_warmup, num_samples, seed)``
        returning ``[C, S, D]`` draws.
    num_chains, num_warmup, num_samples
        Chains run in one batch; warm-up and kept draws per chain and task.
    prior_scale
        Standard deviation of the isotropic Gaussian prior of the first task.
    density_kwargs
        Extra arguments of the density estimator (e.g. ``max_components``, ``num_steps``).
    num_predictive
        Posterior draws averaged in ``predict_proba``.
    seed
        Seed or generator for all randomness.

    Attributes
    ----------
    prior
        The current prior :math:`q_t` (a Pyro distribution with event shape ``[D]``).
    densities
        The :class:`FittedDensity` of every task, with its held-out log-likelihood.
    """

    def __init__(
        self,
        network,
        density: str = "gaussian",
        sampler: str | Sampler = "nuts",
        num_chains: int = 4,
        num_warmup: int = 200,
        num_samples: int = 200,
        prior_scale: float = 1.0,
        density_kwargs: dict | None = None,
        num_predictive: int = 100,
        seed: int | torch.Generator = 0,
        progress: bool = False,
        dtype: torch.dtype = torch.float64,
    ):
        if density not in ("gaussian", "gmm", "flow"):
            raise ArgumentError(
                f"Expected `density` in ('gaussian', 'gmm', 'flow'), but found {density!r}"
            )
        super().__init__(
            network,
            sampler=sampler,
            num_chains=num_chains,
            num_warmup=num_warmup,
            num_samples=num_samples,
            prior_scale=prior_scale,
            num_predictive=num_predictive,
            seed=seed,
            progress=progress,
            dtype=dtype,
        )
        self.density = density
        self.density_kwargs = dict(density_kwargs or {})
        self.prior: dist.Distribution = self.base_prior
        self.densities: list[FittedDensity] = []

    def _observe(self, X: torch.Tensor, y: torch.Tensor) -> None:
        samples = self._sample(self.prior, X, y)
        fitted = fit_density(
            samples.flatten(0, 1),
            self.density,
            seed=child_seed(self.generator),
            **self.density_kwargs,
        )
        self.densities.append(fitted)
        self.prior = fitted.distribution


class JointHMC(_PosteriorSampling):
    """Joint posterior :math:`p(\\theta \\mid \\mathcal D_{1:t})` by HMC/NUTS on all data so far.

    Parameters are those of :class:`SequentialBayes` without the density.
    """

    def _observe(self, X: torch.Tensor, y: torch.Tensor) -> None:
        if self.num_tasks > 0:  # all data so far
            X, y = torch.cat([self._X, X]), torch.cat([self._y, y])
        self._sample(self.base_prior, X, y)
        self._X, self._y = X, y  # kept only once the task is learnt
