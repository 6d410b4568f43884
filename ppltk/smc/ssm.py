r"""State-space models in explicit Markov-state form (the linear-time path).

A state-space model (Feynman–Kac "bootstrap" form, as in Chopin & Papaspiliopoulos, 2020):

.. math:: X_0 \sim M_0,\qquad X_t \mid X_{t-1} \sim f_t(\cdot \mid X_{t-1}),\qquad
          Y_t \mid X_t \sim g_t(\cdot \mid X_t),\qquad t = 0, \dots, T-1.

Any object with the three methods of :class:`StateSpaceModel` works (duck typing). States are
tensors ``[*batch, N, d]`` (or pytrees of tensors with that leading layout); ``batch`` is a
batch of parameter values (PMMH chains, SMC² particles), ``N`` the particles. Because the
algorithm holds the whole Markov state, resampling re-indexes it in :math:`O(N d)`, and a
filter costs :math:`O(T N)`.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch

from ppltk import gaussian
from ppltk.errors import ArgumentError
from ppltk.gaussian import cholesky_or_zero
from ppltk.smc.proposals import LinearGaussianOptimalProposal

__all__ = [
    "StateSpaceModel",
    "LinearGaussianSSM",
    "StochasticVolatilitySSM",
]

_LOG_2PI = math.log(2 * math.pi)


@runtime_checkable
class StateSpaceModel(Protocol):
    """The explicit Markov-state protocol. ``log_transition`` is optional (FFBS, guides)."""

    def init(self, shape: tuple[int, ...], generator: torch.Generator) -> Any:
        """Draw :math:`X_0 \\sim M_0`, a state with leading dims ``shape = (*batch, N)``."""

    def transition(self, state: Any, t: int, generator: torch.Generator) -> Any:
        """Draw :math:`X_t \\sim f_t(\\cdot \\mid X_{t-1} = \\text{state})`."""

    def log_observation(self, state: Any, t: int, y: torch.Tensor) -> torch.Tensor:
        """:math:`\\log g_t(y_t \\mid X_t)`, shaped like the state's leading dims."""


def _simulate(ssm, num_steps: int, generator: torch.Generator, observe):
    """One path ``(x [T, d], y [T, m])``: ``init``, ``transition``, and ``observe(x) -> y``."""
    xs, ys = [], []
    x = ssm.init((1,), generator)
    for t in range(num_steps):
        if t > 0:
            x = ssm.transition(x, t, generator)
        xs.append(x[0])
        ys.append(observe(x)[0])
    return torch.stack(xs), torch.stack(ys)


