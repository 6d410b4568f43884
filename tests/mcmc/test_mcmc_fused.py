"""NUTS with compiled leaves (``NUTS(compile=True)``): the fused tree builder is exact (run
uncompiled, cheaply, and compiled), compiled and uncompiled fused leaves agree, and every
failure to compile or evaluate falls back cleanly."""

import math
import pickle
import shutil
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk.errors import VectorisationWarning
from ppltk.mcmc import NUTS, sample, sample_flat
from ppltk.mcmc._base import default_params
from ppltk.mcmc.fused import FusedStep, guarded_call
from ppltk.mcmc.runner import GuardedDensity
from ppltk.mcmc.targets import EIGHT_SCHOOLS_SIGMA, EIGHT_SCHOOLS_Y, eight_schools_noncentered
from ppltk.model import ModelBridge

needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="needs a C++ compiler"
)
SIGMA = torch.tensor(EIGHT_SCHOOLS_SIGMA, dtype=torch.float64)
Y = torch.tensor(EIGHT_SCHOOLS_Y, dtype=torch.float64)


def _scaled_gaussian(scales):
    def logdensity_and_grad(z):
        return -0.5 * ((z / scales) ** 2).sum(-1), -z / scales**2

    return logdensity_and_grad


def _fused_uncompiled() -> NUTS:
    kernel = NUTS()
    kernel._fused_tree = True  # the compiled path's tree builder, run op by op
    return kernel


def _check_gaussian(out, scales, k=4.0):
    """Means within ``k`` Monte Carlo standard errors (ArviZ ESS of z) and variances within
    ``k`` standard errors :math:`\\sigma^2\\sqrt{2/\\mathrm{ESS}(z^2)}` of the exact ones."""
    import arviz as az

    draws = out.positions.numpy()
    dim = draws.shape[-1]
    ess = az.ess(az.from_dict(posterior={"z": draws}))["z"].values
    ess_sq = az.ess(az.from_dict(posterior={"z": draws**2}))["z"].values
    flat = draws.reshape(-1, dim)
    var, scales = (flat**2).mean(0), scales.numpy()
    assert (abs(flat.mean(0)) < k * scales / ess**0.5).all(), (flat.mean(0), ess)
    assert (abs(var - scales**2) < k * scales**2 * (2 / ess_sq) ** 0.5).all(), (var, ess_sq)


@pytest.mark.parametrize("dense", [False, True])
def test_fused_tree_builder_is_exact_on_gaussian(dense):
    """The fused tree builder (progressive multinomial draw, checkpoint masks), uncompiled:
    an ill-scaled Gaussian (sd 0.5 .. 3) is sampled exactly, diagonal and dense metric."""
    scales = torch.linspace(0.5, 3.0, 5, dtype=torch.float64)
    init = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample_flat(
        _scaled_gaussian(scales), init, kernel=_fused_uncompiled(), num_warmup=300,
        num_samples=700, seed=5, progress=False, dense_mass=dense,
    )  # fmt: skip
    _check_gaussian(out, scales)


