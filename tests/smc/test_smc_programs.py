"""Pyro programs run once (O(NT)): lazy particle tensors, the coroutine, the public kernel."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from _smc_helpers import kalman_1d

from ppltk.errors import DegenerateWeightsError, ModelStructureError
from ppltk.handlers import Lineage, ParticleTensor
from ppltk.smc import (
    LinearGaussianSSM,
    ProgramFK,
    init,
    particle_filter,
    smc,
    step,
)

A, Q, R = 0.9, 1.0, 1.0
CALLS = {"n": 0}


def ar_program(ys):
    CALLS["n"] += 1
    x = pyro.sample("x_0", dist.Normal(0.0, 1.0))
    for t in pyro.markov(range(len(ys))):
        if t > 0:
            x = pyro.sample(f"x_{t}", dist.Normal(A * x, Q**0.5))
        pyro.sample(f"y_{t}", dist.Normal(x, R**0.5), obs=ys[t])


def data(T, seed=0):
    eye = torch.eye(1)
    ssm = LinearGaussianSSM(A * eye, eye, Q * eye, R * eye, torch.zeros(1), eye)
    return ssm, ssm.simulate(T, torch.Generator().manual_seed(seed))[1][:, 0]


def kalman_moments(ys):
    m, P, out = 0.0, 1.0, []
    for t, y in enumerate(ys.tolist()):
        if t > 0:
            m, P = A * m, A * A * P + Q
        K = P / (P + R)
        m, P = m + K * (y - m), (1 - K) * P
        out.append((m, P))
    return out


# ---------------------------------------------------------------- lazy particle tensors
def test_lazy_tensor_gathers_through_composed_ancestors():
    lineage = Lineage(5)
    x = ParticleTensor.wrap(torch.arange(5.0), lineage)
    a1, a2 = torch.tensor([4, 4, 0, 1, 2]), torch.tensor([1, 0, 3, 3, 2])
    lineage.resample(a1)
    y = x * 10  # x gathered to generation 1 (one gather); y is made there: follows a2 only
    lineage.resample(a2)
    torch.testing.assert_close((x + 0).as_subclass(torch.Tensor), torch.arange(5.0)[a1][a2])
    torch.testing.assert_close((y + 0).as_subclass(torch.Tensor), (10 * torch.arange(5.0))[a1][a2])
    assert lineage.gathers == 3  # x at generations 1 and 2, y at 2
    x + 1
    assert lineage.gathers == 3  # cached in place


def test_lazy_tensor_refuses_what_resampling_cannot_follow():
    lineage = Lineage(4)
    x = ParticleTensor.wrap(torch.zeros(4, 3), lineage)
    moved = x.T + 0  # particles in dim 1: fine within this generation ...
    assert moved.T.shape == (4, 3)
    lineage.resample(torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ModelStructureError, match="dim 0"):
        moved + 0  # ... but not after a resampling
    with pytest.raises(ModelStructureError, match="in place"):
        torch.zeros(4, 3).copy_(x)
    assert isinstance(x.sum(-1), ParticleTensor) and not isinstance(x.sum(), ParticleTensor)


# ---------------------------------------------------------------- exactness on a linear model
def test_program_filtering_moments_match_kalman():
    _, ys = data(12)
    fk, n = ProgramFK(ar_program, (ys,)), 4000
    gen = torch.Generator().manual_seed(0)
    state, _ = init(fk, n, gen)
    exact = kalman_moments(ys)
    for t in range(len(ys)):
        if t > 0:
            state, _ = step(fk, state, gen, ess_threshold=0.5)
        x = fk.handle.values()[f"x_{t}"]
        w = state.population.weights
        mean = float((w * x).sum())
        var = float((w * (x - mean) ** 2).sum())
        m, P = exact[t]
        ess = float(state.population.ess)
        assert abs(mean - m) < 5 * math.sqrt(P / ess) + 1e-3, (t, mean, m)
        assert abs(var / P - 1) < 5 * math.sqrt(2 / ess) + 0.05, (t, var, P)
    fk.handle.program.close()


def test_program_evidence_unbiased_and_same_as_markov_path():
    ssm, ys = data(10, seed=3)
    logz = kalman_1d(ys, A, Q, R)
    runs = 40
    prog = torch.tensor(
        [
            smc(ar_program, ys, num_particles=200, seed=s, progress=False).log_evidence
            for s in range(runs)
        ]
    )
    markov = torch.tensor(
        [
            smc(ssm, ys[:, None], num_particles=200, seed=s, progress=False).log_evidence
            for s in range(runs)
        ]
    )
    ratio = torch.exp(prog.double() - logz)
    # E[Zhat / Z] = 1: within 5 standard errors
    assert abs(ratio.mean() - 1) < 5 * ratio.std() / math.sqrt(runs)
    # the two paths are the same algorithm: same law of log Zhat (two-sample z on the mean)
    se = math.sqrt(float(prog.var() + markov.var()) / runs)
    assert abs(float(prog.mean() - markov.mean())) < 5 * se


def test_program_runs_once_and_gathers_linearly_in_T():
    counts = {}
    for T in (25, 100):
        _, ys = data(T)
        CALLS["n"] = 0
        fk = ProgramFK(ar_program, (ys,))
        CALLS["n"] = 0  # ProgramFK's one prior run (N = 1) to count the observations
        out = particle_filter(fk, None, 300, ess_threshold=1.0, seed=0)
        lineage = fk.handle.program.lineage
        counts[T] = (CALLS["n"], lineage.gathers, int(out.resampled.sum()))
        fk.handle.program.close()
    for T, (calls, gathers, resamplings) in counts.items():
        assert calls == 1  # the program's Python ran once for all particles and all steps
        assert resamplings == T - 1
        # one live particle tensor (the Markov state) re-indexed per resampling: O(N) per step
        assert gathers <= resamplings + 1


# ---------------------------------------------------------------- what the lazy state must survive
def test_program_variable_reused_steps_later_and_data_branching():
    """w is observed at t=0, untouched for 4 resamplings, then observed again: its particles
    must follow the composed ancestry, or the evidence is biased."""
    ys = torch.tensor([1.5, 0.3, -0.2, 0.8, 1.1, 2.0])

    def program(ys):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        pyro.sample("y_0", dist.Normal(w, 1.0), obs=ys[0])
        x = pyro.sample("x_1", dist.Normal(0.0, 1.0))
        for t in range(1, 5):
            if t > 1:
                x = pyro.sample(f"x_{t}", dist.Normal(A * x, 1.0))
            scale = 1.0 if ys[t] > 0 else 2.0  # branching on data is fine
            pyro.sample(f"y_{t}", dist.Normal(x, scale), obs=ys[t])
        pyro.sample("y_5", dist.Normal(w, 1.0), obs=ys[5])

    # exact: (y_0, y_5) ~ N(0, [[2, 1], [1, 2]]) independent of the AR block
    pair = dist.MultivariateNormal(torch.zeros(2), torch.tensor([[2.0, 1.0], [1.0, 2.0]]))
    logz = float(pair.log_prob(ys[[0, 5]]))
    m, P = 0.0, 1.0
    for t in range(1, 5):
        if t > 1:
            m, P = A * m, A * A * P + 1.0
        r = 1.0 if ys[t] > 0 else 4.0
        logz += -0.5 * (math.log(2 * math.pi * (P + r)) + (float(ys[t]) - m) ** 2 / (P + r))
        m, P = m + P / (P + r) * (float(ys[t]) - m), P - P * P / (P + r)
    errs = torch.tensor(
        [
            smc(
                program, ys, num_particles=500, ess_threshold=1.0, seed=s, progress=False
            ).log_evidence
            - logz
            for s in range(20)
        ]
    )
    assert abs(errs.mean()) < 5 * errs.std() / math.sqrt(20) + errs.var() / 2 + 0.01, errs


def test_program_nested_plates_match_independent_kalman_filters():
    """K independent AR(1) chains in a plate, observed together at each step."""
    K, T = 3, 8
    ys = torch.stack([data(T, seed=k)[1] for k in range(K)], -1)  # [T, K]

    def program(ys):
        with pyro.plate("chains", K):
            x = pyro.sample("x_0", dist.Normal(0.0, 1.0))
            for t in pyro.markov(range(T)):
                if t > 0:
                    x = pyro.sample(f"x_{t}", dist.Normal(A * x, 1.0))
                pyro.sample(f"y_{t}", dist.Normal(x, 1.0), obs=ys[t])

    logz = sum(kalman_1d(ys[:, k], A, Q, R) for k in range(K))
    res = [smc(program, ys, num_particles=1000, seed=s, progress=False) for s in range(10)]
    errs = torch.tensor([r.log_evidence - logz for r in res])
    assert abs(errs.mean()) < 5 * errs.std() / math.sqrt(10) + errs.var() / 2 + 0.01, errs
    assert res[0].draws["x_3"].shape == (1, 1000, K)


def test_program_refusals_are_named():
    ys = torch.zeros(3)

    def control_flow(ys):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        if x > 0:  # Python branch on a particle's value
            pyro.sample("y", dist.Normal(x, 1.0), obs=ys[0])

    with pytest.raises(ModelStructureError, match="control flow"):
        smc(control_flow, ys, num_particles=10, progress=False)

    def moves_dim(ys):
        xs = torch.stack([pyro.sample(f"x_{t}", dist.Normal(0.0, 1.0)) for t in range(2)])
        pyro.sample("y_0", dist.Normal(xs[0], 1.0), obs=ys[0])  # same generation: fine
        pyro.sample("y_1", dist.Normal(xs[1], 1.0), obs=ys[1])  # after a resampling: refused

    with pytest.raises(ModelStructureError, match="dim 0"):
        smc(moves_dim, ys, num_particles=10, ess_threshold=1.0, progress=False)
    # ... which the replay path runs (it re-executes instead of re-indexing)
    out = smc(moves_dim, ys, num_particles=10, progress=False, path="replay")
    assert math.isfinite(out.log_evidence)


def test_program_pyro_state_is_isolated_between_steps():
    """Between two steps, the driver's Pyro code sees none of the program's handlers."""
    _, ys = data(5)
    fk = ProgramFK(ar_program, (ys,))
    gen = torch.Generator().manual_seed(0)
    state, _ = init(fk, 50, gen)
    trace = pyro.poutine.trace(lambda: pyro.sample("z", dist.Normal(0.0, 1.0))).get_trace()
    assert trace.nodes["z"]["value"].shape == ()  # no particle plate leaked
    state, _ = step(fk, state, gen)
    assert fk.handle.values()["x_1"].shape == (50,)
    fk.handle.program.close()
    assert not pyro.poutine.runtime._PYRO_STACK


@pytest.mark.cuda
def test_program_path_on_cuda_matches_kalman():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    dev = torch.device("cuda")
    _, ys = data(10, seed=1)
    zero, one = torch.zeros((), device=dev), torch.ones((), device=dev)

    def program(ys):
        x = pyro.sample("x_0", dist.Normal(zero, one))
        for t in range(len(ys)):
            if t > 0:
                x = pyro.sample(f"x_{t}", dist.Normal(A * x, one))
            pyro.sample(f"y_{t}", dist.Normal(x, one), obs=ys[t])

    logz = kalman_1d(ys, A, Q, R)
    gen = torch.Generator(device=dev)
    errs = torch.tensor(
        [
            smc(
                program, ys.to(dev), num_particles=2000, seed=gen.manual_seed(s), progress=False
            ).log_evidence
            - logz
            for s in range(8)
        ]
    )
    assert abs(errs.mean()) < 5 * errs.std() / math.sqrt(8) + errs.var() / 2 + 0.01, errs


def test_resample_move_on_a_program_is_unbiased_and_moves():
    """rmsmc: MCMC moves of the latest block (replay path) keep E[Zhat] = Z and leave the
    moved block with its exact smoothing law (a move targeting anything else shows in x_6)."""
    from test_smc_handlers_paths import rts

    _, ys = data(8, seed=4)
    logz = kalman_1d(ys, A, Q, R)
    runs = [
        smc(
            ar_program,
            ys,
            num_particles=100,
            seed=s,
            progress=False,
            path="resample-move",
            move={"num_moves": 2},
        )
        for s in range(12)
    ]
    ratio = torch.exp(torch.tensor([r.log_evidence for r in runs], dtype=torch.float64) - logz)
    assert abs(ratio.mean() - 1) < 5 * ratio.std() / math.sqrt(12)
    accept = torch.tensor(runs[0].attrs["move_accept_prob"])
    assert len(accept) == len(ys) - 1 and 0.1 < float(accept.mean()) < 0.95
    assert runs[0].attrs["path"] == "resample-move" and set(runs[0].draws) >= {"x_0", "x_7"}
    big = smc(
        ar_program,
        ys,
        num_particles=3000,
        seed=0,
        progress=False,
        path="resample-move",
        move={"num_moves": 3},
    )
    _, smooth_mean, smooth_var = rts(ys.double(), A, Q, R)
    for t in (6, 7):
        x = torch.as_tensor(big.draws[f"x_{t}"]).double().reshape(-1)
        # equally weighted draws, correlated by resampling: allow 5 se at a quarter of N
        se = math.sqrt(float(smooth_var[t]) / (len(x) / 4))
        assert abs(float(x.mean()) - float(smooth_mean[t])) < 5 * se, (t, x.mean(), smooth_mean[t])
    with pytest.raises(Exception, match="block"):
        smc(ar_program, ys, path="resample-move", move={"block": "some"}, progress=False)


def test_program_without_a_prior_run_given_the_plate_nesting():
    """max_plate_nesting given: no prior run, the end found when the program returns; the
    evidence has the same law, and bad arguments are still named (validated in the run)."""
    _, ys = data(10, seed=5)
    logz = kalman_1d(ys, A, Q, R)
    CALLS["n"] = 0
    runs = [
        smc(ar_program, ys, num_particles=200, seed=s, max_plate_nesting=0, progress=False)
        for s in range(20)
    ]
    assert CALLS["n"] == 20  # one execution per run, no prior run
    errs = torch.tensor([r.log_evidence - logz for r in runs])
    assert abs(errs.mean()) < 5 * errs.std() / math.sqrt(20) + errs.var() / 2 + 0.01, errs
    assert runs[0].draws["x_9"].shape == (1, 200)

    def bad_scale(ys):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(x, -1.0), obs=ys[0])

    with pytest.raises(DegenerateWeightsError, match="NaN"):  # a parameter off its support
        smc(bad_scale, ys, num_particles=10, max_plate_nesting=0, progress=False)

    def negative_waiting_time(ys):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        for t in range(3):
            pyro.sample(f"y_{t}", dist.Exponential(rate), obs=ys[t].abs() - (t == 2) * 9.0)

    with pytest.raises(ModelStructureError, match="'y_2' inside the support"):
        smc(negative_waiting_time, ys, num_particles=10, max_plate_nesting=0, progress=False)


def test_program_with_multivariate_sites_matches_kalman():
    """MultivariateNormal transposes particle tensors internally (displaced within a step)."""
    from ppltk.demo.smc import _lg_model, _lg_program
    from ppltk.smc._kalman import kalman_filter

    ssm = _lg_model()
    _, ys = ssm.simulate(20, torch.Generator().manual_seed(6))
    logz = kalman_filter(ssm, ys)[2]
    errs = torch.tensor(
        [
            smc(_lg_program, ys, ssm, num_particles=400, seed=s, progress=False).log_evidence - logz
            for s in range(10)
        ]
    )
    assert abs(errs.mean()) < 5 * errs.std() / math.sqrt(10) + errs.var() / 2 + 0.01, errs


def test_program_branching_on_particle_values_with_where_matches_replay():
    """Branching on a particle's value written with torch.where (a switching observation
    noise): the run-once path and the replay path are the same algorithm, so their log Zhat
    have the same law (two-sample check on 20 runs each)."""
    _, ys = data(8, seed=7)

    def switching(ys):
        x = pyro.sample("x_0", dist.Normal(0.0, 1.0))
        for t in range(len(ys)):
            if t > 0:
                x = pyro.sample(f"x_{t}", dist.Normal(A * x, 1.0))
            scale = torch.where(x > 0, torch.tensor(0.5), torch.tensor(2.0))
            pyro.sample(f"y_{t}", dist.Normal(x, scale), obs=ys[t])

    once = torch.tensor(
        [
            smc(switching, ys, num_particles=300, seed=s, progress=False).log_evidence
            for s in range(20)
        ]
    )
    replay = torch.tensor(
        [
            smc(
                switching, ys, num_particles=300, seed=100 + s, path="replay", progress=False
            ).log_evidence
            for s in range(20)
        ]
    )
    se = math.sqrt(float(once.var() + replay.var()) / 20)
    assert abs(float(once.mean() - replay.mean())) < 5 * se + 0.01, (once.mean(), replay.mean())
