"""Runner behaviour: determinism, Ctrl-C, checkpoints, argument checking, Gibbs blocks."""

import pytest
import torch

from ppltk.errors import ArgumentError, InterruptedWarning, ShapeError
from ppltk.mcmc import NUTS, Gibbs, Params, RandomWalkMH, make_kernel, sample_flat
from ppltk.mcmc.targets import gaussian_logdensity

DTYPE = torch.float64
COV = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=DTYPE)
LD = gaussian_logdensity(torch.zeros(2, dtype=DTYPE), COV)
INIT = torch.tensor([[0.5, 0.1], [-1.0, 0.3], [0.0, 0.0]], dtype=DTYPE)


class _Interrupting:
    """Wraps a log-density and raises KeyboardInterrupt (as Ctrl-C would) at call ``at``."""

    def __init__(self, ld, at: int):
        self.ld, self.at, self.calls = ld, at, 0

    def __call__(self, z):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.ld(z)


def _run(ld=LD, **kw):
    kw = {"num_warmup": 60, "num_samples": 80, "seed": 5, "progress": False, **kw}
    return sample_flat(ld, INIT, **kw)


def test_same_seed_same_draws_and_shapes():
    a, b = _run(), _run()
    assert torch.equal(a.positions, b.positions)
    assert a.positions.shape == (3, 80, 2)
    assert set(a.stats) == set(NUTS.stat_names)
    assert all(v.shape == (3, 80) for v in a.stats.values())
    assert not a.interrupted
    assert not torch.equal(a.positions, _run(seed=6).positions)


