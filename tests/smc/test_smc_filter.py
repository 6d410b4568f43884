"""Particle filter vs an exact float64 Kalman filter on linear-Gaussian models."""

import math

import pytest
import torch

from ppltk.errors import DegenerateWeightsError
from ppltk.smc import LinearGaussianSSM, particle_filter

D = torch.float64


def kalman(A, C, Q, R, m0, P0, ys):
    """Exact filtering means, covariances and log p(y_{0:T-1}) (float64, written here)."""
    means, covs, logz = [], [], 0.0
    m, P = m0, P0
    for t, y in enumerate(ys):
        if t > 0:
            m, P = A @ m, A @ P @ A.T + Q
        S = C @ P @ C.T + R
        r = y - C @ m
        logz += float(torch.distributions.MultivariateNormal(torch.zeros_like(r), S).log_prob(r))
        K = torch.linalg.solve(S, C @ P).T
        m, P = m + K @ r, P - K @ S @ K.T
        means.append(m)
        covs.append(P)
    return torch.stack(means), torch.stack(covs), logz


def lg_model(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    if d == 1:
        A, C = torch.tensor([[0.9]], dtype=D), torch.tensor([[1.0]], dtype=D)
        Q, R = torch.tensor([[0.5]], dtype=D), torch.tensor([[0.7]], dtype=D)
    else:
        A = 0.8 * torch.linalg.qr(torch.randn(d, d, dtype=D, generator=g))[0]
        C = torch.randn(2, d, dtype=D, generator=g)
        B = torch.randn(d, d, dtype=D, generator=g)
        Q, R = 0.3 * (B @ B.T / d + torch.eye(d, dtype=D)), 0.5 * torch.eye(2, dtype=D)
    m0, P0 = torch.zeros(d, dtype=D), torch.eye(d, dtype=D)
    return A, C, Q, R, m0, P0


@pytest.mark.parametrize("d", [1, 4])
def test_smc_filtering_moments_match_kalman(d):
    params = lg_model(d)
    ssm = LinearGaussianSSM(*params)
    _, ys = ssm.simulate(15, torch.Generator().manual_seed(3))
    means, covs, _ = kalman(*params, ys)
    runs = 16
    out = particle_filter(ssm, ys, 1000, batch_shape=(runs,), seed=1)
    # Per-run errors are independent across the 16 runs; their mean is compared with its own
    # standard error (t-statistic, 15 dof). Over T*d <= 60 comparisons a |t| of 6 has tail
    # probability < 1e-4 in total; the O(1/N) bias of self-normalisation is ~1e-3 << se.
    for est, exact in ((out.means, means), (out.variances, torch.diagonal(covs, dim1=-2, dim2=-1))):
        err = est - exact[:, None, :]
        tstat = err.mean(1) / (err.std(1) / math.sqrt(runs))
        assert tstat.abs().max() < 6, tstat.abs().max()
    # the errors are MC errors, not zero (a test that cannot pass trivially)
    assert out.means.std(1).min() > 0


@pytest.mark.parametrize("d", [1, 4])
def test_smc_evidence_unbiased_and_log_bias(d):
    params = lg_model(d)
    ssm = LinearGaussianSSM(*params)
    _, ys = ssm.simulate(20, torch.Generator().manual_seed(5))
    logz = kalman(*params, ys)[2]
    runs = 400
    out = particle_filter(ssm, ys, 200 if d == 1 else 400, batch_shape=(runs,), seed=2)
    err = out.log_evidence - logz
    ratio = err.exp()
    # E[Zhat/Z] = 1: compare the sample mean with its standard error (4 se).
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / math.sqrt(runs)
    # log-normal CLT regime: E[log Zhat - log Z] ~ -Var(log Zhat)/2. se of the mean is
    # sd/sqrt(R); se of var/2 is ~ var/sqrt(2(R-1)); tolerance 4 combined se.
    var = err.var()
    se = torch.sqrt(var / runs + (var / 2) ** 2 * 2 / (runs - 1))
    assert abs(err.mean() + var / 2) < 4 * se, (err.mean(), var)
    assert 0.01 < var < 2  # in the regime where the relation is meaningful
    # increments add up to the evidence
    torch.testing.assert_close(out.log_evidence_increments.sum(0), out.log_evidence)


@pytest.mark.parametrize("scheme", ["multinomial", "stratified", "systematic", "residual"])
def test_smc_each_resampler_tracks_kalman_evidence(scheme):
    params = lg_model(1)
    ssm = LinearGaussianSSM(*params)
    _, ys = ssm.simulate(20, torch.Generator().manual_seed(6))
    logz = kalman(*params, ys)[2]
    out = particle_filter(ssm, ys, 500, resampling=scheme, ess_threshold=1.0, batch_shape=(50,))
    err = out.log_evidence - logz
    assert abs(err.mean()) < 4 * err.std() / math.sqrt(50) + err.var() / 2
    assert out.resampled[1:].all()


def test_smc_optimal_proposal_beats_bootstrap():
    params = lg_model(1)
    ssm = LinearGaussianSSM(*params)
    _, ys = ssm.simulate(20, torch.Generator().manual_seed(7))
    logz = kalman(*params, ys)[2]
    boot = particle_filter(ssm, ys, 100, batch_shape=(100,), seed=3).log_evidence
    opt = particle_filter(ssm, ys, 100, batch_shape=(100,), seed=3, proposal=ssm.optimal_proposal())
    err = opt.log_evidence - logz
    assert abs(err.mean()) < 4 * err.std() / 10 + err.var()
    assert err.var() < (boot - logz).var()


class UniformNoise(LinearGaussianSSM):
    """y_t = x_t + Uniform(-1, 1) noise: a likelihood that is exactly zero off its support."""

    def log_observation(self, state, t, y):
        inside = (y - state).abs()[..., 0] <= 1
        return torch.where(inside, math.log(0.5), -math.inf).to(state.dtype)


def test_smc_degenerate_weights_name_the_observation():
    ssm = UniformNoise(*lg_model(1))
    ys = torch.zeros(10, 1, dtype=D)
    ys[6] = 1e3
    with pytest.raises(DegenerateWeightsError, match="observation t=6"):
        particle_filter(ssm, ys, 200)
    ys[6] = 0.0
    ys[3] = float("nan")
    with pytest.raises(DegenerateWeightsError, match="observation t=3.*NaN"):
        particle_filter(LinearGaussianSSM(*lg_model(1)), ys, 200)
    ys[3] = 0.0
    out = particle_filter(ssm, ys, 200)  # some -inf weights are fine
    assert torch.isfinite(out.log_evidence)


def test_smc_zero_variance_observations():
    A, C, Q, _, m0, P0 = lg_model(1)
    R = torch.zeros(1, 1, dtype=D)
    ssm = LinearGaussianSSM(A, C, Q, R, m0, P0)
    _, ys = ssm.simulate(12, torch.Generator().manual_seed(4))
    # bootstrap: a continuous state never hits y exactly -> named error at the first observation
    with pytest.raises(DegenerateWeightsError, match="observation t=0"):
        particle_filter(ssm, ys, 100)
    # the locally optimal proposal handles it: with C = 1, R = 0 the state is known exactly,
    # every particle gets the same weight p(y_t | y_{t-1}) and Zhat equals Z exactly.
    means, covs, logz = kalman(A, C, Q, R, m0, P0, ys)
    out = particle_filter(ssm, ys, 50, proposal=ssm.optimal_proposal())
    # (posterior covariance P - K S K^T is zero up to 1e-16 round-off, whose square root
    # leaves ~1e-8 jitter in the states: tolerance 1e-6)
    assert abs(float(out.log_evidence) - logz) < 1e-6
    torch.testing.assert_close(out.means, means, atol=1e-6, rtol=0)
    assert float(out.variances.max()) < 1e-12


def test_smc_observation_shape_is_checked():
    """Issue 14 item 8: wrongly shaped series are refused, not broadcast or cut short."""
    from ppltk.errors import ShapeError

    ssm2 = LinearGaussianSSM(*lg_model(2))
    _, ys2 = ssm2.simulate(10, torch.Generator().manual_seed(0))
    with pytest.raises(ShapeError, match=r"\[T, 2\]"):
        particle_filter(ssm2, ys2[:, :1], 50)
    ssm1 = LinearGaussianSSM(*lg_model(1))
    _, ys1 = ssm1.simulate(10, torch.Generator().manual_seed(0))
    with pytest.raises(ShapeError, match=r"\[T, 1\]"):
        particle_filter(ssm1, ys1.T, 50)
    out = particle_filter(ssm1, ys1, 50)  # the right shape still runs
    assert out.log_evidence_increments.shape == (10,)
