"""A log-space einsum backend for Pyro's rings that works under ``torch.func.vmap``.

It is Pyro's ``pyro.ops.einsum.torch_log`` (shift by the maximum, ``exp``, ``einsum``,
``log``, shift back) with one change: Pyro takes the final logarithm with
``pyro.ops.special.safe_log``, an ``autograd.Function`` that functorch transforms refuse.
Here the logarithm is a ``torch.where`` with the same value (``-inf`` at zero) and a zero
instead of an infinite gradient there.  opt_einsum finds the backend by this module's name
(``einsum``, ``tensordot`` and ``transpose`` below).
"""

from __future__ import annotations

import torch
from pyro.ops.einsum.util import Tensordot

__all__ = ["einsum", "tensordot", "transpose"]


def transpose(a: torch.Tensor, axes) -> torch.Tensor:
    return a.permute(axes)


def _safe_log(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log x` with :math:`\log 0 = -\infty` and a zero gradient at :math:`x = 0`."""
    positive = x > 0
    tiny = torch.finfo(x.dtype).tiny
    return torch.where(positive, torch.log(torch.where(positive, x, tiny)), -torch.inf)


def einsum(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    r"""Log-sum-exp einsum: :math:`\log \sum \prod_k \exp(a_k)` over the contracted indices,
    computed as :math:`s + \log \sum \prod_k \exp(a_k - s_k)` with :math:`s_k` each operand's
    maximum over its contracted indices (so no term overflows)."""
    symbols = sorted(set(equation) - set(",->"))
    rename = dict(zip(symbols, "abcdefghijklmnopqrstuvwxyz", strict=False))
    equation = "".join(rename.get(s, s) for s in equation)
    inputs, output = equation.split("->")
    if inputs == output:
        return operands[0].clone()
    shifts = []
    exp_operands = []
    for dims, operand in zip(inputs.split(","), operands, strict=True):
        shift = operand.detach()
        for i, dim in enumerate(dims):
            if dim not in output:
                shift = shift.max(i, keepdim=True)[0]
        shift = shift.clamp(min=torch.finfo(shift.dtype).min)  # no nan from -inf - -inf
        exp_operands.append((operand - shift).exp())
        shift = shift.reshape(
            torch.Size(size for size, dim in zip(operand.shape, dims, strict=True) if dim in output)
        )
        if shift.dim():
            shift = shift.reshape((1,) * (len(output) - shift.dim()) + shift.shape)
            kept = [dim for dim in dims if dim in output]
            kept = [dim for dim in output if dim not in kept] + kept
            shift = shift.permute(*(kept.index(dim) for dim in output))
        shifts.append(shift)
    result = _safe_log(torch.einsum(equation, exp_operands))
    return sum(shifts + [result])


tensordot = Tensordot(einsum)
