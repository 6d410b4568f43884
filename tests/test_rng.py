"""The one seeding function: named errors for seeds and devices it cannot use."""

import pytest
import torch

from ppltk._rng import make_generator
from ppltk.errors import ArgumentError


@pytest.mark.parametrize("seed", [2**70, -(2**64), 1.5, "0", True])
def test_make_generator_refuses_unusable_seeds(seed):
    with pytest.raises(ArgumentError, match="seed"):
        make_generator(seed)


def test_make_generator_devices():
    assert make_generator(3).initial_seed() == 3
    assert make_generator(2**64 - 1).initial_seed() == 2**64 - 1
    with pytest.raises(ArgumentError, match="device"):
        make_generator(0, "not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(ArgumentError, match="CUDA"):
            make_generator(0, "cuda")
