"""Diagrams of lesson 09: the two roads to an invertible block and the certified radius (see
:mod:`invattn.diagrams`)."""

from __future__ import annotations

import math

from matplotlib.patches import Circle, FancyArrowPatch

from ._draw import COLOURS, EDGE, FONT, arrow, box, canvas, circle, diagram, dot, frame, label, line, tag


@diagram("09_diagram_two_roads")
def two_roads():
    """Lesson 09, sections 1 and 4: the two roads to an invertible block side by side: i-RevNet's coupling
    (y₁ = x₂ + F(x₁), y₂ = x₁, inverted exactly in one pass for any F) and the residual block y = x + g(x) with a
    certified contraction g (inverted by a fixed-point solve to a tolerance)."""
    fig, ax = canvas(9.0, 4.4, "Two roads to an invertible block")
    ax.plot([4.5, 4.5], [0.1, 3.85], color="#bbbbbb", linewidth=0.8)
    label(ax, (2.25, 3.75), "coupling (i-RevNet)", fontsize=FONT + 1, colour="#000000", weight="bold")
    label(ax, (6.75, 3.75), "contraction (i-ResNet)", fontsize=FONT + 1, colour="#000000", weight="bold")

    # coupling: the upper wire carries x₁ straight through, the lower one adds F(x₁) to x₂
    top, bottom = 3.25, 1.95
    box(ax, (0.55, top), "$x_1$", width=0.55, height=0.42, role="input")
    box(ax, (0.55, bottom), "$x_2$", width=0.55, height=0.42, role="input")
    label(ax, (0.55, (top + bottom) / 2), "$x = (x_1, x_2)$", fontsize=FONT - 1)
    line(ax, [(0.825, top), (1.85, top)])
    dot(ax, (1.85, top))
    arrow(ax, (1.85, top), (2.95, top))
    arrow(ax, (1.85, top), (1.85, 2.86))
    box(ax, (1.85, 2.6), "$F$", width=0.7, height=0.5, role="layer")
    label(ax, (2.3, 2.6), "any $F$", ha="left")
    arrow(ax, (1.85, 2.35), (1.85, bottom + 0.16))
    arrow(ax, (0.825, bottom), (1.69, bottom))
    circle(ax, (1.85, bottom), "+")
    arrow(ax, (2.01, bottom), (2.95, bottom))
    box(ax, (3.6, top), "$y_2 = x_1$", width=1.3, height=0.42, role="output")
    box(ax, (3.6, bottom), "$y_1 = x_2 + F(x_1)$", width=1.3, height=0.42, role="output", fontsize=FONT - 1)

    # residual: the branch g, contractive, beside the skip connection
    row = 2.6
    box(ax, (5.0, row), "$x$", width=0.5, height=0.42, role="input")
    line(ax, [(5.25, row), (5.55, row)])
    dot(ax, (5.55, row))
    arrow(ax, (5.55, row), (5.95, row))
    box(ax, (6.4, row), "$g$", width=0.9, height=0.5, role="layer")
    tag(ax, (6.4, row - 0.5), r"$\mathrm{Lip}(g) \leq c < 1$", width=1.45, height=0.3)
    arrow(ax, (6.85, row), (7.19, row))
    line(ax, [(5.55, row), (5.55, row + 0.55), (7.35, row + 0.55)])
    arrow(ax, (7.35, row + 0.55), (7.35, row + 0.16))
    circle(ax, (7.35, row), "+")
    arrow(ax, (7.51, row), (7.8, row))
    box(ax, (8.3, row), "$y = x + g(x)$", width=1.0, height=0.42, role="output", fontsize=FONT - 1)

    # what each road gives, row by row as in the lesson's table
    rows = (
        (r"inverse: $x_1 = y_2$,  $x_2 = y_1 - F(y_2)$", r"inverse: solve $x = y - g(x)$ by iteration"),
        ("exact, in one pass; no condition on $F$", "to a tolerance, with a certified error bound"),
        ("transforms half of the channels per block", "transforms all channels in every block"),
        (r"$\ln|\det| = 0$, for free", r"$\ln|\det(I + J_g)|$: a power series (lesson 07)"),
        ("no Lipschitz bound", r"Lipschitz bound $1 + \mathrm{Lip}(g)$, inverse $1/(1 - \mathrm{Lip}(g))$"),
    )
    for i, (left, right) in enumerate(rows):
        y = 1.35 - 0.29 * i
        label(ax, (0.25, y), left, ha="left", fontsize=FONT - 0.5, colour="#000000")
        label(ax, (4.7, y), right, ha="left", fontsize=FONT - 0.5, colour="#000000")
    return fig


