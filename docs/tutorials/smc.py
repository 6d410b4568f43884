# %% [markdown]
# # Sequential Monte Carlo from building blocks
#
# ppltk's SMC is a handful of blocks — a weighted `Population`, resamplers, proposals,
# MCMC moves, tempering — composed into algorithms. This tutorial
#
# 1. filters a **stochastic-volatility** model with a particle filter (log-evidence included),
# 2. smooths it by forward-filtering backward-sampling,
# 3. learns its parameters by **PMMH** (MH with the filter's unbiased likelihood),
# 4. does both again on the same model written as an **ordinary Pyro program** (a loop of
#    `pyro.sample` calls), which ppltk runs once for all particles, and
# 5. computes a static Pyro model's evidence by **tempered SMC** and checks it against the
#    closed form.
#
# Model: $x_0 \sim N(\mu, \sigma^2/(1-\phi^2))$, $x_t = \mu + \phi(x_{t-1}-\mu) + \sigma\varepsilon_t$,
# $y_t \sim N(0, e^{x_t})$.
#
# **Which path a model takes.** State-space models in explicit form (`init`, `transition`,
# `log_observation`) and Pyro models with `init(state)`/`step(state, y)` keep their Markov state
# in tensors that resampling re-indexes: cost $O(NT)$. Any other Pyro program that observes
# sequentially is run once in a coroutine suspended at each observation, its tensors re-indexed
# lazily after resampling: also $O(NT)$ (see `ppltk.smc.api` and `docs/blocks.md`).

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch

from ppltk._tutorial import fast_mode, save_figure
from ppltk.smc import StochasticVolatilitySSM, ffbs, particle_filter, pmmh, smc, tempered_smc

torch.set_num_threads(1)
FAST = fast_mode()
T = 100 if FAST else 500
D = torch.float64

# %% [markdown]
# ## Simulate and filter

# %%
true = StochasticVolatilitySSM(
    torch.tensor(-1.0, dtype=D), torch.tensor(0.9, dtype=D), torch.tensor(0.4, dtype=D)
)
x_true, ys = true.simulate(T, torch.Generator().manual_seed(0))
res = smc(true, ys, num_particles=1000, seed=0, progress=False)
out = res.attrs["filter"]
print(res, "path:", res.attrs["path"], "resampling steps:", res.attrs["num_resampling_steps"])

# %% [markdown]
# ## Smooth: forward filtering, backward sampling

# %%
stored = particle_filter(true, ys, 500, seed=1, store_history=True)
paths = ffbs(true, stored, 200, seed=2)[..., 0]
fig, ax = plt.subplots(figsize=(9, 3.5))
ax.plot(x_true[:, 0], "k", lw=1, label="true log-volatility")
ax.plot(out.means[:, 0], "C0", lw=1, label="filtered mean")
lo, hi = paths.quantile(0.05, 0), paths.quantile(0.95, 0)
ax.fill_between(range(T), lo, hi, color="C1", alpha=0.3, label="smoothed 90% band")
ax.legend(fontsize=8)
ax.set(xlabel="t", ylabel="x_t")
save_figure(fig, "smc_sv_filter_smooth")

# %% [markdown]
# ## Parameters by PMMH
# Parameters live on an unconstrained vector $\theta = (\mu, \operatorname{atanh}\phi,
# \log\sigma)$; priors $\mu \sim N(0, 2^2)$, $\phi \sim U(-1, 1)$, $\sigma \sim$ half-Cauchy(1).
# `make_ssm` builds a model batched over chains, so one filter call serves every chain.


# %%
def make_ssm(theta):
    return StochasticVolatilitySSM(theta[:, 0], torch.tanh(theta[:, 1]), theta[:, 2].exp())


def log_prior(theta):
    mu = dist.Normal(0.0, 2.0).log_prob(theta[:, 0])
    phi = math.log(0.5) + torch.log1p(-(torch.tanh(theta[:, 1]) ** 2))  # U(-1,1) + Jacobian
    sig = dist.HalfCauchy(1.0).log_prob(theta[:, 2].exp()) + theta[:, 2]
    return mu + phi + sig


