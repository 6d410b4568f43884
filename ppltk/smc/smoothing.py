r"""Smoothing: forward-filtering backward-sampling, conditional SMC and particle Gibbs.

FFBS (Godsill, Doucet & West, 2004): after a filter that stored its weighted particles,
draw :math:`x_{T-1} \sim \sum_i W^i_{T-1}\delta_{x^i_{T-1}}` and, backwards,

.. math:: P(x_t = x_t^i \mid x_{t+1}) \propto W_t^i\, f_{t+1}(x_{t+1} \mid x_t^i),

which samples the particle approximation of :math:`p(x_{0:T-1}\mid y)`; cost :math:`O(TNM)`
for :math:`M` trajectories. Needs ``ssm.log_transition``.

Conditional SMC (Andrieu, Doucet & Holenstein, 2010) keeps a reference trajectory in slot
:math:`N-1`; the kernel ``reference -> new trajectory`` leaves :math:`p(x_{0:T-1}\mid y)`
invariant for any :math:`N \ge 2`. With ancestor sampling (Lindsten, Jordan & Schön, 2014) the
reference's ancestor is redrawn :math:`\propto W_{t-1}^i f_t(x^*_t \mid x^i_{t-1})`, which
mixes well with few particles. Particle Gibbs iterates it.
"""

from __future__ import annotations

import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.errors import ArgumentError
from ppltk.results import Result
from ppltk.smc.filter import FilterOutput
from ppltk.smc.population import check_log_weights
from ppltk.smc.resampling import multinomial, multinomial_from_uniforms

__all__ = ["ffbs", "conditional_smc", "particle_gibbs"]


def _draw_one(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of ``logits [..., N]`` by the float64 inverse CDF."""
    u = torch.rand(
        logits.shape[:-1] + (1,), dtype=torch.float64, device=logits.device, generator=generator
    )
    return multinomial_from_uniforms(torch.softmax(logits, -1), u)[..., 0]


def ffbs(
    ssm, output: FilterOutput, num_trajectories: int, seed: int | torch.Generator = 0
) -> torch.Tensor:
    """Backward-sample ``num_trajectories`` paths ``[M, T, d]`` from a filter run with
    ``store_history=True`` (unbatched). Preserves: draws follow the particle smoother."""
    if output.history is None:
        raise ArgumentError(
            "Expected a filter output with history (store_history=True), but found none"
        )
    xs, logws = output.history["particles"], output.history["log_weights"]
    generator = make_generator(seed, logws[-1].device)
    m = num_trajectories
    idx = _draw_one(logws[-1].expand(m, -1), generator)
    x = xs[-1][idx]
    path = [x]
    for t in range(len(xs) - 2, -1, -1):
        logits = logws[t][None, :] + ssm.log_transition(xs[t][None, :, :], x[:, None, :], t + 1)
        check_log_weights(logits, f"backward step t={t}")
        idx = _draw_one(logits, generator)
        x = xs[t][idx]
        path.append(x)
    return torch.stack(path[::-1], 1)


def conditional_smc(
    ssm,
    ys: torch.Tensor,
    reference: torch.Tensor,
    num_particles: int,
    generator: torch.Generator,
    ancestor_sampling: bool = True,
) -> torch.Tensor:
    """One conditional-SMC sweep (bootstrap, multinomial resampling every step).

    ``reference [T, d]`` is kept in slot ``N-1``; returns a new trajectory ``[T, d]``.
    """
    n, steps = num_particles, len(ys)
    x = ssm.init((n,), generator)
    x[-1] = reference[0]
    xs, ancestors = [x], []
    logw = ssm.log_observation(x, 0, ys[0])
    for t in range(1, steps):
        check_log_weights(logw, f"observation t={t - 1}")
        a = multinomial(logw, generator)
        if ancestor_sampling:
            logits = logw + ssm.log_transition(xs[-1], reference[t][None], t)
            a[-1] = _draw_one(logits, generator)
        else:
            a[-1] = n - 1
        x = ssm.transition(xs[-1][a], t, generator)
        x[-1] = reference[t]
        xs.append(x)
        ancestors.append(a)
        logw = ssm.log_observation(x, t, ys[t])
    check_log_weights(logw, f"observation t={steps - 1}")
    k = _draw_one(logw, generator).reshape(1)
    path = [xs[-1][k]]
    for t in range(steps - 2, -1, -1):
        k = ancestors[t][k]
        path.append(xs[t][k])
    return torch.cat(path[::-1], 0)


def particle_gibbs(
    ssm,
    ys: torch.Tensor,
    *,
    num_particles: int = 20,
    num_samples: int = 500,
    ancestor_sampling: bool = True,
    update=None,
    seed: int | torch.Generator = 0,
    init: torch.Tensor | None = None,
    progress: bool = True,
) -> Result:
    r"""Particle Gibbs: iterate conditional SMC on the states (and, optionally, parameters).

    Each sweep draws :math:`x_{0:T-1} \sim \mathrm{CSMC}(\cdot \mid x^*_{0:T-1}, \theta)`; with
    ``update(trajectory [T, d], ssm, generator) -> (ssm, params: dict)`` a parameter step
    :math:`\theta \sim p(\theta \mid x_{0:T-1}, y)` (any kernel invariant for it) follows, so the
    chain targets :math:`p(\theta, x_{0:T-1} \mid y)`. Returns ``draws["x"] [1, S, T, d]`` and
    one draw site per entry of ``params`` (``[1, S, ...]``).
    """
    generator = make_generator(seed, ys.device)
    if init is None:
        x = ssm.init((1,), generator)
        init = torch.cat([x] + [x := ssm.transition(x, t, generator) for t in range(1, len(ys))])
    ref, draws, params = init, [], {}
    with progress_bar(num_samples, "particle Gibbs", progress) as bar:
        for _ in range(num_samples):
            ref = conditional_smc(ssm, ys, ref, num_particles, generator, ancestor_sampling)
            draws.append(ref)
            if update is not None:
                ssm, values = update(ref, ssm, generator)
                for k, v in values.items():
                    params.setdefault(k, []).append(torch.as_tensor(v))
            bar.update()
    out = {"x": torch.stack(draws)[None]}
    out.update({k: torch.stack(v)[None] for k, v in params.items()})
    return Result(draws=out, method="particle_gibbs")
