"""Draw ``blocks.png``: how a model reaches ppltk's blocks and algorithms (used by blocks.md).

Run ``python docs/_static/blocks_diagram.py`` after editing this script to redraw it (the PNG is
committed); ``docs/conf.py`` only draws it when it is missing, so a build never rewrites a
tracked file. Plain matplotlib (no Graphviz, no Mermaid), so the docs
build stays offline and dependency-free.
"""

from __future__ import annotations

from pathlib import Path

# (row, x0, width, text, colour) — rows from top (0) to bottom (4).
ROWS = ("model", "representation", "blocks", "algorithms", "result")
ROW_Y = {0: 8.6, 1: 6.7, 2: 4.55, 3: 2.45, 4: 0.55}
HEIGHT = {0: 1.0, 1: 1.3, 2: 1.4, 3: 1.3, 4: 0.8}
MODEL, REPR, MCMC, SMC, ALG, RES = "#dbe9f6", "#e6f2e1", "#fdebd3", "#fde0dc", "#efe6f5", "#eeeeee"

BOXES = {
    # models
    "static": (0, 0.0, 3.3, "static Pyro model\nlatent sites, obs=...", MODEL),
    "pyro_ss": (0, 3.5, 3.3, "Pyro model with\ninit(state) / step(state, y)", MODEL),
    "ssm": (0, 7.0, 3.3, "StateSpaceModel\ninit / transition / log_observation", MODEL),
    "program": (0, 10.5, 3.3, "any Pyro program that\nobserves in sequence", MODEL),
    # representations
    "bridge": (
        1,
        0.0,
        3.3,
        "ModelBridge\nflat z [B, D] via biject_to;\nlog π(z) and ∇ for B points\nin one vmap call",
        REPR,
    ),
    "pyro_state": (
        1,
        3.5,
        3.3,
        "PyroStateSpace\nparticle_plate +\nLogWeightMessenger;\nstate dict re-indexed: O(NT)",
        REPR,
    ),
    "markov": (
        1,
        7.0,
        3.3,
        "explicit Markov state\n[*batch, N, d] tensors\nre-indexed by gather: O(NT)",
        REPR,
    ),
    "replay": (
        1,
        10.5,
        3.3,
        "ReplayProgram\nReplayValues + Suspend\nhandlers; prefix re-run\neach step: O(NT²)",
        REPR,
    ),
    # blocks: MCMC on the left, SMC on the right
    "kernel": (2, 0.0, 1.65, "kernel\ninit / step\nHMC, NUTS,\nMH, Gibbs", MCMC),
    "warmup": (2, 1.75, 1.6, "warm-up\ndual averaging,\nWelford metric", MCMC),
    "move": (2, 3.5, 1.6, "move\nmcmc_move:\nK steps of\nany kernel", SMC),
    "temper": (2, 5.2, 1.6, "temper\np(y|z)^β;\nnext_beta by\nESS bisection", SMC),
    "resample": (2, 6.9, 1.85, "resample\nif ESS < τN:\nlog Ẑ += lse − log N,\nx ← x[a]", SMC),
    "reweight": (2, 8.85, 1.35, "reweight\nlog w +=\nlog G", SMC),
    "propose": (2, 10.3, 1.65, "propose\nbootstrap,\nguide, optimal", SMC),
    "population": (2, 12.05, 1.75, "Population\nparticles, log w,\nlog Ẑ (float64)", SMC),
    # algorithms
    "sample": (3, 0.0, 1.65, "mcmc.sample\nsample_flat", ALG),
    "tempered": (3, 1.75, 2.25, "tempered_smc\nreweight → resample\n→ move", ALG),
    "rm": (3, 4.1, 1.75, "resample_move\nreweight →\nresample → move", ALG),
    "pf": (3, 5.95, 2.45, "particle_filter / smc\nresample → propose\n→ reweight", ALG),
    "pmmh": (3, 8.5, 1.65, "pmmh\nMH on θ with\nthe PF's Ẑ", ALG),
    "smc2": (3, 10.25, 1.65, "smc2\nθ-particles,\neach with a PF", ALG),
    "pg": (3, 12.0, 1.8, "particle_gibbs\n(conditional PF),\nffbs", ALG),
    # result
    "result": (
        4,
        0.0,
        13.8,
        "ppltk.Result: draws {site: [chain, draw, ...]}, stats, log_evidence"
        "  →  to_arviz(), summary(), save()",
        RES,
    ),
}

