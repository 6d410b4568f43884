"""Robust transitions: model failures are per-chain rejections, no step-size floors, stuck
chains restarted in warm-up, disagreeing chains reported."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk.errors import DivergenceWarning, NonFiniteLogDensityError
from ppltk.mcmc import (
    NUTS,
    ChainsDisagreeWarning,
    GuardedDensity,
    Params,
    StuckChainMonitor,
    find_reasonable_step_size,
    sample,
    sample_flat,
)
from ppltk.mcmc._base import init_state
from ppltk.mcmc.targets import gaussian_logdensity

DTYPE = torch.float64


def _quadrature_moments(log_density, lo, hi, n=200001):
    """Mean and sd of a 1-d density on [lo, hi] by the trapezoid rule (the exact oracle)."""
    x = torch.linspace(lo, hi, n, dtype=DTYPE)
    w = torch.exp(log_density(x) - log_density(x).max())
    z = torch.trapezoid(w, x)
    mean = torch.trapezoid(w * x, x) / z
    sd = torch.sqrt(torch.trapezoid(w * (x - mean) ** 2, x) / z)
    return float(mean), float(sd)


def _per_chain_check(draws: torch.Tensor, mean: float, sd: float, ess_per_chain: float):
    """Every chain moves (sd within a factor 2 of the exact sd) and the pooled mean is within
    5 Monte Carlo standard errors (ESS assumed >= ``ess_per_chain`` per chain)."""
    for c, chain in enumerate(draws):
        assert 0.5 * sd < float(chain.std()) < 2.0 * sd, (c, float(chain.std()), sd)
    mcse = sd / math.sqrt(ess_per_chain * draws.shape[0])
    assert abs(float(draws.mean()) - mean) < 5 * mcse, (float(draws.mean()), mean, mcse)


def cosh_model():
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.factor("s", -torch.cosh(50 * x))


def test_steep_start_does_not_strand_chains():
    """The issue's case: with a 1e-10 step-size floor, chains started where
    log pi ~ -1e20 never moved (3 of 4 at seed 0, sd 0). Exact moments by quadrature."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)  # a few at the steep walls
        res = sample(
            cosh_model, num_chains=4, num_warmup=200, num_samples=200, seed=0, progress=False
        )
    x = torch.as_tensor(res.draws["x"], dtype=DTYPE)
    mean, sd = _quadrature_moments(
        lambda v: -0.5 * v**2 - torch.cosh(50 * v), -0.5, 0.5
    )  # fmt: skip
    _per_chain_check(x, mean, sd, ess_per_chain=30)


def test_step_size_search_and_adaptation_go_below_1e_10():
    """A Gaussian of sd 1e-14 needs step sizes ~1e-14; the old floors clamped them at 1e-10
    (every transition then diverged). The kept draws' sd must match within MCSE."""
    scale = 1e-14
    ld = gaussian_logdensity(torch.zeros(1, dtype=DTYPE), torch.full((1, 1), scale**2, dtype=DTYPE))
    init = torch.full((2, 1), scale, dtype=DTYPE)
    state = init_state(init, ld)
    params = Params(torch.ones(2, dtype=DTYPE), torch.ones(2, 1, dtype=DTYPE))
    eps = find_reasonable_step_size(state, params, ld, torch.Generator().manual_seed(0))
    assert (eps < 1e-12).all(), eps
    out = sample_flat(ld, init, num_warmup=150, num_samples=300, seed=1, progress=False,
                      adapt_mass=False)  # fmt: skip
    assert (out.params.step_size < 1e-12).all()
    assert out.num_divergences == 0
    z = out.positions[..., 0] / scale
    _per_chain_check(z, 0.0, 1.0, ess_per_chain=50)


def _cholesky_model(y):
    """Correlation r in (-1.5, 1.5); the Cholesky fails (LinAlgError) for |r| >= 1."""
    r = pyro.sample("r", dist.Uniform(-1.5, 1.5))
    one = torch.ones((), dtype=y.dtype)
    cov = torch.stack([torch.stack([one, r]), torch.stack([r, one])])
    chol = torch.linalg.cholesky(cov)
    with pyro.plate("n", y.shape[0]):
        pyro.sample(
            "y", dist.MultivariateNormal(torch.zeros(2, dtype=y.dtype), scale_tril=chol), obs=y
        )


