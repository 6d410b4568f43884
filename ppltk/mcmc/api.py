"""Model entry point: :func:`sample` runs batched chains on a Pyro model through the bridge."""

from __future__ import annotations

import os

import torch

from ppltk._rng import make_generator
from ppltk.errors import ArgumentError
from ppltk.mcmc._base import Kernel
from ppltk.mcmc.runner import make_kernel, sample_flat

__all__ = ["sample"]


def sample(
    model,
    *model_args,
    kernel: str | Kernel = "nuts",
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    seed: int | torch.Generator | None = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    target_accept: float | None = None,
    dense_mass: bool = False,
    backend: str = "auto",
    executor=None,
    chains_per_unit: int = 1,
    **model_kwargs,
):
    """Draw posterior samples of a Pyro model with ``num_chains`` chains run as one batch.

    The model's continuous latent sites are mapped to one flat unconstrained vector per chain
    (:class:`ppltk.model.ModelBridge`); the kernel runs on :math:`\\log\\pi(z)` including the
    log-Jacobian, and the draws are mapped back to the constrained sites.

    Parameters
    ----------
    model, model_args, model_kwargs
        A Pyro model and the arguments it is called with (observed data among them).
    kernel
        ``"nuts"`` (default), ``"hmc"``, ``"mh"`` or a kernel object.
    num_chains, num_warmup, num_samples
        Chains, warm-up iterations and kept draws per chain.
    seed
        ``int`` or :class:`torch.Generator` (initial points and every kernel draw).
    device
        Where the chains live (``None``: the model's device).  Model tensors must be there too.
    progress
        Show a tqdm bar on a terminal.
    checkpoint
        Path written periodically; an existing checkpoint is resumed.
    target_accept, dense_mass
        Warm-up options (see :func:`ppltk.mcmc.sample_flat`).
    executor, chains_per_unit
        Spread the chains over workers in groups of ``chains_per_unit``: ``"dask"`` (a local
        cluster), a scheduler address, a ``dask.distributed.Client`` (see
        :func:`ppltk.distributed.sample_chains`). ``None`` (default) runs all chains as one
        batch in this process.
    backend
        How the model is evaluated (see :class:`ppltk.model.ModelBridge`): ``"fx"`` replays its
        captured tensor graph, ``"inductor"`` compiles that graph with ``torch.compile`` (a few
        seconds once, then 2-3x faster), ``"eager"`` re-runs the model's Python code at every
        step. ``"auto"`` (default) is ``"inductor"`` for runs of at least
        ``INDUCTOR_MIN_ITERATIONS`` iterations when a C++ compiler is present, else ``"fx"``.

    Returns
    -------
    ppltk.Result
        ``draws {site: [chain, draw, ...]}`` and ``stats`` (``lp``, ``accept_prob``,
        ``step_size``, ``tree_depth``, ``n_steps``, ``diverging``), ``attrs`` with
        ``num_divergences`` and ``interrupted``.

    Warns
    -----
    DivergenceWarning
        When kept transitions diverged (the count is in the message).
    InterruptedWarning
        On Ctrl-C; the draws made so far are returned.
    """
    from ppltk.model import ModelBridge

    if executor is not None:
        if checkpoint is not None:
            raise ArgumentError("`checkpoint` cannot be combined with `executor`")
        from ppltk.distributed import sample_chains

        return sample_chains(
            model,
            *model_args,
            method=kernel,
            num_chains=num_chains,
            chains_per_unit=chains_per_unit,
            executor=executor,
            seed=seed,
            progress=progress,
            num_warmup=num_warmup,
            num_samples=num_samples,
            device=device,
            target_accept=target_accept,
            dense_mass=dense_mass,
            backend=backend,
            **model_kwargs,
        )

    if not isinstance(num_chains, int) or isinstance(num_chains, bool) or num_chains < 1:
        raise ArgumentError(f"Expected `num_chains` to be a positive int, but found {num_chains!r}")
    kernel = make_kernel(kernel)
    backend = choose_backend(backend, num_warmup + num_samples)
    bridge = ModelBridge(model, model_args, model_kwargs, backend=backend)
    dev = torch.device(device) if device is not None else bridge.device
    gen = make_generator(seed, dev)
    init = bridge.initial_points(num_chains, gen).to(dev)
    out = sample_flat(
        bridge.log_density_and_grad,
        init,
        kernel=kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        seed=gen,
        target_accept=target_accept,
        dense_mass=dense_mass,
        progress=progress,
        checkpoint=checkpoint,
    )
    attrs = {
        "num_divergences": out.num_divergences,
        "num_warmup_divergences": int(out.attrs["warmup_divergences"].sum()),
        "interrupted": out.interrupted,
        "kernel": repr(kernel),
        "num_warmup": num_warmup,
    }
    if isinstance(seed, int):
        attrs["seed"] = seed
    stats = {k: v for k, v in out.stats.items() if k != "energy"}
    return bridge.to_result(out.positions, stats, method=kernel.name, attrs=attrs)


INDUCTOR_MIN_ITERATIONS = 2000


def choose_backend(backend: str, num_iterations: int) -> str:
    """Resolve ``backend="auto"``: compile long runs (where compilation pays for itself)."""
    if backend != "auto":
        return backend
    if num_iterations >= INDUCTOR_MIN_ITERATIONS and _has_cxx_compiler():
        return "inductor"
    return "fx"


def _has_cxx_compiler() -> bool:
    import shutil

    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))
