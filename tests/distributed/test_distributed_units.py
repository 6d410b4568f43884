"""In-process tests of ppltk.distributed: seeds, map_units, merging, chain groups, SMC islands."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppltk import Result
from ppltk._rng import make_generator
from ppltk.distributed import (
    InProcessExecutor,
    get_executor,
    log_mean_exp,
    map_seeded,
    map_units,
    merge_results,
    sample_chains,
    smc_islands,
    split_chains,
    unit_seeds,
)
from ppltk.errors import ArgumentError, DivergenceWarning, ShapeError


def fake_chains(model, *args, num_chains, seed, num_samples=7, **kwargs):
    """Stand-in MCMC method: i.i.d. draws from the seed, chain index in a stat."""
    gen = make_generator(seed)
    draws = torch.randn(num_chains, num_samples, 2, generator=gen, dtype=torch.float64)
    lp = torch.zeros(num_chains, num_samples, dtype=torch.float64)
    return Result(draws={"theta": draws}, stats={"lp": lp}, method="fake")


def fake_island(model, *args, seed, log_z=0.0, num_particles=5):
    """Stand-in SMC method: particles from the seed and log Z = log_z + N(0, 1) noise."""
    gen = make_generator(seed)
    x = torch.randn(1, num_particles, generator=gen, dtype=torch.float64)
    noise = torch.randn((), generator=gen, dtype=torch.float64).item()
    return Result(draws={"x": x}, log_evidence=log_z + noise, method="fake-smc")


def model():  # never called by the fake methods
    raise AssertionError


def test_unit_seeds_deterministic_distinct_and_prefix_stable():
    a, b = unit_seeds(5, 50), unit_seeds(5, 50)
    assert a == b
    assert len(set(a)) == 50
    assert unit_seeds(5, 10) == a[:10]  # seed of unit i does not depend on how many units
    assert unit_seeds(6, 10) != a[:10]
    assert all(0 <= s < 2**62 for s in a)


def test_unit_seeds_from_generator_and_bad_seed():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert unit_seeds(g1, 4) == unit_seeds(g2, 4)
    with pytest.raises(ArgumentError, match="seed"):
        unit_seeds(-1, 3)
    with pytest.raises(ArgumentError, match="num_units"):
        unit_seeds(0, -2)


def test_map_units_in_process_order_and_errors():
    assert map_units(lambda u: u * u, range(6), progress=False) == [0, 1, 4, 9, 16, 25]
    assert map_units(abs, [], progress=False) == []
    with pytest.raises(ArgumentError, match="fn"):
        map_units(3, [1])
    with pytest.raises(ArgumentError, match="retries"):
        map_units(abs, [1], retries=-1)
    with pytest.raises(ArgumentError, match="executor"):
        map_units(abs, [1], executor="spark")


def test_get_executor_local_names():
    for name in (None, "local", "inprocess"):
        with get_executor(name) as ex:
            assert isinstance(ex, InProcessExecutor)
    mine = InProcessExecutor()
    with get_executor(mine) as ex:
        assert ex is mine


def test_map_seeded_gives_each_item_its_unit_seed():
    out = map_seeded(lambda item, seed: (item, seed), ["a", "b", "c"], seed=9, progress=False)
    assert out == list(zip("abc", unit_seeds(9, 3)))


def test_log_mean_exp_matches_direct_formula():
    v = np.array([-1.0, 0.5, 2.0, -np.inf])
    assert log_mean_exp(v) == pytest.approx(math.log(np.exp(v).mean()), rel=1e-12)
    assert log_mean_exp([1000.0, 1000.0]) == pytest.approx(1000.0)  # no overflow
    with pytest.raises(ArgumentError):
        log_mean_exp([])


def test_merge_results_concatenates_chains_in_order():
    parts = [fake_chains(None, num_chains=c, seed=s) for c, s in ((2, 1), (1, 2), (3, 3))]
    merged = merge_results(parts)
    assert merged.num_chains == 6 and merged.num_draws == 7
    np.testing.assert_array_equal(merged["theta"][2], parts[1]["theta"][0])
    np.testing.assert_array_equal(merged["theta"][3:], parts[2]["theta"])
    assert merged.log_evidence is None and merged.method == "fake"


def test_merge_results_keeps_equal_attrs_and_lists_differing_ones():
    parts = [fake_chains(None, num_chains=1, seed=s) for s in (1, 2)]
    for k, part in enumerate(parts):
        part.attrs = {
            "step": torch.tensor([0.1, 0.2]),  # equal tensors
            "mass": np.eye(2),  # equal arrays
            "tuned": {"eps": torch.tensor(0.5), "k": [1, 2]},  # equal nested containers
            "init": torch.full((2,), float(k)),  # differing tensors
            "shape": torch.zeros(k + 1),  # differing shapes
            "name": "run",
        }
    attrs = merge_results(parts).attrs
    assert torch.equal(attrs["step"], parts[0].attrs["step"])
    assert isinstance(attrs["mass"], np.ndarray) and attrs["name"] == "run"
    assert isinstance(attrs["tuned"], dict) and attrs["tuned"]["k"] == [1, 2]
    assert isinstance(attrs["init"], list) and len(attrs["init"]) == 2
    assert isinstance(attrs["shape"], list) and len(attrs["shape"]) == 2


def test_merge_results_rejects_mismatch():
    a = fake_chains(None, num_chains=1, seed=0)
    with pytest.raises(ShapeError, match="theta"):
        merge_results(
            [
                a,
                Result(
                    draws={"theta": np.zeros((1, 7, 3))},
                    stats={"lp": np.zeros((1, 7))},
                    method="fake",
                ),
            ]
        )
    with pytest.raises(ArgumentError, match="keys"):
        merge_results([a, Result(draws={"phi": np.zeros((1, 7, 2))}, method="fake")])
    with pytest.raises(ArgumentError):
        merge_results([])


def test_split_chains():
    assert split_chains(5, 2) == [2, 2, 1]
    assert split_chains(4, 4) == [4]
    with pytest.raises(ArgumentError, match="chains_per_unit"):
        split_chains(4, 0)


def test_sample_chains_groups_use_unit_seeds_and_keep_chain_ids():
    res = sample_chains(
        model, method=fake_chains, num_chains=5, chains_per_unit=2, seed=11, progress=False
    )
    seeds = unit_seeds(11, 3)
    assert res.attrs["unit_seeds"] == seeds and res.attrs["seed"] == 11
    expected = [fake_chains(model, num_chains=n, seed=s) for n, s in zip((2, 2, 1), seeds)]
    np.testing.assert_array_equal(res["theta"], np.concatenate([e["theta"] for e in expected]))
    post = res.to_arviz().posterior  # one InferenceData; chain c is global chain c
    assert post.chain.values.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(post["theta"].sel(chain=2).values, expected[1]["theta"][0])


def test_sample_chains_checks_the_method_result():
    def wrong(model, *args, num_chains, seed):
        return fake_chains(model, num_chains=num_chains + 1, seed=seed)

    with pytest.raises(ArgumentError, match="2 chains"):
        sample_chains(model, method=wrong, num_chains=2, chains_per_unit=2, progress=False)


def test_smc_islands_combine_evidence_by_log_mean_exp():
    res = smc_islands(model, method=fake_island, num_islands=6, seed=4, log_z=-3.0, progress=False)
    islands = [fake_island(model, seed=s, log_z=-3.0) for s in unit_seeds(4, 6)]
    log_z = np.array([i.log_evidence for i in islands])
    assert res.log_evidence == pytest.approx(math.log(np.mean(np.exp(log_z))), rel=1e-12)
    assert res.attrs["island_log_evidence"] == pytest.approx(log_z.tolist())
    weights = np.exp(log_z) / np.exp(log_z).sum()
    assert res.attrs["island_weights"] == pytest.approx(weights.tolist())
    np.testing.assert_allclose(np.exp(res.stats["island_log_weight"][:, 0]), weights)
    np.testing.assert_array_equal(res["x"][2], islands[2]["x"][0])


def test_smc_islands_evidence_is_unbiased_where_mean_log_is_not():
    # Islands return log Z_i = log Z + e_i - s^2/2, e_i ~ N(0, s^2): E[Z_i] = Z exactly, while
    # E[log Z_i] = log Z - s^2/2. With s = 1 and 400 islands, log-mean-exp has standard error
    # ~ sqrt((e^{s^2} - 1) / 400) = 0.066 around log Z (delta method), so |error| < 0.3 is > 4 se;
    # the mean of logs sits 0.5 below (its se is 0.05), so it must fail the same bound.
    def island(model, *, seed):
        gen = make_generator(seed)
        e = torch.randn((), generator=gen, dtype=torch.float64).item()
        return Result(draws={"x": np.zeros((1, 1))}, log_evidence=2.0 + e - 0.5)

    res = smc_islands(model, method=island, num_islands=400, seed=0, progress=False)
    assert abs(res.log_evidence - 2.0) < 0.3
    assert abs(np.mean(res.attrs["island_log_evidence"]) - 2.0) > 0.3


def test_smc_islands_requires_log_evidence_and_known_method():
    with pytest.raises(ArgumentError, match="log_evidence"):
        smc_islands(
            model,
            method=lambda m, *, seed: fake_chains(m, num_chains=1, seed=seed),
            num_islands=2,
            progress=False,
        )
    with pytest.raises(ArgumentError, match="method"):
        smc_islands(model, method="gibbs", num_islands=2)
    with pytest.raises(ArgumentError, match="num_islands"):
        smc_islands(model, method=fake_island, num_islands=0)


def test_smc_islands_with_tempered_smc_match_the_exact_evidence():
    from ppltk.calibration import normal_mean_model

    n = 8
    y = torch.linspace(-1.0, 2.0, n)
    # exact: y ~ N(0, I + 1 1^T) for mu ~ N(0, 1), y_i ~ N(mu, 1)
    cov = torch.eye(n, dtype=torch.float64) + torch.ones(n, n, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov)
    log_z = exact.log_prob(y.double()).item()
    res = smc_islands(
        normal_mean_model, n, y=y, num_islands=8, num_particles=200, seed=0, progress=False
    )
    assert res.num_chains == 8 and res.method == "tempered_smc"
    islands = np.array(res.attrs["island_log_evidence"])
    # delta method: se(log mean Z_i) ~ sd(Z_i / Z) / sqrt(n) ~ sd(log Z_i) / sqrt(n); 4 se
    tol = 4 * islands.std(ddof=1) / np.sqrt(len(islands))
    assert abs(res.log_evidence - log_z) < tol
    assert res.log_evidence == pytest.approx(log_mean_exp(islands), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=5),
    draws=st.integers(1, 6),
)
def test_merge_results_inverts_a_chain_split(sizes, draws):
    # law: splitting a result's chains into consecutive groups and merging gives it back
    total = sum(sizes)
    whole = Result(
        draws={"a": np.arange(total * draws * 3.0).reshape(total, draws, 3)},
        stats={"lp": np.arange(total * draws * 1.0).reshape(total, draws)},
        method="m",
    )
    cuts = np.cumsum([0] + sizes)
    parts = [
        Result(draws={"a": whole["a"][i:j]}, stats={"lp": whole.stats["lp"][i:j]}, method="m")
        for i, j in zip(cuts[:-1], cuts[1:])
    ]
    merged = merge_results(parts)
    np.testing.assert_array_equal(merged["a"], whole["a"])
    np.testing.assert_array_equal(merged.stats["lp"], whole.stats["lp"])
    assert split_chains(total, max(sizes)) == [max(sizes)] * (total // max(sizes)) + (
        [total % max(sizes)] if total % max(sizes) else []
    )


def warning_chains(model, *args, num_chains, seed):
    """Stand-in method that diverges in every group but the first and says so."""
    res = fake_chains(model, num_chains=num_chains, seed=seed)
    first = seed == unit_seeds(0, 3)[0]
    res.attrs["num_divergences"] = 0 if first else 2
    if not first:
        warnings.warn("2 divergent transitions", DivergenceWarning, stacklevel=2)
    return res


def test_sample_chains_reemits_group_warnings_and_sums_divergences():
    with pytest.warns(DivergenceWarning) as record:
        res = sample_chains(model, method=warning_chains, num_chains=3, seed=0, progress=False)
    messages = sorted(str(w.message) for w in record)
    assert messages == [f"chain group {g}: 2 divergent transitions" for g in (1, 2)]
    assert res.attrs["num_divergences"] == 4


def test_exactly_once_check_names_missing_and_duplicated_units():
    from ppltk.distributed import DistributedError
    from ppltk.distributed._dask import _check_exactly_once

    _check_exactly_once([1, 1, 1])
    with pytest.raises(DistributedError, match=r"units \[1, 3\] came back \[0, 2\] times"):
        _check_exactly_once([1, 0, 1, 2])


def test_mcmc_sample_delegates_to_the_executor():
    """``ppltk.mcmc.sample(executor=...)`` equals ``sample_chains`` with the same seed."""
    import pyro
    import pyro.distributions as dist
    import torch

    from ppltk.distributed import sample_chains
    from ppltk.errors import ArgumentError
    from ppltk.mcmc import sample

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = torch.tensor(0.3)
    opts = dict(kernel="mh", num_chains=2, num_warmup=20, num_samples=30, seed=5, progress=False)
    via_sample = sample(model, y, executor="local", **opts)
    opts["method"] = opts.pop("kernel")
    direct = sample_chains(model, y, executor="local", **opts)
    np.testing.assert_array_equal(via_sample["mu"], direct["mu"])
    with pytest.raises(ArgumentError, match="checkpoint"):
        sample(model, y, executor="local", checkpoint="x.pt", kernel="mh")
