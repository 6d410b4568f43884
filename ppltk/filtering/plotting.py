"""Figure of decoded against true 2-D velocity trajectories."""

from __future__ import annotations

import torch


def plot_decoded(truth: torch.Tensor, decoded: dict[str, torch.Tensor], steps: int = 200):
    """Two panels (x and y velocity) of ``truth [T, 2]`` and each ``decoded[name] [T, 2]``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    n = min(steps, truth.shape[0])
    for dim, ax in enumerate(axes):
        ax.plot(truth[:n, dim].cpu(), color="black", lw=2, label="true")
        for name, path in decoded.items():
            ax.plot(path[:n, dim].detach().cpu(), lw=1, label=name)
        ax.set_ylabel(f"velocity {'xy'[dim]}")
    axes[0].legend(loc="upper right", fontsize=8, ncol=len(decoded) + 1)
    axes[-1].set_xlabel("test bin")
    fig.suptitle("Decoded vs true cursor velocity")
    return fig
