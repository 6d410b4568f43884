r"""The particle filter: propose, reweight, adaptively resample — linear in :math:`T`.

One step of the filter (the Feynman–Kac recursion, Del Moral 2004) is

.. math:: \text{if } \mathrm{ESS}_{t-1}/N < \tau:\; a^{1:N} \sim r(W_{t-1}),\;
          \log\hat Z \mathrel{+}= \mathrm{lse}(\log w_{t-1}) - \log N,\; \log w_{t-1} \leftarrow 0;
          \qquad X_t^i \sim q_t(\cdot \mid X_{t-1}^{a^i}),\qquad
          \log w_t^i = \log w_{t-1}^i + \log G_t(X_{t-1}^{a^i}, X_t^i),

and the evidence estimate :math:`\hat Z_T = \hat Z_{\mathrm{past}} \frac1N\sum_i w_T^i` is
unbiased, :math:`E[\hat Z_T] = p(y_{0:T-1})`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.errors import ArgumentError, ShapeError
from ppltk.smc.kernel import FeynmanKac, init, step
from ppltk.smc.population import Population
from ppltk.smc.proposals import bootstrap
from ppltk.smc.resampling import get_resampler

__all__ = ["FilterOutput", "StateSpaceFK", "particle_filter", "check_filter_args"]


@dataclass(eq=False)
class FilterOutput:
    """Everything a particle filter run produced (compared by identity: it holds tensors).

    Attributes
    ----------
    population
        The final weighted population (time :math:`T-1`).
    log_evidence
        ``[*batch]`` float64 :math:`\\log\\hat Z_T`.
    log_evidence_increments
        ``[T, *batch]`` :math:`\\log\\hat p(y_t \\mid y_{0:t-1})`; they sum to ``log_evidence``.
    ess, resampled
        ``[T, *batch]`` ESS after reweighting at ``t``, and whether step ``t`` resampled first.
    means, variances
        ``[T, *batch, d]`` weighted filtering moments (tensor states only, else ``None``).
    history
        With ``store_history=True``: lists over ``t`` of particles, log-weights, ancestors
        (the indices used before step ``t``; identity at ``t = 0``).
    """

    population: Population
    log_evidence: torch.Tensor
    log_evidence_increments: torch.Tensor
    ess: torch.Tensor
    resampled: torch.Tensor
    means: torch.Tensor | None = None
    variances: torch.Tensor | None = None
    history: dict[str, list] | None = field(default=None, repr=False)


def check_filter_args(num_particles: int, ess_threshold: float, num_steps: int) -> None:
    """The one contract check of the filters (messages "Expected X, but found Y")."""
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ArgumentError(f"Expected `num_particles` a positive int, but found {num_particles!r}")
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ArgumentError(f"Expected `ess_threshold` in [0, 1], but found {ess_threshold!r}")
    if num_steps < 1:
        raise ArgumentError(f"Expected at least one observation, but found {num_steps}")


def _moments(x, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Weighted mean and variance of tensor states ``[*batch, N, d]`` (else ``None``)."""
    if not isinstance(x, torch.Tensor) or x.ndim != w.ndim + 1 or not x.is_floating_point():
        return None
    w = w.to(x.dtype).unsqueeze(-2)  # [*batch, 1, N]: two weighted sums as matrix products
    mean = w @ x
    return mean.squeeze(-2), (w @ (x - mean).square()).squeeze(-2)


class StateSpaceFK(FeynmanKac):
    r"""A state-space model and its observations as a Feynman–Kac model: :math:`M_t = q_t`
    (the proposal, bootstrap by default) and :math:`G_t = g_t f_t / q_t`."""

    def __init__(self, ssm: Any, ys, proposal=None) -> None:
        _check_observations(ssm, ys)
        self.ssm, self.ys, self.proposal = ssm, ys, proposal or bootstrap
        self.num_steps = len(ys)

    def advance(self, t, xp, shape, generator):
        return self.proposal(self.ssm, xp, t, self.ys[t], shape, generator)


def _check_observations(ssm: Any, ys) -> None:
    """``ys`` against the model's ``observation_shape`` (when it declares one): ``[T, *shape]``
    or ``[T, *batch, *shape]``; a wrong trailing shape or a transposed series is refused."""
    if ys is None or (isinstance(ys, torch.Tensor) and ys.ndim == 0):
        raise ArgumentError(f"Expected observations `ys` shaped [T, ...], but found {ys!r}")
    shape = getattr(ssm, "observation_shape", None)
    if shape is None or not isinstance(ys, torch.Tensor):
        return
    shape = tuple(shape)
    if ys.ndim < 1 + len(shape) or tuple(ys.shape[ys.ndim - len(shape) :]) != shape:
        raise ShapeError(
            f"Expected `ys` shaped [T, {', '.join(map(str, shape))}] (one observation of shape "
            f"{list(shape)} per step), but found {list(ys.shape)}"
        )
    if not ys.is_floating_point():
        raise ArgumentError(f"Expected floating-point observations, but found {ys.dtype}")


