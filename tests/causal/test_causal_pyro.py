"""Pyro bridge: ``do`` as a handler, discrete models <-> tables, exact vs Monte Carlo."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from ppltk.causal import (
    cpts_to_model,
    do,
    exact_interventional,
    interventional,
    model_to_cpts,
    monte_carlo_mean,
    sample_interventional,
)
from ppltk.errors import ModelStructureError

P_S = torch.tensor([0.2, 0.8])
P_T = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
P_C = torch.tensor([[0.1, 0.3, 0.5], [0.4, 0.6, 0.9]])


def smoking_model():
    h = pyro.sample("H", dist.Bernoulli(0.3))
    s = pyro.sample("S", dist.Bernoulli(P_S[h.long()]))
    t = pyro.sample("T", dist.Categorical(P_T[s.long()]))
    return pyro.sample("C", dist.Bernoulli(P_C[h.long(), t]))


def _exact_c_given_do_s(s):
    """P(C=1 | do(S=s)) = Σ_t P(t|s) Σ_h P(h) P(C=1|h,t), by hand."""
    p_h = torch.tensor([0.7, 0.3])
    return float((P_T[s] * (p_h[:, None] * P_C).sum(0)).sum())


def test_causal_do_records_value_and_cuts_the_factor():
    tr = poutine.trace(do(smoking_model, {"S": 1.0})).get_trace()
    site = tr.nodes["S"]
    assert float(site["value"]) == 1.0 and site["infer"]["do"] == 1.0
    assert isinstance(site["fn"], dist.Delta)
    assert float(site["fn"].log_prob(site["value"])) == 0.0  # P(S | H) is cut out
    assert isinstance(site["infer"]["do_original"], dist.Bernoulli)
    # other sites untouched
    assert isinstance(tr.nodes["T"]["fn"], dist.Categorical)


def test_causal_do_laws_idempotent_and_commutes_with_trace():
    once = do(smoking_model, {"S": 0.0})
    twice = do(do(smoking_model, {"S": 0.0}), {"S": 0.0})
    for m in (once, twice):
        with pyro.poutine.seed(rng_seed=3):
            tr = poutine.trace(m).get_trace()
        assert float(tr.nodes["S"]["value"]) == 0.0
    a = exact_interventional(once, ("C",))
    b = exact_interventional(twice, ("C",))
    assert torch.allclose(a, b)


def test_causal_model_to_cpts_round_trip_and_exact_answer():
    dm = model_to_cpts(smoking_model)
    assert set(dm.graph.edges) == {("H", "S"), ("H", "C"), ("S", "T"), ("T", "C")}
    assert torch.allclose(dm.cpts["C"][1][..., 1], P_C)
    assert torch.allclose(dm.cpts["T"][1], P_T)
    back = model_to_cpts(cpts_to_model(dm.cpts))
    for v in dm.cpts:
        assert back.cpts[v][0] == dm.cpts[v][0]
        assert torch.allclose(back.cpts[v][1], dm.cpts[v][1])
    for s in (0, 1):
        via_do = exact_interventional(smoking_model, ("C",), {"S": float(s)})
        via_cut = interventional(dm.graph, dm.cpts, ("C",), {"S": s})
        assert torch.allclose(via_do, via_cut)
        assert abs(float(via_do[1]) - _exact_c_given_do_s(s)) < 1e-6


def test_causal_soft_intervention_through_pyro():
    soft = exact_interventional(smoking_model, ("C",), {"S": dist.Bernoulli(0.25)})
    want = 0.75 * _exact_c_given_do_s(0) + 0.25 * _exact_c_given_do_s(1)
    assert abs(float(soft[1]) - want) < 1e-6


@pytest.mark.parametrize("spec, s_mix", [(1.0, 1.0), (dist.Bernoulli(0.25), 0.25)])
def test_causal_monte_carlo_under_do_converges_to_exact(spec, s_mix):
    n = 20000
    draws = sample_interventional(smoking_model, {"S": spec}, n, seed=11)
    mean, se = monte_carlo_mean(draws["C"])
    want = (1 - s_mix) * _exact_c_given_do_s(0) + s_mix * _exact_c_given_do_s(1)
    # Bernoulli mean: SE = sqrt(p(1-p)/n) ≈ 0.0035; a 4-SE band fails w.p. < 1e-4
    assert abs(float(mean) - want) < 4 * float(se)
    if not isinstance(spec, float):
        assert abs(float(draws["S"].mean()) - s_mix) < 4 * (s_mix * (1 - s_mix) / n) ** 0.5


def test_causal_continuous_model_under_do():
    def model():
        u = pyro.sample("U", dist.Normal(0.0, 1.0))
        x = pyro.sample("X", dist.Normal(u, 1.0))
        return pyro.sample("Y", dist.Normal(2.0 * x + 3.0 * u, 1.0))

    n = 20000
    draws = sample_interventional(model, {"X": torch.tensor(1.5)}, n, seed=0)
    mean, se = monte_carlo_mean(draws["Y"])
    # E[Y | do(X=1.5)] = 3, Var = 9 + 1, SE = sqrt(10 / n) ≈ 0.022
    assert abs(float(mean) - 3.0) < 4 * float(se)
    obs = sample_interventional(model, {}, n, seed=1)
    slope = (obs["X"] * obs["Y"]).mean() / (obs["X"] ** 2).mean()
    assert abs(float(slope) - 3.5) < 0.1  # the confounded regression slope is not 2


def test_causal_model_to_cpts_rejects_unsupported_models():
    def continuous():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    def observed():
        pyro.sample("x", dist.Bernoulli(0.5), obs=torch.tensor(1.0))

    def plated():
        with pyro.plate("p", 3):
            pyro.sample("x", dist.Bernoulli(0.5))

    for m, match in ((continuous, "finite support"), (observed, "evidence="), (plated, "plates")):
        with pytest.raises(ModelStructureError, match=match):
            model_to_cpts(m)
