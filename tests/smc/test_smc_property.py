"""Hostile inputs at the SMC entry points: a finite answer or a ppltk error, never a raw
exception and never a silent NaN (Hypothesis)."""

import math

import pyro
import pyro.distributions as dist
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppltk.errors import PpltkError
from ppltk.smc import LinearGaussianSSM, particle_filter, smc, tempered_smc, tempered_smc_flat

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALUES = st.sampled_from([0.0, 1.0, -2.5, math.nan, math.inf, -math.inf, 1e30])


def finite_or_ppltk_error(call):
    try:
        out = call()
    except PpltkError:
        return
    logz = out.log_evidence
    logz = torch.as_tensor(logz)
    assert bool(torch.isfinite(logz).all()) or bool(torch.isneginf(logz).all()), logz


@SETTINGS
@given(
    T=st.integers(0, 4),
    d=st.integers(1, 2),
    bad=VALUES,
    where=st.integers(0, 7),
    n=st.sampled_from([1, 2, 7, 0, -3]),
    threshold=st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.1]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_particle_filter_hostile_inputs(T, d, bad, where, n, threshold, dtype):
    eye = torch.eye(d, dtype=dtype)
    ssm = LinearGaussianSSM(0.9 * eye, eye, eye, eye, torch.zeros(d, dtype=dtype), eye)
    ys = torch.zeros(T, d, dtype=dtype)
    if T:
        ys.view(-1)[where % ys.numel()] = bad
    finite_or_ppltk_error(lambda: particle_filter(ssm, ys, n, ess_threshold=threshold, seed=0))


def program(ys, scale):
    x = pyro.sample("x_0", dist.Normal(0.0, 1.0))
    for t in range(len(ys)):
        if t > 0:
            x = pyro.sample(f"x_{t}", dist.Normal(0.9 * x, 1.0))
        pyro.sample(f"y_{t}", dist.Normal(x, scale), obs=ys[t])


@SETTINGS
@given(
    T=st.integers(1, 4),
    bad=VALUES,
    where=st.integers(0, 3),
    scale=st.sampled_from([1.0, 1e-6, 0.0, -1.0, math.nan]),
    n=st.sampled_from([1, 5, 0]),
    resampling=st.sampled_from(["systematic", "residual", "nope"]),
)
def test_smc_program_hostile_inputs(T, bad, where, scale, n, resampling):
    ys = torch.zeros(T)
    ys[where % T] = bad
    finite_or_ppltk_error(
        lambda: smc(program, ys, scale, num_particles=n, resampling=resampling, progress=False)
    )


@SETTINGS
@given(
    n=st.sampled_from([2, 50, 1, 0]),
    target_ess=st.sampled_from([0.5, 0.99, 1.5, 0.0, -1.0]),
    bad=VALUES,
    steps=st.sampled_from([1, 0]),
    max_t=st.sampled_from([1000, 2, 0]),
)
def test_tempered_hostile_options(n, target_ess, bad, steps, max_t):
    def log_prior(z):
        return -0.5 * (z**2).sum(-1)

    def log_lik(z):
        return -0.5 * ((z - 3.0) ** 2).sum(-1) * 20 + bad * 0

    z = torch.randn(max(n, 0), 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    finite_or_ppltk_error(
        lambda: tempered_smc_flat(
            log_prior,
            log_lik,
            z,
            target_ess=target_ess,
            num_mcmc_steps=steps,
            max_temperatures=max_t,
        )
    )


def static_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@SETTINGS
@given(n=st.sampled_from([100, 1, 0, 2.5]), bad=VALUES)
def test_tempered_smc_model_hostile_inputs(n, bad):
    y = torch.tensor([0.3, bad])
    finite_or_ppltk_error(lambda: tempered_smc(static_model, y, num_particles=n, progress=False))
