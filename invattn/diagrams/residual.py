"""Diagrams of the residual lessons (see :mod:`invattn.diagrams`)."""

from __future__ import annotations

from . import diagram
from ._draw import COLOURS, EDGE, FONT, arrow, box, canvas, circle, label


def _tag(ax, centre, text, role="constraint", width=1.5, height=0.32, fontsize=FONT - 1):
    """A small square-cornered box: a property attached to a box above or beside it."""
    return box(ax, centre, text, width=width, height=height, role=role, fontsize=fontsize, rounded=False)


def _line(ax, points, colour=EDGE, dashed=False):
    """A polyline through ``points`` (inches), no arrow head: a wire that an arrow continues."""
    xs, ys = zip(*points)
    ax.plot(xs, ys, color=colour, linewidth=1.1, linestyle="--" if dashed else "-", solid_capstyle="butt")


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


def _dot(ax, point, colour=EDGE, size=3.5):
    """A junction where a wire splits."""
    ax.plot(*point, marker="o", markersize=size, color=colour)


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
    _line(ax, [(0.95, row), (1.55, row)])
    _dot(ax, (1.55, row))
    arrow(ax, (1.55, row), (2.65, row))
    box(ax, (3.3, row), "$g$", width=1.3, role="layer")
    _tag(ax, (3.3, row - 0.5), r"$\mathrm{Lip}(g) \leq c < 1$", width=1.5)
    arrow(ax, (3.95, row), (4.94, row), r"$g(x)$")
    _line(ax, [(1.55, row), (1.55, row + 0.6), (5.1, row + 0.6)])
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
    _dot(ax, (5.35, row))
    _line(ax, [(5.35, row), (5.35, row - 0.55), (1.9, row - 0.55), (1.9, row)])
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
    convolutions of :func:`invattn.models.conv_branch`, whose input ELU every block but a model's first has), each
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
    _tag(ax, (4.4, 0.48), "", width=8.3, height=0.8)
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
    import math

    cx, cy = centre
    dx, dy = start[0] - cx, start[1] - cy
    points = []
    for k in range(count):
        scale, angle = ratio**k, k * turn
        cos, sin = math.cos(angle), math.sin(angle)
        points.append((cx + scale * (cos * dx - sin * dy), cy + scale * (sin * dx + cos * dy)))
    return points


@diagram("04_diagram_stopping_rule")
def stopping_rule():
    """Lesson 04, section 1: two solvers (fixed-point iteration, Anderson acceleration) and the one certificate that
    stops both: once the relative residual ‖F(x_k) − y‖/‖y‖ ≤ tol, the library returns x̂ = T(x_k), and
    ‖x̂ − x‖ ≤ L·‖x_k − x‖ ≤ L·tol·‖y‖/(1 − L), L = Lip(g); ``info.error_bound`` adds a rounding allowance."""
    import math

    from matplotlib.patches import Circle

    fig, ax = canvas(9.0, 4.4, "Two solvers and one bound: when to stop inverting $y = x + g(x)$")

    # left: iterates closing in on the unknown x; the step x_k → x_{k+1} is the residual, measurable
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
    _tag(ax, (1.9, 0.4), r"$T(x) = y - g(x)$,   $L = \mathrm{Lip}(g) \leq c$ certified", width=3.3, height=0.3)

    # right: the two solvers feed one stopping rule and one certificate
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
    _line(ax, [(7.7, rule_row), (8.8, rule_row)])
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
    return fig