def particle_filter(
    ssm: Any,
    ys: torch.Tensor | None,
    num_particles: int,
    *,
    resampling="systematic",
    ess_threshold: float = 0.5,
    proposal=None,
    batch_shape: tuple[int, ...] = (),
    seed: int | torch.Generator = 0,
    store_history: bool = False,
    progress: bool = False,
) -> FilterOutput:
    r"""Run a particle filter: :func:`~ppltk.smc.init` then :func:`~ppltk.smc.step` until the
    model's last observation.

    Parameters
    ----------
    ssm
        A :class:`~ppltk.smc.FeynmanKac` model (``ys`` is then ``None``: it owns its data), or
        an object with ``init``, ``transition``, ``log_observation`` (a
        :class:`~ppltk.smc.StateSpaceModel`) observed at ``ys``.
    ys
        Observations ``[T, ...]`` (or a list of per-step tensors); ``ys[t]`` is passed to the
        model at step ``t`` (with ``batch_shape``, ``ys[t]`` broadcasts against
        ``[*batch, N, ...]``).
    num_particles
        :math:`N`.
    resampling
        ``"systematic"`` (default), ``"stratified"``, ``"residual"``, ``"multinomial"`` or a
        callable with the resampler signature.
    ess_threshold
        Resample when :math:`\mathrm{ESS}/N <` this (0.5); 1.0 resamples at every step.
    proposal
        A proposal (see :mod:`ppltk.smc.proposals`); default bootstrap.
    batch_shape
        Leading batch of independent filters (e.g. one per parameter value).
    seed, store_history, progress
        Seed or generator; keep every step's particles (for smoothing); tqdm bar.

    Returns
    -------
    FilterOutput
        Raises :class:`~ppltk.errors.DegenerateWeightsError` naming the observation ``t`` at
        which every particle's weight is zero or NaN.

    Examples
    --------
    >>> import torch
    >>> from ppltk.smc import LinearGaussianSSM, particle_filter
    >>> eye = torch.eye(1, dtype=torch.float64)
    >>> ssm = LinearGaussianSSM(0.9 * eye, eye, eye, eye, torch.zeros(1, dtype=torch.float64), eye)
    >>> out = particle_filter(ssm, torch.zeros(5, 1, dtype=torch.float64), 100, seed=0)
    >>> out.log_evidence.shape
    torch.Size([])
    """
    fk = ssm if isinstance(ssm, FeynmanKac) else StateSpaceFK(ssm, ys, proposal)
    num_steps = fk.num_steps
    check_filter_args(num_particles, ess_threshold, 1 if num_steps is None else num_steps)
    generator = make_generator(seed, _device(ys))
    resampler = get_resampler(resampling)
    rec = {k: [] for k in ("inc", "ess", "res", "mean", "var", "x", "logw", "anc")}
    with progress_bar(num_steps, "particle filter", progress) as bar:
        state, info = init(fk, num_particles, generator, batch_shape)
        _record(rec, state.population, info, store_history)
        bar.update()
        while not fk.done(state.t):
            state, info = step(
                fk, state, generator, resampling=resampler, ess_threshold=ess_threshold
            )
            _record(rec, state.population, info, store_history)
            bar.update()
    pop, stack = state.population, torch.stack
    moments = rec["mean"][0] is not None
    return FilterOutput(
        population=pop,
        log_evidence=pop.log_evidence_estimate(),
        log_evidence_increments=stack(rec["inc"]),
        ess=stack(rec["ess"]),
        resampled=stack(rec["res"]),
        means=stack(rec["mean"]) if moments else None,
        variances=stack(rec["var"]) if moments else None,
        history={"particles": rec["x"], "log_weights": rec["logw"], "ancestors": rec["anc"]}
        if store_history
        else None,
    )


def _device(ys) -> torch.device:
    """Device of the observations (a tensor ``[T, ...]`` or a sequence of tensors)."""
    if isinstance(ys, torch.Tensor):
        return ys.device
    first = ys[0] if ys is not None and len(ys) else None
    return first.device if isinstance(first, torch.Tensor) else torch.device("cpu")


def _record(rec, pop, info, store_history) -> None:
    """Append the step's diagnostics."""
    rec["inc"].append(info.log_evidence_increment)
    rec["ess"].append(info.ess)
    rec["res"].append(info.resampled)
    moments = _moments(pop.particles, pop.weights)
    rec["mean"].append(None if moments is None else moments[0])
    rec["var"].append(None if moments is None else moments[1])
    if store_history:
        rec["x"].append(pop.particles)
        rec["logw"].append(pop.log_weights)
        rec["anc"].append(info.ancestors)
