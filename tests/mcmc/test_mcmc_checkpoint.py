"""Checkpoints: a fingerprint refuses another run's file; state and RNG saved as one unit;
draws independent of the executor for a given grouping."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk.errors import CheckpointMismatchError, InterruptedWarning
from ppltk.mcmc import NUTS, sample, sample_flat
from ppltk.mcmc.adaptation import WarmupAdapter
from ppltk.mcmc.targets import gaussian_logdensity

DTYPE = torch.float64
LD = gaussian_logdensity(torch.zeros(2, dtype=DTYPE), torch.eye(2, dtype=DTYPE))
INIT = torch.tensor([[0.5, 0.1], [-1.0, 0.3]], dtype=DTYPE)


def normal_model(y):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DTYPE), 1.0))
    with pyro.plate("n", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def other_model(y):  # same dimension, another support
    sd = pyro.sample("sd", dist.HalfNormal(torch.tensor(1.0, dtype=DTYPE)))
    with pyro.plate("n", y.shape[0]):
        pyro.sample("y", dist.Normal(0.0, sd), obs=y)


Y = torch.tensor([0.3, -0.2, 1.1], dtype=DTYPE)
OPTS = dict(
    num_chains=2, num_warmup=60, num_samples=20, progress=False, kernel=NUTS(max_tree_depth=3)
)


@pytest.mark.parametrize(
    "change, what",
    [
        (dict(args=(Y + 1,)), "data"),
        (dict(seed=1), "seed"),
        (dict(target_accept=0.9), "options"),
        (dict(dense_mass=True), "options"),
        (dict(model=other_model), "model"),
        (dict(kernel=NUTS(max_tree_depth=4)), "kernel"),
    ],
)
def test_checkpoint_of_another_run_is_refused_naming_the_difference(tmp_path, change, what):
    """Before: new data, seed, model or options silently returned the old run's draws."""
    path = tmp_path / "run.pt"
    base = dict(OPTS, seed=0)
    first = sample(normal_model, Y, checkpoint=path, **base)
    again = sample(normal_model, Y, checkpoint=path, **base)  # the same run resumes
    assert (first.draws["mu"] == again.draws["mu"]).all()
    kw = {**base, **{k: v for k, v in change.items() if k not in ("args", "model")}}
    model = change.get("model", normal_model)
    args = change.get("args", (Y,))
    with pytest.raises(CheckpointMismatchError, match=f"differences in: .*{what}"):
        sample(model, *args, checkpoint=path, **kw)


def test_interrupt_between_state_update_and_counter_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Ctrl-C inside an iteration after the chain state moved but before the iteration was
    counted (here: in the warm-up adaptation) must not save the new state with the old
    counter and generator; the resumed run equals the uninterrupted one."""
    kw = dict(num_warmup=60, num_samples=30, seed=3, progress=False, checkpoint_every=5)
    full = sample_flat(LD, INIT, **kw)
    original = WarmupAdapter.update
    calls = {"n": 0}

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 23:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WarmupAdapter, "update", interrupting)
    path = tmp_path / "run.pt"
    with pytest.warns(InterruptedWarning, match="checkpoint saved"):
        part = sample_flat(LD, INIT, checkpoint=path, **kw)
    assert part.interrupted
    monkeypatch.setattr(WarmupAdapter, "update", original)
    resumed = sample_flat(LD, INIT, checkpoint=path, **kw)
    assert torch.equal(resumed.positions, full.positions)
    assert torch.equal(resumed.params.step_size, full.params.step_size)


def test_draws_depend_on_the_grouping_not_on_the_executor():
    """`sample(seed=s, executor=...)` used to differ from `sample(seed=s)` with nothing said:
    the grouping is now explicit (`chains_per_unit`) and in-process runs honour it."""
    opts = dict(OPTS, num_chains=3, seed=7)
    local = sample(normal_model, Y, chains_per_unit=2, **opts)
    remote = sample(normal_model, Y, chains_per_unit=2, executor="local", **opts)
    assert (local.draws["mu"] == remote.draws["mu"]).all()
    assert local.draws["mu"].shape == (3, 20)
    assert local.attrs["chains_per_unit"] == 2
    # an executor without chains_per_unit groups one chain per unit, like chains_per_unit=1
    one = sample(normal_model, Y, executor="local", **opts)
    assert (one.draws["mu"] == sample(normal_model, Y, chains_per_unit=1, **opts).draws["mu"]).all()
