"""Bootstrap particle filter throughput: ppltk vs Pyro's SMCFilter (one process, one thread).

Model: x_-1 ~ N(0, 1), x_t = 0.9 x_{t-1} + N(0, 1), y_t = x_t + N(0, 1), T = 100, float32.
Both resample adaptively (ESS/N < 0.5, systematic). ppltk also tracks the log-evidence (SMCFilter
does not). Rows: ppltk on the explicit Markov-state model (tensor path), on the same Pyro
init/step model SMCFilter runs (Pyro path, under ppltk's handlers), and on the model written as
an ordinary Pyro program (a ``pyro.markov`` loop, run once: the "program" path). Metric:
particle-steps/s. A second table measures how the program path scales with T (N = 1000,
T = 100 ... 800): the log-log slope of time against T (1 = linear).

Usage: ``python benchmarks/smc.py [--fast]``; writes benchmarks/results/smc.json and .md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SMCFilter

from ppltk.smc import LinearGaussianSSM, smc

torch.set_num_threads(1)
T = 100


class Model:
    """Pyro SMCFilter-style model: x_init ~ N(0, 1); each step moves x then observes y."""

    def init(self, state):
        state["x"] = pyro.sample("x_init", dist.Normal(0.0, 1.0))

    def step(self, state, y):
        state["x"] = pyro.sample("x", dist.Normal(0.9 * state["x"], 1.0))
        pyro.sample("obs", dist.Normal(state["x"], 1.0), obs=y)


class Guide:
    """Bootstrap guide: the prior transition (SMCFilter needs a guide; it may not write state)."""

    def init(self, state):
        pyro.sample("x_init", dist.Normal(0.0, 1.0))

    def step(self, state, y):
        pyro.sample("x", dist.Normal(0.9 * state["x"], 1.0))


PYRO_FAILURES = {"count": 0}


class Elapsed(float):
    """A run's own time (excludes failed attempts), used by :func:`best_of` when returned."""


def run_pyro(ys, n):
    """SMCFilter; its float32 systematic resampling can index past the end at large N
    (IndexError): such runs are counted and retried with the next seed."""
    for seed in range(10):
        pyro.set_rng_seed(seed)
        start = time.perf_counter()
        f = SMCFilter(Model(), Guide(), num_particles=n, max_plate_nesting=0)
        f.init()
        try:
            for y in ys:
                f.step(y)
            return Elapsed(time.perf_counter() - start)
        except IndexError:
            PYRO_FAILURES["count"] += 1
    raise RuntimeError("SMCFilter failed on 10 seeds")


def run_ppltk_tensor(ys, n):
    eye = torch.eye(1)
    # the same model in explicit form: x_0 ~ N(0, 0.81 + 1) (one move before y_0)
    ssm = LinearGaussianSSM(0.9 * eye, eye, eye, eye, torch.zeros(1), 1.81 * eye)
    return smc(ssm, ys[:, None], num_particles=n, seed=0, progress=False).log_evidence


def run_ppltk_cuda(ys, n):
    """The tensor path on a CUDA device (timed with a synchronisation)."""
    dev = torch.device("cuda")
    eye = torch.eye(1, device=dev)
    ssm = LinearGaussianSSM(0.9 * eye, eye, eye, eye, torch.zeros(1, device=dev), 1.81 * eye)
    gen = torch.Generator(device=dev).manual_seed(0)
    out = smc(ssm, ys.to(dev)[:, None], num_particles=n, seed=gen, progress=False).log_evidence
    torch.cuda.synchronize()
    return out


def run_ppltk_pyro(ys, n):
    return smc(Model(), ys, num_particles=n, seed=0, progress=False).log_evidence


def markov_program(ys):
    """The same model as an ordinary Pyro program: a loop with one observation per step."""
    x = pyro.sample("x_init", dist.Normal(0.0, 1.0))
    for t in pyro.markov(range(len(ys))):
        x = pyro.sample(f"x_{t}", dist.Normal(0.9 * x, 1.0))
        pyro.sample(f"y_{t}", dist.Normal(x, 1.0), obs=ys[t])


def run_ppltk_program(ys, n):
    return smc(
        markov_program, ys, num_particles=n, seed=0, max_plate_nesting=0, progress=False
    ).log_evidence


def t_scaling(lengths=(100, 200, 400, 800), n=1000) -> dict:
    """Program-path time at each T and the least-squares log-log slope."""
    gen = torch.Generator().manual_seed(1)
    times = {}
    for length in lengths:
        ys = torch.randn(length, generator=gen)
        times[length] = best_of(run_ppltk_program, ys, n, 3)
    xs = [math.log(t) for t in times]
    ys_ = [math.log(v) for v in times.values()]
    mx, my = sum(xs) / len(xs), sum(ys_) / len(ys_)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys_)) / sum((a - mx) ** 2 for a in xs)
    return {"N": n, "seconds": {str(k): v for k, v in times.items()}, "slope": slope}


def run_particles(ys, n):
    """N. Chopin's ``particles`` (numpy), when installed (needs numba)."""
    import numpy as np
    import particles
    from particles import distributions as dists
    from particles import state_space_models as ssms

    class AR(ssms.StateSpaceModel):
        def PX0(self):
            return dists.Normal(loc=0.0, scale=np.sqrt(1.81))

        def PX(self, t, xp):
            return dists.Normal(loc=0.9 * xp, scale=1.0)

        def PY(self, t, xp, x):
            return dists.Normal(loc=x, scale=1.0)

    fk = ssms.Bootstrap(ssm=AR(), data=ys.numpy())
    alg = particles.SMC(fk=fk, N=n, resampling="systematic", ESSrmin=0.5)
    alg.run()
    return alg.logLt