chains, samples = (4, 150) if FAST else (4, 2000)
init = torch.tensor([[-0.5, 1.0, math.log(0.3)]], dtype=D).repeat(chains, 1)
post = pmmh(
    make_ssm,
    log_prior,
    ys,
    init,
    num_samples=samples,
    num_particles=100,
    proposal_scale=torch.tensor([0.15, 0.15, 0.15], dtype=D),
    seed=3,
    progress=False,
)
draws = post.draws["theta"][:, samples // 3 :]
print("acceptance", post.stats["accept_prob"].mean().round(2))
print("mu  ", draws[..., 0].mean().round(2), "(true -1.0)")
print("phi ", torch.tanh(torch.from_numpy(draws[..., 1])).mean().item().__round__(2), "(true 0.9)")
print("sigma", torch.from_numpy(draws[..., 2]).exp().mean().item().__round__(2), "(true 0.4)")

fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
for ax, k, name in zip(axes, range(3), ["mu", "atanh(phi)", "log sigma"]):
    ax.plot(post.draws["theta"][..., k].T, lw=0.6)
    ax.set(title=name, xlabel="iteration")
save_figure(fig, "smc_sv_pmmh_traces")

# %% [markdown]
# ## The same model as an ordinary Pyro program
# No `init`/`transition` class: a loop of `pyro.sample` statements with the parameters drawn
# first. `smc` runs it once for all particles (path `"program"`), suspended at each
# observation; its log-evidence at the true parameters has the same law as the explicit
# filter's.


# %%
def sv_states(ys, mu, phi, sigma):
    x = pyro.sample("x_0", dist.Normal(mu, sigma / torch.sqrt(1 - phi**2)))
    for t in pyro.markov(range(len(ys))):
        if t > 0:
            x = pyro.sample(f"x_{t}", dist.Normal(mu + phi * (x - mu), sigma))
        pyro.sample(f"y_{t}", dist.Normal(0.0, torch.exp(x / 2)), obs=ys[t])


def sv_program(ys):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    phi = pyro.sample("phi", dist.Uniform(-1.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfCauchy(1.0))
    sv_states(ys, mu, phi, sigma)


y_prog = ys[:, 0]
truth = (torch.tensor(-1.0, dtype=D), torch.tensor(0.9, dtype=D), torch.tensor(0.4, dtype=D))
prog = smc(sv_states, y_prog, *truth, num_particles=1000, seed=0, progress=False)
print(
    "path:",
    prog.attrs["path"],
    " log Z program:",
    round(prog.log_evidence, 2),
    " explicit SSM:",
    round(res.log_evidence, 2),
)

# %% [markdown]
# PMMH with the same program as the inner filter: `parameters=` names the sites to sample
# (moved in their unconstrained space), every other latent site is filtered.

# %%
prog_samples = 60 if FAST else 1000
post_prog = pmmh(
    sv_program,
    y_prog,
    parameters=["mu", "phi", "sigma"],
    init={
        "mu": torch.full((4,), -0.5, dtype=D),
        "phi": torch.full((4,), 0.75, dtype=D),
        "sigma": torch.full((4,), 0.3, dtype=D),
    },
    num_chains=4,
    num_samples=prog_samples,
    num_particles=100,
    proposal_scale=0.15,
    seed=3,
    progress=False,
)
keep = slice(prog_samples // 3, None)
for name, truth in (("mu", -1.0), ("phi", 0.9), ("sigma", 0.4)):
    print(f"{name:6s}{post_prog.draws[name][:, keep].mean():.2f}  (true {truth})")
print("acceptance", post_prog.stats["accept_prob"].mean().round(2))

# %% [markdown]
# ## Tempered SMC: evidence of a static model vs the closed form
# $\mu \sim N(0, s^2)$, $y_j \sim N(\mu, 1)$: the marginal is $N(0, I + s^2 \mathbf{1}\mathbf{1}^\top)$.


# %%
def model(y, s=2.0):
    mu = pyro.sample("mu", dist.Normal(0.0, s))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


y = torch.randn(30, generator=torch.Generator().manual_seed(4)) + 1.5
cov = torch.eye(30) + 4.0 * torch.ones(30, 30)
exact = dist.MultivariateNormal(torch.zeros(30), cov).log_prob(y).item()
runs = [
    tempered_smc(model, y, num_particles=1000, seed=s, progress=False)
    for s in range(3 if FAST else 10)
]
est = torch.tensor([r.log_evidence for r in runs])
print(f"tempered SMC log p(y) = {est.mean():.3f} ± {est.std():.3f}   exact = {exact:.3f}")
print("temperatures:", runs[0].attrs["num_temperatures"])

# %% [markdown]
# ## Speed
# `benchmarks/smc.py` runs a bootstrap filter (linear-Gaussian, T = 100) next to Pyro's
# `SMCFilter` in one process on one thread; ppltk also returns the log-evidence. The measured
# table (particle-steps per second and ratios) is in `benchmarks/results/smc.md`:

# %%
table = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "smc.md"
print(table.read_text() if table.exists() else "run `python benchmarks/smc.py` to measure")
