"""Diagrams of lessons 01 and 04: the residual block, its constrained branch and its inverse (see
:mod:`invattn.diagrams`)."""

from __future__ import annotations

import math

from matplotlib.patches import Circle

from ._draw import COLOURS, EDGE, FONT, arrow, box, canvas, circle, diagram, dot, label, line, tag


def _row_of_boxes(ax, parts, row, left, right, height=0.5):
    """Boxes ``(text, role, width, ...)`` side by side on ``row`` between ``left`` and ``right`` with equal gaps,
    joined by arrows. Returns each box's (left, right) edge."""
    gap = (right - left - sum(part[2] for part in parts)) / (len(parts) - 1)
    edges, x = [], left
    for part in parts:
        text, role, width = part[:3]
        box(ax, (x + width / 2, row), text, width=width, height=height, role=role)
        edges.append((x, x + width))
        x += width + gap
    for (_, end), (start, _) in zip(edges, edges[1:]):
        arrow(ax, (end, row), (start, row))
    return edges


@diagram("01_diagram_fixed_point")
def fixed_point():
    """Lesson 01, section 1: the block y = x + g(x) as a data flow, and beneath it its inverse, Banach's iteration
    x_{k+1} = T_y(x_k) = y − g(x_k) from x_0 = y, which multiplies the error by at most c per step when
    Lip(g) ≤ c < 1."""
    fig, ax = canvas(8.4, 4.3, "A residual block, and its inverse by fixed-point iteration")

    # forward: x → g → ⊕ → y, with the skip connection over g
    row = 2.95
    label(ax, (0.15, row + 0.55), "forward", ha="left", fontsize=FONT, weight="bold")
    box(ax, (0.65, row), "$x$", width=0.6, role="input")
    line(ax, [(0.95, row), (1.55, row)])
    dot(ax, (1.55, row))
    arrow(ax, (1.55, row), (2.65, row))
    box(ax, (3.3, row), "$g$", width=1.3, role="layer")
    tag(ax, (3.3, row - 0.5), r"$\mathrm{Lip}(g) \leq c < 1$", width=1.5)
    arrow(ax, (3.95, row), (4.94, row), r"$g(x)$")
    line(ax, [(1.55, row), (1.55, row + 0.6), (5.1, row + 0.6)])
    arrow(ax, (5.1, row + 0.6), (5.1, row + 0.16))
    label(ax, (3.3, row + 0.72), "skip: $x$", va="bottom")
    circle(ax, (5.1, row), "+")
    arrow(ax, (5.26, row), (6.15, row))
    box(ax, (6.8, row), "$y = x + g(x)$", width=1.3, role="output")

    ax.plot([0.15, 8.25], [2.05, 2.05], color="#bbbbbb", linewidth=0.8)

    # inverse: iterate T_y from x_0 = y, feeding each output back in
    row = 1.35
    label(ax, (0.15, row + 0.5), "inverse", ha="left", fontsize=FONT, weight="bold")
    box(ax, (0.65, row), "$y$", width=0.6, role="input")
    arrow(ax, (0.95, row), (2.4, row), "$x_0 = y$")
    box(ax, (3.3, row), "$T_y(x) = y - g(x)$", width=1.8, role="layer")
    arrow(ax, (4.2, row), (5.9, row), "$x_{k+1} = T_y(x_k)$")
    dot(ax, (5.35, row))
    line(ax, [(5.35, row), (5.35, row - 0.55), (1.9, row - 0.55), (1.9, row)])
    arrow(ax, (1.9, row), (2.4, row))
    label(ax, (3.3, row - 0.68), "repeat: $x_k \\leftarrow x_{k+1}$", va="top")
    box(ax, (6.8, row), "$x^* = \\lim_{k} x_k$", width=1.8, role="output")
    label(ax, (5.62, row - 0.1), r"$k \to \infty$", va="top")
    label(ax, (6.8, row - 0.45), "the one $x^*$ with $x^* + g(x^*) = y$", va="top")

    # the contraction that makes it converge
    label(
        ax,
        (4.2, 0.2),
        r"$\mathrm{Lip}(g) \leq c < 1$:   $\Vert x_{k+1} - x^*\Vert = \Vert T_y(x_k) - T_y(x^*)\Vert \leq "
        r"c\,\Vert x_k - x^*\Vert$,   each step multiplies the error by at most $c$",
        fontsize=FONT,
        colour="#000000",
    )
    return fig


