"""Batched No-U-Turn sampler: multinomial trajectory sampling, generalised U-turn criterion.

All chains build their trees in one loop.  At doubling ``j`` every chain that is still
building extends its tree by a subtree of :math:`2^j` leapfrog steps in its own random
direction; a chain whose subtree turns or diverges is masked out (its step size is set to
zero, so the batched log-density call still has one row per chain) and the loop ends as soon
as no chain is active, so the batch pays for its deepest tree.  Exactly one
``logdensity_and_grad`` call is made per leapfrog step for the whole batch.

Within a subtree the proposal is drawn progressively with probability proportional to
:math:`w_i = e^{-(H_i - H_0)}` (multinomial sampling); a completed subtree replaces the
tree's proposal with probability :math:`\\min(1, W_{new}/W_{old})` (Betancourt's biased
progressive sampling).  The generalised no-U-turn criterion (Betancourt 2017, as in Stan) stops a
(sub)tree with summed momentum :math:`\\rho` and end velocities
:math:`p^\\sharp_- = M^{-1}p_-`, :math:`p^\\sharp_+ = M^{-1}p_+` when
:math:`p^\\sharp_-\\cdot\\rho \\le 0` or :math:`p^\\sharp_+\\cdot\\rho \\le 0`; it is checked
for every power-of-two block of leaves of each subtree (iteratively, with checkpoints of
:math:`p^\\sharp` and running :math:`\\rho` at block starts) and for the whole tree.

A leaf whose energy error exceeds ``max_delta_energy`` or is NaN is divergent: it is excluded,
the chain's tree stops, and ``diverging`` is set.  The transition is reversible with respect to
the uniform choice of the trajectory's position, so :math:`\\pi` is preserved.
"""

from __future__ import annotations

import math

import torch

from ppltk.errors import ArgumentError
from ppltk.mcmc._base import Kernel, LogDensityFn, MCMCState, Params, where
from ppltk.mcmc.integrators import (
    find_reasonable_step_size,
    kinetic_energy,
    leapfrog,
    sample_momentum,
    velocity,
)

__all__ = ["NUTS"]


