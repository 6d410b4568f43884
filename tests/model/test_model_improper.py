"""Improper flat priors (``ImproperUniform``, Stan's implicit prior) in ModelBridge."""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from ppltk.model import ModelBridge


def _model(y):
    mu = pyro.sample("mu", dist.ImproperUniform(constraints.real, (), (2,)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    w = pyro.sample("w", dist.ImproperUniform(constraints.simplex, (), (3,)))
    b = pyro.sample("b", dist.ImproperUniform(constraints.interval(0.0, 1.0 - w[..., 0]), (), ()))
    pyro.factor("w_b", torch.log(w).sum(-1) + torch.log(b))
    with pyro.plate("n", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu[..., :1] + mu[..., 1:], sigma[..., None]), obs=y)


def test_improper_uniform_sites_are_traced_with_the_data_dtype():
    y = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    bridge = ModelBridge(_model, (y,))
    assert list(bridge.sites) == ["mu", "sigma", "w", "b"]
    assert bridge.dim == 2 + 1 + 2 + 1
    assert bridge.dtype == torch.float64
    assert bridge.dynamic == ["b"]  # its upper bound depends on w


def test_improper_uniform_log_density_is_flat_prior_plus_jacobian():
    y = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    bridge = ModelBridge(_model, (y,), backend="eager")
    z = bridge.initial_points(3, torch.Generator().manual_seed(1))
    lp = bridge.log_density(z)
    values = bridge.constrain(z)
    expected = torch.zeros(3, dtype=torch.float64)
    for i in range(3):
        mu, sigma, w, b = (values[k][i] for k in ("mu", "sigma", "w", "b"))
        u = {s.name: s.slot(z[i]) for s in bridge.sites.values()}
        jac = torch.log(sigma)  # exp
        t_w = torch.distributions.biject_to(constraints.simplex)
        jac = jac + t_w.log_abs_det_jacobian(u["w"], w)
        t_b = torch.distributions.biject_to(constraints.interval(0.0, 1.0 - w[0]))
        jac = jac + t_b.log_abs_det_jacobian(u["b"], b).sum()
        lik = dist.Normal(mu[0] + mu[1], sigma).log_prob(y).sum()
        expected[i] = lik + torch.log(w).sum() + torch.log(b) + jac
    torch.testing.assert_close(lp, expected)
