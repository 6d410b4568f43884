"""Random linear-Gaussian models and float64 oracles shared by the filtering tests."""

from __future__ import annotations

import numpy as np
import torch


def random_spd(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    B = rng.normal(size=(n, n))
    return scale * (B @ B.T / n + 0.5 * np.eye(n))


def random_model(rng: np.random.Generator, d: int, m: int) -> dict:
    """A stable random linear-Gaussian model as float64 numpy arrays."""
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    A = Q @ np.diag(rng.uniform(0.3, 0.95, size=d)) @ Q.T
    return {
        "A": A,
        "Gamma": random_spd(rng, d, 0.3),
        "H": rng.normal(size=(m, d)),
        "R": random_spd(rng, m, 0.5),
        "b": rng.normal(size=m),
        "m0": rng.normal(size=d),
        "P0": random_spd(rng, d),
    }


def simulate(rng: np.random.Generator, model: dict, T: int) -> tuple[np.ndarray, np.ndarray]:
    d, m = model["H"].shape[1], model["H"].shape[0]
    z = rng.multivariate_normal(model["m0"], model["P0"])
    eta = rng.normal(size=(T, d)) @ np.linalg.cholesky(model["Gamma"]).T
    eps = rng.normal(size=(T, m)) @ np.linalg.cholesky(model["R"]).T
    Z = np.zeros((T, d))
    for t in range(T):
        z = model["A"] @ z + eta[t]
        Z[t] = z
    return Z @ model["H"].T + model["b"] + eps, Z


def torch_model(model: dict) -> dict:
    return {k: torch.as_tensor(v, dtype=torch.float64) for k, v in model.items()}


def reference_kalman(model: dict, X: np.ndarray):
    """Textbook float64 Kalman filter with explicit inverses (predict, then update)."""
    A, G, H, R, b = model["A"], model["Gamma"], model["H"], model["R"], model["b"]
    x, P = model["m0"].copy(), model["P0"].copy()
    means, covs, loglik = [], [], 0.0
    for obs in X:
        x, P = A @ x, A @ P @ A.T + G
        S = H @ P @ H.T + R
        K = P @ H.T @ np.linalg.inv(S)
        e = obs - H @ x - b
        loglik += -0.5 * (
            e @ np.linalg.solve(S, e) + np.linalg.slogdet(S)[1] + len(obs) * np.log(2 * np.pi)
        )
        x = x + K @ e
        P = (np.eye(len(x)) - K @ H) @ P
        means.append(x)
        covs.append(P)
    return np.array(means), np.array(covs), loglik


def joint_gaussian(model: dict, T: int):
    """Mean and covariance of the stacked vector (z_1..z_T, x_1..x_T), built explicitly."""
    A, G, H, R, b = model["A"], model["Gamma"], model["H"], model["R"], model["b"]
    d = H.shape[1]
    mean_z = np.zeros((T, d))
    cov_zz = np.zeros((T * d, T * d))
    mu, V = model["m0"], model["P0"]
    marg = []
    for t in range(T):
        mu, V = A @ mu, A @ V @ A.T + G
        mean_z[t] = mu
        marg.append(V)
    for t in range(T):
        for s in range(t + 1):
            # Cov(z_t, z_s) = A^{t-s} Var(z_s) for t >= s
            block = np.linalg.matrix_power(A, t - s) @ marg[s]
            cov_zz[t * d : (t + 1) * d, s * d : (s + 1) * d] = block
            cov_zz[s * d : (s + 1) * d, t * d : (t + 1) * d] = block.T
    big_H = np.kron(np.eye(T), H)
    cov_xz = big_H @ cov_zz
    cov_xx = big_H @ cov_zz @ big_H.T + np.kron(np.eye(T), R)
    mean_x = (mean_z @ H.T + b).reshape(-1)
    return mean_z.reshape(-1), mean_x, cov_zz, cov_xz, cov_xx
