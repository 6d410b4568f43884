r"""Batched No-U-Turn sampler: multinomial trajectory sampling, generalised U-turn criterion.

All chains build their trees in one loop.  At doubling ``j`` every chain that is still
building extends its tree by a subtree of :math:`2^j` leapfrog steps in its own random
direction; a chain whose subtree turns or diverges is masked out (its step size is set to
zero, so the batched log-density call still has one row per chain) and the loop ends as soon
as no chain is active, so the batch pays for its deepest tree.  Exactly one
``logdensity_and_grad`` call is made per leapfrog step for the whole batch.

Within a subtree the proposal is leaf :math:`i` with probability :math:`w_i / \sum_k w_k`,
:math:`w_i = e^{-(H_i - H_0)}` (multinomial sampling, as Stan): uncompiled, by Gumbel-max once
the subtree is complete (leaves kept by reference and gathered once); compiled, progressively
(leaf :math:`i` replaces the candidate with probability :math:`w_i / \sum_{k \le i} w_k`,
which has the same distribution).  A completed subtree replaces the tree's proposal with
probability :math:`\min(1, W_{new}/W_{old})` (Betancourt's biased progressive sampling).

The generalised no-U-turn criterion (Betancourt 2017, as in Stan) stops a (sub)tree with
summed momentum :math:`\rho` and end velocities :math:`p^\sharp_- = M^{-1}p_-`,
:math:`p^\sharp_+ = M^{-1}p_+` when
:math:`p^\sharp_-\cdot\rho \le 0` or :math:`p^\sharp_+\cdot\rho \le 0`; it is checked
for every power-of-two block of leaves of each subtree (with checkpoints of :math:`p^\sharp`
and running :math:`\rho` at block starts, ``[max_tree_depth, C, D]``) and for the whole tree.

A leaf whose energy error exceeds ``max_delta_energy`` or is NaN is divergent: it is excluded,
the chain's tree stops, and ``diverging`` is set.  The transition is reversible with respect to
the uniform choice of the trajectory's position, so :math:`\pi` is preserved.

Cost: compiled (``compile=True``), the transition is a flat sequence of identical leaf steps
(:mod:`ppltk.mcmc._nuts_flat`): everything a leaf does -- the start of its subtree, the
leapfrog step and the log-density, the energy, the divergence test, the multinomial draw, the
checkpoints and U-turn checks of every block ending at the leaf, the merge at a subtree's last
leaf, the statistics -- is one pure tensor function on the packed tree state, so a leaf is one
call of compiled code (:class:`~ppltk.mcmc.fused.FusedStep`) plus one host synchronisation
(is the transition over?), and memory is :math:`O(C D \cdot \mathrm{max\_tree\_depth})`.
Uncompiled, a leaf is about a dozen small tensor operations (a chain that has stopped is never
read again, so its tree quantities are updated unmasked) and the leaves are kept,
:math:`O(2^{depth} C D)` memory.
"""

from __future__ import annotations

import math

import torch

from ppltk.errors import ArgumentError
from ppltk.mcmc import _nuts_flat as flat
from ppltk.mcmc._base import LogDensityFn, MCMCState, Params, default_params
from ppltk.mcmc._nuts_flat import no_u_turn
from ppltk.mcmc.fused import FusedStep
from ppltk.mcmc.hmc import HamiltonianKernel
from ppltk.mcmc.integrators import sample_momentum, velocity

__all__ = ["NUTS"]


class _Leaves:
    """Every point of one transition's trajectory (index 0 is the initial point), so that the
    proposal can be tracked as a leaf index and gathered once at the end, and the per-leaf
    :math:`-(H_i - H_0)` and built masks for the statistics."""

    __slots__ = ("z", "grad", "lp", "built", "log_w")

    def __init__(self, z0: torch.Tensor, g0: torch.Tensor, lp0: torch.Tensor):
        self.z, self.grad, self.lp = [z0], [g0], [lp0]
        self.built: list[torch.Tensor] = []
        self.log_w: list[torch.Tensor] = []

    def gather(self, index: torch.Tensor) -> MCMCState:
        """The state at leaf ``index [C]`` of every chain."""
        chains = torch.arange(index.shape[0], device=index.device)
        return MCMCState(
            torch.stack(self.z)[index, chains],
            torch.stack(self.lp)[index, chains],
            torch.stack(self.grad)[index, chains],
        )