def test_fused_tree_builder_statistics_match_classic_builder():
    """Both builders sample the same transition kernel: with the same adapted parameters, the
    mean tree size and acceptance statistic agree within their Monte Carlo error."""
    scales = torch.linspace(0.5, 3.0, 5, dtype=torch.float64)
    init = torch.randn(32, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = default_params(init, step_size=0.4)
    params.inverse_mass = params.inverse_mass * scales**2
    stats = []
    for kernel in (NUTS(), _fused_uncompiled()):
        out = sample_flat(
            _scaled_gaussian(scales), init, kernel=kernel, num_warmup=0, num_samples=60,
            seed=1, progress=False, params=params, adapt_step_size=False, adapt_mass=False,
        )  # fmt: skip
        n = torch.as_tensor(out.stats["n_steps"]).double()
        a = torch.as_tensor(out.stats["accept_prob"]).double()
        stats.append([(x.mean(), x.std() / x.numel() ** 0.5) for x in (n, a)])
    for (m0, s0), (m1, s1) in zip(*stats):
        assert abs(m0 - m1) < 4 * float((s0**2 + s1**2) ** 0.5) + 1e-12


@needs_compiler
def test_compiled_leaves_equal_uncompiled_fused_leaves():
    """From the same state, parameters and random stream, the compiled tree builder makes the
    same trees (same leaf counts) and positions agree to rounding (eight schools, 8 chains)."""
    bridge = ModelBridge(eight_schools_noncentered, (SIGMA, Y), backend="fx")
    z0 = bridge.initial_points(8, torch.Generator().manual_seed(1))
    ld = GuardedDensity(bridge.log_density_and_grad, 8, z0.device)
    params = default_params(z0, step_size=0.3)
    results = []
    for kernel in (_fused_uncompiled(), NUTS(compile=True)):
        state = kernel.init(z0, ld)
        for seed in range(3):
            state, info = kernel.step(state, ld, params, torch.Generator().manual_seed(seed))
        results.append((state.position, info["n_steps"]))
    assert torch.equal(results[0][1], results[1][1])
    tol = 1e3 * torch.finfo(bridge.dtype).eps  # rounding of the compiled code, three steps
    torch.testing.assert_close(results[1][0], results[0][0], rtol=tol, atol=tol)


def _half_gaussian(z):
    """Standard Gaussian truncated to z_0 > -0.5: log-density -inf (zero gradient) beyond."""
    inside = z[:, 0] > -0.5
    lp = torch.where(inside, -0.5 * (z**2).sum(-1), -math.inf)
    return lp, torch.where(inside.unsqueeze(-1), -z, 0.0)


@needs_compiler
def test_compiled_leaves_count_nonfinite_points_as_the_uncompiled_ones():
    """Points outside the support (log-density -inf) are counted per chain in
    ``attrs["nonfinite_evaluations"]``: the compiled tree (counted in the packed state) and
    the uncompiled one (same trees from the same stream) give the same counts, above zero."""
    init = torch.rand(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counts = []
    for kernel in (_fused_uncompiled(), NUTS(compile=True)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = sample_flat(
                _half_gaussian, init, kernel=kernel, num_warmup=50, num_samples=50, seed=2,
                progress=False,
            )  # fmt: skip
        counts.append(out.attrs["nonfinite_evaluations"])
    assert int(counts[0].sum()) > 0
    assert torch.equal(counts[0], counts[1])


def test_fused_tree_keeps_the_positions_dtype():
    """Eight schools has float32 latents and float64 data, so its log-density (and the step
    size's working dtype) is float64: the tree still moves the float32 positions, so the model
    is evaluated -- and its graph captured -- at float32 points only."""
    bridge = ModelBridge(eight_schools_noncentered, (SIGMA, Y), backend="fx")
    z0 = bridge.initial_points(4, torch.Generator().manual_seed(0))
    ld = GuardedDensity(bridge.log_density_and_grad, 4, z0.device)
    kernel = _fused_uncompiled()
    state = kernel.init(z0, ld)
    assert z0.dtype == torch.float32 and state.lp.dtype == torch.float64
    params = default_params(z0, step_size=0.3)
    state, _ = kernel.step(state, ld, params, torch.Generator().manual_seed(0))
    assert state.position.dtype == torch.float32
    dtypes = {key[1] for key in bridge._graph_density_and_grad.graphs}
    assert dtypes == {torch.float32}


@needs_compiler
@pytest.mark.parametrize("dense", [False, True])
def test_compiled_nuts_exact_on_gaussian(dense):
    """Compiled leaves, ill-scaled Gaussian (sd 0.5 .. 3): exact within 4 MCSE, with a
    diagonal and a dense metric."""
    scales = torch.linspace(0.5, 3.0, 6, dtype=torch.float64)
    init = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VectorisationWarning)  # compiled, no fallback
        out = sample_flat(
            _scaled_gaussian(scales), init, kernel=NUTS(compile=True), num_warmup=300,
            num_samples=600, seed=3, progress=False, dense_mass=dense,
        )  # fmt: skip
    _check_gaussian(out, scales)


def _leapfrog_step(ld, z, p, half):
    """A small pure step for FusedStep's own tests: one leapfrog step, unit metric."""
    lp0, g0, _ = guarded_call(ld, z)
    p_half = p + half * g0
    z_new = z + 2 * half * p_half
    lp, g, bad = guarded_call(ld, z_new)
    return z_new, lp, p_half + half * g, bad


@needs_compiler
def test_value_dependent_control_flow_falls_back_with_warning():
    """A density whose branch depends on the point cannot be one static graph: the compiled
    step disagrees at the probe point, compilation turns off with a warning, and the step
    still gives the uncompiled answer."""

    def branchy(z):
        if bool((z[:, 0] > 0).all()):
            return -0.5 * (z**2).sum(-1), -z
        return -0.5 * (z**2).sum(-1) / 4.0, -z / 4.0

    fused = FusedStep(_leapfrog_step, compile=True, num_checked=3, name="test")
    z = torch.full((2, 3), 0.05, dtype=torch.float64)
    p, half = torch.zeros_like(z), torch.full((2, 1), 0.5, dtype=torch.float64)
    with pytest.warns(VectorisationWarning, match="could not be compiled"):
        out = fused(branchy, z, p, half)
    expected = _leapfrog_step(branchy, z, p, half)
    assert all(torch.equal(a, b) for a, b in zip(out, expected))


@needs_compiler
def test_model_failure_inside_compiled_step_rejects_only_that_chain():
    """A Cholesky inside the model fails for one chain: the compiled step raises, the step is
    recomputed uncompiled through the guarded density, and only that chain gets -inf and is
    reported bad (for its caller to count: the density's own counter is left alone)."""

    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        one = torch.ones_like(a)
        cov = torch.stack([torch.stack([one, a], -1), torch.stack([a, one], -1)], -2)
        chol = torch.linalg.cholesky(cov)  # fails for |a| >= 1
        pyro.factor("f", chol.diagonal(dim1=-2, dim2=-1).log().sum(-1))

    bridge = ModelBridge(model, (), backend="fx")
    z = torch.zeros(2, 1, dtype=bridge.dtype)
    ld = GuardedDensity(bridge.log_density_and_grad, 2, z.device)
    ld(z)
    fused = FusedStep(_leapfrog_step, compile=True, num_checked=3, name="test")
    half = torch.full((2, 1), 0.5, dtype=z.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VectorisationWarning)
        fused(ld, z, torch.zeros_like(z), half)
    assert fused._compiled and all(v is not None for v in fused._compiled.values())
    p = torch.tensor([[0.1], [3.0]], dtype=z.dtype)  # the second chain moves to a = 3
    z_new, lp, _, bad = fused(ld, z, p, half)
    assert math.isfinite(float(lp[0])) and lp[1] == -math.inf
    assert bad.tolist() == [False, True]
    assert ld.nonfinite.tolist() == [0, 0]


@needs_compiler
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


@needs_compiler
def test_sample_says_why_a_first_run_waits_and_a_second_does_not(empty_cache, monkeypatch, capsys):
    """With ``progress=True`` the first run of a model on a machine shows a line saying it is
    compiling; the second run loads the library and shows none."""
    monkeypatch.setattr("ppltk._progress.progress_enabled", bool)  # as on a terminal

    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    shown = []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample(model, num_warmup=5, num_samples=5, seed=0, backend="inductor")
        shown.append("compiling the model" in capsys.readouterr().err)
    assert shown == [True, False]


def test_compiled_kernel_pickles_without_its_compiled_code():
    kernel = NUTS(compile=True)
    kernel._leaf._compiled[("x",)] = None
    clone = pickle.loads(pickle.dumps(kernel))
    assert clone.compile and clone._leaf._compiled == {}


@pytest.mark.cuda
def test_compiled_nuts_on_cuda_is_exact():
    """Compiled leaves on the GPU (Triton): 256 chains of an ill-scaled Gaussian, exact within
    4 MCSE, and no fallback warning."""
    device = torch.device("cuda")
    scales = torch.linspace(0.5, 3.0, 6, dtype=torch.float64, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    init = torch.randn(256, 6, generator=gen, dtype=torch.float64, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VectorisationWarning)
        out = sample_flat(
            _scaled_gaussian(scales), init, kernel=NUTS(compile=True), num_warmup=200,
            num_samples=200, seed=gen, progress=False,
        )  # fmt: skip
    assert out.positions.device.type == "cuda"
    out.positions = out.positions.cpu()
    _check_gaussian(out, scales.cpu())


def test_compiled_state_in_another_layout_is_refused():
    """The compiled code reads its inputs in the layouts it was built for, unchecked: a step
    whose fed-back state comes back in another layout (here transposed) is refused when
    validated, while the same values in the same layout pass."""

    def density(z):
        return -0.5 * (z**2).sum(-1), -z

    def step(ld, z, p):
        return z + p, p

    z = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = torch.ones(3, 3, dtype=torch.float64)
    fused = FusedStep(step, compile=False, num_checked=2, name="test", feedback=1)

    def same_layout(z, p):
        return step(density, z, p)

    def transposed_layout(z, p):
        out, p = step(density, z, p)
        return out.T.contiguous().T, p

    fused._validate(lambda *a: step(density, *a), same_layout, (z, p))
    with pytest.raises(RuntimeError, match="layout"):
        fused._validate(lambda *a: step(density, *a), transposed_layout, (z, p))


@needs_compiler
def test_nuts_leaf_that_cannot_compile_falls_back_to_the_replayed_graph(monkeypatch):
    """When NUTS's leaf cannot be compiled, ``sample`` says so and runs the uncompiled kernel
    on the replayed graph (not on the model re-run eagerly at every leaf)."""
    import ppltk.mcmc.fused as fused_module

    def refuse(*args, **kwargs):
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(fused_module, "compile_function", refuse)
    backends = []
    set_backend = ModelBridge.set_backend

    def spy(self, backend):
        backends.append(backend)
        return set_backend(self, backend)

    monkeypatch.setattr(ModelBridge, "set_backend", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = sample(
            eight_schools_noncentered, SIGMA, Y, num_warmup=30, num_samples=30, seed=0,
            progress=False, backend="inductor",
        )  # fmt: skip
    assert any(
        issubclass(w.category, VectorisationWarning) and "could not be compiled" in str(w.message)
        for w in caught
    )
    assert "compile=True" not in res.attrs["kernel"]
    assert backends[-1] == "fx"
    assert np.isfinite(res.draws["mu"]).all()
