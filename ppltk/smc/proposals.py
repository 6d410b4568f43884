r"""Proposals: how particles are advanced to the next observation and reweighted.

A proposal draws :math:`X_t \sim q_t(\cdot \mid X_{t-1}, y_t)` and returns the incremental
weight

.. math:: G_t = \frac{g_t(y_t \mid X_t)\, f_t(X_t \mid X_{t-1})}{q_t(X_t \mid X_{t-1}, y_t)},

so that :math:`q_t G_t = f_t g_t`: the proposed, reweighted population targets the same
unnormalised measure as the bootstrap one (what every proposal preserves). Signature:
``propose(ssm, prev, t, y, shape, generator) -> (state, log G)``; ``prev`` is ``None`` at
``t = 0`` and ``shape = (*batch, N)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ppltk.gaussian import cholesky_or_zero, log_prob, psd_sqrt

__all__ = ["bootstrap", "GuideProposal", "LinearGaussianOptimalProposal"]


def bootstrap(
    ssm, prev: Any, t: int, y: torch.Tensor, shape, generator
) -> tuple[Any, torch.Tensor]:
    r"""Bootstrap proposal :math:`q_t = f_t`, so :math:`G_t = g_t(y_t \mid X_t)`."""
    state = ssm.init(shape, generator) if prev is None else ssm.transition(prev, t, generator)
    return state, ssm.log_observation(state, t, y)


class GuideProposal:
    r"""A user guide ``guide(prev, t, y, shape, generator) -> (state, log q)``.

    The model must provide ``log_init(x)`` and ``log_transition(prev, x, t)``; the weight is
    :math:`\log g + \log f - \log q`.
    """

    def __init__(self, guide: Callable) -> None:
        self.guide = guide

    def __call__(self, ssm, prev, t, y, shape, generator):
        state, log_q = self.guide(prev, t, y, shape, generator)
        log_f = ssm.log_init(state) if prev is None else ssm.log_transition(prev, state, t)
        return state, ssm.log_observation(state, t, y) + log_f - log_q


class LinearGaussianOptimalProposal:
    r"""Locally optimal proposal of a :class:`~ppltk.smc.LinearGaussianSSM`.

    With prior mean :math:`m` (:math:`m_0` or :math:`A x_{t-1}`) and covariance :math:`P`
    (:math:`P_0` or :math:`Q`): :math:`S = C P C^\top + R`, :math:`K = P C^\top S^{-1}`,

    .. math:: q_t = N(m + K(y_t - C m),\; P - K S K^\top),\qquad
              G_t = N(y_t;\, C m,\, S) = p(y_t \mid x_{t-1}),

    which does not depend on :math:`X_t`; works with noise-free observations (:math:`R = 0`)
    as long as :math:`S` is positive definite.
    """

    def __init__(self, ssm) -> None:
        self.ssm = ssm
        self._init = self._gain(ssm.P0)
        self._step = self._gain(ssm.Q)

    def _gain(self, P: torch.Tensor):
        C, R = self.ssm.C, self.ssm.R
        S = C @ P @ C.mT + R
        LS = cholesky_or_zero(S)
        K = torch.cholesky_solve(C @ P, LS).mT
        return K, LS, psd_sqrt(P - K @ S @ K.mT)

    def __call__(self, ssm, prev, t, y, shape, generator):
        p = ssm._p
        if prev is None:
            (K, LS, root), mean = (
                self._init,
                ssm.m0.unsqueeze(-2).expand(tuple(shape) + (ssm.state_dim,)),
            )
        else:
            (K, LS, root), mean = self._step, ssm.mean_transition(prev)
        innov = y - (p(ssm.C) @ mean.unsqueeze(-1)).squeeze(-1)
        log_g = log_prob(innov, p(LS))
        post = mean + (p(K) @ innov.unsqueeze(-1)).squeeze(-1)
        eps = torch.randn(post.shape, dtype=post.dtype, device=post.device, generator=generator)
        return post + (p(root) @ eps.unsqueeze(-1)).squeeze(-1), log_g
