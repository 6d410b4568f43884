"""Longer amortized-inference checks (``-m slow``): unknown mean and variance, mixture head.

Normal-Inverse-Gamma: :math:`\\sigma^2 \\sim IG(a_0, b_0)`, :math:`\\mu \\mid \\sigma^2 \\sim
N(m_0, \\sigma^2/\\kappa_0)`, :math:`y_i \\sim N(\\mu, \\sigma^2)`. Exact posterior:
:math:`\\kappa_n = \\kappa_0 + n`, :math:`m_n = (\\kappa_0 m_0 + n\\bar y)/\\kappa_n`,
:math:`a_n = a_0 + n/2`, :math:`b_n = b_0 + \\tfrac12\\sum_i (y_i - \\bar y)^2 + \\kappa_0 n
(\\bar y - m_0)^2 / (2\\kappa_n)`; :math:`E[\\mu] = m_n`, :math:`Var[\\mu] = b_n / (\\kappa_n
(a_n - 1))`, :math:`E[\\sigma^2] = b_n/(a_n - 1)`, :math:`Var[\\sigma^2] = b_n^2/((a_n-1)^2
(a_n - 2))`. Tolerances as in ``test_amortized_conjugate.py``.
"""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk.amortized import CalibrationWarning, fit_amortized

A0, B0, M0, K0, N = 3.0, 2.0, 0.0, 1.0, 10
MC = 4 / math.sqrt(4000)


def nig_model(y):
    sigma2 = pyro.sample("sigma2", dist.InverseGamma(A0, B0))
    mu = pyro.sample("mu", dist.Normal(M0, (sigma2 / K0).sqrt()))
    with pyro.plate("data", N):
        pyro.sample("y", dist.Normal(mu, sigma2.sqrt()), obs=y)


def nig_exact(y):
    n, ybar = y.shape[-1], y.mean(-1)
    kn, an = K0 + n, A0 + n / 2
    mn = (K0 * M0 + n * ybar) / kn
    bn = B0 + 0.5 * ((y - ybar[:, None]) ** 2).sum(-1) + K0 * n * (ybar - M0) ** 2 / (2 * kn)
    return {
        "mu": (mn, (bn / (kn * (an - 1))).sqrt()),
        "sigma2": (bn / (an - 1), bn / ((an - 1) * math.sqrt(an - 2))),
    }


@pytest.mark.slow
def test_normal_inverse_gamma_unknown_mean_and_variance():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        q = fit_amortized(
            nig_model, torch.zeros(N), num_simulations=20000, head="mixture", num_components=4,
            max_epochs=300, patience=30, hidden=128, seed=0, progress=False,
            calibration_simulations=1000,
        )  # fmt: skip
    print(q, q.calibration.p_values, q.history["validation"][-1])
    assert q.calibration.passed(0.01)
    gen = torch.Generator().manual_seed(3)
    sigma2 = 1 / torch.distributions.Gamma(A0, B0).sample((100,))
    mu = M0 + (sigma2 / K0).sqrt() * torch.randn(100, generator=gen)
    y = mu[:, None] + sigma2.sqrt()[:, None] * torch.randn(100, N, generator=gen)
    draws = q.sample(y, num_samples=4000, seed=0)
    for site, (mean, sd) in nig_exact(y).items():
        err_mean = ((draws[site].mean(-1) - mean) / sd).abs()
        err_sd = (draws[site].std(-1) / sd - 1).abs()
        print(site, float(err_mean.mean()), float(err_mean.quantile(0.9)),
              float(err_sd.mean()), float(err_sd.quantile(0.9)))  # fmt: skip
        assert err_mean.mean() < 0.1 and err_mean.quantile(0.9) < 0.3 + MC
        # the sd of sigma2 is a heavy-tailed quantity (4000 draws of an inverse gamma with
        # a_n = 8): its Monte Carlo error is several times that of a Gaussian sd
        assert err_sd.mean() < 0.15 and err_sd.quantile(0.9) < 0.3 + 3 * MC
    # importance correction: exact posterior means within 4 standard errors
    for i in range(3):
        sample = q.importance_sample(y[i], num_samples=4000, seed=i)
        for site, (mean, sd) in nig_exact(y[i : i + 1]).items():
            se = float(sd[0]) / math.sqrt(sample.ess)
            assert abs(float(sample.mean(site)) - float(mean[0])) < 4 * se
