"""Device-agnostic learners: a tiny run with network, data and samples on CUDA."""

from __future__ import annotations

import pytest
import torch

from ppltk.continual import ProtoCL, SequentialBayes, fit_density
from ppltk.datasets import toy_blob_tasks
from ppltk.mcmc import HMC


@pytest.mark.cuda
def test_learners_run_on_cuda():
    dev = torch.device("cuda")
    tasks = [tuple(t.to(dev) for t in task) for task in toy_blob_tasks(2, 10, 10, seed=0)]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4)).to(dev)
    seq = SequentialBayes(net, sampler=HMC(num_steps=5), num_warmup=20, num_samples=20, seed=0)
    enc = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dev)
    proto = ProtoCL(enc, num_steps=5, seed=0)
    default = ProtoCL(num_steps=5, seed=0)  # default encoder built on the data's device
    for learner in (seq, proto, default):
        for X, y, _, _ in tasks:
            learner.observe(X, y)
        proba = learner.predict_proba(tasks[0][2])
        assert proba.device.type == "cuda" and proba.shape == (20, 4)
    assert default.encoder.shift.is_cuda and default.encoder.net[0].weight.is_cuda
    for kind in ("gaussian", "gmm", "flow"):
        kw = {"num_steps": 5} if kind == "flow" else {}
        fit = fit_density(torch.randn(100, 3, device=dev, dtype=torch.float64), kind, **kw)
        assert fit.distribution.log_prob(torch.zeros(2, 3, device=dev, dtype=torch.float64)).is_cuda
