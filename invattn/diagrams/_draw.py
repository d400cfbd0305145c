"""The diagrams' registry and the drawing primitives they share: a canvas measured in inches, boxes, arrows, labels,
frames, one palette.

Coordinates are inches from the lower-left corner of the canvas, so a box of width 1.2 is 1.2 inches wide on every
diagram and the text inside keeps one size. Mathematics is written in matplotlib's mathtext (``r"$x + g(x)$"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

DIAGRAMS: dict[str, Callable[[], plt.Figure]] = {}
"""Every diagram by name (``NN_diagram_<what>``): the function that draws it."""


def diagram(name: str) -> Callable[[Callable[[], plt.Figure]], Callable[[], plt.Figure]]:
    """Register the decorated function (no arguments, returns a figure) as the diagram ``name``.

    Arguments:
        name: ``NN_diagram_<what>`` in lower case, ``NN`` the lesson that shows it.
    Returns:
        the decorator, which returns the function unchanged.
    Raises:
        ValueError: for a name not of that form, or one already registered.
    """
    if not re.fullmatch(r"\d\d_diagram_[a-z0-9_]+", name):
        raise ValueError(f"a diagram's name is 'NN_diagram_<what>' in lower case, got {name!r}")

    def register(function):
        if name in DIAGRAMS:
            raise ValueError(f"two diagrams are named {name!r}")
        DIAGRAMS[name] = function
        return function

    return register


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


def tag(ax, centre, text, role="constraint", width=1.5, height=0.32, fontsize=FONT - 1):
    """A small square-cornered box: a property attached to a box above or beside it."""
    return box(ax, centre, text, width=width, height=height, role=role, fontsize=fontsize, rounded=False)


def line(ax, points, colour=EDGE, dashed=False, width=1.1):
    """A polyline without arrowhead (the first legs of an elbow arrow)."""
    xs, ys = zip(*points)
    ax.plot(xs, ys, color=colour, linewidth=width, linestyle="--" if dashed else "-", solid_capstyle="butt")


def dot(ax, point, colour=EDGE, size=3.5):
    """A junction where a wire splits."""
    ax.plot(*point, marker="o", markersize=size, color=colour)


def frame(ax, corner, width, height, title):
    """A light frame for a space (x-space, z-space) with its name above the top-left corner."""
    ax.add_patch(Rectangle(corner, width, height, facecolor="#fafafa", edgecolor="#bbbbbb", linewidth=0.8, zorder=0))
    label(ax, (corner[0], corner[1] + height + 0.06), title, ha="left", va="bottom", fontsize=FONT)


def heading(ax, position, text, **kwargs):
    """A column or panel heading: bold, dark, one size above the labels."""
    kwargs.setdefault("ha", "center")
    kwargs.setdefault("va", "center")
    return ax.text(*position, text, fontsize=FONT, weight="bold", color="#222222", **kwargs)