def _certified_ball(ax, bottom, height):
    """The input space: x, the certified ball, a perturbation inside it, and the decision boundary outside it."""
    frame(ax, (0.3, bottom), 3.1, height, "input space")
    x, radius = (1.6, bottom + 1.05), 0.62
    ax.add_patch(Circle(x, radius, facecolor=COLOURS["output"], edgecolor="#2a7a2a", linewidth=1.0, zorder=1))
    t = [i / 40 for i in range(41)]
    ax.plot(
        [2.55 + 0.35 * math.sin(math.pi * s) for s in t],
        [bottom + 0.05 + 2.05 * s for s in t],
        color="#b03030",
        linestyle="--",
        linewidth=1.1,
        zorder=1,
    )
    label(ax, (2.45, bottom + 0.12), "decision boundary", ha="right", va="bottom", colour="#b03030", fontsize=FONT - 1)
    ax.plot(*x, marker="o", markersize=4.5, color=EDGE, zorder=3)
    label(ax, (x[0] - 0.08, x[1] - 0.06), "$x$", ha="right", va="top", colour="#000000")
    angle = math.radians(120)
    arrow(ax, x, (x[0] + radius * math.cos(angle), x[1] + radius * math.sin(angle)))
    label(ax, (x[0] - 0.08, x[1] + 0.36), "$r$", colour="#000000")
    arrow(ax, x, (x[0] + 0.45, x[1] - 0.12), colour="#2a7a2a")
    label(ax, (x[0] + 0.3, x[1] - 0.15), r"$\delta$", va="top", colour="#2a7a2a")


def _logit_margin(ax, bottom, height):
    """The logits: the margin between the top one and the runner-up."""
    frame(ax, (5.45, bottom), 3.25, height, "logits $f(x)$")
    base, heights = bottom + 0.2, (0.55, 1.6, 0.35, 1.05, 0.7)
    for i, h in enumerate(heights):
        centre = 5.9 + 0.58 * i
        box(
            ax,
            (centre, base + h / 2),
            "",
            width=0.36,
            height=h,
            role="output" if h == max(heights) else "neutral",
            rounded=False,
        )
    top_x, second_x = 5.9 + 0.58, 5.9 + 0.58 * 3
    label(ax, (top_x, base + 1.6 + 0.05), r"$f_{\mathrm{top}}$", va="bottom", colour="#000000")
    label(ax, (second_x, base + 1.05 + 0.05), r"$f_{\mathrm{second}}$", va="bottom", colour="#000000")
    line(ax, [(top_x + 0.2, base + 1.6), (8.35, base + 1.6)], dashed=True, colour="#777777")
    line(ax, [(second_x + 0.2, base + 1.05), (8.35, base + 1.05)], dashed=True, colour="#777777")
    ax.add_patch(
        FancyArrowPatch(
            (8.35, base + 1.05),
            (8.35, base + 1.6),
            arrowstyle="<|-|>",
            mutation_scale=9,
            color=EDGE,
            linewidth=1.0,
            shrinkA=0,
            shrinkB=0,
        )
    )
    label(ax, (8.3, base + 1.33), "margin", ha="right", colour="#000000")
    line(ax, [(5.6, base), (8.6, base)], colour="#777777")


@diagram("09_diagram_certified_radius")
def certified_radius():
    """Lesson 09, section 6: the certified radius of the i-ResNet classifier: with L ≥ Lip(x ↦ logits), no
    perturbation with ‖δ‖₂ < (f_top(x) − f_second(x))/(√2·L) changes the predicted class (Tsuzuku et al., 2018)."""
    fig, ax = canvas(9.0, 4.4, "A certified radius: no perturbation inside the ball changes the class")
    bottom, height = 1.55, 2.15
    _certified_ball(ax, bottom, height)

    # the classifier and its certified Lipschitz bound
    arrow(ax, (3.5, bottom + 1.05), (5.35, bottom + 1.05), "classifier $f$", text_offset=(0.0, 0.1))
    tag(ax, (4.42, bottom + 0.7), r"$\mathrm{Lip}(f) \leq L$", width=1.15, height=0.32)

    _logit_margin(ax, bottom, height)

    box(
        ax,
        (4.5, 0.95),
        r"$\Vert\delta\Vert_2 < r = \dfrac{f_{\mathrm{top}}(x) - f_{\mathrm{second}}(x)}{\sqrt{2}\,L}$"
        r"   $\Rightarrow$   $x + \delta$ keeps the class of $x$",
        width=6.6,
        height=0.66,
        role="output",
        fontsize=FONT + 1,
    )
    label(
        ax,
        (4.5, 0.3),
        r"$\sqrt{2}$: each difference $f_k - f_j$ is $\sqrt{2}\,L$-Lipschitz;   "
        r"$L \leq \Vert W_{\mathrm{head}}\Vert_2 \cdot (1/\sqrt{H'W'}) \cdot \prod_i\,(1 + \mathrm{Lip}(g_i))$,"
        r"   $\mathrm{Lip}(g_i) \leq c^3$",
        fontsize=FONT - 0.5,
    )
    return fig