def particles_available() -> bool:
    try:
        import particles  # noqa: F401

        return True
    except Exception:  # noqa: BLE001 - optional peer (numba missing counts as absent)
        return False


def best_of(fn, ys, n, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(ys, n)
        times.append(out if isinstance(out, Elapsed) else time.perf_counter() - start)
    return min(times)


def main(fast: bool = False) -> tuple[list[dict], dict]:
    gen = torch.Generator().manual_seed(0)
    x, ys = torch.randn((), generator=gen), []
    for _ in range(T):
        x = 0.9 * x + torch.randn((), generator=gen)
        ys.append(x + torch.randn((), generator=gen))
    ys = torch.stack(ys)
    sizes = [1000, 10000] if fast else [1000, 10000, 100000]
    rows = []
    for n in sizes:
        repeats = 3 if n <= 10000 else 2
        t_pyro = best_of(run_pyro, ys, n, repeats)
        t_tensor = best_of(run_ppltk_tensor, ys, n, repeats)
        t_ppyro = best_of(run_ppltk_pyro, ys, n, repeats)
        t_prog = best_of(run_ppltk_program, ys, n, repeats)
        extra = {}
        if particles_available():
            t_part = best_of(run_particles, ys, n, repeats)
            extra = {
                "particles_steps_per_s": n * T / t_part,
                "ratio_tensor_vs_particles": t_part / t_tensor,
            }
        rows.append(
            {
                **extra,
                "N": n,
                "pyro_smcfilter_steps_per_s": n * T / t_pyro,
                "ppltk_tensor_steps_per_s": n * T / t_tensor,
                "ppltk_pyro_path_steps_per_s": n * T / t_ppyro,
                "ppltk_program_steps_per_s": n * T / t_prog,
                "ratio_tensor_vs_pyro": t_pyro / t_tensor,
                "ratio_pyro_path_vs_pyro": t_pyro / t_ppyro,
                "ratio_program_vs_pyro": t_pyro / t_prog,
            }
        )
    if torch.cuda.is_available():
        run_ppltk_cuda(ys, 1000)  # warm-up (CUDA context, kernels)
        for n in [10**6, 10**7]:
            rows.append(
                {
                    "N": n,
                    "device": "cuda",
                    "ppltk_cuda_steps_per_s": n * T / best_of(run_ppltk_cuda, ys, n, 2),
                }
            )
    return rows, t_scaling((100, 200, 400) if fast else (100, 200, 400, 800))


def to_markdown(rows, scaling, facts) -> str:
    lines = [
        "# Bootstrap particle filter, linear-Gaussian, T = 100 (one thread)",
        "",
        f"Machine: {facts}",
        "",
        "| N | Pyro SMCFilter (steps/s) | ppltk tensor SSM (steps/s) | ratio | "
        "ppltk Pyro init/step (steps/s) | ratio | ppltk Pyro program (steps/s) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if "device" not in r):
        lines.append(
            f"| {r['N']:,} | {r['pyro_smcfilter_steps_per_s']:.3g} | "
            f"{r['ppltk_tensor_steps_per_s']:.3g} | {r['ratio_tensor_vs_pyro']:.2f}x | "
            f"{r['ppltk_pyro_path_steps_per_s']:.3g} | {r['ratio_pyro_path_vs_pyro']:.2f}x | "
            f"{r['ppltk_program_steps_per_s']:.3g} | {r['ratio_program_vs_pyro']:.2f}x |"
        )
    lines += [
        "",
        f"Program path, N = {scaling['N']:,}: time against T (log-log slope "
        f"{scaling['slope']:.2f}; 1 = linear, the replay path's is 2)",
        "",
        "| T | " + " | ".join(scaling["seconds"]) + " |",
        "|---|" + "---|" * len(scaling["seconds"]),
        "| seconds | " + " | ".join(f"{v:.3f}" for v in scaling["seconds"].values()) + " |",
    ]
    gpu = [r for r in rows if "device" in r]
    if gpu:
        lines += ["", "| N | ppltk tensor SSM on CUDA (steps/s) |", "|---|---|"]
        lines += [f"| {r['N']:,} | {r['ppltk_cuda_steps_per_s']:.3g} |" for r in gpu]
    if any("particles_steps_per_s" in r for r in rows):
        lines += ["", "| N | particles (steps/s) | ppltk tensor / particles |", "|---|---|---|"]
        lines += [
            f"| {r['N']:,} | {r['particles_steps_per_s']:.3g} | {r['ratio_tensor_vs_particles']:.2f}x |"
            for r in rows
            if "particles_steps_per_s" in r
        ]
    else:
        lines += [
            "",
            "`particles` runs in its own environment (numpy < 2): see `smc_particles.md`.",
        ]
    lines.append("")
    lines.append("ratio > 1: ppltk is faster (and also returns the log-evidence).")
    if PYRO_FAILURES["count"]:
        lines.append(
            f"SMCFilter raised IndexError (systematic resampling past the last particle) in "
            f"{PYRO_FAILURES['count']} run(s); those were retried with another seed and their "
            "time is included."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    fast = "--fast" in sys.argv
    rows, scaling = main(fast)
    facts = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"torch {torch.__version__}, pyro {pyro.__version__}, threads={torch.get_num_threads()}"
    )
    md = to_markdown(rows, scaling, facts)
    print(md)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    result = {"machine": facts, "T": T, "rows": rows, "t_scaling": scaling}
    (out / "smc.json").write_text(json.dumps(result, indent=2))
    (out / "smc.md").write_text(md)
