# %% [markdown]
# # Learning the Hurst index of a fractional SDE
#
# Fractional Brownian motion (fBM) $B_H$ has correlated increments: rough paths for $H < 1/2$,
# smooth long-memory paths for $H > 1/2$. It is not Markov, so standard SDE tools do not apply.
# Daems et al. (ICLR 2024) approximate it by a weighted sum of Ornstein--Uhlenbeck processes
# driven by one Brownian motion (MA-fBM),
#
# $$\hat B_H(t) = \sum_{k=1}^K \omega_k Y_k(t), \qquad dY_k = -\gamma_k Y_k\,dt + dW,$$
#
# with $\omega(H)$ L2-optimal on $[0, T]$. The state $(X, Y_1, \dots, Y_K)$ of an SDE driven by
# $\hat B_H$ is Markov, so variational inference with a Girsanov control works, and $H$ is
# learned by gradient through $\omega(H)$.
#
# This tutorial (1) checks the approximation quality of MA-fBM, (2) learns $H$ from exact fBM
# paths and compares with classical estimators, (3) shows posterior paths.

# %%
import matplotlib.pyplot as plt
import torch

from ppltk._tutorial import fast_mode, save_figure
from ppltk.sde import (
    MarkovFBM,
    VariationalFractionalSDE,
    davies_harte,
    hurst_gaussian_mle,
    hurst_variogram,
)

torch.set_num_threads(1)
FAST = fast_mode()

# %% [markdown]
# ## 1. How good is the Markov approximation?
#
# The relative L2 error $\int_0^T E(B_H - \hat B_H)^2 dt / \int_0^T E B_H^2 dt$ in closed form
# (Type II, speeds on a geometric grid from $0.1/T$ to $100/T$). At $H = 1/2$ the target is $W$
# itself and the error vanishes; rough and smooth ends need more processes.

# %%
hursts = [0.1, 0.3, 0.5, 0.7, 0.9]
ks = [1, 3, 5, 8]
print("| H | " + " | ".join(f"K={k}" for k in ks) + " | K=8, gamma_max=1e4 |")
print("|---" * (len(ks) + 2) + "|")
for h in hursts:
    errs = [float(MarkovFBM(h, num_processes=k).approximation_error(relative=True)) for k in ks]
    wide = MarkovFBM(h, num_processes=8, gamma_max=1e4).approximation_error(relative=True)
    print(f"| {h} | " + " | ".join(f"{e:.2e}" for e in errs + [float(wide)]) + " |")

# %% [markdown]
# Very rough paths ($H = 0.1$) live on short time scales: the error there is set by the fastest
# speed $\gamma_{\max}$, not by $K$; widening the grid fixes it. Conversely, $H$ can only be
# learned on time scales between $1/\gamma_{\max}$ and $1/\gamma_{\min}$, so the fitting API
# picks the grid from the observation spacing and the horizon.

# %% [markdown]
# The variance of the approximation against $t^{2H}$ (standard normalisation):

# %%
ts_fine = torch.linspace(0.01, 1, 100, dtype=torch.float64)
fig, ax = plt.subplots(figsize=(6, 3.5))
for h in (0.2, 0.5, 0.8):
    m = MarkovFBM(h, num_processes=5)
    ax.plot(ts_fine, m.variance(ts_fine), label=f"MA-fBM H={h}")
    ax.plot(ts_fine, ts_fine ** (2 * h), "k:", lw=1)
ax.set(xlabel="t", ylabel="Var", title="Var of MA-fBM (lines) vs $t^{2H}$ (dotted)")
ax.legend()
save_figure(fig, "fractional_sde_variance")

# %% [markdown]
# ## 2. Learning H from exact fBM paths
#
# Paths are simulated exactly with Davies--Harte. The variational model is
# $dX = \sigma\, d\hat B_H$, $y_i \sim N(X(t_i), s^2)$, with $H$, $\sigma$, the initial state and a
# zero-initialised neural control learned by maximising the ELBO with Adam.

# %%
T, n_paths, steps = (48, 6, 60) if FAST else (96, 16, 300)
ts = torch.linspace(0, 1, T, dtype=torch.float64)
models, table = {}, []
for hurst in (0.3, 0.7):
    ys = davies_harte(hurst, T - 1, n_paths, seed=1)[..., None]
    model = VariationalFractionalSDE(num_particles=2 if FAST else 4, lr=0.05)
    model.fit(ts, ys, num_steps=steps, seed=0)
    models[hurst] = (model, ys)
    table.append((hurst, model.hurst, hurst_variogram(ys), hurst_gaussian_mle(ys)))

print("| true H | variational | variogram | Gaussian MLE |")
print("|---|---|---|---|")
for row in table:
    print("| " + " | ".join(f"{v:.3f}" for v in row) + " |")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for hurst, (model, _) in models.items():
    ax.plot(model.elbo_history, label=f"true H={hurst}")
ax.set(xlabel="Adam step", ylabel="ELBO per observation", title="Training")
ax.legend()
save_figure(fig, "fractional_sde_elbo")

# %% [markdown]
# ## 3. Posterior paths
#
# Paths from the variational posterior on the solver grid pass through the observations
# (within the observation noise) and carry the roughness of the learned $H$.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), sharex=True)
for ax, (hurst, (model, ys)) in zip(axes, models.items()):
    paths, grid = model.sample_posterior_paths(num_samples=10, seed=1)
    for k in range(paths.shape[0]):
        ax.plot(grid, paths[k, 0, :, 0], color="C0", alpha=0.3, lw=0.8)
    ax.plot(ts, ys[0, :, 0], "k.", ms=4, label="observations")
    ax.set(title=f"true H={hurst}, learned H={model.hurst:.2f}", xlabel="t")
    ax.legend()
save_figure(fig, "fractional_sde_posterior_paths")
