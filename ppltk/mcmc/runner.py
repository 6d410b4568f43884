"""The batched-chain runner: warm-up, sampling, divergence report, interruption, checkpoints.

:func:`sample_flat` drives any kernel over a flat log-density ``logdensity_and_grad(z [C, D])``.
Warm-up adapts each parameter block's step size and metric (:mod:`ppltk.mcmc.adaptation`);
the draws kept afterwards come from the fixed adapted kernel, which leaves the target
invariant.  Ctrl-C returns the draws made so far (with :class:`~ppltk.errors.InterruptedWarning`)
and ``checkpoint=path`` saves everything needed to resume bit-for-bit.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.errors import ArgumentError, DivergenceWarning, InterruptedWarning, PpltkWarning
from ppltk.mcmc._base import Kernel, LogDensityFn, MCMCState, Params, check_params, check_position
from ppltk.mcmc.adaptation import EnsembleAdapter, StuckChainMonitor
from ppltk.mcmc.checkpoint import load_checkpoint, run_fingerprint, save_checkpoint
from ppltk.mcmc.chees import ChEES
from ppltk.mcmc.hmc import HMC
from ppltk.mcmc.mh import RandomWalkMH
from ppltk.mcmc.nuts import NUTS

__all__ = ["SampleOutput", "sample_flat", "make_kernel", "ChainsDisagreeWarning", "GuardedDensity"]


class ChainsDisagreeWarning(PpltkWarning):
    """After sampling, the chains disagree (split R-hat above the threshold): some chain is
    stuck or in another mode; the message gives R-hat without each chain and per-chain ESS."""


class GuardedDensity:
    """A batched log-density that never fails the whole batch: a point where the model raises
    (a failed Cholesky, a validation error) or where the value or gradient is not finite gets
    :math:`\\log\\pi = -\\infty` and a zero gradient, which every kernel rejects (HMC/NUTS
    count it as a divergence). ``nonfinite [C]`` counts such points per chain (including
    points of zero density, e.g. outside the support)."""

    def __init__(self, fn: LogDensityFn, chains: int, device) -> None:
        self.fn = fn
        self.nonfinite = torch.zeros(chains, dtype=torch.long, device=device)

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lp, grad, bad = self._evaluate(z)
        if bad.shape == self.nonfinite.shape:
            self.nonfinite = self.nonfinite + bad
        return lp, grad

    def uncounted(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As calling it, without counting (for a caller that counts non-finite points)."""
        return self._evaluate(z)[:2]

    def _evaluate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from ppltk.model.bridge import evaluate_rows

        lp, grad = evaluate_rows(self.fn, z)
        lp, grad = lp.detach(), grad.detach()
        bad = ~torch.isfinite(lp + grad.sum(-1))
        lp = torch.where(bad, -math.inf, lp)
        grad = torch.where(bad.unsqueeze(-1), 0.0, grad)
        return lp, grad, bad


_KERNELS = {"nuts": NUTS, "hmc": HMC, "mh": RandomWalkMH, "chees": ChEES}


@dataclass
class SampleOutput:
    """What :func:`sample_flat` returns.

    Attributes
    ----------
    positions
        ``[C, S, D]`` kept draws (``S`` smaller than asked if interrupted).
    stats
        ``{name: [C, S]}`` sampler statistics of the kept draws.
    params
        Adapted parameters (step size ``[C]``, inverse mass ``[C, D]`` or ``[C, D, D]``).
    state
        Final :class:`~ppltk.mcmc.MCMCState` (to continue sampling).
    num_divergences
        Divergent transitions among the kept draws.
    interrupted
        True when the run stopped on Ctrl-C.
    attrs
        ``warmup_divergences [C]``, ``restarts [C]`` (stuck chains restarted in warm-up) and
        ``nonfinite_evaluations [C]`` (points with a failed or non-finite evaluation).
    """

    positions: torch.Tensor
    stats: dict[str, torch.Tensor]
    params: Params | list[Params]
    state: MCMCState
    num_divergences: int = 0
    interrupted: bool = False
    kernel: Kernel | None = None
    attrs: dict = field(default_factory=dict)


