"""Rejuvenation moves: weighted covariance metric, gradient-free kernels, the stop rule."""

import math

import torch

from ppltk.mcmc import RandomWalkMH
from ppltk.smc import mcmc_move, population_params, weighted_covariance
from ppltk.smc.moves import decorrelation_stop

D = torch.float64


def test_weighted_covariance_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, dtype=D, generator=g)
    logw = torch.randn(50, dtype=D, generator=g)
    w = torch.softmax(logw, 0)
    mean = (w[:, None] * x).sum(0)
    expect = ((x - mean).T * w) @ (x - mean)
    torch.testing.assert_close(weighted_covariance(x, logw), expect)
    torch.testing.assert_close(weighted_covariance(x), torch.cov(x.T, correction=0))


def test_random_walk_move_never_asks_for_gradients():
    def log_density(z):
        assert not torch.is_grad_enabled()  # a gradient-free kernel evaluates without autograd
        return -0.5 * z.square().sum(-1)

    z = torch.randn(20, 2, dtype=D, generator=torch.Generator().manual_seed(1))
    state, info = mcmc_move(RandomWalkMH(), log_density, z, 3, torch.Generator().manual_seed(2))
    assert state.position.shape == z.shape and info["num_steps"] == 3


def test_decorrelation_stop_leaves_nearly_independent_draws_of_the_target():
    """Start at stationarity in a correlated 4-d Gaussian; the stop rule ends the move once
    the mean whitened squared jump reaches 2D(1 - 0.1): the start-end correlation is then
    about 0.1 and the end points are still exact draws of the target."""
    dim, n = 4, 4000
    g = torch.Generator().manual_seed(3)
    a = torch.randn(dim, dim, dtype=D, generator=g)
    cov = a @ a.T + dim * torch.eye(dim, dtype=D)
    chol = torch.linalg.cholesky(cov)
    prec = torch.cholesky_inverse(chol)
    start = torch.randn(n, dim, dtype=D, generator=g) @ chol.T

    def log_density(z):
        return -0.5 * ((z @ prec) * z).sum(-1)

    kernel = RandomWalkMH()
    params = population_params(kernel, start)
    stop = decorrelation_stop(start, params.inverse_mass[0], target=0.1)
    state, info = mcmc_move(kernel, log_density, start, 200, g, params, stop=stop)
    assert 3 <= info["num_steps"] < 200
    end = state.position
    white_start = torch.linalg.solve_triangular(chol, start.T, upper=False).T
    white_end = torch.linalg.solve_triangular(chol, end.T, upper=False).T
    rho = float((white_start * white_end).sum(-1).mean() / dim)
    assert rho < 0.1 + 5 / math.sqrt(n * dim)
    # invariance: the moved points still follow N(0, cov) (mean and covariance within MC error)
    assert float(white_end.mean(0).abs().max()) < 5 / math.sqrt(n)
    torch.testing.assert_close(
        torch.cov(white_end.T), torch.eye(dim, dtype=D), atol=5 * math.sqrt(2 / n), rtol=0
    )
