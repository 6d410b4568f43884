"""Warm-up: Stan's window schedule, Welford statistics, dual averaging reaching its target."""

import math

import pytest
import torch

from ppltk.mcmc import NUTS, DualAveraging, WelfordCovariance, sample_flat, window_schedule
from ppltk.mcmc.targets import gaussian_logdensity

DTYPE = torch.float64


def test_window_schedule_matches_stan():
    # Stan's documented schedule for 1000 warm-up iterations: 75 fast, windows of
    # 25, 50, 100, 200 and a last one stretched to 500, 50 fast.
    assert window_schedule(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    # short warm-up: 15% / 75% / 10% (Stan's fallback)
    assert window_schedule(100) == [(15, 90)]
    assert window_schedule(10) == []
    for n in (150, 300, 777, 2000):
        windows = window_schedule(n)
        assert windows[0][0] == 75 and windows[-1][1] == n - 50
        assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))


@pytest.mark.parametrize("dense", [False, True])
def test_welford_equals_sample_covariance(dense):
    x = torch.randn(50, 3, 4, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    w = WelfordCovariance.start(x[0], dense)
    for row in x:
        w.update(row)
    n = 50
    for c in range(3):
        cov = torch.cov(x[:, c].T)
        expected = (n / (n + 5)) * cov + 1e-3 * 5 / (n + 5) * torch.eye(4, dtype=DTYPE)
        got = w.inverse_mass()[c]
        assert torch.allclose(got, expected if dense else expected.diagonal(), atol=1e-12)


def test_dual_averaging_finds_step_size_of_a_known_acceptance_curve():
    # synthetic acceptance a(eps) = exp(-eps^2): the fixed point of a = 0.8 is
    # eps* = sqrt(-log 0.8); dual averaging's averaged iterate must approach it.
    da = DualAveraging.start(torch.tensor([0.01, 5.0], dtype=DTYPE), target=0.8)
    for _ in range(2000):
        da.update(torch.exp(-(da.log_eps.exp() ** 2)))
    target = torch.tensor(math.sqrt(-math.log(0.8)), dtype=DTYPE)
    assert torch.allclose(da.log_eps_bar.exp(), target.expand(2), rtol=0.05)


def test_warmup_tracks_target_acceptance_and_adapts_metric():
    """Warm-up on a badly scaled Gaussian (scales 0.1 ... 10). The kept draws' mean acceptance
    statistic (SE ~0.01 over 4 x 300 draws) follows the target: realised acceptance sits a little
    above the target because the averaged step size is used (as in Stan); at target 0.6 this
    bias is ~0.16 on this 6-d Gaussian (seeds 1-6 give 0.72-0.79, before and after the NUTS
    rewrite, chain-to-chain SD ~0.02), so each must be within [target - 0.05, target + 0.25]
    and higher targets must give higher acceptance. The
    adapted diagonal metric tracks the variances (which span a factor 10^4) within a factor
    of 3: the last window has 100 autocorrelated draws per chain (ESS >= ~40), so the log of
    each estimate/variance ratio has SD ~ sqrt(2/40) = 0.22 and the extreme of 24 ratios
    stays within 4.5 SD = 1.0, a factor e < 3 (seeds 1-8 gave extremes 0.40-1.83)."""
    scales = torch.logspace(-1, 1, 6, dtype=DTYPE)
    ld = gaussian_logdensity(torch.zeros(6, dtype=DTYPE), torch.diag(scales**2))
    accepts = []
    for target in (0.6, 0.9):
        out = sample_flat(
            ld,
            torch.zeros(4, 6, dtype=DTYPE),
            NUTS(max_tree_depth=7),
            num_warmup=300,
            num_samples=300,
            seed=1,
            target_accept=target,
            progress=False,
        )
        accepts.append(out.stats["accept_prob"].mean().item())
        assert target - 0.05 < accepts[-1] < target + 0.25, (target, accepts[-1])
        ratio = out.params.inverse_mass / scales**2
        assert ((ratio > 1 / 3) & (ratio < 3.0)).all(), ratio
        assert out.stats["step_size"].std(1).max() == 0  # fixed after warm-up
    assert accepts[0] < accepts[1]
