"""A small float64 Kalman filter/smoother: the exact reference for demos and tutorials."""

from __future__ import annotations

import torch

from ppltk.gaussian import condition

__all__ = ["kalman_filter", "rts_smoother"]


def kalman_filter(ssm, ys: torch.Tensor):
    """Means ``[T, d]``, covariances ``[T, d, d]`` and ``log p(y)`` of an unbatched
    :class:`~ppltk.smc.LinearGaussianSSM` (Joseph-free textbook form, float64)."""
    A, C, Q, R, m, P = (v.double() for v in (ssm.A, ssm.C, ssm.Q, ssm.R, ssm.m0, ssm.P0))
    means, covs, logz = [], [], torch.zeros((), dtype=torch.float64)
    for t, y in enumerate(ys.double()):
        if t > 0:
            m, P = A @ m, A @ P @ A.T + Q  # predict
        m, P, log_lik = condition(m, P, C, R, y)  # update, log N(y; Cm, S)
        logz = logz + log_lik
        means.append(m)
        covs.append(P)
    return torch.stack(means), torch.stack(covs), float(logz)


def rts_smoother(ssm, ys: torch.Tensor):
    """Rauch–Tung–Striebel smoothed means ``[T, d]`` and covariances ``[T, d, d]``."""
    A, Q = ssm.A.double(), ssm.Q.double()
    means, covs, _ = kalman_filter(ssm, ys)
    sm, sP = [means[-1]], [covs[-1]]
    for t in range(len(ys) - 2, -1, -1):
        pred = A @ covs[t] @ A.T + Q
        G = torch.linalg.solve(pred, A @ covs[t]).T  # smoother gain P_t A^T pred^-1
        sm.insert(0, means[t] + G @ (sm[0] - A @ means[t]))
        sP.insert(0, covs[t] + G @ (sP[0] - pred) @ G.T)
    return torch.stack(sm), torch.stack(sP)
