"""Drawing primitives shared by the diagrams: a canvas measured in inches, boxes, arrows, labels, one palette.

Coordinates are inches from the lower-left corner of the canvas, so a box of width 1.2 is 1.2 inches wide on every
diagram and the text inside keeps one size. Mathematics is written in matplotlib's mathtext (``r"$x + g(x)$"``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# one palette for every diagram: what a role looks like is the same in every lesson
COLOURS = {
    "input": "#dbe9f6",  # data in: x, an image, positions
    "layer": "#fde9c9",  # a learned map: W, a projection, an attention score
    "constraint": "#f9d3d3",  # what makes it certified: spectral normalisation, a projection onto a ball, a gain
    "output": "#d9f0d3",  # the result: y, z, a density, a radius
    "neutral": "#eeeeee",  # everything else: a sum, a softmax, a split
}
EDGE = "#333333"
FONT = 10


def canvas(width: float, height: float, title: str | None = None):
    """An empty figure ``width`` × ``height`` inches whose axes are the same inches, without ticks or frame."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.text(width / 2, height - 0.15, title, ha="center", va="top", fontsize=FONT + 2, weight="bold")
    return fig, ax


def box(ax, centre, text, width=1.3, height=0.5, role="layer", fontsize=FONT, rounded=True, **kwargs):
    """A box centred at ``centre`` with ``text`` inside, filled with the colour of ``role``. Returns the patch; its
    edges are at centre ± width/2, ± height/2 (what :func:`arrow` connects)."""
    x, y = centre
    style = "round,pad=0.02,rounding_size=0.08" if rounded else "square,pad=0.02"
    patch = FancyBboxPatch(
        (x - width / 2, y - height / 2),
        width,
        height,
        boxstyle=style,
        facecolor=COLOURS[role],
        edgecolor=EDGE,
        linewidth=1.0,
        **kwargs,
    )
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return patch


def circle(ax, centre, text="+", radius=0.16, role="neutral", fontsize=FONT + 2):
    """A small circle (a sum ``+`` or a product ``×``) at ``centre``."""
    patch = plt.Circle(centre, radius, facecolor=COLOURS[role], edgecolor=EDGE, linewidth=1.0)
    ax.add_patch(patch)
    ax.text(*centre, text, ha="center", va="center", fontsize=fontsize)
    return patch


def arrow(
    ax,
    start,
    end,
    text=None,
    text_offset=(0.0, 0.12),
    colour=EDGE,
    style="-|>",
    curve=0.0,
    dashed=False,
    fontsize=FONT - 1,
    **kwargs,
):
    """An arrow from ``start`` to ``end`` (points in inches), optionally bent (``curve`` > 0 bends left), with
    ``text`` written at its middle shifted by ``text_offset``."""
    patch = FancyArrowPatch(
        start,
        end,
        arrowstyle=style,
        mutation_scale=12,
        color=colour,
        linewidth=1.1,
        connectionstyle=f"arc3,rad={curve}",
        linestyle="--" if dashed else "-",
        shrinkA=0,
        shrinkB=0,
        **kwargs,
    )
    ax.add_patch(patch)
    if text:
        middle = ((start[0] + end[0]) / 2 + text_offset[0], (start[1] + end[1]) / 2 + text_offset[1])
        ax.text(
            *middle, text, ha="center", va="bottom" if text_offset[1] >= 0 else "top", fontsize=fontsize, color=colour
        )
    return patch


def label(ax, position, text, fontsize=FONT - 1, colour="#444444", **kwargs):
    """Free text at ``position`` (centred unless ``ha``/``va`` say otherwise)."""
    kwargs.setdefault("ha", "center")
    kwargs.setdefault("va", "center")
    return ax.text(*position, text, fontsize=fontsize, color=colour, **kwargs)
