"""``ppltk demo`` rows for continual learning: the sequential posterior forgets task 1.

A short run on the 2-D blob tasks (class-incremental): sequential HMC with a Gaussian prior
fitted to the previous posterior against joint HMC on all tasks so far, and ProtoCL.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ppltk.continual.harness import run_continual
from ppltk.continual.metrics import plot_accuracy_matrix
from ppltk.continual.protocl import ProtoCL
from ppltk.continual.sequential import JointHMC, SequentialBayes
from ppltk.datasets.continual_tasks import toy_blob_tasks
from ppltk.demo._rows import row_maker
from ppltk.mcmc import HMC

CAPABILITY = "Sequential continual learning"


_row = row_maker(CAPABILITY)


def _network(num_classes: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):  # fixed initial weights; the caller's RNG untouched
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, num_classes)
        )


def run_demo(fast: bool, outdir: Path) -> list[dict]:
    """Rows: task-1 accuracy after the last task, sequential vs joint HMC; ProtoCL average
    accuracy vs joint HMC's. Figure: the three accuracy matrices."""
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    num_tasks = 3 if fast else 5
    tasks = toy_blob_tasks(num_tasks=num_tasks, num_train=20 if fast else 50, num_test=50, seed=0)
    n = 100 if fast else 300
    kw = dict(sampler=HMC(num_steps=10), num_chains=4, num_warmup=n, num_samples=n, seed=0)
    net = _network(2 * num_tasks)
    runs = {
        "sequential (Gaussian prior)": run_continual(lambda: SequentialBayes(net, **kw), tasks),
        "joint HMC": run_continual(lambda: JointHMC(net, **kw), tasks),
        "ProtoCL": run_continual(lambda: ProtoCL(seed=0), tasks),  # default encoder
    }
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    for ax, (name, run) in zip(axes, runs.items()):
        plot_accuracy_matrix(run.accuracy, ax=ax, title=name)
    path = outdir / "continual_accuracy_matrices.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    seq, joint, proto = (runs[k] for k in runs)
    return [
        _row(
            f"task-1 acc. after {num_tasks} tasks: sequential vs joint HMC",
            float(seq.accuracy[-1, 0]),
            float(joint.accuracy[-1, 0]),
            str(path),
        ),
        _row(
            "average accuracy: sequential vs joint HMC",
            seq.average_accuracy,
            joint.average_accuracy,
        ),
        _row(
            "average accuracy: ProtoCL vs joint HMC", proto.average_accuracy, joint.average_accuracy
        ),
    ]