class NUTS(HamiltonianKernel):
    """Batched No-U-Turn sampler.

    Parameters
    ----------
    max_tree_depth
        Maximum number of trajectory doublings (at most :math:`2^{d}-1` leapfrog steps).
    max_delta_energy
        Energy error :math:`H - H_0` above which a leaf is divergent (NaN is always divergent).
    compile
        Compile everything one leaf of the tree does -- the leapfrog step with the
        log-density and its gradient, the energy, the multinomial draw, the U-turn checks and
        the merge of a finished subtree -- into one TorchInductor function
        (:class:`~ppltk.mcmc.fused.FusedStep`; needs a C++ compiler, or Triton on CUDA).
        It costs 8-12 s once per model and input shape on a machine (on the CPU a library
        kept on disk that later runs load in milliseconds, see
        :func:`ppltk.model.graph.compile_function`) and makes a step 5-30 times faster on
        small and medium models; :func:`ppltk.mcmc.sample` turns it on with
        ``backend="inductor"`` (the default for runs long enough to repay it).

    Examples
    --------
    >>> import torch
    >>> from ppltk.mcmc import NUTS
    >>> f = lambda z: (-0.5 * (z**2).sum(-1), -z)
    >>> kernel = NUTS()
    >>> state = kernel.init(torch.zeros(4, 2), f)
    >>> params = kernel.default_params(state.position)
    >>> state, info = kernel.step(state, f, params, torch.Generator().manual_seed(0))
    >>> state.position.shape, info["tree_depth"].shape
    (torch.Size([4, 2]), torch.Size([4]))
    """

    name = "nuts"
    stat_names = ("lp", "accept_prob", "step_size", "tree_depth", "n_steps", "diverging", "energy")

    def __init__(
        self, max_tree_depth: int = 10, max_delta_energy: float = 1000.0, compile: bool = False
    ):
        if not isinstance(max_tree_depth, int) or max_tree_depth < 1:
            raise ArgumentError(
                f"Expected `max_tree_depth` to be a positive int, but found {max_tree_depth!r}"
            )
        if not max_delta_energy > 0:
            raise ArgumentError(f"Expected `max_delta_energy` > 0, but found {max_delta_energy!r}")
        self.max_tree_depth = max_tree_depth
        self.max_delta_energy = float(max_delta_energy)
        self.compile = bool(compile)
        self._leaf = FusedStep(flat.flat_leaf, self.compile, num_checked=3, name="NUTS", feedback=3)
        self._fused_tree = self.compile  # tests run the fused tree uncompiled too
        self._schedule_cache: dict[tuple, list[list[torch.Tensor]]] = {}

    def with_compile(self) -> NUTS:
        """A copy of this kernel with ``compile=True`` (whole leaves compiled)."""
        return NUTS(self.max_tree_depth, self.max_delta_energy, compile=True)

    def __repr__(self) -> str:
        extra = ", compile=True" if self.compile else ""
        return f"NUTS(max_tree_depth={self.max_tree_depth}{extra})"

    def step(
        self,
        state: MCMCState,
        logdensity_and_grad: LogDensityFn,
        params: Params,
        generator: torch.Generator,
    ) -> tuple[MCMCState, dict[str, torch.Tensor]]:
        """One NUTS transition for every chain; returns the new state and ``info``
        (``accept_prob`` = mean of :math:`\\min(1, e^{-\\Delta H})` over the tree's leaves,
        ``tree_depth``, ``n_steps``, ``diverging``, ``energy``, ``step_size``, ``lp``).

        With ``compile=True`` the tree is built one fused leaf at a time
        (:func:`~ppltk.mcmc._nuts_flat.flat_leaf`, one compiled call per leaf); otherwise by
        the classic builder, which needs fewer tensor operations per leaf uncompiled.  Both
        sample the same transition kernel."""
        if self._fused_tree:
            return self._step_fused(state, logdensity_and_grad, params, generator)
        return self._step_classic(state, logdensity_and_grad, params, generator)

    def _start(self, state: MCMCState, params: Params, generator: torch.Generator) -> tuple:
        """What every transition draws first: momentum :math:`p_0 \\sim \\mathcal N(0, M)`,
        its velocity, :math:`-H_0`, the divergence threshold, and all per-doubling randomness
        in one draw (directions, signed step sizes, the merges' log-uniforms)."""
        lp0 = state.lp
        p0 = sample_momentum(params, state.position, generator)
        sharp0 = velocity(p0, params.inverse_mass)
        neg_h0 = torch.sub(lp0, torch.linalg.vecdot(p0, sharp0), alpha=0.5)  # -H_0
        threshold = neg_h0 - self.max_delta_energy  # -H below this: divergent
        u = torch.rand(
            (2, self.max_tree_depth) + lp0.shape, generator=generator, dtype=lp0.dtype,
            device=lp0.device,
        )  # fmt: skip
        forward = u[0] < 0.5
        signed_eps = torch.where(forward, params.step_size, -params.step_size)
        return p0, sharp0, neg_h0, threshold, forward, signed_eps, u[1].log()

    def _step_fused(
        self,
        state: MCMCState,
        logdensity_and_grad: LogDensityFn,
        params: Params,
        generator: torch.Generator,
    ) -> tuple[MCMCState, dict[str, torch.Tensor]]:
        """The compiled transition: every leaf one call of :func:`~ppltk.mcmc._nuts_flat.flat_leaf`
        on the packed tree state (progressive multinomial draw within a subtree, no leaves
        kept, one host synchronisation per leaf: is the transition over?)."""
        lp0, k = state.lp, self.max_tree_depth
        first, per_depth, rows = self._begin(state, params, generator)
        vecs, ck, scal, minv, _, h0, _, _ = first
        leaf = self._leaf.bind(logdensity_and_grad, *first)
        for depth, doubling in zip(range(k), per_depth):
            uniforms = torch.rand((2**depth,) + lp0.shape, generator=generator,
                                  dtype=lp0.dtype, device=lp0.device).unbind(0)  # fmt: skip
            stop = False
            for row, uniform in zip(rows[depth], uniforms):
                vecs, ck, scal, stop = leaf(vecs, ck, scal, minv, doubling, h0, row, uniform)
                if stop:
                    break
            if stop:
                break
        nonfinite = getattr(logdensity_and_grad, "nonfinite", None)
        if nonfinite is not None and nonfinite.shape == lp0.shape:
            logdensity_and_grad.nonfinite = nonfinite + scal[flat.BAD].long()
        n_steps = scal[flat.BUILT].long()
        info = {
            "lp": scal[flat.PLP],
            "accept_prob": scal[flat.ACCEPT] / n_steps.clamp(min=1).to(lp0.dtype),
            "step_size": params.step_size,
            "tree_depth": scal[flat.STARTED].long(),
            "n_steps": n_steps,
            "diverging": scal[flat.DIV] > 0,
            "energy": -h0[0],
        }
        return MCMCState(vecs[flat.PZ], scal[flat.PLP], vecs[flat.PG]), info

    def compiles(
        self, logdensity_and_grad: LogDensityFn, position: torch.Tensor, dense: bool = False
    ) -> bool:
        """Whether this kernel's compiled leaf builds for ``logdensity_and_grad`` at chains
        shaped as ``position [C, D]`` (building it now, or loading it from disk); draws from
        no run's generator.  ``False`` without ``compile=True``."""
        if not self._fused_tree:
            return False
        state = MCMCState(position, *logdensity_and_grad(position))
        generator = torch.Generator(device=position.device).manual_seed(0)
        first, _, _ = self._begin(state, default_params(position, dense), generator)
        return self._leaf.compiles(logdensity_and_grad, *first)

    def _begin(self, state: MCMCState, params: Params, generator: torch.Generator) -> tuple:
        """A new transition's packed state (:func:`~ppltk.mcmc._nuts_flat.pack` of
        :meth:`_start`'s draws) as ``(first, per_depth, rows)``: ``first`` the inputs of its
        first leaf ``(vecs, ck, scal, minv, doubling, h0, row, uniform)`` (the uniform not
        yet drawn), ``per_depth`` each doubling's row and ``rows`` the leaf schedule."""
        z0, lp0 = state.position, state.lp
        drawn = self._start(state, params, generator)
        vecs, ck, scal, per_depth, h0 = flat.pack(z0, lp0, state.grad, *drawn, self.max_tree_depth)
        rows = self._schedule(z0.device, z0.dtype)
        minv = params.inverse_mass.contiguous()
        first = (vecs, ck, scal, minv, per_depth[0], h0, rows[0][0], lp0.new_empty(lp0.shape))
        return first, per_depth, rows

    def _schedule(self, device, dtype) -> list[list[torch.Tensor]]:
        """Rows of :func:`~ppltk.mcmc._nuts_flat.schedule_row` for every ``[depth][leaf]``."""
        key = (device, dtype)
        rows = self._schedule_cache.get(key)
        if rows is None:
            k = self.max_tree_depth
            table = torch.stack(
                [flat.schedule_row(d, i, k) for d in range(k) for i in range(2**d)]
            ).to(device=device, dtype=dtype)
            flat_rows = [row.clone() for row in table.unbind(0)]  # each row its own buffer
            rows = [flat_rows[2**d - 1 : 2 ** (d + 1) - 1] for d in range(k)]
            self._schedule_cache[key] = rows
        return rows

    def _step_classic(
        self,
        state: MCMCState,
        logdensity_and_grad: LogDensityFn,
        params: Params,
        generator: torch.Generator,
    ) -> tuple[MCMCState, dict[str, torch.Tensor]]:
        """The uncompiled transition: leaves kept by reference, the subtree's proposal drawn by
        Gumbel-max once the subtree is complete (fewest tensor operations per leaf)."""
        minv, eps = params.inverse_mass, params.step_size
        z0, lp0, g0 = state.position, state.lp, state.grad
        dim = z0.shape[-1]
        p0, sharp0, neg_h0, threshold, forward, signed_eps, log_u = self._start(
            state, params, generator
        )
        # packed trajectory edges [C, 4D]: (z, grad, p, p_sharp)
        right = torch.cat((z0, g0, p0, sharp0), -1)
        left = right
        leaves = _Leaves(z0, g0, lp0)
        proposal = torch.zeros_like(lp0, dtype=torch.long)  # leaf index; 0: initial point
        log_weight = torch.zeros_like(lp0)  # log sum_i exp(-(H_i - H_0)); initial point: 1
        rho = p0
        active = torch.ones_like(lp0, dtype=torch.bool)
        started: list[torch.Tensor] = []
        diverging = torch.zeros_like(lp0, dtype=torch.bool)
        for depth in range(self.max_tree_depth):
            if depth > 0 and not bool(active.any()):
                break
            started.append(active)
            fwd_col = forward[depth].unsqueeze(-1)
            start = torch.where(fwd_col, right, left)
            sub = self._subtree_classic(
                start, dim, signed_eps[depth], active, depth, neg_h0, threshold, diverging, leaves,
                minv, logdensity_and_grad, generator,
            )  # fmt: skip
            ok, edge, sub_rho, sub_log_w, sub_index, diverging = sub
            if ok is None:  # every chain's subtree turned or diverged
                break
            # biased progressive sampling between the old tree and the new subtree
            take = ok & (log_u[depth] < sub_log_w - log_weight)
            proposal = torch.where(take, sub_index, proposal)
            # A chain that is not ok stops here for good: its weight, momentum sum and edges
            # are never read again (the edge is still a finite point, where it idles), so
            # they are updated without masks.
            log_weight = torch.logaddexp(log_weight, sub_log_w)
            rho = rho + sub_rho
            right = torch.where(fwd_col, edge, right)
            left = torch.where(fwd_col, left, edge)
            active = ok & no_u_turn(left[:, 3 * dim :], right[:, 3 * dim :], rho)
        new_state = leaves.gather(proposal)
        all_log_w = torch.nan_to_num(torch.cat(leaves.log_w), nan=-math.inf)  # NaN: weight 0
        all_built = torch.stack(leaves.built)
        n_steps = all_built.sum(0)
        accept = (all_log_w.clamp(max=0).exp() * all_built).sum(0)
        info = {
            "lp": new_state.lp,
            "accept_prob": accept / n_steps.clamp(min=1).to(lp0.dtype),
            "step_size": eps,
            "tree_depth": torch.stack(started).sum(0),
            "n_steps": n_steps,
            "diverging": diverging,
            "energy": -neg_h0,
        }
        return new_state, info

    def _subtree_classic(
        self, start, dim, eps, active, depth, neg_h0, threshold, diverging, leaves, minv, ld, gen
    ):
        """Build ``2**depth`` leaves from the packed edge ``start`` with signed step sizes
        ``eps [C]`` (zero for chains that have stopped, so they stay at a finite point).

        The subtree's proposal is drawn after its last leaf, with probability proportional to
        :math:`e^{-H_i}` over its leaves (Gumbel-max); this is the distribution of Stan's
        progressive multinomial sampling within a subtree.  U-turns are checked on every
        power-of-two block of leaves as soon as the block is complete, so the batch stops as
        soon as every chain has stopped.

        Returns ``(ok, edge, rho, log_weight, proposal_index, diverging)``; ``ok`` is ``None``
        when every chain stopped before the last leaf (nothing to merge)."""
        dense = minv.dim() == 3
        z, g, p, sharp = start.split(dim, -1)
        offset = len(leaves.z)
        ok = active
        e_col = (eps * ok).unsqueeze(-1)
        half = 0.5 * e_col
        e_minv = None if dense else e_col * minv
        neg_hs: list[torch.Tensor] = []
        rho = torch.zeros_like(p)
        ckpt: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        n_leaves = 2**depth
        for leaf in range(n_leaves):
            # leapfrog (one batched log-density call)
            p_half = torch.addcmul(p, half, g)
            if dense:
                z_new = torch.addcmul(z, e_col, velocity(p_half, minv))
            else:
                z_new = torch.addcmul(z, e_minv, p_half)
            lp, g_new = ld(z_new)
            lp, g_new = lp.detach(), g_new.detach()
            p_new = torch.addcmul(p_half, half, g_new)
            sharp_new = velocity(p_new, minv) if dense else minv * p_new
            neg_h = torch.sub(lp, torch.linalg.vecdot(p_new, sharp_new), alpha=0.5)  # -H
            leaves.built.append(ok)
            neg_hs.append(neg_h)
            # divergent: energy error above max_delta_energy, or NaN (the comparison fails);
            # chains that have stopped idle at a leaf that passed, so they pass again
            prev_ok = ok
            within = neg_h >= threshold
            if not bool(within.all()):
                new_ok = ok & within
                diverged = ok & ~within
                diverging = diverging | diverged
                div_col = diverged.unsqueeze(-1)
                z_new = torch.where(div_col, z, z_new)  # keep finite positions
                g_new = torch.where(div_col, g, g_new)
                p_new = torch.where(div_col, p, p_new)
                sharp_new = torch.where(div_col, sharp, sharp_new)
                ok = new_ok
            leaves.z.append(z_new)
            leaves.grad.append(g_new)
            leaves.lp.append(lp)
            # U-turn checks on every power-of-two block of leaves ending at this leaf: block
            # sizes 2^k with 2^k dividing leaf (start) or leaf + 1 (end), k = 1..depth
            first = depth if leaf == 0 else min(depth, (leaf & -leaf).bit_length() - 1)
            for k in range(1, first + 1):
                ckpt[k] = (sharp_new, rho)
            rho = rho + p_new
            last = min(depth, ((leaf + 1) & -(leaf + 1)).bit_length() - 1)
            if last == 1:
                ck_sharp, ck_rho = ckpt[1]
                ok = ok & no_u_turn(ck_sharp, sharp_new, rho - ck_rho)
            elif last > 1:  # several blocks end here: one batched check
                ck_sharp = torch.stack([ckpt[k][0] for k in range(1, last + 1)])
                block_rho = rho - torch.stack([ckpt[k][1] for k in range(1, last + 1)])
                ok = ok & no_u_turn(ck_sharp, sharp_new, block_rho).all(0)
            z, g, p, sharp = z_new, g_new, p_new, sharp_new
            if ok is not prev_ok and leaf + 1 < n_leaves and not torch.equal(ok, prev_ok):
                if not bool(ok.any()):
                    # -(H_i - H_0) of the built leaves (statistics only)
                    leaves.log_w.append(torch.stack(neg_hs) - neg_h0)
                    return None, None, None, None, None, diverging
                # the step sizes change only when a chain stops
                e_col = (eps * ok).unsqueeze(-1)
                half = 0.5 * e_col
                e_minv = None if dense else e_col * minv
        # -(H_i - H_0) of every leaf (NaN where a chain diverged: that chain is not ok, and
        # its draw and weight below are never used)
        log_w = torch.stack(neg_hs) - neg_h0
        leaves.log_w.append(log_w)
        edge = torch.cat((z, g, p, sharp), -1)
        if n_leaves == 1:
            index = torch.full_like(ok, offset, dtype=torch.long)
            return ok, edge, rho, log_w[0], index, diverging
        # multinomial draw over the leaves (Gumbel-max with exponential noise): for a chain
        # that is still ok every leaf was built while ok, and none of its leaves is NaN
        noise = torch.empty_like(log_w).exponential_(generator=gen).log()
        index = (log_w - noise).argmax(0) + offset
        return ok, edge, rho, torch.logsumexp(log_w, 0), index, diverging
