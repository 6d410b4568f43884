# %% [markdown]
# # Sequential Bayesian inference for continual learning
#
# Kessler, Cobb, Rudner, Zohren and Roberts ("On Sequential Bayesian Inference for Continual
# Learning", Entropy 2023) ask whether exact Bayesian updating solves continual learning. In
# principle it does: $p(\theta\mid\mathcal D_{1:t}) \propto p(\mathcal D_t\mid\theta)\,
# p(\theta\mid\mathcal D_{1:t-1})$, so yesterday's posterior is today's prior. In practice the
# posterior of a neural network has to be *summarised* to be carried forward. Their experiment,
# reproduced here with `ppltk.continual`:
#
# 1. sample the posterior of a small Bayesian neural network with batched HMC (`ppltk.mcmc`,
#    step size adapted per task),
# 2. fit a density to the samples (full-covariance Gaussian, Gaussian mixture, normalising
#    flow) and use it as the next task's prior,
# 3. compare with joint HMC on all tasks so far (upper bound), fine-tuning (lower bound), VCL,
#    online Laplace and the prototype-based **ProtoCL**.
#
# The finding to reproduce: even with (near-)exact inference per task, the sequential posterior
# forgets task 1 in the class-incremental setting, while joint HMC does not.

# %%
import matplotlib.pyplot as plt
import torch

from ppltk._tutorial import fast_mode, save_figure
from ppltk.continual import (
    VCL,
    FineTuning,
    JointHMC,
    NearestClassMean,
    OnlineLaplace,
    ProtoCL,
    SequentialBayes,
    average_accuracy,
    plot_accuracy_matrix,
    run_continual,
)
from ppltk.datasets import split_digits, toy_blob_tasks
from ppltk.mcmc import HMC

torch.set_num_threads(1)
FAST = fast_mode()
NUM_TASKS = 3 if FAST else 5
NUM_DRAWS = 60 if FAST else 300

# %% [markdown]
# ## The toy tasks
# Five binary tasks of Gaussian blobs in 2-D; task $t$ holds the global classes $2t, 2t+1$.
# Class-incremental evaluation predicts among all classes seen so far.

# %%
tasks = toy_blob_tasks(num_tasks=NUM_TASKS, num_train=20 if FAST else 50, num_test=50, seed=0)
fig, ax = plt.subplots(figsize=(4.5, 4.5))
for t, (X, y, _, _) in enumerate(tasks):
    for c in (2 * t, 2 * t + 1):
        ax.scatter(*X[y == c].T, s=8, label=f"task {t}, class {c}")
ax.set_aspect("equal")
ax.legend(fontsize=6, loc="center")
save_figure(fig, "continual_toy_tasks")


# %% [markdown]
# ## The learners
# Every learner is built with `seed=` and has `observe(X, y)`, `predict_proba(X)` and
# `predict(X)`; `run_continual` trains a fresh one task by task and fills the accuracy matrix
# $R_{ij}$ (after task $i$, on task $j$).


# %%
def network():
    torch.manual_seed(0)  # the initial weights of the module itself
    return torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2 * NUM_TASKS)
    )


hmc = dict(sampler=HMC(num_steps=10), num_chains=4, num_warmup=NUM_DRAWS, num_samples=NUM_DRAWS)
learners = {
    "sequential, Gaussian prior": lambda: SequentialBayes(network(), "gaussian", seed=0, **hmc),
    "sequential, GMM prior": lambda: SequentialBayes(
        network(), "gmm", density_kwargs={"max_components": 3}, seed=0, **hmc
    ),
    "joint HMC": lambda: JointHMC(network(), seed=0, **hmc),
    "fine-tuning": lambda: FineTuning(network(), seed=0),
    "VCL": lambda: VCL(network(), num_steps=300 if FAST else 500, seed=0),
    "online Laplace": lambda: OnlineLaplace(network(), seed=0),
    "nearest class mean": lambda: NearestClassMean(),
    "ProtoCL": lambda: ProtoCL(seed=0),  # default encoder, built from the first task
}
runs = {
    name: run_continual(make, tasks, setting="class_incremental") for name, make in learners.items()
}

