# %% [markdown]
# # Neural decoding with the discriminative Kalman filter
#
# An intracortical brain-computer interface decodes a 2-D cursor velocity from the spike
# counts of many neurons, every 20 ms. The Kalman filter (KF) needs a *generative* model
# p(x | z) — here linear-Gaussian, although spike counts are Poisson and the tuning curves
# are nonlinear. The discriminative Kalman filter (DKF; Burkhart et al., 2020) instead
# learns p(z | x) ≈ N(f(x), Q(x)) by regression and combines it with linear-Gaussian
# dynamics in closed form:
#
# Σₜ = (M⁻¹ + Q(xₜ)⁻¹ − S⁻¹)⁻¹, μₜ = Σₜ(M⁻¹ν + Q(xₜ)⁻¹ f(xₜ)).
#
# We simulate exponentially tuned neurons, fit KF, EKF, UKF and DKF with three regressors
# (Nadaraya–Watson, a small MLP, a GP), and compare them on held-out data.

# %%
import torch

from ppltk._tutorial import fast_mode, save_figure
from ppltk.datasets import simulate_neural_decoding
from ppltk.filtering import DiscriminativeKalmanFilter, decoding_pipeline
from ppltk.filtering.plotting import plot_decoded

torch.set_num_threads(1)
FAST = fast_mode()
NUM_NEURONS, NUM_STEPS = (20, 1000) if FAST else (100, 5000)

# %% [markdown]
# ## Data: AR(1) velocity, Poisson counts, exponentiated cosine tuning

# %%
X, Z = simulate_neural_decoding(NUM_NEURONS, NUM_STEPS, bin_ms=20.0, seed=0, tuning="exponential")
print(f"counts {tuple(X.shape)}, mean rate {X.mean() / 0.02:.1f} Hz; states {tuple(Z.shape)}")

# %% [markdown]
# ## The scikit-learn-like API
# `fit(X, Z)` learns the dynamics A, Γ by least squares, the stationary S from
# S = A S Aᵀ + Γ, the regressor f on the first 80 % of the training rows and Q from the
# held-out residuals. `filter(X)` returns means `[T, 2]` and covariances `[T, 2, 2]`.

# %%
split = int(0.8 * NUM_STEPS)
dkf = DiscriminativeKalmanFilter("nw", "constant", warn=False).fit(X[:split], Z[:split])
means, covs = dkf.filter(X[split:])
print("A =", dkf.A.numpy().round(3).tolist(), " non-PD fixes:", dkf.last_nonpd_count_)

# %% [markdown]
# The online form keeps only the current belief; each `step` costs one regression
# evaluation and a few 2×2 factorisations.

# %%
dkf.reset()
for x_t in X[split : split + 5]:
    mean_t, cov_t = dkf.step(x_t)
print(
    "online mean after 5 bins:",
    mean_t.numpy().round(3),
    "(batch filter:",
    means[4].numpy().round(3),
    ")",
)

# %% [markdown]
# ## When the update is invalid
# With a state-dependent Q(x) (kernel-smoothed residual outer products) the regression can
# be *less* certain than the prior in some direction, so Q⁻¹ − S⁻¹ is not positive definite
# and the update would be invalid. `nonpd_fix` chooses the remedy and the filter counts
# how often it fired; the robust DKF drops −S⁻¹ at every step. Here one channel in twenty
# bins also carries an outlier burst.

# %%
from ppltk.filtering import normalised_rmse

Xo, Zo = simulate_neural_decoding(
    NUM_NEURONS, NUM_STEPS, bin_ms=20.0, seed=1, tuning="exponential", outlier_prob=0.05
)
print("| nonpd_fix | robust | fixes fired | nRMSE |\n|---|---|---|---|")
for fix in ("drop_prior", "inflate", "clip"):
    for robust in (False, True):
        model = DiscriminativeKalmanFilter(
            "nw", "kernel", nonpd_fix=fix, robust=robust, warn=False
        ).fit(Xo[:split], Zo[:split])
        decoded, _ = model.filter(Xo[split:])
        err = float(normalised_rmse(decoded, Zo[split:]))
        print(f"| {fix} | {robust} | {model.last_nonpd_count_} | {err:.3f} |")

# %% [markdown]
# Against single-channel outliers two further options act where the outlier enters:
# `clip_inputs=q` winsorises every input channel to its training [q, 1 − q] quantiles
# before the regression, and `outlier_prob=p` gates the update, down-weighting a
# measurement whose pseudo-observation lies beyond the 1 − p quantile of χ²_d from the
# prediction (a Huber-type inflation of Q).

# %%
print("| options | nRMSE | gated updates |\n|---|---|---|")
for options in ({}, {"clip_inputs": 1e-3}, {"clip_inputs": 1e-3, "outlier_prob": 1e-3}):
    model = DiscriminativeKalmanFilter("nw", warn=False, **options).fit(Xo[:split], Zo[:split])
    decoded, _ = model.filter(Xo[split:])
    err = float(normalised_rmse(decoded, Zo[split:]))
    print(f"| {options or 'none'} | {err:.3f} | {model.last_outlier_count_} |")

# %% [markdown]
# ## The decoding table

# %%
table = decoding_pipeline(
    X, Z, regressors=("nw", "mlp") if FAST else ("nw", "mlp", "gp", "auto"), fast=FAST, seed=0
)
print(table.to_markdown())

# %% [markdown]
# ## Decoded vs true trajectories

# %%
best = min((r for r in table.rows if r["method"].startswith("DKF")), key=lambda r: r["nrmse"])
fig = plot_decoded(table.truth, {k: table.decoded[k] for k in ("KF", best["method"])})
save_figure(fig, "neural_decoding_trajectories")

# %% [markdown]
# ## Next
# {doc}`sensor_fusion`: two sensors with different rates and dropouts fused into one
# estimate with the KF, UKF and DKF side by side.
#
# ```{toctree}
# :hidden:
#
# sensor_fusion
# ```
