"""Draw a causal string diagram with matplotlib (boxes bottom-to-top, copies as dots)."""

from __future__ import annotations

import networkx as nx

from ppltk.causal.diagram import Diagram

__all__ = ["draw"]

_W, _H = 0.6, 0.32


def _layout(diagram: Diagram) -> dict[str, tuple[float, float]]:
    # one column per box (so output wires run straight up), one row per topological level
    g = diagram.to_graph()
    level = {}
    for i, layer in enumerate(nx.topological_generations(g)):
        level.update({v: i for v in layer})
    order = [b.name for b in diagram.boxes]
    return {v: (float(i), float(level[v])) for i, v in enumerate(order)}


def _port(diagram: Diagram, pos, consumer: str, wire: str) -> tuple[float, float]:
    box = diagram.get(consumer)
    k, i = len(box.inputs), box.inputs.index(wire)
    x, y = pos[consumer]
    return x - _W / 2 + _W * (i + 1) / (k + 1), y - _H / 2


def _box(ax, name: str, xy, kind: str, latent: bool) -> None:
    from matplotlib.patches import Polygon, Rectangle

    x, y = xy
    if kind == "state":  # a state: triangle pointing up, no inputs
        tri = [(x - _W / 2, y - _H / 2), (x + _W / 2, y - _H / 2), (x, y + _H / 2)]
        ax.add_patch(Polygon(tri, closed=True, fc="#f4a259", ec="black", zorder=3))
    else:
        ax.add_patch(
            Rectangle(
                (x - _W / 2, y - _H / 2),
                _W,
                _H,
                fc="#dddddd" if latent else "white",
                ec="black",
                ls="--" if latent else "-",
                zorder=3,
            )
        )
    ax.text(x, y, name, ha="center", va="center", zorder=4, fontsize=9)


def _wires(ax, diagram: Diagram, pos) -> None:
    uses = diagram.uses()
    top = max((p[1] for p in pos.values()), default=0.0) + 1.0
    for b in diagram.boxes:
        x, y = pos[b.name]
        style = "--" if b.name in diagram.latent else "-"
        start = (x, y + _H / 2)
        n = uses[b.name]
        if n == 0:  # discard: a ground symbol
            ax.plot([x, x], [start[1], start[1] + 0.12], "k" + style, lw=1)
            ax.plot([x - 0.08, x + 0.08], [start[1] + 0.12] * 2, "k", lw=2)
            continue
        split = (x, start[1] + 0.12)
        ax.plot([x, x], [start[1], split[1]], "k" + style, lw=1)
        if n > 1:
            ax.plot(*split, "ko", ms=4, zorder=4)
        for c in diagram.boxes:
            if b.name in c.inputs:
                tx, ty = _port(diagram, pos, c.name, b.name)
                ax.plot([split[0], tx], [split[1], ty], "k" + style, lw=1)
        if b.name in diagram.outputs:
            ax.plot([split[0], x], [split[1], top], "k", lw=1)
            ax.text(x, top + 0.05, b.name, ha="center", va="bottom", fontsize=9)


def draw(diagram: Diagram, ax=None, title: str | None = None):
    """Draw ``diagram`` on ``ax`` (a new figure when None) and return the axes.

    Boxes are rectangles (latent ones grey with dashed wires), cut boxes are orange state
    triangles, black dots are copies, short bars are discards, open outputs reach the top.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.5))
    pos = _layout(diagram)
    _wires(ax, diagram, pos)
    for b in diagram.boxes:
        _box(ax, b.name, pos[b.name], b.kind, b.name in diagram.latent)
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 1.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
