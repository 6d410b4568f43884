"""ppltk.gaussian against torch's MultivariateNormal and Gaussian conditioning done by hand."""

import torch

from ppltk import gaussian

D = torch.float64


def test_log_prob_matches_multivariate_normal_batched():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2, 2, dtype=D, generator=g)
    cov = a @ a.mT + torch.eye(2, dtype=D)
    tril = torch.linalg.cholesky(cov)
    r = torch.randn(5, 3, 2, dtype=D, generator=g)
    expect = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=D), cov).log_prob(r)
    torch.testing.assert_close(gaussian.log_prob(r, tril), expect)
    torch.testing.assert_close(gaussian.log_prob(r[:, 0], tril[0]), expect[:, 0])


def test_psd_sqrt_of_a_singular_covariance():
    v = torch.tensor([[1.0], [2.0], [-1.0]], dtype=D)
    cov = v @ v.T  # rank one
    root = gaussian.psd_sqrt(cov)
    torch.testing.assert_close(root @ root.T, cov)
    assert torch.equal(gaussian.cholesky_or_zero(torch.zeros(2, 2)), torch.zeros(2, 2))


def test_condition_is_the_joint_gaussian_conditional():
    g = torch.Generator().manual_seed(1)
    m = torch.randn(3, dtype=D, generator=g)
    a = torch.randn(3, 3, dtype=D, generator=g)
    P = a @ a.T + torch.eye(3, dtype=D)
    C = torch.randn(2, 3, dtype=D, generator=g)
    R = 0.5 * torch.eye(2, dtype=D)
    y = torch.randn(2, dtype=D, generator=g)
    mean, cov, log_lik = gaussian.condition(m, P, C, R, y)
    # joint of (x, y) and the textbook conditional through the full joint precision
    joint = torch.cat([torch.cat([P, P @ C.T], 1), torch.cat([C @ P, C @ P @ C.T + R], 1)])
    prec = torch.linalg.inv(joint)
    cov_x = torch.linalg.inv(prec[:3, :3])
    mean_x = m - cov_x @ prec[:3, 3:] @ (y - C @ m)
    torch.testing.assert_close(cov, cov_x)
    torch.testing.assert_close(mean, mean_x)
    marginal = torch.distributions.MultivariateNormal(C @ m, C @ P @ C.T + R)
    torch.testing.assert_close(log_lik, marginal.log_prob(y))
