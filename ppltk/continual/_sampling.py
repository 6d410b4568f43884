"""Posterior sampling over a flat parameter vector for the continual-learning loop.

A thin wrapper of :func:`ppltk.mcmc.sample_flat` (batched NUTS/HMC; warm-up adapts the step
size and a diagonal metric in every call, i.e. afresh for every task).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ppltk.errors import ArgumentError
from ppltk.mcmc import Kernel, sample_flat

__all__ = ["sample_posterior"]

LogDensityAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def sample_posterior(
    logdensity_and_grad: LogDensityAndGrad,
    init: torch.Tensor,
    kernel: str | Kernel = "nuts",
    num_warmup: int = 300,
    num_samples: int = 300,
    seed: int | torch.Generator = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Draw ``[C, S, D]`` samples from ``C`` chains started at ``init [C, D]``.

    Returns the draws and a small info dict (divergences after warm-up, mean acceptance,
    mean step size); divergences are reported there rather than as warnings.
    """
    if not isinstance(kernel, Kernel) and kernel not in ("nuts", "hmc"):
        raise ArgumentError(
            f"Expected `sampler` in ('nuts', 'hmc') or a ppltk.mcmc kernel, but found {kernel!r}"
        )
    out = sample_flat(
        logdensity_and_grad,
        init,
        kernel=kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        seed=seed,
        progress=progress,
        warn_divergences=False,
    )
    info = {"num_divergences": out.num_divergences}
    for name in ("accept_prob", "step_size", "n_steps", "tree_depth"):
        if name in out.stats:
            info[f"mean_{name}"] = float(out.stats[name].double().mean())
    return out.positions, info