# %% [markdown]
# ## Results (class-incremental toy tasks)
# The last column re-scores the same predictions in the task-incremental setting (the task's
# identity is known at test time, so only its two classes compete).

# %%
header = (
    "| method | task-1 acc. at end | average acc. | forgetting | BWT | time (s) "
    "| task-IL average acc. |"
)
print(header)
print("|" + "---|" * 7)
for name, run in runs.items():
    s = run.summary()
    task_il = average_accuracy(run.accuracy_in("task_incremental"))
    print(
        f"| {name} | {run.accuracy[-1, 0]:.2f} | {s['average_accuracy']:.2f} | "
        f"{s['forgetting']:.2f} | {s['backward_transfer']:+.2f} | {s['train_seconds']:.1f} "
        f"| {task_il:.2f} |"
    )

# %%
ncols = 4
nrows = -(-len(runs) // ncols)
fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.3 * nrows), layout="constrained")
for ax, (name, run) in zip(axes.flat, runs.items()):
    plot_accuracy_matrix(run.accuracy, ax=ax, title=name)
for ax in list(axes.flat)[len(runs) :]:
    ax.set_visible(False)
save_figure(fig, "continual_accuracy_matrices")

# %% [markdown]
# Joint HMC keeps every task; the sequential posteriors learn each new task but lose task 1,
# as in the paper. The held-out log-likelihood of each fitted prior says how well the
# density summarises the samples (higher is better). With a few hundred draws of a
# 100-dimensional posterior, the mixture's unshrunk covariances can score below the
# Ledoit-Wolf-shrunk Gaussian: more flexible is not automatically better here.

# %%
for name in ("sequential, Gaussian prior", "sequential, GMM prior"):
    lls = [f"{d.heldout_loglik:.1f}" for d in runs[name].learner.densities]
    print(name, "held-out log-lik. per task:", lls)

# %% [markdown]
# ## Split-Digits (class-incremental)
# scikit-learn's bundled 8x8 digits as five tasks of two digits. `ProtoCL(seed=0)` builds its
# default encoder from the first task (inputs standardised with that task's mean and spread,
# then an MLP `64 -> 128 -> 32`), trains it episodically through the prototypes' posterior
# predictive and replays 20 herded points per earlier class. Nearest class mean (NCM) on the
# raw pixels is the trivial reference a prototype method has to beat: it keeps exact class
# means of all training data and never trains. Fine-tuning and VCL collapse to the newest task.

# %%
digits = split_digits(num_tasks=3 if FAST else 5, seed=0)


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))


digit_learners = {
    "fine-tuning": lambda: FineTuning(mlp(), seed=0),
    "VCL": lambda: VCL(mlp(), num_steps=300 if FAST else 500, seed=0),
    "online Laplace": lambda: OnlineLaplace(mlp(), seed=0),
    "nearest class mean (raw pixels)": lambda: NearestClassMean(),
    "ProtoCL (default encoder)": lambda: ProtoCL(seed=0),
    "ProtoCL (no encoder, raw pixels)": lambda: ProtoCL(torch.nn.Identity(), seed=0),
}
print("| method | average acc. | forgetting |")
print("|---|---|---|")
for name, make in digit_learners.items():
    run = run_continual(make, digits, setting="class_incremental")
    print(f"| {name} | {run.average_accuracy:.2f} | {run.forgetting:.2f} |")

# %% [markdown]
# The ablation in `benchmarks/continual.py` (results in `benchmarks/results/continual.md`)
# repeats this over seeds and over held-out splits with another class order
# (`ppltk.continual.reorder_classes`), and varies the replay size, the memory selection and
# the prior variance.
