"""Simulation-based calibration (Talts et al. 2018) of HMC and NUTS on a 2-parameter model.

Model: a, b ~ N(0, 1); y_i ~ N(a + b x_i, 1), i = 1..5. Each of R = 300 replications draws
(a*, b*) from the prior and y from the model; batching makes every replication one chain of a
single ``sample_flat`` run (chain r sees data y_r). With L = 20 thinned posterior draws the
rank of a* (and b*) among them is uniform on {0, ..., L} iff the sampler is calibrated; ranks
are pooled into 7 bins of 3 and tested with a chi-square test at level 1e-3 per parameter.
"""

import pytest
import torch
from scipy import stats

from ppltk.mcmc import HMC, NUTS, sample_flat

DTYPE = torch.float64
X = torch.linspace(-1.0, 1.0, 5, dtype=DTYPE)


def _simulate(reps: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(reps, 2, generator=gen, dtype=DTYPE)
    y = theta[:, :1] + theta[:, 1:] * X + torch.randn(reps, 5, generator=gen, dtype=DTYPE)
    return theta, y


def _logdensity(y):
    def logdensity_and_grad(z):
        resid = y - z[:, :1] - z[:, 1:] * X  # [R, 5]
        lp = -0.5 * (z**2).sum(-1) - 0.5 * (resid**2).sum(-1)
        grad = -z + torch.stack([resid.sum(-1), (resid * X).sum(-1)], -1)
        return lp, grad

    return logdensity_and_grad


@pytest.mark.parametrize(
    "kernel", [NUTS(max_tree_depth=6), HMC(num_steps=6, jitter=0.2)], ids=["nuts", "hmc"]
)
def test_sbc_ranks_are_uniform(kernel):
    reps, thin, draws = 300, 10, 20
    theta, y = _simulate(reps, 0)
    init = torch.zeros(reps, 2, dtype=DTYPE)
    out = sample_flat(
        _logdensity(y),
        init,
        kernel=kernel,
        num_warmup=150,
        num_samples=thin * draws,
        seed=1,
        progress=False,
    )
    post = out.positions[:, thin - 1 :: thin]  # [R, L, 2]
    ranks = (post < theta[:, None, :]).sum(1)  # [R, 2] in 0..L
    for d in range(2):
        counts = torch.bincount(ranks[:, d] // 3, minlength=7).numpy()
        assert stats.chisquare(counts).pvalue > 1e-3, (d, counts)
