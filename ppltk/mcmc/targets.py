"""Reference targets for tests, tutorials and benchmarks: flat log-densities and Pyro models."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from ppltk.errors import ShapeError

__all__ = [
    "gaussian_logdensity",
    "correlated_covariance",
    "EIGHT_SCHOOLS_Y",
    "EIGHT_SCHOOLS_SIGMA",
    "eight_schools_noncentered",
    "eight_schools_centered",
    "funnel_centered",
    "logistic_regression",
    "logistic_regression_data",
    "hierarchical_regression",
    "hierarchical_regression_data",
    "gaussian_mixture",
    "gaussian_mixture_marginal",
]

EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


def gaussian_logdensity(mean: torch.Tensor, cov: torch.Tensor):
    """``logdensity_and_grad`` of :math:`\\mathcal N(\\mu, \\Sigma)` (up to a constant).

    .. math:: \\log\\pi(z) = -\\tfrac12 (z-\\mu)^\\top\\Sigma^{-1}(z-\\mu), \\quad
              \\nabla\\log\\pi(z) = -\\Sigma^{-1}(z-\\mu).
    """
    if cov.shape != (mean.shape[-1], mean.shape[-1]):
        raise ShapeError(
            f"Expected `cov` shaped [{mean.shape[-1]}, {mean.shape[-1]}], "
            f"but found {list(cov.shape)}"
        )
    precision = torch.cholesky_inverse(torch.linalg.cholesky(cov))

    def logdensity_and_grad(z: torch.Tensor):
        r = z - mean
        g = -r @ precision
        return 0.5 * (r * g).sum(-1), g

    return logdensity_and_grad


def correlated_covariance(dim: int, rho: float = 0.95, dtype=torch.float64) -> torch.Tensor:
    """Equicorrelated covariance with log-spaced scales in ``[0.1, 10]``: strongly correlated
    and badly scaled, the case a dense metric is made for."""
    scales = torch.logspace(-1, 1, dim, dtype=dtype)
    corr = torch.full((dim, dim), rho, dtype=dtype)
    corr.fill_diagonal_(1.0)
    return scales[:, None] * corr * scales[None, :]


def eight_schools_noncentered(sigma: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Eight schools, non-centred: :math:`\\theta_j = \\mu + \\tau\\tilde\\theta_j`."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", sigma.shape[0]):
        theta_raw = pyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu + tau * theta_raw, sigma), obs=y)


def eight_schools_centered(sigma: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Eight schools, centred (funnel geometry; NUTS reports divergences)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", sigma.shape[0]):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def funnel_centered(dim: int = 9) -> None:
    """Neal's funnel: :math:`v \\sim \\mathcal N(0, 3^2)`, :math:`x_i \\mid v \\sim
    \\mathcal N(0, e^{v})` (centred, so the neck defeats a single step size)."""
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    with pyro.plate("dim", dim):
        pyro.sample("x", dist.Normal(0.0, torch.exp(v / 2)))


def logistic_regression(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Bayesian logistic regression with standard-normal priors on weights and intercept."""
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("N", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


def logistic_regression_data(n: int = 1000, d: int = 25, seed: int = 0):
    """Simulated ``(x [n, d], y [n])`` with standard-normal features and true weights."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    w = torch.randn(d, generator=gen) * 0.5
    y = torch.bernoulli(torch.sigmoid(x @ w + 0.3), generator=gen)
    return x, y


def hierarchical_regression(
    group: torch.Tensor, x: torch.Tensor, num_groups: int, y: torch.Tensor | None = None
) -> None:
    r"""Varying-intercept regression, non-centred (radon-like):

    .. math::
        \mu_a \sim \mathcal N(0, 5^2),\ \tau_a \sim \mathcal N^+(0, 2.5^2),\
        \beta \sim \mathcal N(0, 2.5^2),\ \sigma \sim \mathcal N^+(0, 2.5^2),\
        \tilde a_j \sim \mathcal N(0, 1),\
        y_i \sim \mathcal N(\mu_a + \tau_a \tilde a_{g_i} + \beta x_i, \sigma^2).
    """
    mu_a = pyro.sample("mu_a", dist.Normal(0.0, 5.0))
    tau_a = pyro.sample("tau_a", dist.HalfNormal(2.5))
    beta = pyro.sample("beta", dist.Normal(0.0, 2.5))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.5))
    with pyro.plate("groups", num_groups):
        a_raw = pyro.sample("a_raw", dist.Normal(0.0, 1.0))
    intercept = mu_a.unsqueeze(-1) + tau_a.unsqueeze(-1) * a_raw
    with pyro.plate("N", x.shape[0]):
        mean = intercept[..., group] + beta.unsqueeze(-1) * x
        pyro.sample("y", dist.Normal(mean, sigma.unsqueeze(-1)), obs=y)


def hierarchical_regression_data(num_groups: int = 50, per_group: int = 20, seed: int = 0):
    """Simulated ``(group [n], x [n], num_groups, y [n])`` for
    :func:`hierarchical_regression` with unequal group sizes (1 to ``2 per_group - 1``)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 2 * per_group, (num_groups,), generator=gen)
    group = torch.repeat_interleave(torch.arange(num_groups), sizes)
    x = torch.randn(group.shape[0], generator=gen)
    a = 1.0 + 0.7 * torch.randn(num_groups, generator=gen)
    y = a[group] - 0.6 * x + 0.8 * torch.randn(group.shape[0], generator=gen)
    return group, x, num_groups, y


def _mixture_parameters(y: torch.Tensor):
    """Weights, component means and the common scale of the two-component mixture."""
    w = pyro.sample("w", dist.Dirichlet(torch.ones(2, dtype=y.dtype)))
    loc = pyro.sample("loc", dist.Normal(torch.tensor([-2.0, 2.0], dtype=y.dtype), 1.0).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(torch.zeros((), dtype=y.dtype), 0.5))
    return w, loc, scale


def gaussian_mixture(y: torch.Tensor) -> None:
    r"""Two-component Gaussian mixture with a discrete assignment per point (summed out by
    enumeration in :class:`ppltk.model.ModelBridge`):
    :math:`w \sim \mathrm{Dir}(1, 1)`, :math:`\mu \sim \mathcal N((-2, 2), I)`,
    :math:`\sigma \sim \mathrm{LogNormal}(0, 0.5^2)`, :math:`k_i \sim \mathrm{Cat}(w)`,
    :math:`y_i \sim \mathcal N(\mu_{k_i}, \sigma^2)`."""
    w, loc, scale = _mixture_parameters(y)
    with pyro.plate("data", len(y)):
        k = pyro.sample("k", dist.Categorical(w))
        pyro.sample("y", dist.Normal(loc[k], scale), obs=y)


def gaussian_mixture_marginal(y: torch.Tensor) -> None:
    r""":func:`gaussian_mixture` with the assignments summed out by hand:
    :math:`\sum_i \log \sum_k w_k\,\mathcal N(y_i; \mu_k, \sigma^2)`."""
    w, loc, scale = _mixture_parameters(y)
    terms = w.log() + dist.Normal(loc, scale).log_prob(y[:, None])
    pyro.factor("y", torch.logsumexp(terms, -1).sum())