def _panel(ax, corner, width, height, title):
    """A light frame for a space (x-space, z-space) with its name above the top-left corner."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle(corner, width, height, facecolor="#fafafa", edgecolor="#bbbbbb", linewidth=0.8, zorder=0))
    label(ax, (corner[0], corner[1] + height + 0.06), title, ha="left", va="bottom", fontsize=FONT)


def _quad(ax, centre, first, second, role):
    """The parallelogram centred at ``centre`` spanned by the vectors ``first`` and ``second``."""
    from matplotlib.patches import Polygon

    cx, cy = centre
    (ax1, ay1), (ax2, ay2) = first, second
    corners = [
        (cx + sx * ax1 / 2 + sy * ax2 / 2, cy + sx * ay1 / 2 + sy * ay2 / 2)
        for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    ax.add_patch(Polygon(corners, closed=True, facecolor=COLOURS[role], edgecolor=EDGE, linewidth=1.0, zorder=2))


@diagram("06_diagram_change_of_variables")
def change_of_variables():
    """Lesson 06, section 1: the flow F maps a small square A around x onto a parallelogram F(A) around z = F(x) of
    area |det J_F(x)|·area(A); both hold the same probability, hence log p(x) = log N(F(x); 0, I) + log|det J_F(x)|."""
    from matplotlib.patches import Circle

    fig, ax = canvas(8.6, 4.4, "The change of variables")
    bottom, height = 1.75, 1.95
    _panel(ax, (0.3, bottom), 2.9, height, "data space, density $p(x)$")
    _panel(ax, (5.4, bottom), 2.9, height, r"latent space, density $\mathcal{N}(z;\,0,\,I)$")

    # a square A around x, and its image F(A) around z: the parallelogram spanned by J_F(x) h e_1, J_F(x) h e_2
    x, z, origin, side = (1.75, bottom + 0.95), (7.2, bottom + 1.2), (6.6, bottom + 0.95), 0.5
    jacobian = ((1.45, 0.45), (0.25, 1.1))
    for radius in (0.28, 0.56, 0.84):  # the Gaussian's level sets around 0
        ax.add_patch(Circle(origin, radius, fill=False, edgecolor="#aaaaaa", linestyle=":", linewidth=0.9, zorder=1))
    ax.plot(*origin, marker="+", markersize=7, color="#888888", zorder=1)
    label(ax, (origin[0] - 0.07, origin[1] - 0.05), "$0$", ha="right", va="top")
    _quad(ax, x, (side, 0.0), (0.0, side), "input")
    _quad(ax, z, *[(jacobian[0][j] * side, jacobian[1][j] * side) for j in (0, 1)], "output")
    for centre in (x, z):
        ax.plot(*centre, marker="o", markersize=4, color=EDGE, zorder=3)
    label(ax, (x[0] + 0.06, x[1] - 0.06), "$x$", ha="left", va="top", colour="#000000")
    label(ax, (z[0] + 0.06, z[1] - 0.06), "$z$", ha="left", va="top", colour="#000000")
    label(ax, (x[0] - side / 2 - 0.08, x[1] + 0.15), "$A$", ha="right", colour="#000000", fontsize=FONT + 1)
    label(ax, (z[0] + 0.6, z[1] + 0.42), "$F(A)$", ha="left", colour="#000000", fontsize=FONT + 1)

    arrow(ax, (3.3, bottom + 1.1), (5.3, bottom + 1.1), r"$z = F(x)$", curve=-0.25, text_offset=(0.0, 0.3))
    label(ax, (4.3, bottom + 0.5), "a bijection", va="top")

    label(
        ax,
        (4.3, 1.3),
        r"$F(A)$ has area $|\det J_F(x)|\cdot\mathrm{area}(A)$, and both hold the same probability:",
        fontsize=FONT,
        colour="#000000",
    )
    label(
        ax,
        (4.3, 0.95),
        r"$p(x)\,\mathrm{area}(A) = \mathcal{N}(F(x))\,|\det J_F(x)|\,\mathrm{area}(A)$",
        fontsize=FONT,
        colour="#000000",
    )
    box(
        ax,
        (4.3, 0.35),
        r"$\log p(x) = \log \mathcal{N}(F(x);\,0,\,I) + \log|\det J_F(x)|$",
        width=5.0,
        height=0.5,
        role="output",
        fontsize=FONT + 1,
    )
    return fig


@diagram("07_diagram_logdet_estimators")
def logdet_estimators():
    """Lesson 07, sections 1–3: three steps from the exact series ln det(I + J) = Σ (−1)^{k+1} tr(J^k)/k to an
    estimator: truncate at n terms (biased, with the lesson's bound), Hutchinson's probes v^T J^k v for the traces, and
    a Russian-roulette length N with weights 1/P(N ≥ k − m) (unbiased over N and v)."""
    fig, ax = canvas(9.0, 4.5, r"Three ways to estimate $\ln\det(I + J_g)$")

    box(
        ax,
        (4.5, 3.6),
        r"$\ln\det(I + J) = \mathrm{tr}\,\ln(I + J) = \sum_{k=1}^{\infty}"
        r" \dfrac{(-1)^{k+1}}{k}\,\mathrm{tr}(J^k)$",
        width=5.0,
        height=0.62,
        role="neutral",
        fontsize=FONT + 1,
    )
    label(ax, (7.15, 3.6), "$J = J_g(x)$,\n" r"$\Vert J\Vert_2 \leq L < 1$", ha="left", linespacing=1.4)

    rows = (2.5, 1.48, 0.46)
    names = ("1 · truncate\nat $n$ terms", "2 · Hutchinson's\nprobes $v$", "3 · Russian\nroulette")
    formulas = (
        r"$\sum_{k=1}^{n} \dfrac{(-1)^{k+1}}{k}\,\mathrm{tr}(J^k)$",
        r"$\mathrm{tr}(J^k) = \mathbb{E}_v\left[v^\top J^k v\right]$,   $\mathbb{E}[vv^\top] = I$"
        "\n"
        r"$v^\top J^k$: $k$ vector–Jacobian products",
        r"$\sum_{k=1}^{m+N} \dfrac{(-1)^{k+1}}{k}\,\dfrac{v^\top J^k v}{P(N \geq k - m)}$,   $N$ random",
    )
    verdicts = (
        ("biased: the error is at most\n" r"$d\,\left(-\ln(1-L) - \sum_{k=1}^{n} L^k/k\right)$", "neutral"),
        (r"each trace unbiased over $v$;" "\n" r"the noise shrinks like $1/\sqrt{\#\mathrm{probes}}$", "neutral"),
        (
            r"$\mathbb{E}_{N,v}[\,\cdot\,] = \ln\det(I + J)$: unbiased;"
            "\n"
            r"variance finite if $L^2 < 1 - p$ ($N$ geometric)",
            "output",
        ),
    )
    left, right, height = 0.2, 5.65, 0.76
    for row, name, formula, (verdict, role) in zip(rows, names, formulas, verdicts):
        box(ax, ((left + right) / 2, row), "", width=right - left, height=height, role="layer")
        label(ax, (left + 0.15, row), name, ha="left", fontsize=FONT, colour="#000000")
        label(ax, (3.65, row), formula, fontsize=FONT, colour="#000000", linespacing=1.6)
        box(ax, (7.4, row), verdict, width=2.9, height=height, role=role, fontsize=FONT - 1)
        arrow(ax, (right, row), (7.4 - 1.45, row))
    arrow(ax, (3.65, 3.6 - 0.31), (3.65, rows[0] + height / 2))
    for upper, lower in zip(rows, rows[1:]):
        arrow(ax, (0.9, upper - height / 2), (0.9, lower + height / 2))
    return fig


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
    _line(ax, [(0.825, top), (1.85, top)])
    _dot(ax, (1.85, top))
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
    _line(ax, [(5.25, row), (5.55, row)])
    _dot(ax, (5.55, row))
    arrow(ax, (5.55, row), (5.95, row))
    box(ax, (6.4, row), "$g$", width=0.9, height=0.5, role="layer")
    _tag(ax, (6.4, row - 0.5), r"$\mathrm{Lip}(g) \leq c < 1$", width=1.45, height=0.3)
    arrow(ax, (6.85, row), (7.19, row))
    _line(ax, [(5.55, row), (5.55, row + 0.55), (7.35, row + 0.55)])
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


@diagram("09_diagram_certified_radius")
def certified_radius():
    """Lesson 09, section 6: the certified radius of the i-ResNet classifier: with L ≥ Lip(x ↦ logits), no
    perturbation with ‖δ‖₂ < (f_top(x) − f_second(x))/(√2·L) changes the predicted class (Tsuzuku et al., 2018)."""
    import math

    from matplotlib.patches import Circle, FancyArrowPatch

    fig, ax = canvas(9.0, 4.4, "A certified radius: no perturbation inside the ball changes the class")

    # input space: x, the certified ball, a perturbation inside it, and the decision boundary outside it
    bottom, height = 1.55, 2.15
    _panel(ax, (0.3, bottom), 3.1, height, "input space")
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

    # the classifier and its certified Lipschitz bound
    arrow(ax, (3.5, bottom + 1.05), (5.35, bottom + 1.05), "classifier $f$", text_offset=(0.0, 0.1))
    _tag(ax, (4.42, bottom + 0.7), r"$\mathrm{Lip}(f) \leq L$", width=1.15, height=0.32)

    # the logits: the margin between the top one and the runner-up
    _panel(ax, (5.45, bottom), 3.25, height, "logits $f(x)$")
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
    _line(ax, [(top_x + 0.2, base + 1.6), (8.35, base + 1.6)], dashed=True, colour="#777777")
    _line(ax, [(second_x + 0.2, base + 1.05), (8.35, base + 1.05)], dashed=True, colour="#777777")
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
    _line(ax, [(5.6, base), (8.6, base)], colour="#777777")

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
