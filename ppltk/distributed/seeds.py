"""Deterministic per-unit seeds, identical on every executor.

Seeds are derived on the client before any work is sent out, with NumPy's
:class:`numpy.random.SeedSequence` (hash-based spawning: the children are statistically
independent streams, and child ``i`` depends only on the root seed and ``i``). Results therefore
do not depend on where, in which order, or how many times a unit runs.
"""

from __future__ import annotations

import numpy as np
import torch

from ppltk._rng import child_seed
from ppltk.errors import ArgumentError

__all__ = ["unit_seeds", "root_seed"]

_SEED_BITS = 62


def root_seed(seed: int | torch.Generator | None) -> int:
    """Turn ``seed`` into one non-negative int (a generator passed in is advanced once).

    ``None`` draws a fresh root seed from torch's global generator, as :func:`ppltk._rng.make_generator`
    does.
    """
    if isinstance(seed, torch.Generator):
        return child_seed(seed)
    if seed is None:
        return int(torch.randint(0, 2**_SEED_BITS, ()).item())
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ArgumentError(
            f"Expected `seed` to be a non-negative int or torch.Generator, but found {seed!r}"
        )
    return int(seed)


def unit_seeds(seed: int | torch.Generator | None, num_units: int) -> list[int]:
    """Return ``num_units`` independent integer seeds derived from ``seed``.

    Parameters
    ----------
    seed
        Root seed (int or :class:`torch.Generator`).
    num_units
        Number of work units.

    Returns
    -------
    list of int
        ``seeds[i] = SeedSequence(seed).spawn(num_units)[i]`` reduced to 62 bits; the same list on
        every machine and for every executor.

    Examples
    --------
    >>> unit_seeds(0, 3) == unit_seeds(0, 3)
    True
    >>> len(set(unit_seeds(0, 100)))
    100
    """
    if not isinstance(num_units, (int, np.integer)) or isinstance(num_units, bool) or num_units < 0:
        raise ArgumentError(f"Expected `num_units` to be an int >= 0, but found {num_units!r}")
    children = np.random.SeedSequence(root_seed(seed)).spawn(int(num_units))
    return [int(c.generate_state(1, np.uint64)[0] >> np.uint64(64 - _SEED_BITS)) for c in children]
