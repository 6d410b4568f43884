"""Figure of decoded against true state trajectories (e.g. 2-D cursor velocity)."""

from __future__ import annotations

import torch


def plot_decoded(truth: torch.Tensor, decoded: dict[str, torch.Tensor], steps: int = 200):
    """One panel per state dimension of ``truth [T, d]`` and each ``decoded[name] [T, d]``
    (for ``d = 2`` labelled as x and y velocity), over the first ``steps`` bins."""
    import matplotlib.pyplot as plt

    d = truth.shape[-1]
    fig, axes = plt.subplots(d, 1, figsize=(9, 2.5 * d), sharex=True, squeeze=False)
    axes = axes[:, 0]
    n = min(steps, truth.shape[0])
    for dim, ax in enumerate(axes):
        ax.plot(truth[:n, dim].cpu(), color="black", lw=2, label="true")
        for name, path in decoded.items():
            ax.plot(path[:n, dim].detach().cpu(), lw=1, label=name)
        ax.set_ylabel(f"velocity {'xy'[dim]}" if d == 2 else f"state {dim}")
    axes[0].legend(loc="upper right", fontsize=8, ncol=len(decoded) + 1)
    axes[-1].set_xlabel("test bin")
    fig.suptitle("Decoded vs true cursor velocity" if d == 2 else "Decoded vs true state")
    return fig
