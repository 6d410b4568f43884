"""Model entry point: :func:`sample` runs batched chains on a Pyro model through the bridge."""

from __future__ import annotations

import os

import torch

from ppltk._methods import get_method
from ppltk._progress import waiting_line
from ppltk._rng import make_generator
from ppltk.errors import ArgumentError
from ppltk.mcmc._base import Kernel
from ppltk.mcmc.checkpoint import stable_hash
from ppltk.mcmc.runner import make_kernel, sample_flat
from ppltk.model.graph import count_operations, on_compile

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
    chains_per_unit: int | None = None,
    restart_stuck: bool = True,
    **model_kwargs,
):
    """Draw posterior samples of a Pyro model with ``num_chains`` chains run as one batch.

    The model's continuous latent sites are mapped to one flat unconstrained vector per chain
    (:class:`ppltk.model.ModelBridge`); the kernel runs on :math:`\\log\\pi(z)` including the
    log-Jacobian, and the draws are mapped back to the constrained sites.  Discrete latent
    sites with a finite support (Bernoulli, Categorical, ``pyro.markov`` HMM states, ...) are
    summed out exactly by parallel enumeration, so the kernel runs on the continuous sites
    only, and each draw of them comes back with a draw of the discrete sites from their exact
    conditional given it; a discrete site without a finite support (e.g. ``Poisson``) raises
    :class:`~ppltk.errors.DiscreteLatentError`.

    Parameters
    ----------
    model, model_args, model_kwargs
        A Pyro model and the arguments it is called with (observed data among them).
    kernel
        ``"nuts"`` (default), ``"hmc"``, ``"mh"``, ``"chees"`` (ChEES-HMC: every chain the same
        trajectory length, for many chains; at least 2 chains per group) or a kernel object.
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
        Run the chains in groups of ``chains_per_unit`` (one work unit each, see
        :func:`ppltk.distributed.sample_chains`) on ``executor``: ``None`` (this process, one
        group after another), ``"dask"`` (a local cluster), a scheduler address or a
        ``dask.distributed.Client``.  With an executor, ``chains_per_unit`` defaults to 1.
        With neither, all chains run as one batch.
    restart_stuck
        Restart stuck chains during warm-up from another chain's state (see
        :func:`ppltk.mcmc.sample_flat`); ``attrs["num_restarts"]`` counts them per chain.
    backend
        How the model is evaluated (see :class:`ppltk.model.ModelBridge`): ``"fx"`` replays its
        captured tensor graph, ``"inductor"`` compiles it with TorchInductor -- for NUTS, each
        whole leaf of the tree, model included (:class:`~ppltk.mcmc.fused.FusedStep`) -- (8-12
        s the first time on a machine; on the CPU a library kept on disk that later runs find
        in milliseconds, also for new data of the same shapes; then 5-30x faster per step),
        ``"eager"`` re-runs the model's Python code at every step. ``"auto"``
        (default) is ``"inductor"`` for runs of at least ``INDUCTOR_MIN_ITERATIONS`` (500)
        iterations when a C++ compiler is present and one evaluation of the model's
        log-density and gradient runs at most ``AUTO_COMPILE_MAX_NODES`` (1000) operations,
        else ``"fx"``.

    Returns
    -------
    ppltk.Result
        ``draws {site: [chain, draw, ...]}`` (latent sites, enumerated discrete sites drawn
        from :math:`p(k \\mid x, y)` at each continuous draw :math:`x`, and
        ``pyro.deterministic`` sites)
        and ``stats`` (``lp``, ``accept_prob``, ``step_size``, ``tree_depth``, ``n_steps``,
        ``diverging``), ``attrs`` with ``num_divergences``, ``interrupted``,
        ``num_restarts`` and ``nonfinite_evaluations`` (per chain).

    Notes
    -----
    *Reproducibility.* The draws are a function of ``seed``, ``num_chains`` and the grouping
    (``chains_per_unit``), never of the executor, the number of workers or worker failures:
    ``sample(..., seed=s, chains_per_unit=k)`` in this process and on any executor give
    identical draws.  Chains of one group share one random stream, so a different grouping
    (including the default single batch) gives different, equally valid, draws.

    *Robustness.* A point where the model raises (e.g. ``torch.linalg.LinAlgError`` from a
    Cholesky inside the model, a ``ValueError`` from a distribution) or has a non-finite
    log-density or gradient is a rejected (divergent) transition of that chain only; initial
    points are redrawn until every chain has a finite one.

    *Checkpoints* store a fingerprint of the run (model sites, a hash of the data and
    arguments, kernel and options, seed, ppltk version); resuming another run's checkpoint
    raises :class:`~ppltk.errors.CheckpointMismatchError`.

    Warns
    -----
    DivergenceWarning
        When kept transitions diverged (the count is in the message).
    InterruptedWarning
        On Ctrl-C; the draws made so far are returned.
    """
    from ppltk.model import ModelBridge

    if executor is not None or chains_per_unit is not None:
        if checkpoint is not None:
            raise ArgumentError(
                "`checkpoint` cannot be combined with `executor` or `chains_per_unit`"
            )
        sample_chains, _ = get_method("distributed_chains", "runner")  # no upward import

        if not restart_stuck:  # passed on only when not the default
            model_kwargs = {**model_kwargs, "restart_stuck": False}
        return sample_chains(
            model,
            *model_args,
            method=kernel,
            num_chains=num_chains,
            chains_per_unit=1 if chains_per_unit is None else chains_per_unit,
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
    resolved = choose_backend(backend, num_warmup + num_samples)
    compiling = resolved == "inductor"
    # a kernel that compiles the model into its own steps (NUTS: whole leaves), else the
    # model's graph compiled once its size is known
    compiled_kernel = kernel.with_compile() if compiling else None
    bridge_backend = ("auto" if backend == "auto" else "fx") if compiling else resolved
    bridge = ModelBridge(model, model_args, model_kwargs, backend=bridge_backend)
    capturable = bridge.backend != "eager"  # "auto": not with subsampling plates
    if compiled_kernel is not None and capturable:
        # the few points evaluated outside the compiled steps are evaluated eagerly:
        # capturing the model's graph for them would import TorchDynamo (about a second)
        bridge.set_backend("eager")
    dev = torch.device(device) if device is not None else bridge.device
    gen = make_generator(seed, dev)
    init = bridge.initial_points(num_chains, gen).to(dev)
    if compiling and not capturable:
        resolved = bridge.backend
    elif compiling:
        notice = "compiling the model (its first run on this machine; later runs load it)"
        with waiting_line(notice, progress) as show, on_compile(show):
            ld = bridge.log_density_and_grad
            if backend == "auto" and count_operations(ld, init) > AUTO_COMPILE_MAX_NODES:
                resolved = "fx"  # compiling would take longer than it saves
            elif compiled_kernel is None:
                bridge.set_backend("inductor")
                bridge.log_density_and_grad(init)  # compiles now, not inside the sampling bar
            elif compiled_kernel.compiles(ld, init, dense_mass):
                kernel = compiled_kernel
            else:  # it warned: the uncompiled kernel on the replayed graph is the faster fallback
                resolved = "fx"
        if resolved == "fx" and bridge.backend != "fx":
            bridge.set_backend("fx")
    backend = resolved
    fingerprint = None
    if checkpoint is not None:  # what a resumed run must share with the saved one
        fingerprint = {
            "model": stable_hash(bridge.structure()),
            "data": stable_hash([model_args, model_kwargs, bridge.observed]),
            "backend": backend,
        }
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
        restart_stuck=restart_stuck,
        warn_disagreement=True,
        fingerprint=fingerprint,
    )
    attrs = {
        "num_divergences": out.num_divergences,
        "num_warmup_divergences": int(out.attrs["warmup_divergences"].sum()),
        "interrupted": out.interrupted,
        "kernel": repr(kernel),
        "num_warmup": num_warmup,
        "num_restarts": out.attrs["restarts"].tolist(),
        "nonfinite_evaluations": out.attrs["nonfinite_evaluations"].tolist(),
        "model_evaluation_errors": bridge.num_evaluation_errors,
    }
    if isinstance(seed, int):
        attrs["seed"] = seed
    stats = {k: v for k, v in out.stats.items() if k != "energy"}
    return bridge.to_result(out.positions, stats, method=kernel.name, attrs=attrs)


