r"""Replay recorded latent values and suspend a program after its k-th observation.

Together they give the general (replay) path of SMC for any Pyro program: step :math:`k`
re-runs the program, replaying the (resampled) latent values drawn so far, samples the new ones
from the prior, and stops right after observation :math:`k`. Re-running costs :math:`O(k)`, so
a whole filter costs :math:`O(T^2)`.
"""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger

__all__ = ["ReplayValuesMessenger", "SuspendMessenger", "Suspended"]


class Suspended(Exception):
    """Raised by :class:`SuspendMessenger` to stop a program after an observation."""


class ReplayValuesMessenger(Messenger):
    """Set each latent site named in ``values`` to its recorded value (keeping its density).

    Unlike ``pyro.condition`` the site stays latent: a trace records it as sampled, with the
    replayed value, exactly as :class:`pyro.poutine.replay_messenger.ReplayMessenger` does for a
    trace. Preserves the joint density of the replayed values.
    """

    def __init__(self, values: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg) -> None:
        name = msg["name"]
        if name in self.values and not msg["is_observed"]:
            msg["value"] = self.values[name]
            msg["done"] = True
            msg["infer"] = dict(msg.get("infer") or {}, _ppltk_replayed=True)


class SuspendMessenger(Messenger):
    """Raise :class:`Suspended` right after the program's observation number ``stop_after``.

    Observations are counted in execution order (observed ``pyro.sample`` sites and
    ``pyro.factor``). Sites before the suspension point run normally, so wrapping with
    :func:`pyro.poutine.trace` records the program up to and including that observation.
    """

    def __init__(self, stop_after: int) -> None:
        super().__init__()
        self.stop_after, self.count = stop_after, -1

    def _postprocess_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["is_observed"]:
            self.count += 1
            msg["infer"] = dict(msg.get("infer") or {}, _ppltk_observation=self.count)
            if self.count == self.stop_after:
                raise Suspended(msg["name"])
