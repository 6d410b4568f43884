"""Simulation-based calibration: ranks, uniformity test, prior simulation and SBC verdicts."""

import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ppltk import Result
from ppltk.calibration import (
    NormalMeanPosterior,
    SBCResult,
    normal_mean_model,
    rank_bins,
    rank_statistics,
    sbc,
    simulate_prior,
    uniformity_pvalue,
    unobserve,
)
from ppltk.errors import ArgumentError, DivergenceWarning, ModelStructureError

L = 19  # posterior draws per replication: ranks in 0..19, 20 values, 10 bins of 2


def two_site_model(y=None):
    theta = pyro.sample("theta", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    pyro.sample("y", dist.Normal(theta, 1.0).to_event(1), obs=y)


def test_rank_statistics_exact_counts_and_ties():
    gen = torch.Generator().manual_seed(0)
    post = np.array([[0.1, 5.0], [0.2, 5.0], [0.3, 5.0], [0.4, 6.0]])
    truth = torch.tensor([0.25, 5.0])
    ranks = [rank_statistics(truth, post, gen) for _ in range(400)]
    assert all(r[0] == 2 for r in ranks)  # two draws below 0.25
    # three ties at 5.0: rank uniform on {0, 1, 2, 3}; 400 draws give ~100 each (sd ~8.7)
    counts = np.bincount([r[1] for r in ranks], minlength=4)
    assert counts.sum() == 400 and counts.min() > 100 - 5 * 8.7


def test_uniformity_pvalue_matches_scipy_and_flags_skew():
    ranks = np.arange(200) % (L + 1)  # perfectly uniform
    assert uniformity_pvalue(ranks, L, 10) == pytest.approx(1.0)
    skew = np.concatenate([np.zeros(60, int), np.arange(140) % (L + 1)])
    observed = np.histogram(skew, bins=rank_bins(L, 10))[0]
    expected = stats.chisquare(observed, np.full(10, 20.0)).pvalue
    assert uniformity_pvalue(skew, L, 10) == pytest.approx(expected)
    assert expected < 1e-6
    np.testing.assert_array_equal(rank_bins(4, 2), [0, 3, 5])  # uneven bins when 5 % 2 != 0
    with pytest.raises(ArgumentError, match="ranks"):
        uniformity_pvalue(np.array([0, L + 1]), L, 10)


def test_unobserve_samples_named_sites_only_and_is_idempotent():
    y = torch.zeros(2)
    tr = pyro.poutine.trace(unobserve(two_site_model, ["y"])).get_trace(y=y)
    assert not tr.nodes["y"]["is_observed"] and not torch.equal(tr.nodes["y"]["value"], y)
    twice = pyro.poutine.trace(unobserve(unobserve(two_site_model, ["y"]), ["y"])).get_trace(y=y)
    assert not twice.nodes["y"]["is_observed"]
    kept = pyro.poutine.trace(unobserve(two_site_model, ["z"])).get_trace(y=y)
    assert kept.nodes["y"]["is_observed"] and torch.equal(kept.nodes["y"]["value"], y)


def test_simulate_prior_is_seeded_and_checks_sites():
    lat1, data1 = simulate_prior(normal_mean_model, (5,), {}, ("y",), seed=3)
    lat2, data2 = simulate_prior(normal_mean_model, (5,), {}, ("y",), seed=3)
    assert list(lat1) == ["mu"] and data1["y"].shape == (5,)
    assert torch.equal(lat1["mu"], lat2["mu"]) and torch.equal(data1["y"], data2["y"])
    with pytest.raises(ModelStructureError, match="obs_y"):
        simulate_prior(normal_mean_model, (5,), {}, ("obs_y",), seed=0)


# With N = 200 replications, L = 19 and 10 bins (20 expected per bin), a correct sampler's
# p-value is Uniform(0, 1): it passes at alpha = 0.01 with probability 0.99 (fixed seed here).
# For large L the normalised rank is Phi((theta - m) / s_used) with theta - m ~ N(0, s^2):
# - half the width: Phi(2 Z); P(rank in the lowest tenth) = P(Z < -0.64) = 0.26 instead of 0.10,
#   same at the top: expected chi-square ~ 200 * 2 * 0.16^2 / 0.1 ~ 100 on 9 dof;
# - shifted by one sd: Phi(Z - 1) has mean Phi(-1/sqrt 2) = 0.24 instead of 0.5;
# - twice the width: Phi(Z / 2); P(lowest tenth) = P(Z < -2.56) = 0.005 instead of 0.10.
# Each gives p << 1e-6 at this size, so a correct implementation flags all three.
@pytest.mark.parametrize(
    "sampler, should_pass",
    [
        (NormalMeanPosterior(num_draws=L), True),
        (
            NormalMeanPosterior(num_draws=L, prior_scale=1.0, noise_scale=1.0, scale_factor=0.5),
            False,
        ),
        (NormalMeanPosterior(num_draws=L, shift=1.0), False),
        (NormalMeanPosterior(num_draws=L, scale_factor=2.0), False),
    ],
)
def test_sbc_passes_exact_sampler_and_flags_wrong_ones(sampler, should_pass):
    res = sbc(
        normal_mean_model,
        sampler,
        200,
        args=(10,),
        num_draws=L,
        num_bins=10,
        seed=1,
        progress=False,
    )
    assert isinstance(res, SBCResult)
    assert res.num_simulations == 200 and res.num_bins == 10
    assert res.ranks["mu"].min() >= 0 and res.ranks["mu"].max() <= L
    assert res.passed(alpha=0.01) is should_pass
    if not should_pass:
        assert res.p_values["mu"] < 1e-6 and res.failed(0.01) == ["mu"]


def test_sbc_ranks_do_not_depend_on_grouping_and_use_prior_draws():
    a = sbc(
        normal_mean_model, NormalMeanPosterior(num_draws=L), 30, num_draws=L, seed=2, progress=False
    )
    b = sbc(
        normal_mean_model,
        NormalMeanPosterior(num_draws=L),
        30,
        num_draws=L,
        seed=2,
        replications_per_unit=7,
        progress=False,
    )
    np.testing.assert_array_equal(a.ranks["mu"], b.ranks["mu"])
    np.testing.assert_array_equal(a.prior_draws["mu"], b.prior_draws["mu"])
    # the prior draws are N(0, 1): 30 of them have mean within 4 / sqrt(30) of 0
    assert abs(a.prior_draws["mu"].mean()) < 4 / np.sqrt(30)


def test_sbc_vector_site_and_thinning():
    def exact(model, args, data, seed):
        # posterior of theta | y with unit prior and noise: N(y / 2, 1 / 2), per component
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(1, 2 * L, 2, generator=gen, dtype=torch.float64)
        return Result(draws={"theta": data["y"].double() / 2 + z / np.sqrt(2)})

    res = sbc(two_site_model, exact, 100, num_draws=L, thin=2, seed=0, progress=False)
    assert sorted(res.ranks) == ["theta[0]", "theta[1]"]
    assert res.passed(0.01)
    with pytest.raises(ArgumentError, match="num_draws"):
        sbc(two_site_model, exact, 10, num_draws=L, thin=3, seed=0, progress=False)


def test_sbc_argument_errors():
    with pytest.raises(ArgumentError, match="method"):
        sbc(normal_mean_model, "vi", 10)
    with pytest.raises(ArgumentError, match="num_warmup"):
        sbc(normal_mean_model, NormalMeanPosterior(), 5, num_warmup=10)
    with pytest.raises(ArgumentError, match="num_simulations"):
        sbc(normal_mean_model, NormalMeanPosterior(), 1)
    with pytest.raises(ArgumentError, match="sigma"):
        sbc(normal_mean_model, NormalMeanPosterior(), 5, params=("sigma",), progress=False)


def test_plot_ranks_returns_a_figure():
    res = sbc(
        normal_mean_model, NormalMeanPosterior(num_draws=L), 40, num_draws=L, seed=0, progress=False
    )
    fig = res.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1
    matplotlib.pyplot.close(fig)


def test_sbc_runs_string_methods_through_ppltk_mcmc():
    # smoke scale: the ranks come from ppltk.mcmc.sample draws (thinned), in 0..L
    res = sbc(
        normal_mean_model,
        "mh",
        6,
        args=(5,),
        num_draws=4,
        thin=2,
        num_warmup=50,
        seed=0,
        progress=False,
    )
    assert res.method == "mh" and res.num_simulations == 6
    assert 0 <= res.ranks["mu"].min() and res.ranks["mu"].max() <= 4


@pytest.mark.slow
def test_sbc_nuts_is_calibrated_on_conjugate_model():
    # N = 100, L = 19 (thin 2), 10 bins of 10 expected: NUTS on a 1-d Gaussian posterior is
    # near-independent after thinning, so a calibrated sampler passes at alpha = 0.01.
    res = sbc(
        normal_mean_model,
        "nuts",
        100,
        args=(5,),
        num_draws=19,
        thin=2,
        num_warmup=200,
        num_bins=10,
        seed=0,
        progress=False,
    )
    assert res.passed(0.01), res.p_values


@settings(max_examples=40, deadline=None)
@given(num_draws=st.integers(1, 200), num_bins=st.integers(1, 30))
def test_rank_bins_partition_all_rank_values_evenly(num_draws, num_bins):
    num_bins = min(num_bins, num_draws + 1)
    edges = rank_bins(num_draws, num_bins)
    sizes = np.diff(edges)
    assert edges[0] == 0 and edges[-1] == num_draws + 1 and len(sizes) == num_bins
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 1


def test_sbc_counts_divergences_and_warns_once():
    exact = NormalMeanPosterior(num_draws=L)

    def diverging(model, args, data, seed):
        res = exact(model, args, data, seed)
        res.attrs["num_divergences"] = seed % 2  # about half the replications "diverge"
        warnings.warn("diverged", DivergenceWarning, stacklevel=2)  # silenced inside SBC
        return res

    with pytest.warns(DivergenceWarning) as record:
        res = sbc(normal_mean_model, diverging, 30, num_draws=L, seed=0, progress=False)
    assert len(record) == 1
    counts = res.attrs["num_divergences"]
    assert counts.shape == (30,) and set(counts.tolist()) == {0, 1}
    assert f"{counts.sum()} of 30 SBC replications" in str(record[0].message)


def test_calibration_demo_rows(tmp_path):
    from ppltk.demo.calibration import run_demo

    rows = run_demo(fast=True, outdir=tmp_path)
    assert all(set(r) == {"capability", "check", "value", "reference", "figure"} for r in rows)
    exact, narrow, islands = rows
    assert exact["value"] > 0.01 and narrow["value"] < 0.01
    assert Path(exact["figure"]).exists() and Path(narrow["figure"]).exists()
    # sd of one island's log-evidence here is ~0.05 (measured over 160 islands), so the pooled
    # estimate of 4 islands has se ~0.025: 0.2 is 8 se
    assert abs(islands["value"] - islands["reference"]) < 0.2
