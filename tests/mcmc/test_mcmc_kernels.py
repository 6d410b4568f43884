"""Kernel laws: leapfrog reversibility, invariance of a Gaussian, divergence handling, errors."""

import math

import pytest
import torch
from scipy import stats

from ppltk.errors import ArgumentError, NonFiniteLogDensityError, ShapeError
from ppltk.mcmc import HMC, NUTS, Gibbs, Params, RandomWalkMH, leapfrog
from ppltk.mcmc._base import default_params
from ppltk.mcmc.integrators import kinetic_energy, sample_momentum
from ppltk.mcmc.targets import gaussian_logdensity

DTYPE = torch.float64
COV = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 2.0]], dtype=DTYPE)
MEAN = torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)


def _exact_draws(num: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    xi = torch.randn(num, 3, generator=gen, dtype=DTYPE)
    return MEAN + xi @ torch.linalg.cholesky(COV).T


def test_leapfrog_is_reversible_and_nearly_energy_preserving():
    ld = gaussian_logdensity(MEAN, COV)
    kernel = HMC()
    state = kernel.init(_exact_draws(5, 0), ld)
    params = Params(torch.full((5,), 0.05, dtype=DTYPE), torch.rand(5, 3, dtype=DTYPE) + 0.5)
    p0 = sample_momentum(params, state.position, torch.Generator().manual_seed(1))
    s, p = state, p0
    for _ in range(20):
        s, p = leapfrog(s, p, params.step_size, params.inverse_mass, ld)
    h0 = -state.lp + kinetic_energy(p0, params.inverse_mass)
    h1 = -s.lp + kinetic_energy(p, params.inverse_mass)
    # leapfrog's energy error is O(eps^2) = O(2.5e-3) on this target
    assert torch.allclose(h0, h1, atol=0.05)
    for _ in range(20):
        s, p = leapfrog(s, p, -params.step_size, params.inverse_mass, ld)
    assert torch.allclose(s.position, state.position, atol=1e-10)
    assert torch.allclose(p, p0, atol=1e-10)


def test_dense_momentum_has_covariance_mass():
    # p = L^{-T} xi must have covariance M = (M^{-1})^{-1}; 20000 draws, entries of the sample
    # covariance have SE <= sqrt(2/20000) * max|M| ~ 0.01*3, tolerance 0.15 is > 4 SE
    minv = COV.expand(20000, 3, 3)
    params = Params(torch.ones(20000, dtype=DTYPE), minv)
    p = sample_momentum(
        params, torch.zeros(20000, 3, dtype=DTYPE), torch.Generator().manual_seed(0)
    )
    assert torch.allclose(torch.cov(p.T), torch.linalg.inv(COV), atol=0.15)


def _kernels():
    return [
        ("nuts", NUTS(max_tree_depth=6), False),
        ("nuts-dense", NUTS(max_tree_depth=6), True),
        ("hmc", HMC(num_steps=5, jitter=0.2), False),
        ("hmc-dense", HMC(num_steps=4), True),
        ("mh", RandomWalkMH(), False),
        ("mh-dense", RandomWalkMH(), True),
        ("gibbs", Gibbs([([0, 1], NUTS(max_tree_depth=5)), ([2], RandomWalkMH())]), False),
    ]


@pytest.mark.parametrize("name,kernel,dense", _kernels(), ids=[k[0] for k in _kernels()])
def test_kernel_leaves_gaussian_invariant(name, kernel, dense):
    """Start 2000 independent chains at exact draws; after 5 transitions they must still be
    exact draws. Chains are independent, so under the null each coordinate's standardised
    values are iid N(0, 1) and the quadratic form (z-mu)' S^-1 (z-mu) = -2 lp is iid chi2(3):
    KS tests at level 1e-3 (Bonferroni over 4). The chi2 test is the sensitive one: it fails
    when NUTS proposes the subtree's last leaf instead of a multinomial draw."""
    ld = gaussian_logdensity(MEAN, COV)
    start = _exact_draws(2000, 11)
    state = kernel.init(start, ld)
    params = kernel.default_params(start, dense)
    for block in kernel.param_blocks(params):
        block.step_size.fill_(0.6)
        if dense:  # a non-trivial dense metric: the target's own covariance
            block.inverse_mass = COV.expand(2000, 3, 3).clone()
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        state, info = kernel.step(state, ld, params, gen)
    z = (state.position - MEAN) / COV.diagonal().sqrt()
    moved = (state.position != start).any(-1).double().mean()
    assert moved > 0.2, f"{name} barely moved ({moved:.2f})"
    for d in range(3):
        assert stats.kstest(z[:, d].numpy(), "norm").pvalue > 1e-3 / 4
    assert stats.kstest((-2 * state.lp).numpy(), stats.chi2(3).cdf).pvalue > 1e-3 / 4
    assert info["accept_prob"].shape == (2000,)
    assert torch.isfinite(state.lp).all()


def test_nuts_info_and_tree_depth_limit():
    ld = gaussian_logdensity(MEAN, COV)
    kernel = NUTS(max_tree_depth=3)
    state = kernel.init(_exact_draws(6, 0), ld)
    params = default_params(state.position, step_size=0.01)  # tiny step: trees hit the limit
    state, info = kernel.step(state, ld, params, torch.Generator().manual_seed(0))
    assert set(kernel.stat_names) <= set(info)
    assert (info["tree_depth"] == 3).all()
    assert (info["n_steps"] == 2**3 - 1).all()
    assert not info["diverging"].any()


def _half_space_logdensity(z):
    """Standard normal restricted to z_0 > -0.5 with NaN outside (a badly written density)."""
    lp = -0.5 * (z**2).sum(-1)
    lp = torch.where(z[:, 0] > -0.5, lp, torch.full_like(lp, math.nan))
    return lp, -z


@pytest.mark.parametrize("kernel", [NUTS(), HMC(num_steps=8)], ids=["nuts", "hmc"])
def test_nan_energies_are_divergent_and_rejected(kernel):
    start = torch.zeros(200, 2, dtype=DTYPE)
    state = kernel.init(start, _half_space_logdensity)
    params = default_params(start, step_size=0.9)
    gen = torch.Generator().manual_seed(0)
    diverged = torch.zeros(200, dtype=torch.bool)
    for _ in range(5):
        state, info = kernel.step(state, _half_space_logdensity, params, gen)
        diverged |= info["diverging"]
        assert torch.isfinite(state.lp).all()
        assert (state.position[:, 0] > -0.5).all()
    assert diverged.any()


def test_init_rejects_non_finite_and_bad_shapes():
    kernel = NUTS()
    with pytest.raises(NonFiniteLogDensityError, match="chains \\[1\\]"):
        kernel.init(torch.tensor([[0.0, 0.0], [-1.0, 0.0]], dtype=DTYPE), _half_space_logdensity)
    with pytest.raises(ShapeError, match="Expected `position` shaped"):
        kernel.init(torch.zeros(3, dtype=DTYPE), _half_space_logdensity)
    with pytest.raises(ArgumentError, match="max_tree_depth"):
        NUTS(max_tree_depth=0)
    with pytest.raises(ArgumentError, match="jitter"):
        HMC(jitter=1.5)
    with pytest.raises(ArgumentError, match="disjoint"):
        Gibbs([([0, 1], NUTS()), ([1], RandomWalkMH())])


class _Counting:
    def __init__(self, ld):
        self.ld, self.calls, self.rows = ld, 0, set()

    def __call__(self, z):
        self.calls += 1
        self.rows.add(z.shape[0])
        return self.ld(z)


def test_nuts_makes_one_batched_call_per_leapfrog_step():
    """One chain: calls == leapfrog steps. Many chains: every call carries all chains, and the
    batch runs only as long as its longest trajectory needs (between the longest chain's
    number of steps and the leaves of its deepest tree)."""
    ld = gaussian_logdensity(MEAN, COV)
    kernel = NUTS()
    gen = torch.Generator().manual_seed(0)
    single = kernel.init(_exact_draws(1, 0), ld)
    params = default_params(single.position, step_size=0.3)
    counting = _Counting(ld)
    _, info = kernel.step(single, counting, params, gen)
    assert counting.calls == info["n_steps"].item()
    state = kernel.init(_exact_draws(16, 1), ld)
    params = default_params(state.position, step_size=0.3)
    for _ in range(3):
        counting = _Counting(ld)
        state, info = kernel.step(state, counting, params, gen)
        assert counting.rows == {16}
        assert info["n_steps"].max() <= counting.calls <= 2 ** info["tree_depth"].max() - 1
