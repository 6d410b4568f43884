# %% [markdown]
# # Amortized inference with `ppltk.amortized`
#
# When the same model is fitted to thousands of data sets (sessions, subjects, SBC studies),
# running MCMC for each is wasteful. `fit_amortized` trains a network **once** on the model's
# own prior-predictive simulations $(\theta_i, y_i)$ to output a posterior $q(\theta \mid y)$;
# after that, a posterior for new data is one forward pass.
#
# The network is a permutation-invariant set encoder (DeepSets: a mean over the observations)
# followed by a full-covariance Gaussian (or Gaussian-mixture) head over the model bridge's
# *unconstrained* latents, so positive or bounded parameters are handled by the same
# transforms as in MCMC. Training minimises $-\log q(\theta_i \mid y_i)$, i.e. the expected
# KL divergence from the exact posterior, with early stopping on held-out simulations.
#
# This tutorial trains once, decodes 1,000 data sets, checks calibration with SBC, compares one
# posterior with NUTS and corrects it by importance sampling against the exact density. Set
# `PPLTK_FAST=1` for a quick run.

# %%
import time
import warnings

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch

from ppltk._tutorial import fast_mode, save_figure
from ppltk.amortized import CalibrationWarning, fit_amortized
from ppltk.mcmc import sample

torch.set_num_threads(1)
FAST = fast_mode()
NUM_SIMS, EPOCHS = (2000, 25) if FAST else (20000, 200)
N_OBS = 20

# %% [markdown]
# ## The model: a mean and a scale
# $\mu \sim \mathcal N(0, 3^2)$, $\sigma \sim \text{LogNormal}(0, 0.5)$,
# $y_i \sim \mathcal N(\mu, \sigma^2)$ for $i = 1..20$. The bridge samples $\log\sigma$; the
# model is written with a plate, so all simulations are drawn in one batched run.


# %%
def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 0.5))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


t0 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", CalibrationWarning)  # reported below instead
    q = fit_amortized(
        model,
        torch.zeros(N_OBS),
        num_simulations=NUM_SIMS,
        max_epochs=EPOCHS,
        seed=0,
        progress=False,
    )
train_time = time.perf_counter() - t0
print(q)
print(f"simulate {q.timings['simulate']:.2f} s, train {q.timings['train']:.1f} s, "
      f"epochs {len(q.history['train'])}")  # fmt: skip
print("SBC after training:", q.calibration, "passed:", q.calibration.passed())

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(q.history["train"], label="train")
ax.plot(q.history["validation"], label="held-out")
ax.set_xlabel("epoch")
ax.set_ylabel(r"$-\log q(\theta \mid y)$")
ax.legend()
save_figure(fig, "amortized_training")

# %% [markdown]
# ## Decode 1,000 data sets in one call
# `q.sample(ys, num_samples)` takes a batch of data sets and returns draws for each;
# `q.posterior(y)` returns a `ppltk.Result` for one (or a list for a batch).

# %%
gen = torch.Generator().manual_seed(1)
true_mu = 3.0 * torch.randn(1000, generator=gen)
true_sigma = (0.5 * torch.randn(1000, generator=gen)).exp()
ys = true_mu[:, None] + true_sigma[:, None] * torch.randn(1000, N_OBS, generator=gen)
t0 = time.perf_counter()
draws = q.sample(ys, num_samples=500, seed=0)
decode_time = time.perf_counter() - t0
print(f"1,000 posteriors x 500 draws in {decode_time:.3f} s")
inside = (
    (draws["mu"].quantile(0.05, dim=1) < true_mu) & (true_mu < draws["mu"].quantile(0.95, dim=1))
).float()
print(f"90% intervals of mu that cover the truth: {inside.mean():.3f} (expected 0.90)")

# %% [markdown]
# ## Calibration: simulation-based calibration on fresh simulations
# The ranks of the true parameters among the posterior draws are uniform exactly when the
# posterior is right; `q.calibrate` runs SBC batched (one forward pass for all replications).

# %%
sbc = q.calibrate(num_simulations=200 if FAST else 1000, seed=2)
print(sbc, sbc.p_values)
save_figure(sbc.plot(), "amortized_sbc")

# %% [markdown]
# ## One data set: amortized vs NUTS, and importance correction
# Weighting the network's draws by $p(\theta, y) / q(\theta \mid y)$ makes estimates
# consistent whatever the network's error; the effective sample size says how close $q$ is.

