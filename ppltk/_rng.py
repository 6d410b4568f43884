"""One way to seed: an explicit :class:`torch.Generator` made from ``seed=``."""

from __future__ import annotations

import contextlib

import pyro
import torch

from ppltk.errors import ArgumentError


def make_generator(seed: int | torch.Generator | None, device: torch.device | str | None = None):
    """Return a :class:`torch.Generator` on ``device`` seeded by ``seed``.

    A generator passed in is returned unchanged, so functions can share one stream.
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ArgumentError(f"Expected `seed` to be an int or torch.Generator, but found {seed!r}")
    if not -(2**63) <= seed < 2**64:
        raise ArgumentError(f"Expected `seed` in [-2**63, 2**64), but found {seed!r}")
    try:
        dev = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError) as err:
        raise ArgumentError(f"Expected `device` a torch device, but found {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(f"Expected a CUDA device to be available for {dev}, but found none")
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    return gen


def child_seed(generator: torch.Generator) -> int:
    """Draw an integer seed from ``generator`` (for code that needs a global seed)."""
    return int(torch.randint(0, 2**32 - 1, (), generator=generator, device=generator.device).item())


@contextlib.contextmanager
def pyro_seed(seed: int):
    """Run a block with Pyro's/torch's global RNG seeded, restoring the previous state."""
    state = pyro.util.get_rng_state()
    pyro.set_rng_seed(seed)
    try:
        yield
    finally:
        pyro.util.set_rng_state(state)
