"""Diagrams of lessons 06 to 08: the change of variables, the log-determinant's estimators and the multi-scale
density model (see :mod:`invattn.diagrams`)."""

from __future__ import annotations

from matplotlib.patches import Circle, Polygon

from ._draw import COLOURS, EDGE, FONT, arrow, box, canvas, diagram, frame, heading, label, line


def _quad(ax, centre, first, second, role):
    """The parallelogram centred at ``centre`` spanned by the vectors ``first`` and ``second``."""
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
    fig, ax = canvas(8.6, 4.4, "The change of variables")
    bottom, height = 1.75, 1.95
    frame(ax, (0.3, bottom), 2.9, height, "data space, density $p(x)$")
    frame(ax, (5.4, bottom), 2.9, height, r"latent space, density $\mathcal{N}(z;\,0,\,I)$")

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


def _stack(ax, centre, text, width, height, role="layer", copies=2, step=0.07):
    """A box with ``copies`` outlines behind it, up and to the right: a stack of identical blocks."""
    x, y = centre
    for k in range(copies, 0, -1):
        box(ax, (x + k * step, y + k * step), "", width=width, height=height, role=role)
    return box(ax, centre, text, width=width, height=height, role=role)


def _group(ax, left, right, y, text):
    """A bracket over the boxes from ``left`` to ``right`` with ``text`` above it (a scale of the model)."""
    line(ax, [(left, y - 0.08), (left, y), (right, y), (right, y - 0.08)], colour="#888888", width=0.9)
    heading(ax, ((left + right) / 2, y + 0.18), text)


@diagram("08_diagram_multiscale_model")
def multiscale_model():
    """The multi-scale density model as invattn.models builds it for lesson 08 §1 (the digits preset's two scales):
    a dequantised image is squeezed; scale 0 is a stack of ActNorm → x + g(x) blocks, the attention block x + a(x)
    and a split that sends half the channels to the prior as z_0; scale 1 squeezes again and runs its blocks, and
    all of its output is z_1; a learned diagonal Gaussian prior scores (z_0, z_1). Shapes symbolic, with the
    digits' sizes beneath; log p(x) and bits/dim below."""
    fig, ax = canvas(9.2, 4.3)
    row = 3.0
    height = 0.62

    box(ax, (0.56, row), "image,\ndequantised", width=0.98, height=height, role="input")
    squeeze0 = (1.66, row)
    box(ax, squeeze0, "squeeze", width=0.78, height=0.44, role="neutral")
    arrow(ax, (1.05, row), (squeeze0[0] - 0.39, row))
    blocks0 = (2.95, row)
    _stack(ax, blocks0, "ActNorm\n$\\rightarrow x + g(x)$", width=1.3, height=height)
    arrow(ax, (squeeze0[0] + 0.39, row), (blocks0[0] - 0.65, row))
    attention = (4.48, row)
    box(ax, attention, "attention\n$x + a(x)$", width=1.0, height=height, role="layer")
    arrow(ax, (blocks0[0] + 0.65 + 0.14, row), (attention[0] - 0.5, row))
    split = (5.48, row)
    box(ax, split, "split", width=0.62, height=0.44, role="neutral")
    arrow(ax, (attention[0] + 0.5, row), (split[0] - 0.31, row))
    squeeze1 = (6.5, row)
    box(ax, squeeze1, "squeeze", width=0.78, height=0.44, role="neutral")
    arrow(ax, (split[0] + 0.31, row), (squeeze1[0] - 0.39, row))
    blocks1 = (7.85, row)
    _stack(ax, blocks1, "ActNorm\n$\\rightarrow x + g(x)$", width=1.3, height=height)
    arrow(ax, (squeeze1[0] + 0.39, row), (blocks1[0] - 0.65, row))

    _group(ax, 2.25, 5.85, 3.78, "scale 0")
    _group(ax, 6.05, 8.7, 3.78, "scale 1")

    # shapes: symbolic, and the digits' sizes in grey beneath
    def shape(x, symbolic, digits):
        label(ax, (x, row - 0.52), symbolic, fontsize=FONT, colour="#222222")
        label(ax, (x, row - 0.8), digits)

    shape(0.56, "$C\\times H\\times W$", "digits: $1\\times8\\times8$")
    shape(blocks0[0], "$4C\\times\\frac{H}{2}\\times\\frac{W}{2}$", "$4\\times4\\times4$")
    shape(blocks1[0], "$8C\\times\\frac{H}{4}\\times\\frac{W}{4}$", "$8\\times2\\times2$")

    # the latent pieces and the prior
    prior = (7.1, 1.2)
    box(
        ax,
        prior,
        "learned diagonal Gaussian prior\n$\\mathcal{N}(\\mu, \\sigma^2)$ on $(z_0, z_1)$",
        width=3.9,
        height=0.66,
        role="output",
    )
    arrow(ax, (split[0], row - 0.22), (split[0], prior[1] + 0.33))
    label(ax, (attention[0], row - 0.52), "$\\mathrm{Lip}(a) \\leq 0.9$")
    label(
        ax,
        (split[0] - 0.1, 2.1),
        "$z_0$: $2C\\times\\frac{H}{2}\\times\\frac{W}{2}$",
        ha="right",
        fontsize=FONT,
        colour="#222222",
    )
    label(ax, (split[0] - 0.1, 1.82), "half the channels, $2\\times4\\times4$", ha="right")
    line(ax, [(blocks1[0] + 0.65 + 0.14, row), (8.9, row), (8.9, 2.1)])
    arrow(ax, (8.9, 2.1), (8.9, prior[1] + 0.33))
    label(ax, (8.8, 1.78), "$z_1$: all the channels", ha="right", fontsize=FONT, colour="#222222")

    # what is optimised
    label(ax, (2.45, 1.45), "$\\log p(x) = \\log\\mathcal{N}(z;\\, \\mu, \\sigma^2)$", fontsize=FONT, colour="#222222")
    label(
        ax,
        (2.45, 1.05),
        "$+ \\sum_{\\mathrm{ActNorm}} \\ln|\\det| + \\sum_{\\mathrm{residual}} \\ln\\det(I + J_g)$",
        fontsize=FONT,
        colour="#222222",
    )
    label(ax, (2.45, 0.62), "(squeeze and split: $\\ln|\\det| = 0$)")
    label(ax, (2.45, 0.2), "bits/dim $= -\\dfrac{\\log p(x)}{D\\,\\ln 2} + 8$", fontsize=FONT, colour="#222222")
    return fig