# %%
y0 = ys[0]
amortized = q.posterior(y0, num_samples=2000, seed=0)
corrected = q.posterior(y0, num_samples=2000, seed=0, correct=True)
nuts = sample(model, y0, num_chains=2, num_warmup=200 if FAST else 1000,
              num_samples=200 if FAST else 1000, seed=0, progress=False)  # fmt: skip
print(f"ESS of the importance weights: {corrected.attrs['ess']:.0f} of 2000; "
      f"log p(y) estimate {corrected.log_evidence:.3f}")  # fmt: skip
for site in ("mu", "sigma"):
    print(f"{site}: amortized {amortized.flat(site).mean():.3f} ± {amortized.flat(site).std():.3f}"
          f" | corrected {corrected.flat(site).mean():.3f} ± {corrected.flat(site).std():.3f}"
          f" | NUTS {nuts.flat(site).mean():.3f} ± {nuts.flat(site).std():.3f}")  # fmt: skip

fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for ax, site in zip(axes, ("mu", "sigma")):
    ax.hist(nuts.flat(site), bins=40, density=True, alpha=0.5, label="NUTS")
    ax.hist(amortized.flat(site), bins=40, density=True, histtype="step", label="amortized")
    ax.set_xlabel(site)
axes[0].legend()
save_figure(fig, "amortized_vs_nuts")

# %% [markdown]
# ## Save and load
# `q.save(path)` writes weights and configuration; `AmortizedPosterior.load(path, model, *args)`
# reads them back with `torch.load(weights_only=True)` and checks the model's structure.

# %%
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from ppltk.amortized import AmortizedPosterior  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    path = q.save(Path(tmp) / "amortized.pt")
    again = AmortizedPosterior.load(path, model, torch.zeros(N_OBS))
    same = torch.equal(q.sample_unconstrained(y0, 5, 0), again.sample_unconstrained(y0, 5, 0))
    print("reloaded posterior identical:", same)

# %% [markdown]
# ## Switching the prior at inference time
# `fit_prior_adaptive` trains a Distribution-Transformer head: the prior is given as a
# Gaussian mixture over the unconstrained latents $(\mu, \log\sigma)$; each component is a
# token that attends to the other components and, by cross-attention, to the observations,
# and comes out as a posterior component. Trained over random mixture priors, it takes a
# new prior without retraining, and its posterior can be the next batch's prior.

# %%
from ppltk.amortized import GaussianMixturePrior, fit_prior_adaptive  # noqa: E402

adaptive = fit_prior_adaptive(
    model,
    torch.zeros(N_OBS),
    num_simulations=500 if FAST else 10000,
    max_epochs=3 if FAST else 50,
    hidden=16 if FAST else 64,
    heads=2 if FAST else 4,
    layers=1 if FAST else 2,
    seed=0,
    progress=False,
)
wide = GaussianMixturePrior(torch.ones(1), torch.zeros(1, 2), torch.tensor([[3.0, 0.5]]))
two_modes = GaussianMixturePrior(
    torch.tensor([0.5, 0.5]),
    torch.tensor([[-4.0, -0.5], [4.0, -0.5]]),
    torch.tensor([[0.3, 0.3], [0.3, 0.3]]),
)
fig, ax = plt.subplots(figsize=(5, 3))
for name, prior in (("wide prior", wide), ("two-mode prior", two_modes)):
    z = adaptive.sample(y0, prior, num_samples=2000, seed=0)
    print(f"{name}: mu {z[:, 0].mean():.3f} ± {z[:, 0].std():.3f}")
    ax.hist(z[:, 0], bins=60, density=True, histtype="step", label=name)
ax.set_xlabel("mu")
ax.legend()
save_figure(fig, "amortized_prior_switch")

# sequential fusion: the posterior after y0 (as a diagonal mixture) is the prior for a second
# batch y1 from the same source
step = adaptive.posterior_mixture(y0, wide)
next_prior = GaussianMixturePrior(
    step["weights"], step["loc"], step["scale_tril"].diagonal(dim1=-2, dim2=-1)
)
y1 = y0.mean() + y0.std() * torch.randn(N_OBS, generator=gen)
z = adaptive.sample(y1, next_prior, num_samples=2000, seed=0)
print(f"after two batches: mu {z[:, 0].mean():.3f} ± {z[:, 0].std():.3f}")
