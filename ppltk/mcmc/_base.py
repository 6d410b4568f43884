"""Carried state, tunable parameters and small tensor helpers shared by every kernel.

A kernel carries an :class:`MCMCState` (position, log-density and its gradient for a batch of
``C`` chains) from one step to the next; its tunable :class:`Params` (per-chain step size and
inverse mass matrix) are passed in explicitly; diagnostics come back in a separate ``info``
dict and are never carried.  No kernel object holds chain state between calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from ppltk.errors import ArgumentError, NonFiniteLogDensityError, ShapeError

__all__ = ["MCMCState", "Params", "LogDensityFn", "Kernel"]

LogDensityFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``logdensity_and_grad(z [C, D]) -> (lp [C], grad [C, D])``: one call for all chains."""


@dataclass
class MCMCState:
    """Position ``[C, D]``, log-density ``[C]`` and its gradient ``[C, D]`` of ``C`` chains."""

    position: torch.Tensor
    lp: torch.Tensor
    grad: torch.Tensor

    def select(self, mask: torch.Tensor, other: MCMCState) -> MCMCState:
        """Chain-wise ``mask ? self : other``."""
        return MCMCState(
            where(mask, self.position, other.position),
            torch.where(mask, self.lp, other.lp),
            where(mask, self.grad, other.grad),
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"position": self.position, "lp": self.lp, "grad": self.grad}


@dataclass
class Params:
    """Tunable kernel parameters, one set per chain.

    Attributes
    ----------
    step_size
        ``[C]`` leapfrog step size (HMC/NUTS) or proposal scale (random-walk MH).
    inverse_mass
        ``[C, D]`` diagonal or ``[C, D, D]`` dense inverse mass matrix :math:`M^{-1}`, i.e. the
        metric's estimate of the posterior covariance.
    """

    step_size: torch.Tensor
    inverse_mass: torch.Tensor

    @property
    def dense(self) -> bool:
        return self.inverse_mass.dim() == 3

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"step_size": self.step_size, "inverse_mass": self.inverse_mass}

    def take(self, index: torch.Tensor) -> Params:
        """Chain ``c`` gets the parameters of chain ``index[c]`` (every field, also those of a
        subclass such as :class:`~ppltk.mcmc.chees.ChEESParams`)."""
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)})


def where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where`` with a chain mask ``[C]`` broadcast over trailing dimensions."""
    return torch.where(mask.reshape(mask.shape + (1,) * (a.dim() - mask.dim())), a, b)


def default_params(position: torch.Tensor, dense: bool = False, step_size: float = 1.0) -> Params:
    """Unit metric and a constant step size on ``position``'s device and dtype."""
    chains, dim = position.shape
    eps = torch.full((chains,), step_size, dtype=position.dtype, device=position.device)
    if dense:
        eye = torch.eye(dim, dtype=position.dtype, device=position.device)
        return Params(eps, eye.expand(chains, dim, dim).clone())
    return Params(eps, torch.ones_like(position))


def init_state(position: torch.Tensor, logdensity_and_grad: LogDensityFn) -> MCMCState:
    """Evaluate the log-density at ``position [C, D]``; raise if any chain is not finite."""
    check_position(position, "position")
    lp, grad = logdensity_and_grad(position)
    bad = ~(torch.isfinite(lp) & torch.isfinite(grad).all(-1))
    if bool(bad.any()):
        chains = torch.nonzero(bad).flatten().tolist()
        raise NonFiniteLogDensityError(
            f"Expected a finite log-density and gradient at the initial position, but found "
            f"non-finite values for chains {chains} (lp={lp[bad].tolist()})"
        )
    return MCMCState(position, lp.detach(), grad.detach())


def check_position(position: torch.Tensor, name: str) -> None:
    if not isinstance(position, torch.Tensor):
        raise ArgumentError(f"Expected `{name}` to be a torch.Tensor, but found {type(position)}")
    if position.dim() != 2:
        raise ShapeError(
            f"Expected `{name}` shaped [chains, dim], but found shape {list(position.shape)}"
        )
    if not position.is_floating_point():
        raise ArgumentError(f"Expected `{name}` floating point, but found dtype {position.dtype}")


