"""Amortized posterior: simulation paths, seeding, save/load and argument checking."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk.amortized import (
    AmortizedPosterior,
    Simulations,
    SimulationUnit,
    fit_amortized,
    simulate,
    simulate_units,
)
from ppltk.distributed import InProcessExecutor
from ppltk.errors import (
    ArgumentError,
    CheckpointMismatchError,
    FileFormatError,
    ShapeError,
    VectorisationWarning,
)
from ppltk.model import ModelBridge


def plated(y):
    mu = pyro.sample("mu", dist.Normal(1.0, 2.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 0.5))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def unplated(y):  # .expand without a plate: an outer plate cannot batch it
    mu = pyro.sample("mu", dist.Normal(1.0, 2.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 0.5))
    pyro.sample("y", dist.Normal(mu, sigma).expand([4]).to_event(1), obs=y)


def summed(y):  # reduces over the latent's values: batching by a plate would mix simulations
    mu = pyro.sample("mu", dist.Normal(1.0, 2.0).expand([2]).to_event(1))
    with pyro.plate("data", 4):
        pyro.sample("y", dist.Normal(mu.sum(), 1.0), obs=y)


def _sims(model, path, num=2000):
    bridge = ModelBridge(model, (torch.zeros(4),))
    gen = torch.Generator().manual_seed(0)
    return simulate(bridge, num, gen, ["y"], path=path), bridge


@pytest.mark.parametrize("path", ["plate", "loop"])
def test_simulations_follow_the_prior_predictive(path):
    sims, bridge = _sims(plated, path)
    assert sims.path == path and sims.z.shape == (2000, 2) and sims.data["y"].shape == (2000, 4)
    values = bridge.constrain(sims.z)
    se = 4 / 2000**0.5
    assert abs(float(values["mu"].mean()) - 1.0) < 2.0 * se
    assert abs(float(values["mu"].std()) - 2.0) < 2.0 * se
    assert abs(float(sims.z[:, 1].mean())) < 0.5 * se  # log sigma ~ N(0, 0.5)
    # y | mu, sigma: the standardised residuals are N(0, 1)
    resid = (sims.data["y"] - values["mu"][:, None]) / values["sigma"][:, None]
    assert abs(float(resid.mean())) < se and abs(float(resid.std()) - 1) < se


def test_unbatchable_models_fall_back_to_a_loop():
    bridge = ModelBridge(unplated, (torch.zeros(4),))
    with pytest.warns(VectorisationWarning, match="one at a time"):
        sims = simulate(bridge, 50, torch.Generator().manual_seed(0), ["y"])
    assert sims.path == "loop" and sims.data["y"].shape == (50, 4)
    bridge = ModelBridge(summed, (torch.zeros(4),))
    with pytest.warns(VectorisationWarning, match="mixes simulations|plate"):
        sims = simulate(bridge, 50, torch.Generator().manual_seed(0), ["y"])
    assert sims.path != "plate"
    # the loop's y is centred on mu[0] + mu[1] of its own simulation
    mu = bridge.constrain(sims.z)["mu"].sum(-1)
    assert float(((sims.data["y"] - mu[:, None]) ** 2).mean()) < 2.0


@pytest.fixture(scope="module")
def small_q():
    return fit_amortized(
        plated, torch.zeros(4), num_simulations=400, max_epochs=3, seed=0, progress=False,
        calibrate=False,
    )  # fmt: skip


def test_same_seed_same_network(small_q):
    again = fit_amortized(
        plated, torch.zeros(4), num_simulations=400, max_epochs=3, seed=0, progress=False,
        calibrate=False,
    )  # fmt: skip
    y = torch.tensor([0.5, 1.0, 1.5, 2.0])
    assert torch.equal(small_q.sample_unconstrained(y, 5, 1), again.sample_unconstrained(y, 5, 1))
    assert small_q.history == again.history


def test_save_and_load_round_trip(small_q, tmp_path):
    path = small_q.save(tmp_path / "q.pt")
    loaded = AmortizedPosterior.load(path, plated, torch.zeros(4))
    y = torch.tensor([0.5, 1.0, 1.5, 2.0])
    assert torch.equal(small_q.sample_unconstrained(y, 7, 3), loaded.sample_unconstrained(y, 7, 3))
    z = small_q.sample_unconstrained(y, 7, 3)
    assert torch.allclose(small_q.log_prob(z, y), loaded.log_prob(z, y))
    with pytest.raises(CheckpointMismatchError):
        AmortizedPosterior.load(path, plated, torch.zeros(5))
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(FileFormatError):
        AmortizedPosterior.load(tmp_path / "bad.pt", plated, torch.zeros(4))
    with pytest.raises(FileFormatError):
        AmortizedPosterior.load(tmp_path / "missing.pt", plated, torch.zeros(4))


def test_shapes_and_constraints(small_q):
    y = torch.randn(6, 4)
    draws = small_q.sample(y, num_samples=9, seed=0)
    assert draws["mu"].shape == (6, 9) and (draws["sigma"] > 0).all()
    assert small_q.sample_unconstrained(y[0], 9, 0).shape == (9, 2)
    assert small_q.log_prob(torch.zeros(6, 3, 2), y).shape == (6, 3)
    # a different number of observations is accepted (the encoder averages over them)
    assert small_q.sample(torch.randn(7), 3, 0)["mu"].shape == (3,)
    assert "mu" in repr(small_q)


def test_bad_arguments_raise_named_errors(small_q):
    with pytest.raises(ShapeError, match="expected one data set"):
        small_q.sample(torch.zeros(2, 3, 4), 5)
    with pytest.raises(ArgumentError, match="num_samples"):
        small_q.sample(torch.zeros(4), 0)
    with pytest.raises(ArgumentError, match="observed sites"):
        small_q.sample({"x": torch.zeros(4)}, 5)
    with pytest.raises(ShapeError, match="z"):
        small_q.log_prob(torch.zeros(3, 5), torch.zeros(4))
    with pytest.raises(ArgumentError, match="head"):
        fit_amortized(plated, torch.zeros(4), head="flowz")
    with pytest.raises(ArgumentError, match="num_simulations"):
        fit_amortized(plated, torch.zeros(4), num_simulations=1)
    with pytest.raises(ArgumentError, match="validation_fraction"):
        fit_amortized(plated, torch.zeros(4), validation_fraction=1.0)
    with pytest.raises(ArgumentError, match="observed"):
        fit_amortized(plated, torch.zeros(4), observed=["nope"])
    with pytest.raises(ShapeError, match="covariates"):
        fit_amortized(plated, torch.zeros(4), covariates=torch.zeros(3, 2), num_simulations=20)
    with pytest.raises(ArgumentError, match="simulations"):
        fit_amortized(plated, torch.zeros(4), simulations="many")


def test_given_simulations_and_mixture_head():
    sims, _ = _sims(plated, "plate", num=300)
    assert isinstance(sims, Simulations) and len(sims.subset(torch.arange(10))) == 10
    q = fit_amortized(
        plated, torch.zeros(4), simulations=sims, head="mixture", num_components=3,
        max_epochs=2, seed=0, progress=False, calibrate=False,
    )  # fmt: skip
    assert q.head.components == 3
    y = torch.tensor([0.5, 1.0, 1.5, 2.0])
    z = q.sample_unconstrained(y, 4000, seed=0)
    # the mixture's sampler, its density and the Pyro distribution agree (4000 draws: se/60)
    lp = q.log_prob(z, y)
    assert torch.isfinite(lp).all()
    with torch.no_grad():
        d = q.head.distribution(q._context(q._as_data(y)[0]))
    assert d.batch_shape == (1,) and d.event_shape == (2,)
    x = (z - q.stats["z_loc"]) / q.stats["z_scale"]
    assert torch.allclose(d.log_prob(x) - q.stats["z_scale"].log().sum(), lp, atol=1e-4)
    assert torch.allclose(x.mean(0), d.mean[0], atol=float(4 * d.variance[0].max().sqrt() / 60))


def test_simulations_in_work_units_are_executor_independent():
    bridge = ModelBridge(plated, (torch.zeros(4),))
    a = simulate_units(bridge, 250, ["y"], None, per_unit=100, seed=3, progress=False)
    b = simulate_units(bridge, 250, ["y"], None, per_unit=100, seed=3, progress=False)
    assert a.z.shape == (250, 2) and a.data["y"].shape == (250, 4) and a.path == "plate"
    assert torch.equal(a.z, b.z) and torch.equal(a.data["y"], b.data["y"])
    # each unit is an ordinary seeded simulate() call: unit 0 reproduces alone
    units = [SimulationUnit(plated, (torch.zeros(4),), {}, ("y",), 100, s) for s in (1, 2)]
    assert not torch.equal(units[0].run().z, units[1].run().z)
    assert torch.equal(units[0].run().z, units[0].run().z)
    q = fit_amortized(
        plated, torch.zeros(4), num_simulations=200, executor=InProcessExecutor(),
        max_epochs=1, seed=0, progress=False, calibrate=False,
    )  # fmt: skip
    assert len(q.history["train"]) == 1
