"""Runs N. Chopin's ``particles`` for benchmarks/smc_particles.py, in its own virtual
environment (``particles`` 0.4 requires numpy < 2, which ppltk's test environment cannot have).

Usage: ``python particles_runner.py TASK N SEEDS`` with TASK ``sv`` (bootstrap filter of the
stochastic-volatility model on the GBP/USD 1997-98 log-returns shipped with ``particles``) or
``pima`` (adaptive tempering, waste-free, on the Pima logistic regression). Prints one JSON
object: the data (so ppltk runs on exactly the same numbers) and per-seed log-evidence and
wall time (one thread).
"""

import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import particles  # noqa: E402
from particles import datasets  # noqa: E402
from particles import distributions as dists  # noqa: E402
from particles import smc_samplers as ssp  # noqa: E402
from particles import state_space_models as ssms  # noqa: E402

SV = {"mu": -1.0, "rho": 0.9, "sigma": 0.3}


def sv_data():
    returns = datasets.GBP_vs_USD_9798().data
    return np.asarray(returns, dtype=float).ravel()


def run_sv(n, seeds):
    ys = sv_data()
    model = ssms.StochVol(**SV)
    out = []
    for seed in seeds:
        np.random.seed(seed)
        fk = ssms.Bootstrap(ssm=model, data=ys)
        alg = particles.SMC(fk=fk, N=n, resampling="systematic", ESSrmin=0.5)
        start = time.perf_counter()
        alg.run()
        out.append(
            {"seed": seed, "log_evidence": float(alg.logLt), "time": time.perf_counter() - start}
        )
    return {"data": ys.tolist(), "params": SV, "runs": out}


class LogisticRegression(ssp.StaticModel):
    def __init__(self, data, prior):
        super().__init__(data=data, prior=prior)

    def logpyt(self, theta, t):
        # z_t = y_t x_t (the sign-flipped rows): log p(y_t | x_t, beta) = log sigmoid(z_t . beta)
        return -np.log1p(np.exp(-np.dot(theta["beta"], self.data[t])))

    def loglik(self, theta, t=None):
        return -np.sum(np.log1p(np.exp(-theta["beta"] @ self.data.T)), axis=1)


def run_pima(n, seeds, len_chain):
    data = datasets.Pima().data
    p = data.shape[1]
    prior = dists.StructDist({"beta": dists.MvNormal(scale=5.0, cov=np.eye(p))})
    model = LogisticRegression(data=data, prior=prior)
    out = []
    for seed in seeds:
        np.random.seed(seed)
        fk = ssp.AdaptiveTempering(model=model, len_chain=len_chain)
        alg = particles.SMC(fk=fk, N=n, ESSrmin=1.0, verbose=False)
        start = time.perf_counter()
        alg.run()
        out.append(
            {
                "seed": seed,
                "log_evidence": float(alg.logLt),
                "time": time.perf_counter() - start,
                "num_temperatures": int(alg.t),
            }
        )
    return {"data": data.tolist(), "prior_scale": 5.0, "runs": out}


if __name__ == "__main__":
    task, n, seeds = sys.argv[1], int(sys.argv[2]), range(int(sys.argv[3]))
    if task == "sv":
        result = run_sv(n, seeds)
    else:
        result = run_pima(n, seeds, int(sys.argv[4]) if len(sys.argv) > 4 else 10)
    json.dump(result, sys.stdout)