def check_params(params: Params, position: torch.Tensor) -> None:
    """Check ``params`` against a ``[C, D]`` position."""
    chains, dim = position.shape
    if params.step_size.shape != (chains,):
        raise ShapeError(
            f"Expected `step_size` shaped [{chains}], but found {list(params.step_size.shape)}"
        )
    ok = [(chains, dim), (chains, dim, dim)]
    if tuple(params.inverse_mass.shape) not in ok:
        raise ShapeError(
            f"Expected `inverse_mass` shaped [{chains}, {dim}] or [{chains}, {dim}, {dim}], "
            f"but found {list(params.inverse_mass.shape)}"
        )


class Kernel:
    """Interface of a batched MCMC kernel (BlackJAX style: ``init`` and ``step``).

    Subclasses implement :meth:`step`; the defaults below describe a kernel with a single
    block of parameters (the runner adapts each block's step size and metric separately, which
    is how :class:`~ppltk.mcmc.Gibbs` gets one adaptation per block).
    """

    name = "kernel"
    target_accept = 0.8
    stat_names: tuple[str, ...] = ("lp", "accept_prob", "step_size", "diverging")

    def init(self, position: torch.Tensor, logdensity_and_grad: LogDensityFn) -> MCMCState:
        """State at ``position [C, D]`` (evaluates the log-density once)."""
        return init_state(position, logdensity_and_grad)

    def default_params(self, position: torch.Tensor, dense: bool = False) -> Params:
        """Step size 1 (tuned by warm-up) and a unit diagonal or dense metric."""
        return default_params(position, dense)

    def step(self, state, logdensity_and_grad, params, generator):  # pragma: no cover
        raise NotImplementedError

    # -- block interface used by warm-up adaptation ------------------------------------
    def blocks(self, dim: int) -> list[torch.Tensor | slice]:
        """Coordinates adapted together (one step size and metric per block)."""
        return [slice(None)]

    def param_blocks(self, params) -> list[Params]:
        return [params]

    def join_param_blocks(self, blocks: list[Params]):
        return blocks[0]

    def block_accept(self, info: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [info["accept_prob"]]

    def with_compile(self) -> Kernel | None:
        """A copy of this kernel that compiles its own steps around the log-density, or
        ``None`` (default) when it has none: :func:`ppltk.mcmc.sample` then compiles the
        model's graph alone."""
        return None

    def compiles(
        self, logdensity_and_grad: LogDensityFn, position: torch.Tensor, dense: bool = False
    ) -> bool:
        """Whether the steps of a kernel from :meth:`with_compile` compile for
        ``logdensity_and_grad`` at chains shaped as ``position`` (default: ``False``)."""
        return False

    def tune_step_size(self, state, logdensity_and_grad, params, generator):
        """Return ``params`` with a reasonable initial step size (default: unchanged)."""
        return params

    # -- warm-up hook ------------------------------------------------------------------
    def make_adapters(
        self,
        num_warmup: int,
        params,
        target_accept: float,
        adapt_step_size: bool = True,
        adapt_mass: bool = True,
    ) -> list:
        """The warm-up adapters :func:`~ppltk.mcmc.sample_flat` drives for this kernel.

        Default: one Stan-style :class:`~ppltk.mcmc.WarmupAdapter` per parameter block
        (per-chain dual averaging, windowed metric). A kernel whose warm-up pools the chains
        (ChEES) returns a single :class:`~ppltk.mcmc.adaptation.EnsembleAdapter` instead,
        which sees every chain's state before and after each transition.
        """
        from ppltk.mcmc.adaptation import WarmupAdapter  # adaptation imports this module

        return [
            WarmupAdapter(num_warmup, bp, target_accept, adapt_step_size, adapt_mass)
            for bp in self.param_blocks(params)
        ]
