r"""The compiled NUTS transition as a flat sequence of identical leaf steps.

A NUTS trajectory of depth ``d`` is the leaves :math:`t = 0, 1, \dots, 2^d - 2`, built in
subtrees of :math:`1, 2, 4, \dots` leaves.  Every leaf -- whatever its subtree -- is one call of
the same pure tensor function (:func:`flat_leaf`), compiled once per model and shape: the start
of a subtree (its direction and starting edge), the leapfrog step with the log-density, the
energy and divergence test, the progressive multinomial draw, the U-turn checks of every
power-of-two block ending at the leaf and, at a subtree's last leaf, the merge into the tree
(biased progressive sampling and the whole-tree U-turn check) are all masked tensor
operations, selected by a precomputed row of the leaf schedule (:func:`schedule_row`).

The whole tree state travels between leaves in three packed tensors, so a compiled call has
few arguments and outputs (each costs a Python-level allocation and check):

* ``vecs [13, C, D]``: the left and right trajectory edges (position, gradient, momentum,
  velocity :math:`p^\sharp = M^{-1}p`), the running momentum sum :math:`\rho`, the tree's
  proposal (position, gradient) and the current subtree's proposal;
* ``ck [2, K, C, D]``: :math:`p^\sharp` and :math:`\rho` at the start of each block level;
* ``scal [11, C]``: log-weights, proposal log-densities, statistics and chain flags.

A subtree extends the edge on its side in place (the leaf just built *is* that edge); the
running :math:`\rho` is never reset, so a block's momentum sum is :math:`\rho` minus its value
at the block's start, and the whole tree's is :math:`\rho` itself.  A chain that has stopped
(its subtree turned or diverged, or the tree did) idles at a finite point with step size zero
and is never read again.  See :mod:`ppltk.mcmc.nuts` for the algorithm.
"""

from __future__ import annotations

import math

import torch

from ppltk.mcmc.fused import guarded_call
from ppltk.mcmc.integrators import velocity

# rows of vecs
LZ, LG, LP, LS, RZ, RG, RP, RS, RHO, PZ, PG, SZ, SG = range(13)
# rows of scal: tree log-weight, subtree log-weight, proposal log-densities (tree, subtree),
# summed acceptance statistic, leaves built, flags (subtree ok, tree active, diverging),
# subtrees started, non-finite evaluations
LOGW, SUB_LOGW, PLP, SLP, ACCEPT, BUILT, OK, ACTIVE, DIV, STARTED, BAD = range(11)
NUM_SCAL = 11


