"""Blocks: population, resampling invariants, proposals, argument checks, reproducibility."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from _smc_helpers import kalman_1d

from ppltk.errors import ArgumentError
from ppltk.smc import (
    GuideProposal,
    LinearGaussianSSM,
    Population,
    ess,
    particle_filter,
    reindex,
    resample,
    smc,
    systematic,
)

D = torch.float64


def test_smc_ess_and_reindex():
    assert float(ess(torch.zeros(10))) == pytest.approx(10.0)
    assert float(ess(torch.tensor([0.0, -math.inf, -math.inf]))) == pytest.approx(1.0)
    # log-space ESS is exact for weights hundreds of nats apart
    assert float(ess(torch.tensor([1000.0, 1000.0, 0.0]))) == pytest.approx(2.0)
    anc = torch.tensor([[2, 2, 0], [1, 0, 0]])
    tree = {"a": torch.arange(6.0).reshape(2, 3), "b": (torch.ones(2, 3, 4),), "c": torch.ones(5)}
    out = reindex(tree, anc)
    assert out["a"].tolist() == [[2.0, 2.0, 0.0], [4.0, 3.0, 3.0]]
    assert out["b"][0].shape == (2, 3, 4) and out["c"] is tree["c"]


@pytest.mark.parametrize("scheme", ["multinomial", "stratified", "systematic", "residual"])
def test_smc_resample_keeps_evidence_and_masks_rows(scheme):
    g = torch.Generator().manual_seed(0)
    logw = torch.randn(3, 50, dtype=D, generator=g) * 2
    logw[1] = 0.0  # ESS = N: not resampled at threshold 0.5
    pop = Population(torch.randn(3, 50, 2, dtype=D, generator=g), logw, torch.zeros(3, dtype=D))
    before = pop.log_evidence_estimate()
    new, mask, anc = resample(pop, scheme, g, ess_threshold=0.5)
    torch.testing.assert_close(new.log_evidence_estimate(), before)
    assert mask.tolist() == [True, False, True]
    assert (anc[1] == torch.arange(50)).all() and (new.log_weights[0] == 0).all()
    torch.testing.assert_close(new.particles[1], pop.particles[1])


def test_smc_systematic_float64_cumsum_at_large_n():
    # equal float32 weights at N = 2^20: a float32 cumsum drifts by ~1e-3 and would shift
    # ancestors; in float64 each particle keeps exactly one copy for every uniform.
    n = 2**20
    anc = systematic(torch.zeros(n), torch.Generator().manual_seed(0))
    assert torch.equal(anc, torch.arange(n))


def test_smc_argument_errors():
    eye = torch.eye(1, dtype=D)
    ssm = LinearGaussianSSM(eye, eye, eye, eye, torch.zeros(1, dtype=D), eye)
    ys = torch.zeros(3, 1, dtype=D)
    with pytest.raises(ArgumentError, match="num_particles"):
        particle_filter(ssm, ys, 0)
    with pytest.raises(ArgumentError, match="ess_threshold"):
        particle_filter(ssm, ys, 10, ess_threshold=2.0)
    with pytest.raises(ArgumentError, match="resampling"):
        particle_filter(ssm, ys, 10, resampling="nope")
    with pytest.raises(ArgumentError, match="seed"):
        particle_filter(ssm, ys, 10, seed="x")


def test_smc_guide_proposal_unbiased():
    eye = torch.eye(1, dtype=D)
    ssm = LinearGaussianSSM(0.9 * eye, eye, eye, eye, torch.zeros(1, dtype=D), eye)
    _, ys = ssm.simulate(15, torch.Generator().manual_seed(0))

    def guide(prev, t, y, shape, generator):
        # a deliberately imperfect proposal: N(y_t / 2 + 0.45 x_{t-1}, 0.8^2)
        loc = y / 2 if prev is None else y / 2 + 0.45 * prev
        loc = loc.expand(tuple(shape) + (1,))
        x = loc + 0.8 * torch.randn(loc.shape, dtype=D, generator=generator)
        return x, dist.Normal(loc, 0.8).log_prob(x)[..., 0]

    out = particle_filter(ssm, ys, 200, proposal=GuideProposal(guide), batch_shape=(100,))
    err = out.log_evidence - kalman_1d(ys[:, 0])
    ratio = err.exp()
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / 10


class Model:
    def init(self, state):
        state["x"] = pyro.sample("x_init", dist.Normal(0.0, 1.0))

    def step(self, state, y):
        state["x"] = pyro.sample("x", dist.Normal(0.9 * state["x"], 1.0))
        pyro.sample("obs", dist.Normal(state["x"], 1.0), obs=y)


class Guide:
    def init(self, state):
        pyro.sample("x_init", dist.Normal(0.0, 1.0))

    def step(self, state, y):
        pyro.sample("x", dist.Normal(0.45 * state["x"] + 0.5 * y, 0.8))


@pytest.mark.parametrize("guide", [None, Guide()])
def test_smc_pyro_init_step_with_and_without_guide(guide):
    ys = torch.randn(10, generator=torch.Generator().manual_seed(1))
    # x_init ~ N(0,1) then a move before y_0: x_0 ~ N(0, 1.81)
    ll = kalman_1d(ys, p0=1.81)
    errs = torch.tensor(
        [
            smc(Model(), ys, guide=guide, num_particles=200, seed=s, progress=False).log_evidence
            - ll
            for s in range(8)
        ]
    )
    assert abs(errs.mean()) < 5 * errs.std() / math.sqrt(8) + errs.var() / 2 + 0.01, errs


def test_smc_result_reproducible_and_arviz():
    eye = torch.eye(1, dtype=D)
    ssm = LinearGaussianSSM(0.9 * eye, eye, eye, eye, torch.zeros(1, dtype=D), eye)
    _, ys = ssm.simulate(10, torch.Generator().manual_seed(0))
    a = smc(ssm, ys, num_particles=100, seed=3, progress=False)
    b = smc(ssm, ys, num_particles=100, seed=3, progress=False)
    c = smc(ssm, ys, num_particles=100, seed=4, progress=False)
    assert a.log_evidence == b.log_evidence != c.log_evidence
    idata = a.to_arviz()
    assert idata.posterior["x"].shape[:2] == (1, 100)
    assert idata.posterior.attrs["log_evidence"] == a.log_evidence


@pytest.mark.cuda
def test_smc_particle_filter_on_cuda():
    dev = torch.device("cuda")
    eye = torch.eye(1, dtype=D, device=dev)
    ssm = LinearGaussianSSM(0.9 * eye, eye, eye, eye, torch.zeros(1, dtype=D, device=dev), eye)
    ys = torch.zeros(20, 1, dtype=D, device=dev)
    out = particle_filter(ssm, ys, 10_000, seed=torch.Generator(device=dev).manual_seed(0))
    assert out.log_evidence.device.type == "cuda" and torch.isfinite(out.log_evidence)
    cpu = LinearGaussianSSM(*(t.cpu() for t in (ssm.A, ssm.C, ssm.Q, ssm.R, ssm.m0, ssm.P0)))
    ref = particle_filter(cpu, ys.cpu(), 10_000, seed=0).log_evidence
    assert abs(float(out.log_evidence) - float(ref)) < 0.1  # both ~ exact at N = 1e4


def test_smc_degenerate_error_names_batch_row_and_list_observations():
    from ppltk.errors import DegenerateWeightsError

    eye = torch.eye(1, dtype=D)
    ssm = LinearGaussianSSM(eye, eye, eye, eye, torch.zeros(1, dtype=D), eye)
    ys = torch.zeros(4, 2, 1, dtype=D)  # per-row observations for a batch of 2 filters
    ys[2, 1] = float("nan")
    with pytest.raises(DegenerateWeightsError, match=r"observation t=2.*batch row \(1,\)"):
        particle_filter(ssm, ys[:, :, None, :], 20, batch_shape=(2,))
    # observations may be a list of per-step tensors
    out = particle_filter(ssm, [torch.zeros(1, dtype=D)] * 3, 20)
    assert out.means.shape == (3, 1)
