"""NUTS with compiled leapfrog steps (``NUTS(compile=True)``): the same transition as the
unfused kernel, exact draws, and clean fallbacks."""

import math
import pickle
import shutil
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk.errors import VectorisationWarning
from ppltk.mcmc import NUTS, sample, sample_flat
from ppltk.mcmc._base import default_params
from ppltk.mcmc.fused import FusedLeapfrog
from ppltk.mcmc.runner import GuardedDensity
from ppltk.mcmc.targets import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y, eight_schools_noncentered
from ppltk.model import ModelBridge

pytestmark = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="needs a C++ compiler"
)
SIGMA = torch.tensor(EIGHT_SCHOOLS_SIGMA, dtype=torch.float64)
Y = torch.tensor(EIGHT_SCHOOLS_Y, dtype=torch.float64)


def _scaled_gaussian(scales):
    def logdensity_and_grad(z):
        return -0.5 * ((z / scales) ** 2).sum(-1), -z / scales**2

    return logdensity_and_grad


def test_fused_transition_equals_unfused_transition():
    """From the same state, parameters and random stream, one compiled NUTS transition picks
    the same leaf (positions agree to rounding) for every chain of the eight-schools model."""
    bridge = ModelBridge(eight_schools_noncentered, (SIGMA, Y), backend="fx")
    z0 = bridge.initial_points(8, torch.Generator().manual_seed(1))
    ld = GuardedDensity(bridge.log_density_and_grad, 8, z0.device)
    params = default_params(z0, step_size=0.3)
    results = []
    for kernel in (NUTS(), NUTS(compile=True)):
        state = kernel.init(z0, ld)
        for seed in range(3):
            state, info = kernel.step(state, ld, params, torch.Generator().manual_seed(seed))
        results.append((state.position, info["n_steps"]))
    assert torch.equal(results[0][1], results[1][1])
    tol = 1e3 * torch.finfo(bridge.dtype).eps  # rounding of the compiled code, three steps
    torch.testing.assert_close(results[1][0], results[0][0], rtol=tol, atol=tol)


def test_compiled_nuts_exact_on_gaussian():
    """Ill-scaled Gaussian (sd 0.5 .. 3): means and standard deviations within 4 Monte Carlo
    standard errors (from ArviZ's ESS) of the exact values."""
    import arviz as az

    scales = torch.linspace(0.5, 3.0, 6, dtype=torch.float64)
    init = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample_flat(
        _scaled_gaussian(scales), init, kernel=NUTS(compile=True), num_warmup=300,
        num_samples=600, seed=3, progress=False,
    )  # fmt: skip
    draws = out.positions.numpy()
    ess = az.ess(az.from_dict(posterior={"z": draws}))["z"].values
    mean, sd = draws.reshape(-1, 6).mean(0), draws.reshape(-1, 6).std(0)
    se_mean = scales.numpy() / ess**0.5
    se_sd = scales.numpy() / (2 * ess) ** 0.5
    assert (abs(mean) < 4 * se_mean).all(), (mean, se_mean)
    assert (abs(sd - scales.numpy()) < 4 * se_sd).all(), (sd, scales)


def test_value_dependent_control_flow_falls_back_with_warning():
    """A density whose branch depends on the point cannot be one static graph: the compiled
    step disagrees at the probe point, fusion turns off with a warning, results stay exact."""

    def branchy(z):
        if bool((z[:, 0] > 0).all()):
            return -0.5 * (z**2).sum(-1), -z
        return -0.5 * (z**2).sum(-1) / 4.0, -z / 4.0

    fused = FusedLeapfrog()
    z = torch.ones(2, 3, dtype=torch.float64)
    ones = torch.ones(2, 1, dtype=torch.float64)
    with pytest.warns(VectorisationWarning, match="could not be compiled"):
        out = fused.step(
            branchy, z, -z, -z, 0.5 * ones, torch.ones(2, 3, dtype=torch.float64),
            torch.ones(2, 3, dtype=torch.float64), torch.full((2,), -1e3, dtype=torch.float64),
        )  # fmt: skip
    assert out is None


def test_model_failure_inside_compiled_step_rejects_only_that_chain():
    """A Cholesky inside the model fails for one chain: the compiled step raises, the step is
    recomputed unfused, and only the failing chain gets -inf (and is counted)."""

    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        one = torch.ones_like(a)
        cov = torch.stack([torch.stack([one, a], -1), torch.stack([a, one], -1)], -2)
        chol = torch.linalg.cholesky(cov)  # fails for |a| >= 1
        pyro.factor("f", chol.diagonal(dim1=-2, dim2=-1).log().sum(-1))

    bridge = ModelBridge(model, (), backend="fx")
    dtype = bridge.dtype
    z = torch.zeros(2, 1, dtype=dtype)
    ld = GuardedDensity(bridge.log_density_and_grad, 2, z.device)
    ld(z)
    fused = FusedLeapfrog()
    half = torch.full((2, 1), 0.5, dtype=dtype)
    ones, threshold = torch.ones_like(z), torch.full((2,), -1e3, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VectorisationWarning)
        assert fused.step(ld, z, 0 * z, 0 * z, half, ones, ones, threshold) is not None
    p = torch.tensor([[0.1], [3.0]], dtype=dtype)  # the second chain moves to a = 3
    assert fused.step(ld, z, 0 * z, p, half, ones, ones, threshold) is None
    lp, _ = ld(z + p)
    assert math.isfinite(float(lp[0])) and lp[1] == -math.inf
    assert ld.nonfinite.tolist() == [0, 1]


def test_sample_with_inductor_backend_uses_compiled_nuts_and_matches_posterior():
    """``backend="inductor"`` runs NUTS with compiled steps on the Pyro model; the posterior
    mean of mu agrees with the fx run of the same model within Monte Carlo error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sample(
            eight_schools_noncentered, SIGMA, Y, num_warmup=300, num_samples=300, seed=0,
            progress=False, backend="inductor",
        )  # fmt: skip
    assert "compile=True" in res.attrs["kernel"]
    mu = res.draws["mu"].reshape(-1)
    # reference: the posterior mean of mu is about 4.4 with sd about 3.3 (long Stan runs);
    # 1200 draws with ESS >= 300 give a standard error below 0.2
    assert abs(float(mu.mean()) - 4.4) < 0.8


def test_compiled_kernel_pickles_without_its_compiled_code():
    kernel = NUTS(compile=True)
    kernel._fused._steps[("x",)] = None
    clone = pickle.loads(pickle.dumps(kernel))
    assert clone.compile and clone._fused._steps == {}