def make_kernel(kernel: str | Kernel) -> Kernel:
    """``"nuts"``, ``"hmc"``, ``"mh"``, ``"chees"`` or a kernel object -> kernel object."""
    if isinstance(kernel, Kernel):
        return kernel
    if isinstance(kernel, str) and kernel.lower() in _KERNELS:
        return _KERNELS[kernel.lower()]()
    raise ArgumentError(
        f"Expected `kernel` to be one of {sorted(_KERNELS)} or a ppltk.mcmc kernel object, "
        f"but found {kernel!r}"
    )


def _check_counts(num_warmup: int, num_samples: int) -> None:
    for name, value in (("num_warmup", num_warmup), ("num_samples", num_samples)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ArgumentError(f"Expected `{name}` to be an int >= 0, but found {value!r}")


class _Run:
    """Mutable bookkeeping of one run (kept out of the kernels, which stay stateless)."""

    def __init__(self, kernel, ld, state, params, num_warmup, num_samples, adapters, gen):
        self.kernel, self.ld, self.state, self.params = kernel, ld, state, params
        self.num_warmup, self.num_samples = num_warmup, num_samples
        self.adapters, self.gen = adapters, gen
        # one adapter pooling all chains (ChEES) instead of one Stan adapter per block
        self.ensemble = len(adapters) == 1 and isinstance(adapters[0], EnsembleAdapter)
        chains, dim = state.position.shape
        self.positions = state.position.new_empty((chains, num_samples, dim))
        self.stats: dict[str, torch.Tensor] = {}
        self.completed = 0  # iterations fully processed
        self.warmup_divergences = torch.zeros(chains, dtype=torch.long, device=state.lp.device)
        self.restarts = torch.zeros(chains, dtype=torch.long, device=state.lp.device)
        self.monitor: StuckChainMonitor | None = None
        self.fingerprint: dict[str, str] = {}
        # per-iteration records are kept as references and written in one batch by flush()
        self._pending: list[tuple[int, torch.Tensor, dict[str, torch.Tensor]]] = []
        self._pending_divergences: list[torch.Tensor] = []

    @property
    def kept(self) -> int:
        return max(self.completed - self.num_warmup, 0)

    def iterate(self, i: int) -> None:
        before = self.state
        state, info = self.kernel.step(before, self.ld, self.params, self.gen)
        self.state = state
        if i < self.num_warmup:
            if "diverging" in info:
                self._pending_divergences.append(info["diverging"])
            self._adapt(i, info, before)
        else:  # only the statistics are kept (info may hold [C, D] tensors for adaptation)
            stats = {name: info[name] for name in self.kernel.stat_names}
            self._pending.append((i - self.num_warmup, state.position, stats))
        self.completed = i + 1

    # -- one atomic unit for checkpoints: a snapshot of everything that an iteration changes
    def snapshot(self) -> dict:
        """The run as of the last completed iteration (taken before the next one starts)."""
        return {
            "completed": self.completed,
            "state": self.state,
            "params": self.params,
            "adapters": [_copy_tree(a.state_dict()) for a in self.adapters],
            "monitor": None if self.monitor is None else dict(self.monitor.state_dict()),
            "restarts": self.restarts,
            "nonfinite": getattr(self.ld, "nonfinite", None),
            "pending": len(self._pending),
            "pending_divergences": len(self._pending_divergences),
            "generator": self.gen.get_state(),
        }

    def rollback(self, snap: dict) -> None:
        """Undo a partly done iteration (Ctrl-C can land anywhere inside it)."""
        self.completed, self.state, self.params = snap["completed"], snap["state"], snap["params"]
        for adapter, saved in zip(self.adapters, snap["adapters"]):
            adapter.load_state_dict(saved)
        if self.monitor is not None:
            self.monitor.load_state_dict(snap["monitor"])
        self.restarts = snap["restarts"]
        if snap["nonfinite"] is not None:
            self.ld.nonfinite = snap["nonfinite"]
        del self._pending[snap["pending"] :]
        del self._pending_divergences[snap["pending_divergences"] :]
        self.gen.set_state(snap["generator"])

    def flush(self) -> None:
        """Write the pending draws, statistics and warm-up divergences into the preallocated
        tensors (one stack per quantity instead of one small copy per iteration)."""
        if self._pending_divergences:
            count = torch.stack(self._pending_divergences).sum(0)
            self.warmup_divergences = self.warmup_divergences + count
            self._pending_divergences = []
        if not self._pending:
            return
        first, last = self._pending[0][0], self._pending[-1][0] + 1
        self.positions[:, first:last] = torch.stack([p for _, p, _ in self._pending], 1)
        for name in self.kernel.stat_names:
            value = torch.stack([info[name] for _, _, info in self._pending], 1)
            if name not in self.stats:
                self.stats[name] = value.new_zeros((value.shape[0], self.num_samples))
            self.stats[name][:, first:last] = value
        self._pending = []

    def _adapt(self, i: int, info: dict[str, torch.Tensor], before: MCMCState) -> None:
        kernel, z = self.kernel, self.state.position
        if self.ensemble:
            self.params = self.adapters[0].update(i, before, self.state, info, self.params)
            accept = info["accept_prob"]
        else:
            blocks = kernel.param_blocks(self.params)
            accepts = kernel.block_accept(info)
            slices = kernel.blocks(z.shape[-1])
            new = [
                a.update(i, z[:, ix], acc, bp)
                for a, bp, acc, ix in zip(self.adapters, blocks, accepts, slices)
            ]
            self.params = kernel.join_param_blocks(new)
            if any(a.metric_updated for a in self.adapters) and self.adapters[0].adapt_step_size:
                self.params = kernel.tune_step_size(self.state, self.ld, self.params, self.gen)
                for a, bp in zip(self.adapters, kernel.param_blocks(self.params)):
                    a.restart(bp.step_size)
            accept = torch.stack(accepts).mean(0)
        if self.monitor is not None and self.monitor.update(i, self.state.lp, accept):
            step = kernel.param_blocks(self.params)[0].step_size
            stuck = self.monitor.stuck(step)
            if bool(stuck.any()):
                self._restart(stuck)

    def _restart(self, stuck: torch.Tensor) -> None:
        """Restart each stuck chain from the state of a healthy chain drawn at random."""
        chains = stuck.shape[0]
        healthy = torch.nonzero(~stuck).flatten()
        pick = torch.randint(
            healthy.numel(), (chains,), generator=self.gen, device=self.gen.device
        ).to(healthy.device)
        donor = torch.where(stuck, healthy[pick], torch.arange(chains, device=stuck.device))
        st = self.state
        self.state = MCMCState(st.position[donor], st.lp[donor], st.grad[donor])
        blocks = [bp.take(donor) for bp in self.kernel.param_blocks(self.params)]
        self.params = self.kernel.join_param_blocks(blocks)
        for adapter in self.adapters:
            adapter.take_rows(donor)
        self.restarts = self.restarts + stuck

    def output(self, interrupted: bool) -> SampleOutput:
        self.flush()
        kept = self.kept
        stats = {k: v[:, :kept] for k, v in self.stats.items()}
        div = int(stats["diverging"].sum()) if "diverging" in stats else 0
        attrs = {"warmup_divergences": self.warmup_divergences, "restarts": self.restarts}
        if isinstance(self.ld, GuardedDensity):
            attrs["nonfinite_evaluations"] = self.ld.nonfinite
        return SampleOutput(
            self.positions[:, :kept],
            stats,
            self.params,
            self.state,
            div,
            interrupted,
            self.kernel,
            attrs,
        )


def _copy_tree(obj):
    """Shallow copy of nested dicts (tensors are replaced, never changed in place)."""
    return {k: _copy_tree(v) for k, v in obj.items()} if isinstance(obj, dict) else obj


def sample_flat(
    logdensity_and_grad: LogDensityFn,
    init_position: torch.Tensor,
    kernel: str | Kernel = "nuts",
    num_warmup: int = 1000,
    num_samples: int = 1000,
    seed: int | torch.Generator | None = 0,
    target_accept: float | None = None,
    dense_mass: bool = False,
    progress: bool = True,
    *,
    params: Params | list[Params] | None = None,
    adapt_step_size: bool = True,
    adapt_mass: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    warn_divergences: bool = True,
    restart_stuck: bool = True,
    warn_disagreement: bool = False,
    fingerprint: dict | None = None,
) -> SampleOutput:
    """Run ``C`` chains of ``kernel`` on a flat batched log-density.

    Parameters
    ----------
    logdensity_and_grad
        ``z [C, D] -> (lp [C], grad [C, D])``; called once per leapfrog step for all chains.
    init_position
        ``[C, D]`` starting points (one row per chain, finite log-density).
    kernel
        ``"nuts"`` (default), ``"hmc"``, ``"mh"``, ``"chees"`` or a kernel object
        (:class:`NUTS`, :class:`HMC`, :class:`RandomWalkMH`, :class:`Gibbs`,
        :class:`ChEES`). The kernel's ``make_adapters`` chooses the warm-up: Stan's per-chain
        adaptation by default, cross-chain adaptation for ChEES.
    num_warmup, num_samples
        Warm-up (adaptation) iterations and kept draws per chain.
    seed
        ``int`` or :class:`torch.Generator`; all randomness comes from it.
    target_accept
        Dual-averaging target (``None``: the kernel's default, 0.8 for HMC/NUTS, 0.234 for MH,
        0.651 for ChEES, whose target is the chains' harmonic-mean acceptance).
    dense_mass
        Adapt a dense ``[C, D, D]`` metric instead of a diagonal one.
    progress
        Show a tqdm bar (on a terminal).
    params
        Starting parameters (e.g. adapted ones from an earlier run); ``None`` uses the
        kernel's defaults and the step-size heuristic.
    adapt_step_size, adapt_mass
        Turn parts of warm-up adaptation off.
    checkpoint
        Path of a checkpoint: written every ``checkpoint_every`` iterations and on Ctrl-C;
        if it exists when the run starts, the run resumes from it.
    warn_divergences
        Warn (:class:`~ppltk.errors.DivergenceWarning`) when kept draws diverged.
    restart_stuck
        During warm-up, restart a chain that is stuck (its acceptance or step size collapsed,
        or its log-density stays far below the other chains') from the state of another
        chain (:class:`~ppltk.mcmc.adaptation.StuckChainMonitor`); counts per chain are in
        ``attrs["restarts"]``. Only warm-up changes; kept draws come from a fixed kernel.
    warn_disagreement
        Warn (:class:`ChainsDisagreeWarning`) when, with at least ``RHAT_MIN_DRAWS`` kept draws
        per chain, the split R-hat (ArviZ) exceeds ``RHAT_THRESHOLD``; the message gives R-hat
        without each chain and each chain's ESS (default off here; on in
        :func:`ppltk.mcmc.sample`).
    fingerprint
        Extra entries for the checkpoint's fingerprint (e.g. the model's sites and a hash of
        its data, from :func:`ppltk.mcmc.sample`); a checkpoint whose fingerprint differs from
        this run's raises :class:`~ppltk.errors.CheckpointMismatchError`.

    Notes
    -----
    Robustness: a point where the log-density raises (a failed Cholesky inside a model, a
    validation ``ValueError``) or is not finite, in value or gradient, is a rejected (for
    HMC/NUTS: divergent) transition of that chain only (:class:`GuardedDensity`); the counts
    per chain are in ``attrs["nonfinite_evaluations"]``.

    Returns
    -------
    SampleOutput
        ``positions [C, S, D]``, ``stats {name: [C, S]}``, adapted ``params``, final ``state``.
    """
    check_position(init_position, "init_position")
    _check_counts(num_warmup, num_samples)
    kernel = make_kernel(kernel)
    target = kernel.target_accept if target_accept is None else float(target_accept)
    if not 0.0 < target < 1.0:
        raise ArgumentError(f"Expected `target_accept` in (0, 1), but found {target_accept!r}")
    gen = make_generator(seed, init_position.device)
    logdensity_and_grad = GuardedDensity(
        logdensity_and_grad, init_position.shape[0], init_position.device
    )
    path = Path(checkpoint) if checkpoint is not None else None
    resume = path is not None and path.exists()
    options = {
        "target_accept": target,
        "dense_mass": dense_mass,
        "adapt_step_size": adapt_step_size,
        "adapt_mass": adapt_mass,
        "restart_stuck": restart_stuck,
        "params": params,
    }
    prints = run_fingerprint(kernel, init_position, num_warmup, num_samples, gen, options)
    prints.update(fingerprint or {})
    if resume:  # state, params and generator come from the checkpoint
        zeros = init_position.new_zeros(init_position.shape[0])
        state = MCMCState(init_position, zeros, torch.zeros_like(init_position))
    else:
        state = kernel.init(init_position, logdensity_and_grad)
    if params is None:
        params = kernel.default_params(init_position, dense_mass)
        if adapt_step_size and not resume:
            params = kernel.tune_step_size(state, logdensity_and_grad, params, gen)
    dim = init_position.shape[-1]
    for ix, block in zip(kernel.blocks(dim), kernel.param_blocks(params)):
        check_params(block, init_position[:, ix])
    adapters = kernel.make_adapters(num_warmup, params, target, adapt_step_size, adapt_mass)
    run = _Run(kernel, logdensity_and_grad, state, params, num_warmup, num_samples, adapters, gen)
    run.fingerprint = prints
    if restart_stuck:
        run.monitor = StuckChainMonitor(num_warmup, init_position)
    if resume:
        load_checkpoint(path, run)
        if run.ensemble:  # a checkpoint stores plain Params; the adapter has the full set
            run.params = adapters[0].params
    _loop(run, path, checkpoint_every, progress)
    out = run.output(interrupted=run.completed < num_warmup + num_samples)
    if warn_disagreement:
        _warn_if_chains_disagree(out)
    if warn_divergences and out.num_divergences > 0:
        per_chain = out.stats["diverging"].sum(1).tolist()
        warnings.warn(
            f"{out.num_divergences} divergent transitions after warm-up (per chain: {per_chain}); "
            "the draws may be biased. Reparameterise the model or raise `target_accept`.",
            DivergenceWarning,
            stacklevel=2,
        )
    return out


def _loop(run: _Run, path: Path | None, every: int, progress: bool) -> None:
    total = run.num_warmup + run.num_samples
    bar = progress_bar(total, "warmup" if run.completed < run.num_warmup else "sample", progress)
    bar.update(run.completed)
    snap = run.snapshot()
    try:
        for i in range(run.completed, total):
            if i == run.num_warmup:
                bar.set_description("sample")
            if path is not None:  # what to save if Ctrl-C lands inside the iteration
                snap = run.snapshot()
            run.iterate(i)
            bar.update(1)
            if path is not None and (run.completed % every == 0 or run.completed == total):
                run.flush()
                save_checkpoint(path, run, run.gen.get_state())
    except KeyboardInterrupt:
        # state, adaptation, draws and generator go back together to the last completed
        # iteration, so a resumed run is bit-for-bit the uninterrupted one
        if path is not None:
            run.rollback(snap)
            run.flush()
            save_checkpoint(path, run, run.gen.get_state())
        warnings.warn(
            f"Sampling interrupted after {run.completed} of {total} iterations "
            f"({run.kept} kept draws per chain); returning the draws so far"
            + (f" (checkpoint saved to {path})." if path is not None else "."),
            InterruptedWarning,
            stacklevel=3,
        )
    finally:
        bar.close()


RHAT_THRESHOLD = 1.1
"""Split R-hat above which :func:`sample_flat` warns that the chains disagree."""
RHAT_MIN_DRAWS = 100
"""Fewer kept draws per chain than this: no R-hat warning (too noisy to judge)."""


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks along axis 0, from 1, ties given their average rank (``scipy.stats.rankdata``'s
    ``"average"``), without importing ``scipy.stats``."""
    n = a.shape[0]
    order = np.argsort(a, axis=0, kind="stable")
    s = np.take_along_axis(a, order, 0)
    position = np.arange(n).reshape((n,) + (1,) * (a.ndim - 1))
    differs = s[1:] != s[:-1]
    first = np.concatenate([np.ones_like(s[:1], dtype=bool), differs])
    last = np.concatenate([differs, np.ones_like(s[:1], dtype=bool)])
    start = np.maximum.accumulate(np.where(first, position, 0), axis=0)
    end = np.minimum.accumulate(np.where(last, position, n)[::-1], axis=0)[::-1]
    ranks = np.empty(a.shape, dtype=float)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, 0)
    return ranks


def split_rhat(x: np.ndarray) -> np.ndarray:
    r"""Rank-normalised split :math:`\hat R` of draws ``x [C, S, D]``, per coordinate ``[D]``
    (Vehtari et al. 2021, as ``arviz.rhat(method="rank")``): the chains are split in halves,
    the draws (and their distances from the median, for the tails) are replaced by normal
    scores of their ranks :math:`\Phi^{-1}((r - 3/8)/(N + 1/4))`, and

    .. math:: \hat R = \sqrt{\frac{B/W + n - 1}{n}}

    with :math:`B/n` the variance of the half-chain means and :math:`W` the mean half-chain
    variance; the larger of the bulk and tail values is returned.  Written here because
    importing ArviZ costs seconds, which a short run would pay for one number."""
    half = x.shape[1] // 2
    split = np.concatenate([x[:, :half], x[:, x.shape[1] - half :]], 0)  # [2C, half, D]

    def z_scale(a: np.ndarray) -> np.ndarray:
        flat = a.reshape(-1, a.shape[-1])
        scores = (_average_ranks(flat) - 0.375) / (flat.shape[0] + 0.25)
        return torch.special.ndtri(torch.from_numpy(scores)).numpy().reshape(a.shape)

    def rhat(a: np.ndarray) -> np.ndarray:
        n = a.shape[1]
        between = n * a.mean(1).var(0, ddof=1)
        within = a.var(1, ddof=1).mean(0)
        return np.sqrt((between / within + n - 1) / n)

    folded = np.abs(split - np.median(split.reshape(-1, split.shape[-1]), axis=0))
    return np.maximum(rhat(z_scale(split)), rhat(z_scale(folded)))


def _warn_if_chains_disagree(out: SampleOutput) -> None:
    """Warn with R-hat without each chain and per-chain bulk ESS when chains disagree."""
    chains, draws = out.positions.shape[:2]
    if chains < 2 or draws < RHAT_MIN_DRAWS:
        return
    x = out.positions.detach().double().cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):  # constant coordinates: NaN
        rhat = float(np.nanmax(split_rhat(x), initial=1.0))
        if not rhat > RHAT_THRESHOLD:
            return
        loo = []
        if chains > 2:
            for c in range(chains):
                rest = x[[k for k in range(chains) if k != c]]
                loo.append(round(float(np.nanmax(split_rhat(rest), initial=1.0)), 3))
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own small-sample warnings
        ess = [round(float(az.ess(az.convert_to_dataset(x[c : c + 1]))["x"].min()), 1)
               for c in range(chains)]  # fmt: skip
    lp = out.stats.get("lp")
    lp_means = [round(float(v), 2) for v in lp.double().mean(1)] if lp is not None else []
    warnings.warn(
        f"The chains disagree: max split R-hat {rhat:.3f} > {RHAT_THRESHOLD} (unconstrained "
        f"coordinates). R-hat without each chain: {loo or '-'}; per-chain min bulk ESS: {ess}; "
        f"per-chain mean log-density: {lp_means}. A chain may be stuck or in another mode: "
        "run longer, reparameterise, or inspect the chains.",
        ChainsDisagreeWarning,
        stacklevel=3,
    )
