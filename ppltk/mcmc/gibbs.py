"""Gibbs-style composition: update blocks of coordinates in turn, each with its own kernel.

Block :math:`b` with coordinates :math:`I_b` is moved by a kernel that leaves the conditional
:math:`\\pi(z_{I_b} \\mid z_{-I_b})` invariant, evaluated through the full log-density with the
other coordinates held fixed.  Each such move leaves the joint :math:`\\pi` invariant, and so
does their composition (a deterministic-scan Gibbs sampler).  Each block has its own step size
and metric, adapted separately during warm-up.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ppltk.errors import ArgumentError
from ppltk.mcmc._base import Kernel, LogDensityFn, MCMCState, Params, init_state

__all__ = ["Gibbs"]


def _conditional(
    ld: LogDensityFn, state: MCMCState, idx: torch.Tensor
) -> tuple[LogDensityFn, MCMCState]:
    """Log-density of block ``idx`` with the other coordinates fixed at ``state.position``, and
    the block's state (the full log-density, the block's coordinates and gradient)."""
    full = state.position

    def block_ld(zb: torch.Tensor):
        z = full.clone()
        z[:, idx] = zb
        lp, grad = ld(z)
        return lp, grad[:, idx]

    return block_ld, MCMCState(full[:, idx], state.lp, state.grad[:, idx])


class Gibbs(Kernel):
    """Compose kernels over blocks of coordinates of the flat position.

    Parameters
    ----------
    blocks
        Sequence of ``(indices, kernel)``: ``indices`` a list/range/LongTensor of coordinates
        (disjoint between blocks), ``kernel`` a kernel object or ``"nuts"|"hmc"|"mh"``.

    Examples
    --------
    >>> from ppltk.mcmc import Gibbs, NUTS, RandomWalkMH
    >>> kernel = Gibbs([([0, 1], NUTS()), ([2], RandomWalkMH())])
    """

    name = "gibbs"

    def __init__(self, blocks: Sequence[tuple[Sequence[int] | torch.Tensor, Kernel | str]]):
        from ppltk.mcmc.runner import make_kernel

        if len(blocks) == 0:
            raise ArgumentError("Expected `blocks` to hold at least one (indices, kernel) pair")
        self.indices = [torch.as_tensor(list(map(int, ix))).long() for ix, _ in blocks]
        self.kernels = [make_kernel(k) for _, k in blocks]
        seen = torch.cat(self.indices)
        if seen.unique().numel() != seen.numel():
            raise ArgumentError(f"Expected disjoint `blocks`, but found indices {seen.tolist()}")
        self.stat_names = ("lp", "accept_prob", "diverging") + tuple(
            f"{s}_{b}" for b in range(len(blocks)) for s in ("accept_prob", "step_size")
        )

    def __repr__(self) -> str:
        inner = ", ".join(f"({ix.tolist()}, {k!r})" for ix, k in zip(self.indices, self.kernels))
        return f"Gibbs([{inner}])"

    def _check_dim(self, dim: int) -> None:
        top = int(torch.cat(self.indices).max())
        if top >= dim:
            raise ArgumentError(
                f"Expected block indices < dim = {dim}, but found index {top} in `blocks`"
            )

    def init(self, position: torch.Tensor, logdensity_and_grad: LogDensityFn) -> MCMCState:
        self._check_dim(position.shape[-1])
        return init_state(position, logdensity_and_grad)

    def default_params(self, position: torch.Tensor, dense: bool = False) -> list[Params]:
        return [
            k.default_params(position[:, ix], dense) for ix, k in zip(self.indices, self.kernels)
        ]

    def blocks(self, dim: int) -> list[torch.Tensor]:
        return self.indices

    def param_blocks(self, params: list[Params]) -> list[Params]:
        return list(params)

    def join_param_blocks(self, blocks: list[Params]) -> list[Params]:
        return list(blocks)

    def block_accept(self, info: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [info[f"accept_prob_{b}"] for b in range(len(self.kernels))]

    def tune_step_size(self, state, logdensity_and_grad, params, generator) -> list[Params]:
        tuned = []
        for ix, kernel, bp in zip(self.indices, self.kernels, params):
            ld, sub = _conditional(logdensity_and_grad, state, ix)
            tuned.append(kernel.tune_step_size(sub, ld, bp, generator))
        return tuned

    def step(
        self,
        state: MCMCState,
        logdensity_and_grad: LogDensityFn,
        params: list[Params],
        generator: torch.Generator,
    ) -> tuple[MCMCState, dict[str, torch.Tensor]]:
        """Sweep the blocks in order; the full gradient is re-evaluated after each block."""
        info: dict[str, torch.Tensor] = {}
        diverging = torch.zeros_like(state.lp, dtype=torch.bool)
        for b, (ix, kernel, bp) in enumerate(zip(self.indices, self.kernels, params)):
            ld, sub = _conditional(logdensity_and_grad, state, ix)
            sub, sub_info = kernel.step(sub, ld, bp, generator)
            position = state.position.clone()
            position[:, ix] = sub.position
            lp, grad = logdensity_and_grad(position)
            state = MCMCState(position, lp.detach(), grad.detach())
            info[f"accept_prob_{b}"] = sub_info["accept_prob"]
            info[f"step_size_{b}"] = sub_info["step_size"]
            diverging = diverging | sub_info["diverging"]
        accepts = [info[f"accept_prob_{b}"] for b in range(len(self.kernels))]
        info.update(lp=state.lp, accept_prob=torch.stack(accepts).mean(0), diverging=diverging)
        return state, info
