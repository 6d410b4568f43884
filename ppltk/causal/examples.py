"""The smoking -> tar -> cancer example with a hidden confounder (JKZ 2019, Sect. 4)."""

from __future__ import annotations

import networkx as nx
import torch

__all__ = ["smoking_graph", "smoking_joint", "smoking_latent_model"]

# ω(S, T, C); index 1 = yes (smoker, tar, cancer), 0 = no.
_JOINT = {
    (1, 1, 1): 0.5, (1, 1, 0): 0.1, (1, 0, 1): 0.01, (1, 0, 0): 0.02,
    (0, 1, 1): 0.1, (0, 1, 0): 0.05, (0, 0, 1): 0.02, (0, 0, 0): 0.2,
}  # fmt: skip


def smoking_graph() -> nx.DiGraph:
    """``H -> S``, ``H -> C``, ``S -> T -> C`` with ``H`` hidden."""
    return nx.DiGraph([("H", "S"), ("H", "C"), ("S", "T"), ("T", "C")])


def smoking_joint(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The observational joint ``ω[s, t, c]`` of the example."""
    t = torch.zeros(2, 2, 2, dtype=dtype)
    for k, v in _JOINT.items():
        t[k] = v
    return t


def smoking_latent_model(joint: torch.Tensor | None = None) -> dict:
    """Tables of a model with hidden ``H`` that reproduces ``joint`` exactly.

    ``H ~ ω(s)``, ``S = H``, ``T ~ ω(t | s)``, ``C ~ ω(c | h, t)``: one "true model"
    consistent with the observations (any other gives the same ``P(c | do(s))``).
    """
    joint = smoking_joint() if joint is None else joint
    w_s = joint.sum((1, 2))
    return {
        "H": ((), w_s),
        "S": (("H",), torch.eye(2, dtype=joint.dtype)),
        "T": (("S",), joint.sum(2) / w_s[:, None]),
        "C": (("H", "T"), joint / joint.sum(2, keepdim=True)),
    }