@diagram("01_diagram_spectral_branch")
def spectral_branch():
    """Lesson 01, section 4: the library's Lipschitz-constrained branch g = W₃ ∘ ELU ∘ W₂ ∘ ELU ∘ W₁ ∘ [ELU] (the
    convolutions of :func:`invattn.branches.conv_branch`, whose input ELU every block but a model's first has), each
    weight rescaled by ``spectral_norm`` to a certified norm ≤ c, the activations 1-Lipschitz, so
    Lip(g) ≤ c·1·c·1·c·1 = c³."""
    fig, ax = canvas(8.8, 3.3, "A Lipschitz-constrained branch $g$")

    row = 2.4
    parts = [  # text, role, width, what bounds its Lipschitz constant
        ("$x$", "input", 0.45, None),
        ("[ELU]", "neutral", 0.78, "1-Lipschitz\n(not in block 1)"),
        ("$W_1$\nconv 3×3", "constraint", 1.05, r"$\Vert W_1\Vert_2 \leq c$"),
        ("ELU", "neutral", 0.68, "1-Lipschitz"),
        ("$W_2$\nconv 1×1", "constraint", 1.05, r"$\Vert W_2\Vert_2 \leq c$"),
        ("ELU", "neutral", 0.68, "1-Lipschitz"),
        ("$W_3$\nconv 3×3", "constraint", 1.05, r"$\Vert W_3\Vert_2 \leq c$"),
        ("$g(x)$", "output", 0.62, None),
    ]
    edges = _row_of_boxes(ax, parts, row, 0.2, 8.6, height=0.62)
    for (*_, note), (left, right) in zip(parts, edges):
        if note:
            label(ax, ((left + right) / 2, row - 0.45), note, va="top")

    label(
        ax,
        (4.4, 1.35),
        r"$\mathrm{Lip}(g) \leq \Vert W_3\Vert_2 \cdot 1 \cdot \Vert W_2\Vert_2 \cdot 1 \cdot \Vert W_1\Vert_2 \cdot 1"
        r" \leq c \cdot 1 \cdot c \cdot 1 \cdot c \cdot 1 = c^3 < 1$",
        fontsize=FONT + 1,
        colour="#000000",
    )
    tag(ax, (4.4, 0.48), "", width=8.3, height=0.8)
    label(
        ax,
        (4.4, 0.64),
        r"each $W_i$:   $W \leftarrow W \cdot \dfrac{c}{\max(c,\ \sigma_{\mathrm{up}}(W))}$"
        r"   (invattn.spectral_norm(layer, coeff=$c$))",
        fontsize=FONT,
        colour="#000000",
    )
    label(
        ax,
        (4.4, 0.24),
        r"$\sigma_{\mathrm{up}}(W) \geq \Vert W\Vert_2$, a certified upper bound: exact for a "
        "matrix, from the kernel's Fourier transform for a convolution",
        fontsize=FONT - 1,
    )
    return fig


def _spiral(centre, start, ratio, turn, count):
    """Points ``centre + ratio^k R(k·turn)(start − centre)``, k = 0 … count − 1: a drawing of iterates that contract
    towards ``centre`` (a picture, not a computation of any solver)."""
    cx, cy = centre
    dx, dy = start[0] - cx, start[1] - cy
    points = []
    for k in range(count):
        scale, angle = ratio**k, k * turn
        cos, sin = math.cos(angle), math.sin(angle)
        points.append((cx + scale * (cos * dx - sin * dy), cy + scale * (sin * dx + cos * dy)))
    return points