class LinearGaussianSSM:
    r"""Linear-Gaussian model :math:`X_0 \sim N(m_0, P_0)`, :math:`X_t = A X_{t-1} + N(0, Q)`,
    :math:`Y_t = C X_t + N(0, R)`.

    Matrices may carry leading batch dims (``A [*batch, d, d]``) for batches of parameter
    values; the particle dim is inserted by the methods. ``R = 0`` (noise-free observations) is
    allowed: the bootstrap filter then degenerates, :meth:`optimal_proposal` does not.
    """

    def __init__(self, A, C, Q, R, m0, P0) -> None:
        self.A, self.C, self.Q, self.R, self.m0, self.P0 = A, C, Q, R, m0, P0
        self.LQ, self.LR, self.L0 = cholesky_or_zero(Q), cholesky_or_zero(R), cholesky_or_zero(P0)

    @property
    def state_dim(self) -> int:
        return self.A.shape[-1]

    @property
    def observation_shape(self) -> tuple[int, ...]:
        """Shape of one observation :math:`y_t`: ``(m,)`` (the filters check ``ys`` by it)."""
        return (self.C.shape[-2],)

    @staticmethod
    def _p(mat: torch.Tensor) -> torch.Tensor:
        """Insert the particle dim before a matrix's last two dims."""
        return mat.unsqueeze(-3)

    @classmethod
    def _apply(cls, mat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:math:`M x` for ``x [*batch, N, d]`` (one GEMM when ``M`` is unbatched)."""
        if mat.shape == (1, 1):
            return x * mat[0, 0]
        if mat.ndim == 2:
            return x @ mat.mT
        return (cls._p(mat) @ x.unsqueeze(-1)).squeeze(-1)

    def _noise(self, like: torch.Tensor, tril: torch.Tensor, generator) -> torch.Tensor:
        eps = torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)
        return self._apply(tril, eps)

    def init(self, shape, generator):
        shape = tuple(shape) + (self.state_dim,)
        mean = self.m0.unsqueeze(-2).expand(shape)
        return mean + self._noise(mean, self.L0, generator)

    def mean_transition(self, state: torch.Tensor) -> torch.Tensor:
        """:math:`A x` for states ``[..., d]``."""
        return self._apply(self.A, state)

    def transition(self, state, t, generator):
        mean = self.mean_transition(state)
        return mean + self._noise(mean, self.LQ, generator)

    def log_observation(self, state, t, y):
        tril = self.LR if self.LR.ndim == 2 else self._p(self.LR)
        return gaussian.log_prob(y - self._apply(self.C, state), tril)

    def log_transition(self, prev, state, t):
        """:math:`\\log f(x_t \\mid x_{t-1})` broadcasting ``prev`` against ``state`` (unbatched)."""
        return gaussian.log_prob(state - (prev @ self.A.mT), self.LQ)

    def log_init(self, state):
        """:math:`\\log M_0(x_0)`."""
        return gaussian.log_prob(state - self.m0.unsqueeze(-2), self._p(self.L0))

    @classmethod
    def from_kalman(cls, kf) -> LinearGaussianSSM:
        r"""The model of a fitted :class:`ppltk.filtering.KalmanFilter` in this class's
        convention.

        The Kalman filter starts from :math:`z_0 \sim N(m, P)` and *predicts first*
        (:math:`x_1` observes :math:`z_1 = Az_0 + \eta`); here :math:`y_0` observes
        :math:`x_0` itself, so :math:`m_0 = Am` and :math:`P_0 = APA^\top + \Gamma`. The two
        then give every observation sequence the same law (and the same evidence). An
        observation offset :math:`b \ne 0` has no counterpart here: subtract it from the data.
        """
        b = getattr(kf, "b", None)
        if b is not None and bool((b != 0).any()):
            raise ArgumentError(
                "Expected a KalmanFilter without an observation offset (b = 0), but found "
                f"b = {b.tolist()}; subtract it from the observations first"
            )
        A, gamma = kf.A, kf.Gamma
        m0 = kf.init_mean @ A.mT
        P0 = A @ kf.init_cov @ A.mT + gamma
        return cls(A, kf.H, gamma, kf.R, m0, 0.5 * (P0 + P0.mT))

    def optimal_proposal(self):
        """The locally optimal proposal :math:`p(x_t \\mid x_{t-1}, y_t)` (see proposals)."""
        return LinearGaussianOptimalProposal(self)

    def simulate(self, num_steps: int, generator: torch.Generator):
        """Draw ``(x [T, d], y [T, m])`` from the (unbatched) model."""

        def observe(x):
            pred = x @ self.C.mT
            return pred + self._noise(pred, self.LR, generator)

        return _simulate(self, num_steps, generator, observe)


class StochasticVolatilitySSM:
    r"""Stochastic volatility: :math:`X_0 \sim N(\mu, \sigma^2/(1-\phi^2))`,
    :math:`X_t = \mu + \phi (X_{t-1} - \mu) + \sigma\varepsilon_t`,
    :math:`Y_t \sim N(0, e^{X_t})`.

    ``mu, phi, sigma`` are tensors with shape ``[*batch]`` (or scalars); states ``[*batch, N, 1]``.
    """

    observation_shape = (1,)

    def __init__(self, mu, phi, sigma) -> None:
        self.mu, self.phi, self.sigma = (torch.as_tensor(v) for v in (mu, phi, sigma))

    def _b(self, v: torch.Tensor) -> torch.Tensor:
        return v[..., None, None]

    def init(self, shape, generator):
        mu, phi, sigma = (self._b(v) for v in (self.mu, self.phi, self.sigma))
        eps = torch.randn(
            tuple(shape) + (1,), dtype=mu.dtype, device=mu.device, generator=generator
        )
        return mu + sigma / torch.sqrt(1 - phi**2) * eps

    def transition(self, state, t, generator):
        mu, phi, sigma = (self._b(v) for v in (self.mu, self.phi, self.sigma))
        eps = torch.randn(state.shape, dtype=state.dtype, device=state.device, generator=generator)
        return mu + phi * (state - mu) + sigma * eps

    def log_observation(self, state, t, y):
        x = state[..., 0]
        return -0.5 * (_LOG_2PI + x + y.squeeze(-1) ** 2 * torch.exp(-x))

    def log_transition(self, prev, state, t):
        mu, phi, sigma = self.mu, self.phi, self.sigma
        z = (state - mu - phi * (prev - mu))[..., 0] / sigma
        return -0.5 * (_LOG_2PI + z**2) - torch.log(sigma)

    def simulate(self, num_steps: int, generator: torch.Generator):
        """Draw ``(x [T, 1], y [T, 1])`` from the (unbatched) model."""

        def observe(x):
            eps = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
            return torch.exp(x / 2) * eps

        return _simulate(self, num_steps, generator, observe)