def no_u_turn(sharp_a: torch.Tensor, sharp_b: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    r""":math:`p^\sharp_a\cdot\rho > 0` and :math:`p^\sharp_b\cdot\rho > 0` (NaN: turned)."""
    return torch.minimum(torch.linalg.vecdot(sharp_a, rho), torch.linalg.vecdot(sharp_b, rho)) > 0


def schedule_row(depth: int, leaf: int, max_depth: int) -> torch.Tensor:
    """Leaf ``leaf`` of the subtree at ``depth``, as the boolean ``[2K + 2]`` row
    :func:`flat_leaf` reads: which block levels ``k = 1..K`` start (checkpoint) and end (U-turn
    check) at this leaf, and whether it is the subtree's first and last leaf."""
    first = depth if leaf == 0 else min(depth, (leaf & -leaf).bit_length() - 1)
    last = min(depth, ((leaf + 1) & -(leaf + 1)).bit_length() - 1)
    levels = torch.arange(1, max_depth + 1)
    ends = torch.tensor([leaf == 0, leaf == 2**depth - 1])
    return torch.cat((levels <= first, levels <= last, ends))


def pack(z0, lp0, g0, p0, sharp0, neg_h0, threshold, forward, signed_eps, log_u, max_depth):
    """The packed state of a new transition from ``(z0, lp0, g0)`` and what
    ``NUTS._start`` drew: momentum ``p0``, its velocity, :math:`-H_0`,
    the divergence threshold and, per doubling ``[K, C]``, the direction, signed step size and
    merge log-uniform.  Returns ``(vecs, ck, scal, per_depth [K, 3, C], h0 [2, C])``, the
    per-doubling and per-transition values in the log-density's dtype."""
    edge = (z0, g0, p0, sharp0)
    vecs = torch.stack((*edge, *edge, p0, z0, g0, z0, g0)).to(z0.dtype)
    scal = lp0.new_zeros((NUM_SCAL,) + lp0.shape)
    scal[SUB_LOGW] = -math.inf
    scal[PLP] = lp0
    scal[ACTIVE] = 1.0
    per_depth = torch.stack((forward, signed_eps, log_u), 1).to(lp0.dtype)
    h0 = torch.stack((neg_h0, threshold)).to(lp0.dtype)
    ck = z0.new_zeros((2, max_depth) + z0.shape)
    return vecs, ck, scal, per_depth, h0


def flat_leaf(ld, vecs, ck, scal, minv, doubling, h0, row, u):
    """One leaf for every chain (pure: compiled as one function), ``doubling [3, C]`` being the
    row of ``per_depth`` of its subtree and ``u [C]`` the uniform of its multinomial draw;
    returns ``(vecs, ck, scal, stop)`` with ``stop`` true when the transition is over (every chain
    stopped, or the last leaf of a subtree after which no chain continues)."""
    k = ck.shape[1]
    set_mask, check_mask = row[:k] > 0, row[k : 2 * k] > 0
    first, last = row[2 * k] > 0, row[2 * k + 1] > 0
    forward, eps, log_u_merge = doubling.unbind(0)
    fwd = forward > 0.5
    neg_h0, threshold = h0.unbind(0)
    lz, lg, lp_, ls, rz, rg, rp, rs, rho, pz, pg, sz, sg = vecs.unbind(0)
    log_w_tree, sub_log_w, prop_lp, sub_lp, accept, built, ok, active, div, started, bad_count = (
        scal.unbind(0)
    )
    # a new subtree starts with the chains still active, from the edge on its side
    ok = torch.where(first, active, ok) > 0
    sub_log_w = torch.where(first, -math.inf, sub_log_w)
    started = started + (first & (active > 0)).to(scal.dtype)
    fwd_col = fwd.unsqueeze(-1)
    z = torch.where(fwd_col, rz, lz)
    g = torch.where(fwd_col, rg, lg)
    p = torch.where(fwd_col, rp, lp_)
    sharp = torch.where(fwd_col, rs, ls)
    # leapfrog step (chains that have stopped idle: step size zero), in the positions' dtype
    # (the step sizes come in the log-density's, which may be wider)
    e_col = (eps * ok).to(vecs.dtype).unsqueeze(-1)
    half = 0.5 * e_col
    p_half = torch.addcmul(p, half, g)
    z_new = torch.addcmul(z, e_col, velocity(p_half, minv))
    lp, g_new, bad = guarded_call(ld, z_new)
    p_new = torch.addcmul(p_half, half, g_new)
    sharp_new = velocity(p_new, minv)
    neg_h = torch.sub(lp, torch.linalg.vecdot(p_new, sharp_new), alpha=0.5)  # -H
    log_w = torch.nan_to_num(neg_h - neg_h0, nan=-math.inf)  # NaN energy: weight 0
    accept = accept + torch.where(ok, log_w.clamp(max=0.0).exp(), 0.0)
    built = built + ok.to(scal.dtype)
    # divergent: energy error above max_delta_energy, or NaN (the comparison fails)
    within = neg_h >= threshold
    diverged = ok & ~within
    ok = ok & within
    # progressive multinomial draw among the subtree's leaves
    log_w = torch.where(ok, log_w, -math.inf)
    new_sub_log_w = torch.logaddexp(sub_log_w, log_w)
    take = (ok & (u.log() <= log_w - new_sub_log_w)).unsqueeze(-1)
    sub_log_w = torch.where(ok, new_sub_log_w, sub_log_w)
    sz = torch.where(take, z_new, sz)
    sg = torch.where(take, g_new, sg)
    sub_lp = torch.where(take.squeeze(-1), lp, sub_lp)
    # a divergent chain keeps its last finite point (where it idles from now on)
    div_col = diverged.unsqueeze(-1)
    z_new = torch.where(div_col, z, z_new)
    g_new = torch.where(div_col, g, g_new)
    p_new = torch.where(div_col, p, p_new)
    sharp_new = torch.where(div_col, sharp, sharp_new)
    # U-turn checks of every power-of-two block of leaves that starts or ends here
    ck_sharp, ck_rho = ck.unbind(0)
    set_col = set_mask[:, None, None]
    ck_sharp = torch.where(set_col, sharp_new, ck_sharp)
    ck_rho = torch.where(set_col, rho, ck_rho)
    rho = rho + p_new
    no_turn = no_u_turn(ck_sharp, sharp_new.expand_as(ck_sharp), rho - ck_rho)
    ok = ok & (no_turn | ~check_mask[:, None]).all(0)
    # the new leaf is the trajectory's edge on this subtree's side
    rz, lz = torch.where(fwd_col, z_new, rz), torch.where(fwd_col, lz, z_new)
    rg, lg = torch.where(fwd_col, g_new, rg), torch.where(fwd_col, lg, g_new)
    rp, lp_ = torch.where(fwd_col, p_new, rp), torch.where(fwd_col, lp_, p_new)
    rs, ls = torch.where(fwd_col, sharp_new, rs), torch.where(fwd_col, ls, sharp_new)
    # merge at the subtree's last leaf: biased progressive sampling, whole-tree U-turn check
    merge = last & ok
    take_tree = merge & (log_u_merge < sub_log_w - log_w_tree)
    take_col = take_tree.unsqueeze(-1)
    pz = torch.where(take_col, sz, pz)
    pg = torch.where(take_col, sg, pg)
    prop_lp = torch.where(take_tree, sub_lp, prop_lp)
    log_w_tree = torch.where(last, torch.logaddexp(log_w_tree, sub_log_w), log_w_tree)
    active = torch.where(last, merge & no_u_turn(ls, rs, rho), active > 0)
    stop = torch.where(last, ~active.any(), ~ok.any())
    # outputs in the input dtypes, so that the compiled step always sees the same dtypes
    # (positions may be float32 while a float64 likelihood makes the log-density float64)
    vecs = torch.stack((lz, lg, lp_, ls, rz, rg, rp, rs, rho, pz, pg, sz, sg)).to(vecs.dtype)
    ck = torch.stack((ck_sharp, ck_rho)).to(ck.dtype)
    scal = torch.stack(
        (log_w_tree, sub_log_w, prop_lp, sub_lp, accept, built, ok.to(scal.dtype),
         active.to(scal.dtype), ((div > 0) | diverged).to(scal.dtype), started,
         bad_count + bad.to(scal.dtype))
    ).to(scal.dtype)  # fmt: skip
    return vecs, ck, scal, stop