def test_linalg_error_in_the_model_is_a_rejection_not_a_crash():
    """Before: a raw LinAlgError from the step-size search. Now each failing point is a zero
    density for that chain only; the posterior of r (support |r| < 1) matches quadrature."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 2, generator=gen, dtype=DTYPE)
    y = torch.stack([x[:, 0], 0.6 * x[:, 0] + 0.8 * x[:, 1]], -1)

    s00, s01, s11 = (y[:, 0] ** 2).sum(), (y[:, 0] * y[:, 1]).sum(), (y[:, 1] ** 2).sum()

    def log_post(r):
        det = 1 - r**2
        return -0.5 * (s00 - 2 * r * s01 + s11) / det - 0.5 * y.shape[0] * torch.log(det)

    mean, sd = _quadrature_moments(log_post, -1 + 1e-9, 1 - 1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        res = sample(_cholesky_model, y, num_chains=4, num_warmup=100, num_samples=150, seed=0,
                     progress=False)  # fmt: skip
    r = torch.as_tensor(res.draws["r"], dtype=DTYPE)
    assert r.abs().max() < 1
    _per_chain_check(r, mean, sd, ess_per_chain=30)
    assert res.attrs["model_evaluation_errors"] > 0
    assert sum(res.attrs["nonfinite_evaluations"]) > 0


@pytest.mark.parametrize(
    "backend, vectorise", [("eager", "auto"), ("eager", "loop"), ("fx", "auto")]
)
def test_failing_points_of_a_batch_get_minus_inf_and_the_others_their_values(backend, vectorise):
    """One failing Cholesky fails a whole vmap/graph batch: the batch is bisected, so the
    other points keep exactly their own values."""
    from ppltk.model import ModelBridge

    y = torch.tensor([[0.3, 0.1], [-0.5, 0.2]], dtype=DTYPE)
    bridge = ModelBridge(_cholesky_model, (y,), backend=backend, vectorise=vectorise)
    r = torch.tensor([0.5, 1.2, -0.3, 0.0, 1.4], dtype=DTYPE)
    z = torch.logit((r + 1.5) / 3.0)[:, None]
    lp, grad = bridge.log_density_and_grad(z)
    ok = r.abs() < 1
    assert torch.isinf(lp[~ok]).all() and (lp[~ok] < 0).all() and (grad[~ok] == 0).all()
    for i in torch.nonzero(ok).flatten().tolist():
        lp_i, grad_i = bridge.log_density_and_grad(z[i : i + 1])
        torch.testing.assert_close(lp[i : i + 1], lp_i)
        torch.testing.assert_close(grad[i : i + 1], grad_i)
    assert bridge.num_evaluation_errors > 0


def test_model_that_always_fails_gets_a_named_error():
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        torch.linalg.cholesky(-torch.eye(2))

    with pytest.raises(NonFiniteLogDensityError, match="LinAlgError"):
        sample(model, num_chains=2, num_warmup=5, num_samples=5, progress=False, backend="eager")


def test_guarded_density_rejects_errors_and_non_finite_gradients_per_chain():
    """A flat target N(0,1) truncated to z < 1.5: raising ValueError (some rows) or a NaN
    gradient (others) beyond the bound. Exact mean of the truncated normal."""

    def ld(z):
        if bool((z[:, 0] > 2.5).any()):
            raise ValueError("outside")
        grad = torch.where(z > 1.5, float("nan"), -z)
        return -0.5 * (z**2).sum(-1), grad

    guarded = GuardedDensity(ld, 3, "cpu")
    lp, grad = guarded(torch.tensor([[0.0], [3.0], [2.0]], dtype=DTYPE))
    assert lp.tolist() == [0.0, -math.inf, -math.inf]
    assert grad.tolist() == [[0.0], [0.0], [0.0]]
    assert guarded.nonfinite.tolist() == [0, 1, 1]
    init = torch.zeros(4, 1, dtype=DTYPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        out = sample_flat(ld, init, num_warmup=150, num_samples=400, seed=2, progress=False)
    z = out.positions[..., 0]
    assert torch.isfinite(out.state.grad).all() and (z <= 1.5).all()
    phi = math.exp(-0.5 * 1.5**2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(1.5 / math.sqrt(2)))
    mean = -phi / cdf
    sd = math.sqrt(1 - 1.5 * phi / cdf - mean**2)
    _per_chain_check(z, mean, sd, ess_per_chain=50)
    assert int(out.attrs["nonfinite_evaluations"].sum()) > 0


def test_stuck_chain_is_restarted_in_warmup_and_reported():
    """Chain 3 starts with a step size of 1e-30 (dual averaging needs ~300 iterations to
    recover): restarted from another chain at the first check; without restarts the chains
    disagree and a warning gives R-hat without each chain."""
    ld = gaussian_logdensity(torch.zeros(2, dtype=DTYPE), torch.eye(2, dtype=DTYPE))
    init = torch.zeros(4, 2, dtype=DTYPE)
    init[3] = 3.0
    steps = torch.tensor([0.8, 0.8, 0.8, 1e-30], dtype=DTYPE)
    params = Params(steps, torch.ones(4, 2, dtype=DTYPE))
    kw = dict(num_warmup=100, num_samples=100, seed=0, progress=False, params=params)
    kw["adapt_mass"] = False  # a metric update would re-run the step-size search
    kw["kernel"] = NUTS(max_tree_depth=5)
    out = sample_flat(ld, init, warn_disagreement=True, **kw)
    assert out.attrs["restarts"].tolist() == [0, 0, 0, 1]
    for chain in out.positions[..., 0]:
        assert 0.5 < float(chain.std()) < 2.0
    with pytest.warns(ChainsDisagreeWarning, match="R-hat without each chain"):
        stuck = sample_flat(ld, init, warn_disagreement=True, restart_stuck=False, **kw)
    assert stuck.attrs["restarts"].tolist() == [0, 0, 0, 0]
    assert float((stuck.positions[3] - 3.0).abs().max()) < 1e-6


def test_monitor_flags_a_chain_far_below_the_others():
    monitor = StuckChainMonitor(200, torch.zeros(4, 3, dtype=DTYPE))
    lp = torch.tensor([-3.0, -2.0, -4.0, -1e6], dtype=DTYPE)
    accept = torch.full((4,), 0.8, dtype=DTYPE)
    due = [monitor.update(i, lp, accept) for i in range(monitor.interval)]
    assert due[-1] and not any(due[:-1])
    stuck = monitor.stuck(torch.full((4,), 0.5, dtype=DTYPE))
    assert stuck.tolist() == [False, False, False, True]
    # no healthy chain: nothing to restart from
    for i in range(monitor.interval):
        monitor.update(i, lp, torch.zeros(4, dtype=DTYPE))
    assert not monitor.stuck(torch.full((4,), 0.5, dtype=DTYPE)).any()


def _arma11(y):
    """ARMA(1,1) as in posteriordb's arma11 (Stan): |theta| > 1 makes the error recursion
    explode, so a chain started there sees log pi ~ -1e45."""
    f = lambda v: torch.tensor(v, dtype=DTYPE)  # noqa: E731
    mu = pyro.sample("mu", dist.Normal(f(0.0), 10.0))
    phi = pyro.sample("phi", dist.Normal(f(0.0), 2.0))
    theta = pyro.sample("theta", dist.Normal(f(0.0), 2.0))
    sigma = pyro.sample("sigma", dist.HalfCauchy(f(2.5)))
    err = [y[0] - (mu + phi * mu)]
    for t in range(1, y.shape[0]):
        err.append(y[t] - (mu + phi * y[t - 1] + theta * err[-1]))
    pyro.sample(
        "err", dist.Normal(0.0, sigma).expand([y.shape[0]]).to_event(1), obs=torch.stack(err)
    )


@pytest.mark.slow
def test_arma11_no_stuck_chain():
    """Before: at seed 0 one of 4 chains stayed at theta = -1.29 (sd 0, 300 divergences).
    Every chain must now move and agree with the others within 5 standard errors."""
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(120, generator=gen, dtype=DTYPE)
    y = torch.zeros(120, dtype=DTYPE)
    for t in range(120):
        y[t] = 0.5 + (0.6 * y[t - 1] + 0.3 * e[t - 1] if t else 0.0) + e[t]
    res = sample(_arma11, y, num_chains=4, num_warmup=300, num_samples=300, seed=0, progress=False)
    theta = torch.as_tensor(res.draws["theta"], dtype=DTYPE)
    sd = float(theta.std())
    assert (theta.std(1) > 0.5 * sd).all()
    assert (theta.mean(1) - theta.mean()).abs().max() < 5 * sd / math.sqrt(30)
