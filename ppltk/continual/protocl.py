r"""Prototypical Bayesian continual learning (ProtoCL; Kessler et al., Entropy 2023, §6).

An encoder :math:`z = g_\phi(x) \in \mathbb R^h` embeds inputs. Class :math:`c` has a prototype
:math:`\mu_c \sim \mathcal N(m_c, s_c^2 I)`, embeddings :math:`z \mid y = c \sim
\mathcal N(\mu_c, \sigma^2 I)` (isotropic noise) and class probabilities
:math:`\pi \sim \operatorname{Dir}(\alpha)`. Conjugacy gives closed-form updates with the
:math:`n_c` embeddings of class :math:`c`,

.. math:: s_c'^{-2} = s_c^{-2} + n_c \sigma^{-2}, \qquad
          m_c' = s_c'^2 \Big(s_c^{-2} m_c + \sigma^{-2} \sum_{i: y_i = c} z_i\Big), \qquad
          \alpha_c' = \alpha_c + n_c,

which are exact Bayesian updates, so updating in chunks equals one batch update. The
posterior predictive classifier is

.. math:: p(y = c \mid x) \propto \frac{\alpha_c}{\sum_k \alpha_k}\,
          \mathcal N\big(g_\phi(x);\, m_c, (s_c^2 + \sigma^2) I\big).

The encoder is trained episodically, as in the paper: each step draws a class-balanced episode
from the current task plus a small replay memory of earlier classes, updates the prototypes
on its support points and maximises the predictive log-probability of its query points.
After each task the prototypes of all classes seen so far are recomputed from the current
task and the replay memory with the updated encoder. The memory keeps, per class, the
points chosen by herding on the inputs (their mean tracks the class mean). Only training
labels ever enter an update; ``predict_proba`` takes no labels.

Without an encoder, :class:`ProtoCL` builds :class:`DefaultEncoder` from the first task:
the inputs centred on the first task's mean and divided by its root-mean-square deviation,
then an MLP ``d -> 128 -> ReLU -> 32`` initialised from ``seed``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from ppltk._rng import make_generator
from ppltk.continual._learner import ContinualLearner, training_steps
from ppltk.errors import ArgumentError, ShapeError

__all__ = [
    "DefaultEncoder",
    "herding",
    "PrototypeState",
    "prior_state",
    "conjugate_update",
    "predictive_log_proba",
    "ProtoCL",
]


@dataclass(frozen=True)
class PrototypeState:
    """Posterior of the class prototypes: means ``[K, h]``, variances ``[K]``, Dirichlet ``[K]``."""

    mean: torch.Tensor
    var: torch.Tensor
    alpha: torch.Tensor


def prior_state(
    num_classes: int,
    embed_dim: int,
    prior_var: float = 1.0,
    alpha0: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> PrototypeState:
    """Prior :math:`m_c = 0`, :math:`s_c^2 =` ``prior_var``, :math:`\\alpha_c =` ``alpha0``."""
    if not prior_var > 0 or not alpha0 > 0:
        raise ArgumentError(
            f"Expected `prior_var` > 0 and `alpha0` > 0, but found {prior_var}, {alpha0}"
        )
    kw = dict(dtype=dtype, device=device)
    return PrototypeState(
        torch.zeros(num_classes, embed_dim, **kw),
        torch.full((num_classes,), float(prior_var), **kw),
        torch.full((num_classes,), float(alpha0), **kw),
    )


def conjugate_update(
    state: PrototypeState, z: torch.Tensor, y: torch.Tensor, noise_var: float | torch.Tensor
) -> PrototypeState:
    """Exact Normal-Normal / Dirichlet-categorical update with embeddings ``z [n, h]``, labels ``y [n]``."""
    k, h = state.mean.shape
    if z.ndim != 2 or z.shape[1] != h or y.shape != z.shape[:1]:
        raise ShapeError(
            f"Expected `z` [n, {h}] and `y` [n], but found {tuple(z.shape)}, {tuple(y.shape)}"
        )
    if len(y) and int(y.max()) >= k:
        raise ShapeError(f"Expected labels < {k} (classes in `state`), but found {int(y.max())}")
    onehot = torch.nn.functional.one_hot(y, k).to(z.dtype)  # [n, K]
    counts = onehot.sum(0)
    sums = onehot.T @ z  # [K, h]
    # s'^{-2} = s^{-2} + n_c / sigma^2;  m' = s'^2 (m / s^2 + sum_c z / sigma^2)
    precision = 1.0 / state.var + counts / noise_var
    var = 1.0 / precision
    mean = var[:, None] * (state.mean / state.var[:, None] + sums / noise_var)
    return PrototypeState(mean, var, state.alpha + counts)


def predictive_log_proba(state: PrototypeState, z: torch.Tensor, noise_var) -> torch.Tensor:
    """``log p(y = c | z)`` ``[n, K]``: Dirichlet mean times Gaussian posterior predictive."""
    h = z.shape[-1]
    pred_var = state.var + noise_var  # [K]
    sq = torch.cdist(z, state.mean).pow(2)  # [n, K]
    log_lik = -0.5 * sq / pred_var - 0.5 * h * torch.log(2 * math.pi * pred_var)
    log_prior = state.alpha.log() - state.alpha.sum().log()
    return (log_lik + log_prior).log_softmax(-1)


def herding(X: torch.Tensor, m: int) -> torch.Tensor:
    r"""Indices of ``m`` rows of ``X`` chosen greedily so that their mean tracks ``X``'s mean.

    Herding (Welling, 2009; the exemplar selection of iCaRL, Rebuffi et al., 2017): step
    :math:`k` adds the row :math:`i \notin S` minimising
    :math:`\lVert \bar x - (\sum_{j \in S} x_j + x_i) / k \rVert`. Deterministic; all rows
    (in herding order) when ``m >= n``.
    """
    n = X.shape[0]
    target = X.mean(0)
    chosen = torch.zeros(n, dtype=torch.bool, device=X.device)
    total = torch.zeros_like(target)
    order = []
    for k in range(1, min(m, n) + 1):
        dist = ((target - (total + X) / k) ** 2).sum(-1).masked_fill(chosen, math.inf)
        i = int(dist.argmin())
        order.append(i)
        chosen[i] = True
        total = total + X[i]
    return torch.tensor(order, dtype=torch.long, device=X.device)


class DefaultEncoder(torch.nn.Module):
    r"""The encoder :class:`ProtoCL` builds when none is given.

    :math:`g(x) = \operatorname{MLP}\big((x - \bar x) / r\big)`, with :math:`\bar x` the
    mean and :math:`r = \sqrt{\overline{\lVert x - \bar x\rVert^2} / d}` the root-mean-square
    deviation of the first task's inputs (fixed buffers, so a later task never moves them);
    the MLP has ReLU hidden layers of widths ``hidden`` and a linear output of ``embed_dim``.
    Weights follow PyTorch's default ``nn.Linear`` initialisation, drawn from ``seed``.

    Parameters
    ----------
    X
        Inputs ``[n, d]`` of the first task (only their mean and spread are used).
    hidden, embed_dim
        Hidden widths and embedding dimension.
    seed
        Seed or generator of the initial weights.
    """

    def __init__(
        self,
        X: torch.Tensor,
        hidden: tuple[int, ...] = (128,),
        embed_dim: int = 32,
        seed: int | torch.Generator = 0,
    ):
        super().__init__()
        if not isinstance(X, torch.Tensor) or X.ndim != 2 or X.shape[0] == 0:
            raise ShapeError(
                f"Expected `X` of shape [n > 0, d], but found {getattr(X, 'shape', X)}"
            )
        widths = [X.shape[1], *hidden, embed_dim]
        if any(not isinstance(w, int) or w < 1 for w in widths):
            raise ArgumentError(
                f"Expected positive int `hidden` and `embed_dim`, but found {hidden}, {embed_dim}"
            )
        gen = make_generator(seed)
        shift = X.detach().mean(0)
        scale = (X.detach() - shift).pow(2).mean().sqrt()
        self.register_buffer("shift", shift)
        self.register_buffer("scale", torch.where(scale > 0, scale, torch.ones_like(scale)))
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            lin = torch.nn.utils.skip_init(torch.nn.Linear, a, b, dtype=X.dtype)
            bound = 1.0 / math.sqrt(a)  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            with torch.no_grad():
                lin.weight.copy_(torch.rand(b, a, generator=gen, dtype=X.dtype) * 2 * bound - bound)
                lin.bias.copy_(torch.rand(b, generator=gen, dtype=X.dtype) * 2 * bound - bound)
            layers.append(lin)
            if i < len(widths) - 2:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers).to(X.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.shift) / self.scale)


class ProtoCL(ContinualLearner):
    r"""ProtoCL: Gaussian class prototypes on a trained encoder, with a small replay memory.

    Parameters
    ----------
    encoder
        Module mapping ``[n, d]`` to embeddings ``[n, h]`` (deep-copied, trained here);
        ``None`` (default): a :class:`DefaultEncoder` built from the first task's inputs with
        ``hidden`` and ``embed_dim``; ``torch.nn.Identity()``: prototypes on the raw inputs
        (a Bayesian nearest-class-mean; nothing to train).
    noise_var, prior_var, alpha0
        :math:`\sigma^2`, prior :math:`s^2` of every prototype, prior Dirichlet concentration.
    memory_per_class
        Training points kept per class for replay.
    memory_selection
        ``"herding"`` (default): the points whose running mean best tracks the class mean
        of the inputs (:func:`herding`); ``"random"``: a uniform draw from the class.
    num_steps, lr
        Adam steps (episodes) per task on the encoder and learning rate (0 steps: frozen
        encoder).
    support_per_class, query_per_class
        Episode size: points drawn per class seen so far for the prototype update and for
        the predictive loss (at most half of a class's available points go to its support).
    hidden, embed_dim
        Widths of the default encoder (ignored when ``encoder`` is given).
    seed
        Seed or generator (default encoder's weights, episodes, memory selection).

    Attributes
    ----------
    state
        :class:`PrototypeState` after the latest task. After each task the Dirichlet counts
        keep every training label seen; the prototype means of earlier classes are
        recomputed from the replay memory with the updated encoder, those of the new classes
        from all of the task's training points.
    encoder
        The trained encoder (``None`` before the first task when it is built lazily).
    """

    def __init__(
        self,
        encoder: torch.nn.Module | None = None,
        noise_var: float = 1.0,
        prior_var: float = 1.0,
        alpha0: float = 1.0,
        memory_per_class: int = 20,
        memory_selection: str = "herding",
        num_steps: int = 200,
        lr: float = 1e-3,
        support_per_class: int = 10,
        query_per_class: int = 10,
        hidden: tuple[int, ...] = (128,),
        embed_dim: int = 32,
        seed: int | torch.Generator = 0,
        progress: bool = False,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__(seed=seed, dtype=dtype)
        if encoder is not None and not isinstance(encoder, torch.nn.Module):
            raise ArgumentError(
                f"Expected `encoder` to be a torch.nn.Module or None, but found {type(encoder)}"
            )
        for name, value, low in (
            ("num_steps", num_steps, 0),
            ("memory_per_class", memory_per_class, 0),
            ("support_per_class", support_per_class, 1),
            ("query_per_class", query_per_class, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ArgumentError(f"Expected `{name}` to be an int >= {low}, but found {value!r}")
        for name, value in (("noise_var", noise_var), ("prior_var", prior_var), ("lr", lr)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ArgumentError(f"Expected `{name}` > 0, but found {value!r}")
        if memory_selection not in ("herding", "random"):
            raise ArgumentError(
                f"Expected `memory_selection` in ('herding', 'random'), but found {memory_selection!r}"
            )
        self.memory_selection = memory_selection
        self.encoder = None if encoder is None else copy.deepcopy(encoder).to(dtype)
        self.noise_var, self.prior_var, self.alpha0 = (
            float(noise_var),
            float(prior_var),
            float(alpha0),
        )
        self.memory_per_class, self.num_steps, self.lr = memory_per_class, num_steps, lr
        self.support_per_class, self.query_per_class = support_per_class, query_per_class
        self.hidden, self.embed_dim = tuple(hidden), embed_dim
        self.progress = progress
        self.state: PrototypeState | None = None
        self.counts: torch.Tensor | None = None  # training labels seen per class
        self.memory_X = torch.zeros(0, 0, dtype=dtype)
        self.memory_y = torch.zeros(0, dtype=torch.long)
        if encoder is None:  # validate the widths now rather than at the first task
            DefaultEncoder(torch.zeros(1, 1, dtype=dtype), self.hidden, embed_dim, seed=0)

    def _prior(self, z: torch.Tensor) -> PrototypeState:
        k, h = self.num_classes, z.shape[1]
        return prior_state(k, h, self.prior_var, self.alpha0, self.dtype, z.device)

    def _episode(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-balanced support and query indices into ``y``."""
        support, query = [], []
        for c in y.unique():
            idx = torch.nonzero(y == c).squeeze(-1)
            idx = idx[torch.randperm(len(idx), generator=self.generator).to(idx.device)]
            k = min(self.support_per_class, len(idx) // 2)
            support.append(idx[:k])
            query.append(idx[k : k + self.query_per_class])
        return torch.cat(support), torch.cat(query)

    def _train_encoder(self, X, y):
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        if not params:
            return
        opt = torch.optim.Adam(params, lr=self.lr)
        for _ in training_steps(self.num_steps, "ProtoCL", self.progress):
            sup, qry = self._episode(y)
            z_sup, z_qry = self.encoder(X[sup]), self.encoder(X[qry])
            state = conjugate_update(self._prior(z_sup), z_sup, y[sup], self.noise_var)
            # balanced episodes: equal class weights, the likelihood term trains the encoder
            state = PrototypeState(state.mean, state.var, torch.ones_like(state.alpha))
            logp = predictive_log_proba(state, z_qry, self.noise_var)
            loss = -logp[torch.arange(len(qry), device=logp.device), y[qry]].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    def _update_memory(self, X, y):
        keep_X, keep_y = [self.memory_X], [self.memory_y]
        for c in y.unique():
            idx = torch.nonzero(y == c).squeeze(-1)
            if self.memory_selection == "herding":
                idx = idx[herding(X[idx], self.memory_per_class)]
            else:
                perm = torch.randperm(len(idx), generator=self.generator).to(idx.device)
                idx = idx[perm[: self.memory_per_class]]
            keep_X.append(X[idx])
            keep_y.append(y[idx])
        self.memory_X, self.memory_y = torch.cat(keep_X), torch.cat(keep_y)

    def _observe(self, X, y):
        if self.encoder is None:
            self.encoder = DefaultEncoder(X, self.hidden, self.embed_dim, seed=self.generator)
        if self.memory_X.numel() == 0:
            self.memory_X, self.memory_y = X.new_zeros(0, X.shape[1]), y.new_zeros(0)
        Xs, ys = torch.cat([X, self.memory_X]), torch.cat([y, self.memory_y])
        if self.num_steps > 0:
            self.encoder.train()
            self._train_encoder(Xs, ys)
        self.encoder.eval()
        with torch.no_grad():
            z = self.encoder(Xs)
            state = conjugate_update(self._prior(z), z, ys, self.noise_var)
        counts = torch.bincount(y, minlength=self.num_classes).to(z)
        if self.counts is not None:  # earlier classes; the new task may add classes
            counts[: len(self.counts)] += self.counts
        self.counts = counts
        self.state = PrototypeState(state.mean, state.var, self.alpha0 + self.counts)
        self._update_memory(X, y)

    def _predict_proba(self, X):
        z = self.encoder(X)
        return predictive_log_proba(self.state, z, self.noise_var).exp()