ARROWS = [
    ("static", "bridge"),
    ("pyro_ss", "pyro_state"),
    ("ssm", "markov"),
    ("program", "replay"),
    ("bridge", "kernel"),
    ("bridge", "temper"),
    ("pyro_state", "propose"),
    ("markov", "propose"),
    ("replay", "propose"),
    ("kernel", "sample"),
    ("warmup", "sample"),
    ("move", "tempered"),
    ("temper", "tempered"),
    ("resample", "tempered"),
    ("move", "rm"),
    ("resample", "rm"),
    ("resample", "pf"),
    ("reweight", "pf"),
    ("propose", "pf"),
    ("population", "pf"),
]
SIDE_ARROWS = [("pf", "pmmh")]  # same row: right edge to left edge


def _x(key: str) -> float:
    """Horizontal centre of a box."""
    _, x0, width, _, _ = BOXES[key]
    return x0 + width / 2


def _bottom(key: str) -> float:
    return ROW_Y[BOXES[key][0]]


def _top(key: str) -> float:
    row = BOXES[key][0]
    return ROW_Y[row] + HEIGHT[row]


def draw(path: Path) -> Path:
    """Draw the diagram to ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(13.5, 7.6))
    ax.set_xlim(-1.9, 13.9)
    ax.set_ylim(0.3, 9.8)
    ax.axis("off")
    for row, label in enumerate(ROWS):
        ax.text(-1.8, ROW_Y[row] + HEIGHT[row] / 2, label, ha="left", va="center", fontsize=10,
                style="italic", color="#555555")  # fmt: skip
    for row, x0, width, text, colour in BOXES.values():
        box = FancyBboxPatch((x0, ROW_Y[row]), width, HEIGHT[row], boxstyle="round,pad=0.04",
                             facecolor=colour, edgecolor="#444444", linewidth=0.9)  # fmt: skip
        ax.add_patch(box)
        ax.text(x0 + width / 2, ROW_Y[row] + HEIGHT[row] / 2, text, ha="center", va="center",
                fontsize=8.2, linespacing=1.25)  # fmt: skip
    style = {"arrowstyle": "-|>", "color": "#777777", "lw": 0.8, "shrinkA": 0, "shrinkB": 0}
    for start, end in ARROWS:
        ax.annotate("", xy=(_x(end), _top(end) + 0.06), xytext=(_x(start), _bottom(start) - 0.06),
                    arrowprops=style)  # fmt: skip
    for start, end in SIDE_ARROWS:
        row = BOXES[start][0]
        y = ROW_Y[row] + HEIGHT[row] / 2
        x_start = BOXES[start][1] + BOXES[start][2]
        ax.annotate("", xy=(BOXES[end][1] - 0.02, y), xytext=(x_start + 0.02, y), arrowprops=style)
    for key in ("sample", "tempered", "rm", "pf", "pmmh", "smc2", "pg"):
        ax.annotate("", xy=(_x(key), _top("result") + 0.06), xytext=(_x(key), _bottom(key) - 0.06),
                    arrowprops=style)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def draw_if_missing(path: Path) -> Path:
    """Draw ``path`` unless it exists."""
    path = Path(path)
    if not path.exists():
        draw(path)
    return path


if __name__ == "__main__":
    print(draw(Path(__file__).with_name("blocks.png")))