def _turning(p_sharp_a: torch.Tensor, p_sharp_b: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Generalised U-turn: :math:`p^\\sharp_a\\cdot\\rho \\le 0` or :math:`p^\\sharp_b\\cdot\\rho
    \\le 0`, per chain."""
    return (torch.linalg.vecdot(p_sharp_a, rho) <= 0) | (torch.linalg.vecdot(p_sharp_b, rho) <= 0)


class _Edge:
    """One end of a trajectory: state, momentum and velocity ``p^sharp``."""

    __slots__ = ("state", "p", "p_sharp")

    def __init__(self, state: MCMCState, p: torch.Tensor, p_sharp: torch.Tensor):
        self.state, self.p, self.p_sharp = state, p, p_sharp

    def select(self, mask: torch.Tensor, other: _Edge) -> _Edge:
        return _Edge(
            self.state.select(mask, other.state),
            where(mask, self.p, other.p),
            where(mask, self.p_sharp, other.p_sharp),
        )


class _Tree:
    """Per-chain bookkeeping of the whole trajectory of one NUTS transition."""

    def __init__(self, state: MCMCState, p: torch.Tensor, p_sharp: torch.Tensor, h0):
        chains = state.lp.shape[0]
        zeros = torch.zeros_like(state.lp)
        self.left = self.right = _Edge(state, p, p_sharp)
        self.proposal = state
        self.log_weight = zeros  # log sum_i exp(-(H_i - H_0)); the initial point has weight 1
        self.rho = p
        self.h0 = h0
        self.active = torch.ones(chains, dtype=torch.bool, device=p.device)
        self.depth = torch.zeros(chains, dtype=torch.long, device=p.device)
        self.leaf_neg_delta: list[torch.Tensor] = []  # -(H_i - H_0) of every leaf
        self.leaf_active: list[torch.Tensor] = []  # whether the chain built that leaf
        self.diverging = torch.zeros(chains, dtype=torch.bool, device=p.device)


class NUTS(Kernel):
    """Batched No-U-Turn sampler.

    Parameters
    ----------
    max_tree_depth
        Maximum number of trajectory doublings (at most :math:`2^{d}-1` leapfrog steps).
    max_delta_energy
        Energy error :math:`H - H_0` above which a leaf is divergent (NaN is always divergent).

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

    def __init__(self, max_tree_depth: int = 10, max_delta_energy: float = 1000.0):
        if not isinstance(max_tree_depth, int) or max_tree_depth < 1:
            raise ArgumentError(
                f"Expected `max_tree_depth` to be a positive int, but found {max_tree_depth!r}"
            )
        if not max_delta_energy > 0:
            raise ArgumentError(f"Expected `max_delta_energy` > 0, but found {max_delta_energy!r}")
        self.max_tree_depth = max_tree_depth
        self.max_delta_energy = float(max_delta_energy)

    def __repr__(self) -> str:
        return f"NUTS(max_tree_depth={self.max_tree_depth})"

    def tune_step_size(self, state, logdensity_and_grad, params, generator):
        eps = find_reasonable_step_size(state, params, logdensity_and_grad, generator)
        return Params(eps, params.inverse_mass)

    def step(
        self,
        state: MCMCState,
        logdensity_and_grad: LogDensityFn,
        params: Params,
        generator: torch.Generator,
    ) -> tuple[MCMCState, dict[str, torch.Tensor]]:
        """One NUTS transition for every chain; returns the new state and ``info``
        (``accept_prob`` = mean of :math:`\\min(1, e^{-\\Delta H})` over the tree's leaves,
        ``tree_depth``, ``n_steps``, ``diverging``, ``energy``, ``step_size``, ``lp``)."""
        minv = params.inverse_mass
        p0 = sample_momentum(params, state.position, generator)
        h0 = -state.lp + kinetic_energy(p0, minv)
        tree = _Tree(state, p0, velocity(p0, minv), h0)
        for depth in range(self.max_tree_depth):
            if not bool(tree.active.any()):
                break
            self._double(tree, depth, logdensity_and_grad, params, generator)
        built = torch.stack(tree.leaf_active)
        n_steps = built.sum(0)
        accept = (torch.stack(tree.leaf_neg_delta).clamp(max=0).exp() * built).sum(0)
        info = {
            "lp": tree.proposal.lp,
            "accept_prob": accept / n_steps.clamp(min=1).to(h0.dtype),
            "step_size": params.step_size,
            "tree_depth": tree.depth,
            "n_steps": n_steps,
            "diverging": tree.diverging,
            "energy": h0,
        }
        return tree.proposal, info

    def _double(self, tree: _Tree, depth: int, ld: LogDensityFn, params: Params, gen) -> None:
        """Extend every active chain's tree by a subtree of ``2**depth`` leaves, merge it
        (biased progressive sampling) and update the tree-level U-turn flag."""
        start_active = tree.active
        forward = (
            torch.rand(tree.h0.shape, generator=gen, dtype=tree.h0.dtype, device=tree.h0.device)
            < 0.5
        )
        start = tree.right.select(forward, tree.left)
        eps = torch.where(forward, params.step_size, -params.step_size)
        edge, sub_prop, sub_logw, sub_rho, ok = self._subtree(
            tree, start, eps, depth, ld, params, gen
        )
        # biased progressive sampling between the old tree and the new subtree
        log_u = torch.log(
            torch.rand(tree.h0.shape, generator=gen, dtype=tree.h0.dtype, device=tree.h0.device)
        )
        take = ok & (log_u < sub_logw - tree.log_weight)
        tree.proposal = sub_prop.select(take, tree.proposal)
        tree.log_weight = torch.where(
            ok, torch.logaddexp(tree.log_weight, sub_logw), tree.log_weight
        )
        tree.rho = where(ok, tree.rho + sub_rho, tree.rho)
        tree.right = edge.select(ok & forward, tree.right)
        tree.left = edge.select(ok & ~forward, tree.left)
        tree.depth = torch.where(start_active, depth + 1, tree.depth)
        turned = _turning(tree.left.p_sharp, tree.right.p_sharp, tree.rho)
        tree.active = ok & ~turned

    def _subtree(self, tree: _Tree, start: _Edge, eps, depth, ld, params: Params, gen):
        """Build ``2**depth`` leaves from ``start`` with signed step sizes ``eps [C]``.

        Returns the new edge, the subtree's multinomial proposal and log-weight, its summed
        momentum and a mask of chains whose subtree neither turned nor diverged."""
        minv = params.inverse_mass
        ok = tree.active.clone()
        cur = start
        prop = start.state
        logw = torch.full_like(tree.h0, -math.inf)
        rho = torch.zeros_like(start.p)
        log_u = torch.rand(
            (2**depth,) + eps.shape, generator=gen, dtype=eps.dtype, device=eps.device
        ).log()
        ckpt_sharp: dict[int, torch.Tensor] = {}
        ckpt_rho: dict[int, torch.Tensor] = {}
        for leaf in range(2**depth):
            if leaf > 0 and not bool(ok.any()):
                break
            # inactive chains take a step of size zero: they stay put at a finite point
            new_state, p_new = leapfrog(cur.state, cur.p, eps * ok, minv, ld)
            sharp = velocity(p_new, minv)
            # minus the energy error, -(H - H0); NaN counts as +inf energy (divergent)
            neg_delta = torch.add(
                tree.h0 + new_state.lp, torch.linalg.vecdot(p_new, sharp), alpha=-0.5
            )
            neg_delta = torch.nan_to_num(
                neg_delta, nan=-math.inf, posinf=math.inf, neginf=-math.inf
            )
            tree.leaf_active.append(ok)
            tree.leaf_neg_delta.append(neg_delta)
            diverged = ok & (neg_delta < -self.max_delta_energy)
            if bool(diverged.any()):
                tree.diverging = tree.diverging | diverged
                ok = ok & ~diverged
                new_state = cur.state.select(diverged, new_state)  # keep finite positions
                p_new = where(diverged, cur.p, p_new)
                sharp = where(diverged, cur.p_sharp, sharp)
            # progressive multinomial sampling within the subtree
            new_logw = torch.logaddexp(logw, neg_delta)
            take = ok & (log_u[leaf] < neg_delta - new_logw)
            take_col = take.unsqueeze(-1)
            prop = MCMCState(
                torch.where(take_col, new_state.position, prop.position),
                torch.where(take, new_state.lp, prop.lp),
                torch.where(take_col, new_state.grad, prop.grad),
            )
            logw = torch.where(ok, new_logw, logw)
            # U-turn checks on every power-of-two block of leaves ending at this leaf
            for k in range(1, depth + 1):
                if leaf % (2**k) == 0:
                    ckpt_sharp[k], ckpt_rho[k] = sharp, rho
            rho = rho + p_new
            for k in range(1, depth + 1):
                if (leaf + 1) % (2**k) == 0:
                    block_rho = rho - ckpt_rho[k]
                    ok = ok & (torch.linalg.vecdot(ckpt_sharp[k], block_rho) > 0)
                    ok = ok & (torch.linalg.vecdot(sharp, block_rho) > 0)
            cur = _Edge(new_state, p_new, sharp)
        return cur, prop, logw, rho, ok
