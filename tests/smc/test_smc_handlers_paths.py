"""Laws of ppltk's handlers, the three paths of ``smc`` and the smoothers."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from _smc_helpers import kalman_1d
from pyro import poutine

from ppltk.handlers import (
    LogWeightMessenger,
    ReplayValuesMessenger,
    Suspended,
    SuspendMessenger,
    particle_plate,
    temper,
)
from ppltk.smc import LinearGaussianSSM, ffbs, model_path, particle_filter, particle_gibbs, smc

D = torch.float64


def static_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    pyro.factor("f", torch.tensor(-0.5))


Y = torch.tensor([0.3, -1.0, 2.0])


def joint(fn, mu=0.4):
    tr = poutine.trace(poutine.condition(fn, data={"mu": torch.tensor(mu)})).get_trace(Y)
    lat = sum(s["log_prob_sum"] for s in _lp(tr) if not s["is_observed"])
    obs = sum(s["log_prob_sum"] for s in _lp(tr) if s["is_observed"] and s["name"] != "mu")
    return float(tr.log_prob_sum()), float(lat), float(obs)


def _lp(tr):
    tr.compute_log_prob()
    return [s for s in tr.nodes.values() if s["type"] == "sample"]


def test_smc_temper_laws():
    full, prior, lik = joint(static_model)
    mu_lp = float(dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.4)))
    for beta in (0.0, 0.3, 1.0):
        tempered = joint(temper(static_model, beta=beta))[0]
        assert abs(tempered - (mu_lp + beta * (full - mu_lp))) < 1e-5
    # nesting composes multiplicatively; beta = 1 is the identity
    nested = joint(temper(temper(static_model, beta=0.5), beta=0.4))[0]
    assert abs(nested - joint(temper(static_model, beta=0.2))[0]) < 1e-5
    assert abs(joint(temper(static_model, beta=1.0))[0] - full) < 1e-6


def test_smc_particle_plate_and_log_weight():
    n = 7
    with pyro_seed_ctx(), LogWeightMessenger(n, 1) as lw, poutine.trace() as tr:
        with particle_plate(n, max_plate_nesting=1):
            static_model(Y)
    mu = tr.trace.nodes["mu"]["value"]
    assert mu.shape == (n, 1)
    expected = dist.Normal(mu, 1.0).log_prob(Y).sum(-1) - 0.5
    torch.testing.assert_close(lw.log_weight, expected)
    # masked-out observations carry no weight
    keep = torch.tensor([True, False, True])
    with pyro_seed_ctx(), LogWeightMessenger(n, 1) as lw2, poutine.trace() as tr2:
        with particle_plate(n, max_plate_nesting=1), poutine.mask(mask=keep):
            static_model(Y)
    mu2 = tr2.trace.nodes["mu"]["value"]
    # (Pyro's mask broadcasts over the scalar factor too: -0.5 for each kept entry)
    expected2 = dist.Normal(mu2, 1.0).log_prob(Y)[..., keep].sum(-1) - 0.5 * keep.sum()
    torch.testing.assert_close(lw2.log_weight, expected2)


def pyro_seed_ctx():
    from ppltk._rng import pyro_seed

    return pyro_seed(0)


def test_smc_suspend_and_replay():
    def seq(ys):
        x = pyro.sample("x0", dist.Normal(0.0, 1.0))
        for t, y in enumerate(ys):
            x = pyro.sample(f"x{t + 1}", dist.Normal(x, 1.0))
            pyro.sample(f"y{t}", dist.Normal(x, 1.0), obs=y)

    with poutine.trace() as tr:
        with pytest.raises(Suspended):
            with SuspendMessenger(1):
                seq(Y)
    names = [n for n, s in tr.trace.nodes.items() if s["type"] == "sample"]
    assert names == ["x0", "x1", "y0", "x2", "y1"]
    values = {"x0": torch.tensor(5.0)}
    tr2 = poutine.trace(ReplayValuesMessenger(values)(seq)).get_trace(Y)
    assert float(tr2.nodes["x0"]["value"]) == 5.0 and not tr2.nodes["x0"]["is_observed"]


# ---------------------------------------------------------------- the three paths of smc()
A, Q, R = 0.9, 1.0, 1.0


class InitStep:
    """Pyro SMCFilter-style model (Markov state dict)."""

    def init(self, state):
        state["t"] = 0

    def step(self, state, y):
        if state["t"] == 0:
            state["x"] = pyro.sample("x_0", dist.Normal(0.0, 1.0))
        else:
            state["x"] = pyro.sample(f"x_{state['t']}", dist.Normal(A * state["x"], Q**0.5))
        pyro.sample(f"y_{state['t']}", dist.Normal(state["x"], R**0.5), obs=y)
        state["t"] += 1


def program(ys):
    x = pyro.sample("x_0", dist.Normal(0.0, 1.0))
    for t in range(len(ys)):
        if t > 0:
            x = pyro.sample(f"x_{t}", dist.Normal(A * x, Q**0.5))
        pyro.sample(f"y_{t}", dist.Normal(x, R**0.5), obs=ys[t])


@pytest.mark.parametrize("kind", ["markov", "pyro-markov", "program", "replay"])
def test_smc_paths_match_kalman_evidence(kind):
    eye = torch.eye(1)
    ssm = LinearGaussianSSM(A * eye, eye, Q * eye, R * eye, torch.zeros(1), eye)
    _, ys = ssm.simulate(10, torch.Generator().manual_seed(0))
    model = {"markov": ssm, "pyro-markov": InitStep(), "program": program, "replay": program}
    model = model[kind]
    args = (ys,) if kind == "markov" else (ys[:, 0],)
    path = "replay" if kind == "replay" else None
    assert model_path(model, path) == kind
    logz = kalman_1d(ys[:, 0], A, Q, R)
    errs = torch.tensor(
        [
            smc(model, *args, num_particles=300, seed=s, progress=False, path=path).log_evidence
            - logz
            for s in range(8)
        ]
    )
    # 8 independent runs: mean within 5 se plus the -Var/2 log bias
    assert abs(errs.mean()) < 5 * errs.std() / math.sqrt(8) + errs.var() / 2 + 0.01, errs
    res = smc(model, *args, num_particles=300, seed=0, progress=False, path=path)
    assert res.attrs["path"] == kind and res.num_draws == 300
    if kind in ("program", "replay"):
        assert set(res.draws) == {f"x_{t}" for t in range(10)}
        res.to_arviz()


# ---------------------------------------------------------------- smoothing
def rts(ys, a=0.8, q=0.5, r=1.0):
    ms, Ps, m, P = [], [], 0.0, 1.0
    for t, y in enumerate(ys.tolist()):
        if t > 0:
            m, P = a * m, a * a * P + q
        K = P / (P + r)
        m, P = m + K * (y - m), (1 - K) * P
        ms.append(m)
        Ps.append(P)
    sm, sP = [ms[-1]], [Ps[-1]]
    for t in range(len(ms) - 2, -1, -1):
        G = Ps[t] * a / (a * a * Ps[t] + q)
        sm.insert(0, ms[t] + G * (sm[0] - a * ms[t]))
        sP.insert(0, Ps[t] + G * G * (sP[0] - (a * a * Ps[t] + q)))
    return torch.tensor(ms, dtype=D), torch.tensor(sm, dtype=D), torch.tensor(sP, dtype=D)


@pytest.fixture(scope="module")
def lg():
    eye = torch.eye(1, dtype=D)
    ssm = LinearGaussianSSM(0.8 * eye, eye, 0.5 * eye, eye, torch.zeros(1, dtype=D), eye)
    _, ys = ssm.simulate(25, torch.Generator().manual_seed(3))
    return ssm, ys, rts(ys[:, 0])


def test_smc_ffbs_matches_rts_smoother(lg):
    ssm, ys, (filt, smooth, svar) = lg
    n, m = 500, 300
    out = particle_filter(ssm, ys, n, store_history=True, seed=0)
    paths = ffbs(ssm, out, m, seed=1)[..., 0]
    # tolerance: trajectory MC error sP/M plus the particle approximation, taken as
    # 4 sP/N (conservative), at 4 sd per time step
    tol = 4 * torch.sqrt(svar * (1 / m + 4 / n))
    assert ((paths.mean(0) - smooth).abs() < tol).all()
    assert ((paths.var(0) / svar - 1).abs() < 0.4).all()
    # sharpness: the filtering means are not the smoothing means at this tolerance
    assert ((filt - smooth).abs() > tol).any()


def test_smc_particle_gibbs_matches_rts_smoother(lg):
    ssm, ys, (filt, smooth, svar) = lg
    res = particle_gibbs(ssm, ys, num_particles=10, num_samples=250, seed=0, progress=False)
    draws = res.draws["x"][0, 50:, :, 0]
    # correlated chain: effective size taken as S/5 (integrated autocorrelation <= 5 for PGAS
    # with N=10 on this model), 4 sd per time step
    tol = torch.from_numpy(4 * (svar.numpy() * 5 / len(draws)) ** 0.5)
    err = (torch.from_numpy(draws.mean(0)) - smooth).abs()
    assert (err < tol).all(), (err / tol).max()
    assert ((filt - smooth).abs() > tol).any()


def _plate_model(y):
    s = pyro.sample("s", dist.HalfNormal(1.0))
    with pyro.plate("g", 2):
        m = pyro.sample("m", dist.Normal(0.0, s))
        with pyro.plate("n", 3):
            pyro.sample("y", dist.Normal(m, 1.0), obs=y)


def _seq_model(y):
    x = pyro.sample("x0", dist.Normal(0.0, 1.0))
    for t in range(3):
        x = pyro.sample(f"x{t + 1}", dist.Normal(x, 1.0))
        pyro.sample(f"y{t}", dist.Normal(x, 1.0), obs=y[t, 0])


REGISTRY = [(static_model, Y), (_plate_model, torch.ones(3, 2)), (_seq_model, torch.ones(3, 2))]


@pytest.mark.parametrize("model,data", REGISTRY, ids=["static", "plates", "sequential"])
def test_smc_handler_laws_on_registry(model, data):
    from ppltk._rng import pyro_seed

    with pyro_seed(0):
        base = poutine.trace(model).get_trace(data)
    values = {
        n: s["value"]
        for n, s in base.nodes.items()
        if s["type"] == "sample" and not s["is_observed"]
    }
    # replay: once = twice, and the replayed trace has the recorded joint density
    once = poutine.trace(ReplayValuesMessenger(values)(model)).get_trace(data)
    twice = poutine.trace(
        ReplayValuesMessenger(values)(ReplayValuesMessenger(values)(model))
    ).get_trace(data)
    assert float(once.log_prob_sum()) == pytest.approx(float(base.log_prob_sum()))
    assert float(twice.log_prob_sum()) == pytest.approx(float(once.log_prob_sum()))
    # temper(1) is the identity; the log-weight messenger only observes (trace unchanged)
    t1 = poutine.trace(temper(ReplayValuesMessenger(values)(model), beta=1.0)).get_trace(data)
    assert float(t1.log_prob_sum()) == pytest.approx(float(base.log_prob_sum()))
    with LogWeightMessenger(1, 2) as lw, poutine.trace() as tr, particle_plate(1, 2):
        ReplayValuesMessenger(values)(model)(data)
    observed = sum(
        float(s["fn"].log_prob(s["value"]).sum() * s["scale"])
        for s in base.nodes.values()
        if s["type"] == "sample" and s["is_observed"]
    )
    assert float(lw.log_weight[0]) == pytest.approx(observed, rel=1e-5)
    assert float(tr.trace.log_prob_sum()) == pytest.approx(float(base.log_prob_sum()), rel=1e-5)


class PlatedInitStep:
    """Two independent AR(1) series inside a plate (needs max_plate_nesting=1)."""

    def init(self, state):
        with pyro.plate("series", 2, dim=-1):
            state["x"] = pyro.sample("x_init", dist.Normal(0.0, 1.0))

    def step(self, state, y):
        with pyro.plate("series", 2, dim=-1):
            state["x"] = pyro.sample("x", dist.Normal(0.9 * state["x"], 1.0))
            pyro.sample("obs", dist.Normal(state["x"], 1.0), obs=y)


def test_smc_pyro_markov_path_with_inner_plate():
    ys = torch.randn(8, 2, generator=torch.Generator().manual_seed(4))
    exact = 0.0
    for k in range(2):  # independent series: log Z is the sum of two 1-D Kalman evidences
        m, P = 0.0, 1.0
        for y in ys[:, k].tolist():
            m, P = 0.9 * m, 0.81 * P + 1.0
            S = P + 1.0
            exact += -0.5 * (math.log(2 * math.pi * S) + (y - m) ** 2 / S)
            m, P = m + P / S * (y - m), P - P * P / S
    runs = [
        smc(PlatedInitStep(), ys, num_particles=300, max_plate_nesting=1, seed=s, progress=False)
        for s in range(8)
    ]
    errs = torch.tensor([r.log_evidence - exact for r in runs])
    assert abs(errs.mean()) < 5 * errs.std() / math.sqrt(8) + errs.var() / 2 + 0.01, errs
    assert runs[0].draws["x"].shape == (1, 300, 2)  # particle dim -2, series dim -1