def test_interrupt_returns_partial_draws_with_warning():
    full = _run()
    calls = _Interrupting(LD, 10**9)
    _run(calls)
    total = calls.calls
    ld = _Interrupting(LD, total - total // 4)  # interrupt late in sampling
    with pytest.warns(InterruptedWarning, match="returning the draws so far"):
        part = _run(ld)
    assert part.interrupted
    kept = part.positions.shape[1]
    assert 0 < kept < 80
    # the draws made before Ctrl-C are exactly those of the uninterrupted run
    assert torch.equal(part.positions, full.positions[:, :kept])
    assert part.stats["lp"].shape == (3, kept)


def test_checkpoint_resume_reproduces_the_uninterrupted_run(tmp_path):
    path = tmp_path / "run.pt"
    full = _run()
    calls = _Interrupting(LD, 10**9)
    _run(calls)
    ld = _Interrupting(LD, calls.calls // 2)
    with pytest.warns(InterruptedWarning, match="checkpoint saved"):
        part = _run(ld, checkpoint=path, checkpoint_every=7)
    assert path.exists() and part.interrupted
    resumed = _run(checkpoint=path, checkpoint_every=7)
    assert not resumed.interrupted
    assert torch.equal(resumed.positions, full.positions)
    assert torch.equal(resumed.stats["tree_depth"], full.stats["tree_depth"])
    # a finished checkpoint returns the same draws again without sampling
    again = _run(_Interrupting(LD, 1), checkpoint=path)
    assert torch.equal(again.positions, full.positions)


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    _run(checkpoint=path)
    with pytest.raises(ArgumentError, match="match this run's configuration"):
        _run(checkpoint=path, num_samples=81)


def test_argument_errors():
    with pytest.raises(ArgumentError, match="Expected `kernel` to be one of"):
        make_kernel("slice")
    with pytest.raises(ArgumentError, match="num_samples"):
        _run(num_samples=-1)
    with pytest.raises(ArgumentError, match="target_accept"):
        _run(target_accept=1.5)
    with pytest.raises(ShapeError, match="init_position"):
        sample_flat(LD, torch.zeros(2, dtype=DTYPE), progress=False)
    bad = Params(torch.ones(2, dtype=DTYPE), torch.ones(3, 2, dtype=DTYPE))
    with pytest.raises(ShapeError, match="step_size"):
        _run(params=bad)
    assert isinstance(make_kernel("MH"), RandomWalkMH)


def test_given_params_without_adaptation_are_kept():
    params = Params(torch.full((3,), 0.3, dtype=DTYPE), torch.ones(3, 2, dtype=DTYPE))
    out = _run(params=params, adapt_step_size=False, adapt_mass=False)
    assert torch.equal(out.params.step_size, params.step_size)
    assert torch.equal(out.params.inverse_mass, params.inverse_mass)
    assert (out.stats["step_size"] == 0.3).all()


def test_gibbs_blocks_sample_the_joint():
    """NUTS on z0 and MH on z1 (correlation 0.9): 4 chains x 1500 draws; the sample
    correlation's SE is ~(1 - 0.81)/sqrt(ESS) < 0.03 for ESS > 40, so |r - 0.9| < 0.1."""
    kernel = Gibbs([([0], NUTS(max_tree_depth=4)), ([1], "mh")])
    init = torch.zeros(4, 2, dtype=DTYPE)
    out = sample_flat(
        LD, init, kernel=kernel, num_warmup=300, num_samples=1500, seed=0, progress=False
    )
    x = out.positions.reshape(-1, 2)
    r = torch.corrcoef(x.T)[0, 1]
    assert abs(r - 0.9) < 0.1, r
    assert abs(x.mean(0)).max() < 0.5
    assert len(out.params) == 2
    assert {"accept_prob_0", "accept_prob_1", "step_size_1"} <= set(out.stats)
    # the MH block adapts towards its own target (0.234), the NUTS block towards 0.8
    assert out.stats["accept_prob_0"].mean() > out.stats["accept_prob_1"].mean()


def test_sample_on_a_model_interrupted_returns_a_partial_result():
    import pyro
    import pyro.distributions as dist

    from ppltk.mcmc import sample

    calls = {"n": 0}

    def model(y):
        calls["n"] += 1
        if calls["n"] == 1000:  # mid-sampling: ~3 calls per iteration, ~1900-2300 in all
            raise KeyboardInterrupt
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    with pytest.warns(InterruptedWarning):
        res = sample(
            model,
            torch.tensor(0.5),
            kernel=NUTS(max_tree_depth=3),
            backend="eager",  # the model must run at every step to raise mid-run
            num_chains=2,
            num_warmup=100,  # 20 (as before) leaves step sizes of 10x the scale: divergences
            num_samples=500,
            seed=0,
            progress=False,
        )
    assert res.attrs["interrupted"]
    assert res.draws["theta"].shape[0] == 2
    assert 0 < res.draws["theta"].shape[1] < 500
    assert res.stats["lp"].shape == res.draws["theta"].shape


def test_auto_backend_compiles_only_long_runs(monkeypatch):
    from ppltk.mcmc import api

    monkeypatch.setattr(api, "_has_cxx_compiler", lambda: True)
    assert api.choose_backend("auto", 400) == "fx"
    assert api.choose_backend("auto", api.INDUCTOR_MIN_ITERATIONS) == "inductor"
    assert api.choose_backend("eager", 10**6) == "eager"
    monkeypatch.setattr(api, "_has_cxx_compiler", lambda: False)
    assert api.choose_backend("auto", 10**6) == "fx"


def test_split_rhat_equals_arviz_rank_rhat_with_ties_and_odd_length():
    """The R-hat of the disagreement check is ArviZ's rank-normalised split R-hat (exact to
    rounding), also with repeated draws (rejections) and an odd number of draws."""
    import arviz as az
    import numpy as np

    from ppltk.mcmc.runner import split_rhat

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 101, 3))
    x[1] += 0.4  # one chain shifted
    x[:, 10:20, 0] = x[:, 9:10, 0]  # a run of rejections: ties
    x[2, :, 2] = np.round(x[2, :, 2], 1)  # many ties
    expected = az.rhat(az.convert_to_dataset(x), method="rank")["x"].values
    np.testing.assert_allclose(split_rhat(x), expected, rtol=1e-12)
