"""Long series (linear time), degenerate weights in Pyro programs, and slow statistical checks."""

import math
import time

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk.errors import DegenerateWeightsError
from ppltk.smc import LinearGaussianSSM, particle_filter, smc

D = torch.float64


def ar1():
    eye = torch.eye(1, dtype=D)
    return LinearGaussianSSM(0.9 * eye, eye, 0.5 * eye, eye, torch.zeros(1, dtype=D), eye)


def test_smc_particle_filter_ten_thousand_steps():
    ssm = ar1()
    _, ys = ssm.simulate(10_000, torch.Generator().manual_seed(0))
    out = particle_filter(ssm, ys, 64, seed=0)
    assert out.means.shape == (10_000, 1) and torch.isfinite(out.log_evidence)
    torch.testing.assert_close(out.log_evidence_increments.sum(0), out.log_evidence)


def test_smc_replay_program_names_degenerate_observation():
    def program(ys):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        for t, y in enumerate(ys):
            pyro.sample(f"y_{t}", dist.Normal(x, 1.0), obs=y)
            if t == 2:
                pyro.factor("impossible", torch.tensor(-math.inf))

    # observation index counts observed sites and factors in execution order: the factor is #3
    with pytest.raises(DegenerateWeightsError, match="observation t=3"):
        smc(program, torch.zeros(5), num_particles=20, progress=False)


@pytest.mark.slow
def test_smc_particle_filter_time_is_linear_in_t():
    ssm = ar1()
    _, ys = ssm.simulate(20_000, torch.Generator().manual_seed(0))

    def seconds(t):
        start = time.perf_counter()
        particle_filter(ssm, ys[:t], 256, seed=0)
        return time.perf_counter() - start

    seconds(500)
    ratio = seconds(20_000) / seconds(4_000)
    # linear: ~5; quadratic would be ~25. Generous bounds for a shared machine.
    assert ratio < 12, ratio


@pytest.mark.slow
def test_smc_evidence_unbiased_many_runs():
    ssm = ar1()
    _, ys = ssm.simulate(50, torch.Generator().manual_seed(9))
    m, P, logz = 0.0, 1.0, 0.0
    for t, y in enumerate(ys[:, 0].tolist()):
        if t > 0:
            m, P = 0.9 * m, 0.81 * P + 0.5
        S = P + 1.0
        logz += -0.5 * (math.log(2 * math.pi * S) + (y - m) ** 2 / S)
        m, P = m + P / S * (y - m), P - P * P / S
    for scheme in ("multinomial", "stratified", "systematic", "residual"):
        out = particle_filter(ssm, ys, 100, resampling=scheme, batch_shape=(4000,), seed=1)
        ratio = (out.log_evidence - logz).exp()
        assert abs(ratio.mean() - 1) < 4 * ratio.std() / math.sqrt(4000), scheme
