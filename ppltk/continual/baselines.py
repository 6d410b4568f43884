r"""Baselines in the continual-learning harness: fine-tuning, VCL, online Laplace and NCM.

All three keep one network viewed as a flat vector :math:`\theta` (:class:`FlatBNN`) and
carry a Gaussian summary of the past from task to task:

* :class:`FineTuning` (lower bound): maximum likelihood on the current task, starting from
  the previous weights, no prior (nothing keeps old tasks).
* :class:`VCL` (Nguyen et al., 2018): a mean-field Gaussian Pyro guide
  :math:`q_t(\theta) = \mathcal N(\mu_t, \operatorname{diag}\sigma_t^2)` maximises
  :math:`\mathbb E_{q_t}[\log p(\mathcal D_t\mid\theta)] - \mathrm{KL}(q_t \| q_{t-1})`; the
  fitted guide becomes the next prior.
* :class:`OnlineLaplace` (Ritter et al., 2018; online EWC): MAP under
  :math:`\mathcal N(\mu_{t-1}, \Lambda_{t-1}^{-1})`, then
  :math:`\Lambda_t = \Lambda_{t-1} + \operatorname{diag} G_t`, with :math:`G_t = \sum_i J_i^\top
  (\operatorname{diag} p_i - p_i p_i^\top) J_i` the generalised Gauss-Newton (= Fisher) matrix
  of the softmax likelihood at the MAP.

:class:`NearestClassMean` is the trivial reference for prototype methods: the exact mean of
every class's raw training inputs (running sums, so it never forgets a mean) and the nearest
mean as the prediction.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceMeanField_ELBO
from torch.func import jacrev, vmap

from ppltk._rng import child_seed, pyro_seed
from ppltk.continual._learner import ContinualLearner, training_steps
from ppltk.errors import ArgumentError

__all__ = ["FineTuning", "VCL", "OnlineLaplace", "NearestClassMean"]


def _check_steps(num_steps: int, lr: float) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ArgumentError(f"Expected `num_steps` to be a positive int, but found {num_steps!r}")
    if not lr > 0:
        raise ArgumentError(f"Expected `lr` > 0, but found {lr!r}")


class _PointEstimate(ContinualLearner):
    """Gradient training of a flat parameter vector under an optional prior."""

    def __init__(self, network, num_steps, lr, seed, progress, dtype):
        super().__init__(seed=seed, dtype=dtype)
        _check_steps(num_steps, lr)
        self.model = self._wrap(network)
        self.theta = self.model.initial_vector()
        self.num_steps, self.lr, self.progress = num_steps, lr, progress

    def _fit_map(self, X, y, prior: dist.Distribution | None) -> None:
        theta = self.theta.clone().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=self.lr)
        n, k = X.shape[0], self.num_classes
        for _ in training_steps(self.num_steps, type(self).__name__, self.progress):
            opt.zero_grad()
            loss = -self.model.log_likelihood(theta[None], X, y, k)[0]
            if prior is not None:
                loss = loss - prior.log_prob(theta)
            (loss / n).backward()
            opt.step()
        self.theta = theta.detach()

    def _predict_proba(self, X):
        return self.model.predict_proba(self.theta[None], X, self.num_classes)


class FineTuning(_PointEstimate):
    """Maximum likelihood on each new task from the previous weights (no prior, no memory).

    Parameters
    ----------
    network
        Classifier module with at least as many outputs as classes.
    num_steps, lr
        Full-batch Adam steps per task and learning rate.
    seed
        Seed (the module's own initial weights are the starting point).
    """

    def __init__(
        self,
        network,
        num_steps: int = 300,
        lr: float = 1e-2,
        seed: int | torch.Generator = 0,
        progress: bool = False,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__(network, num_steps, lr, seed, progress, dtype)

    def _observe(self, X, y):
        self._fit_map(X, y, prior=None)


class OnlineLaplace(_PointEstimate):
    """Online Laplace approximation with a diagonal Gauss-Newton precision (online EWC).

    Parameters
    ----------
    network
        Classifier module.
    prior_scale
        Standard deviation of the isotropic first-task prior.
    num_steps, lr
        Full-batch Adam steps per task and learning rate for the MAP.
    seed
        Seed or generator.

    Attributes
    ----------
    precision
        Diagonal precision :math:`\\Lambda_t` ``[D]`` of the current Laplace posterior.
    """

    def __init__(
        self,
        network,
        prior_scale: float = 1.0,
        num_steps: int = 300,
        lr: float = 1e-2,
        seed: int | torch.Generator = 0,
        progress: bool = False,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__(network, num_steps, lr, seed, progress, dtype)
        self.precision = torch.full_like(self.theta, prior_scale**-2.0)
        self.mean = torch.zeros_like(self.theta)

    def _ggn_diagonal(self, X):
        # diag(J^T (diag p - p p^T) J) summed over data, J the Jacobian of the K logits:
        # per point and coordinate, sum_k p_k J_k^2 - (sum_k p_k J_k)^2
        k = self.num_classes

        def logits(theta, x):
            out = self.model.logits(theta[None], x[None])[0, 0, :k]
            return out, out

        # one forward pass gives the Jacobian [n, K, D] and the logits [n, K] (aux)
        jac, out = vmap(jacrev(logits, has_aux=True), in_dims=(None, 0))(self.theta, X)
        p = out.softmax(-1)[..., None]  # [n, K, 1]
        return ((p * jac.square()).sum(1) - (p * jac).sum(1).square()).sum(0)

    def _observe(self, X, y):
        prior = dist.Normal(self.mean, self.precision.rsqrt()).to_event(1)
        self._fit_map(X, y, prior)
        with torch.no_grad():
            self.precision = self.precision + self._ggn_diagonal(X).clamp_min(0.0)
        self.mean = self.theta.clone()


class VCL(ContinualLearner):
    """Variational continual learning with a mean-field Gaussian Pyro guide.

    Parameters
    ----------
    network
        Classifier module.
    prior_scale
        Standard deviation of the isotropic first-task prior.
    num_steps, lr
        Adam steps per task on the ELBO (``TraceMeanField_ELBO``: analytic KL) and rate.
    num_particles
        Vectorised Monte Carlo particles of the expected log-likelihood.
    init_scale
        Initial guide standard deviation of the first task (later tasks start from the
        previous posterior).
    num_predictive
        Guide draws averaged in ``predict_proba``.
    seed
        Seed or generator.

    Attributes
    ----------
    prior
        The fitted guide of the last task as a Pyro distribution (the next task's prior).
    """

    def __init__(
        self,
        network,
        prior_scale: float = 1.0,
        num_steps: int = 500,
        lr: float = 1e-2,
        num_particles: int = 8,
        init_scale: float = 0.1,
        num_predictive: int = 50,
        seed: int | torch.Generator = 0,
        progress: bool = False,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__(seed=seed, dtype=dtype)
        _check_steps(num_steps, lr)
        self.model = self._wrap(network)
        loc = self.model.initial_vector()
        self.prior = self.model.standard_prior(prior_scale)
        self.loc, self.scale = loc, torch.full_like(loc, prior_scale)
        self.init_scale = init_scale
        self.num_steps, self.lr, self.num_particles = num_steps, lr, num_particles
        self.num_predictive, self.progress = num_predictive, progress

    def _model(self, X, y):
        theta = pyro.sample("theta", self.prior)
        ll = self.model.log_likelihood(theta.reshape(-1, self.model.dim), X, y, self.num_classes)
        pyro.factor("loglik", ll.reshape(theta.shape[:-1]))

    def _guide(self, loc, rho):
        def guide(X, y):
            pyro.sample("theta", dist.Normal(loc, torch.nn.functional.softplus(rho)).to_event(1))

        return guide

    def _observe(self, X, y):
        loc = self.loc.clone().requires_grad_(True)
        scale = self.scale if self.num_tasks > 0 else torch.full_like(self.scale, self.init_scale)
        rho = scale.expm1().log().requires_grad_(True)  # softplus^{-1}
        elbo = TraceMeanField_ELBO(
            num_particles=self.num_particles, vectorize_particles=True, max_plate_nesting=0
        )
        opt = torch.optim.Adam([loc, rho], lr=self.lr)
        guide = self._guide(loc, rho)
        with pyro_seed(child_seed(self.generator)):
            for _ in training_steps(self.num_steps, "VCL", self.progress):
                opt.zero_grad()
                loss = elbo.differentiable_loss(self._model, guide, X, y) / X.shape[0]
                loss.backward()
                opt.step()
        self.loc = loc.detach()
        self.scale = torch.nn.functional.softplus(rho.detach())
        self.prior = dist.Normal(self.loc, self.scale).to_event(1)

    def _predict_proba(self, X):
        eps = torch.randn(
            self.num_predictive, self.model.dim, generator=self.generator, dtype=self.loc.dtype
        )
        return self.model.predict_proba(self.loc + self.scale * eps, X, self.num_classes)


class NearestClassMean(ContinualLearner):
    r"""Nearest class mean on the raw inputs: :math:`\hat y(x) = \arg\min_c \lVert x -
    \bar x_c\rVert`, with :math:`\bar x_c` the mean of all training inputs of class :math:`c`.

    The class sums and counts are exact running statistics, so learning task by task gives
    the same means as learning all tasks at once (no memory limit, no training).
    ``predict_proba`` is :math:`\operatorname{softmax}_c(-\lVert x - \bar x_c\rVert^2 / 2)`
    over the classes seen (probability 0 for a label never observed).
    """

    def __init__(self, seed: int | torch.Generator = 0, dtype: torch.dtype = torch.float64):
        super().__init__(seed=seed, dtype=dtype)
        self.sums: torch.Tensor | None = None  # [K, d]
        self.counts: torch.Tensor | None = None  # [K]

    def _observe(self, X, y):
        k = self.num_classes
        onehot = torch.nn.functional.one_hot(y, k).to(X.dtype)
        sums, counts = onehot.T @ X, onehot.sum(0)
        if self.sums is not None:
            sums[: len(self.sums)] += self.sums
            counts[: len(self.counts)] += self.counts
        self.sums, self.counts = sums, counts

    @property
    def means(self) -> torch.Tensor:
        """Class means ``[K, d]`` (NaN rows for labels never observed)."""
        return self.sums / self.counts[:, None]

    def _predict_proba(self, X):
        seen = self.counts > 0
        sq = torch.cdist(X, torch.where(seen[:, None], self.means, 0.0)).pow(2)
        return (-0.5 * sq).masked_fill(~seen, -math.inf).softmax(-1)