INDUCTOR_MIN_ITERATIONS = 500
"""Shortest run (warm-up plus draws) that ``backend="auto"`` compiles.  Compiling a model's
NUTS leaf costs 6-12 s the first time on a machine and milliseconds afterwards (the library
is kept on disk, :func:`ppltk.model.graph.compile_function`); a compiled leaf costs 15-130 us
against 0.5-1 ms for a replayed graph on the models of ``benchmarks/mcmc.py``, so a first
compilation repays itself after some 20,000-50,000 leaves: a thousand or more iterations at
typical tree sizes, a few hundred for deep trees or costly models.  The threshold does not
look at the disk, so a seed gives the same draws whether or not the library exists."""


AUTO_COMPILE_MAX_NODES = 1000
"""Most ATen operations one evaluation of the log-density and its gradient may run
(:func:`ppltk.model.graph.count_operations`, about the size of its captured graph) for
``backend="auto"`` to compile: compile time grows faster than linearly with the graph (eight
schools: 172 operations, a few seconds; an enumerated HMM over 10 steps: 1838, minutes), so a
larger model is replayed uncompiled unless ``backend="inductor"`` is asked for."""


def choose_backend(backend: str, num_iterations: int) -> str:
    """Resolve ``backend="auto"``: compile runs of at least ``INDUCTOR_MIN_ITERATIONS``
    iterations when a C++ compiler is present (where compilation pays for itself)."""
    if backend != "auto":
        return backend
    if num_iterations >= INDUCTOR_MIN_ITERATIONS and _has_cxx_compiler():
        return "inductor"
    return "fx"


def _has_cxx_compiler() -> bool:
    import shutil

    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))