def _contracting_iterates(ax):
    """The left half: iterates closing in on the unknown x, and the ball the certificate draws around x_k."""
    target = (2.85, 2.3)
    points = _spiral(target, (0.3, 3.35), 0.6, math.radians(-14), 9)
    hat, after = points[3], points[4]
    ax.add_patch(
        Circle(
            hat,
            math.dist(hat, after) / (1 - 0.7),
            facecolor=COLOURS["output"],
            edgecolor="#2a7a2a",
            linestyle="--",
            linewidth=1.0,
            zorder=1,
        )
    )  # the certificate's ball, drawn with L = 0.7
    for a, b in zip(points[:4], points[1:5]):
        arrow(ax, a, b, colour=EDGE if a == hat else "#999999")
    for point in points[:6]:
        ax.plot(*point, marker="o", markersize=4.5, color=EDGE, zorder=3)
    ax.plot(*target, marker="*", markersize=12, color="#2a7a2a", zorder=4)
    label(ax, (target[0], target[1] - 0.14), "$x$", va="top", colour="#2a7a2a", fontsize=FONT + 1)
    for point, name in zip(points, ["$x_0 = y$", "$x_1$", "$x_2$"]):
        label(ax, (point[0], point[1] + 0.12), name, va="bottom", colour="#000000")
    label(ax, (hat[0] + 0.12, hat[1] + 0.06), "$x_k = x_3$", ha="left", va="bottom", colour="#000000")
    label(
        ax,
        (1.9, 1.1),
        r"a fixed-point step:  $\Vert x_{k+1} - x_k\Vert = \Vert F(x_k) - y\Vert$, measurable;"
        "\n$x$ is unknown, but lies in the ball around $x_k$\n"
        r"of radius $\Vert F(x_k) - y\Vert\,/\,(1 - L)$",
        fontsize=FONT - 1,
        linespacing=1.5,
    )
    tag(ax, (1.9, 0.4), r"$T(x) = y - g(x)$,   $L = \mathrm{Lip}(g) \leq c$ certified", width=3.3, height=0.3)


def _solvers_and_rule(ax):
    """The right half: the two solvers feed one stopping rule and one certificate."""
    solvers_row, rule_row, out_row = 3.35, 2.05, 0.9
    box(ax, (5.05, solvers_row), "fixed-point iteration\n$x_{k+1} = T(x_k),\\ x_0 = y$", width=2.2, height=0.65)
    box(
        ax,
        (7.62, solvers_row),
        "Anderson acceleration, memory $m$\n"
        r"step to $\sum_i \alpha_i T(x_i)$, $\sum_i \alpha_i = 1$",
        width=2.62,
        height=0.65,
    )
    label(
        ax, (5.05, solvers_row - 0.42), r"a priori: $\Vert x_k - x\Vert \leq L^k\Vert x_1 - x_0\Vert/(1-L)$", va="top"
    )
    label(ax, (7.65, solvers_row - 0.42), "no a-priori bound of its own", va="top")
    box(
        ax,
        (6.35, rule_row),
        r"stop when $\dfrac{\Vert F(x_k) - y\Vert}{\Vert y\Vert} \leq \mathrm{tol}$",
        width=2.7,
        height=0.62,
        role="neutral",
    )
    arrow(ax, (5.05, solvers_row - 0.78), (5.7, rule_row + 0.31))
    arrow(ax, (7.65, solvers_row - 0.78), (7.0, rule_row + 0.31))
    line(ax, [(7.7, rule_row), (8.8, rule_row)])
    arrow(ax, (8.8, rule_row), (8.8, solvers_row - 0.345))
    label(ax, (8.25, rule_row - 0.1), "no: next\nstep", va="top")
    box(
        ax,
        (6.35, out_row),
        r"$\Vert \hat x - x\Vert \leq L\,\Vert x_k - x\Vert \leq L\cdot\mathrm{tol}\cdot\Vert y\Vert\,/\,(1 - L)$",
        width=3.3,
        height=0.55,
        role="output",
    )
    arrow(
        ax, (6.35, rule_row - 0.31), (6.35, out_row + 0.275), r"yes: return $\hat x = T(x_k)$", text_offset=(0.8, -0.08)
    )
    label(
        ax,
        (6.35, out_row - 0.4),
        "certified, for either solver; info.error_bound: this over $\\Vert y\\Vert$,\nplus a rounding allowance",
        va="top",
    )


@diagram("04_diagram_stopping_rule")
def stopping_rule():
    """Lesson 04, section 1: two solvers (fixed-point iteration, Anderson acceleration) and the one certificate that
    stops both: once the relative residual ‖F(x_k) − y‖/‖y‖ ≤ tol, the library returns x̂ = T(x_k), and
    ‖x̂ − x‖ ≤ L·‖x_k − x‖ ≤ L·tol·‖y‖/(1 − L), L = Lip(g); ``info.error_bound`` adds a rounding allowance."""
    fig, ax = canvas(9.0, 4.4, "Two solvers and one bound: when to stop inverting $y = x + g(x)$")

    _contracting_iterates(ax)
    _solvers_and_rule(ax)
    return fig
