"""Diagrams of the attention lessons (see :mod:`invattn.diagrams`)."""

from __future__ import annotations

import math

from matplotlib.patches import FancyArrowPatch, Rectangle

from . import diagram
from ._draw import COLOURS, EDGE, FONT, arrow, box, canvas, circle, label


# -- small private helpers ----------------------------------------------------------------------------------------
def _thick_arrow(ax, start, end, width, colour=EDGE):
    """An arrow whose line is ``width`` points wide (a weight drawn as a thickness)."""
    patch = FancyArrowPatch(
        start,
        end,
        arrowstyle="-|>",
        mutation_scale=10 + 2.2 * width,
        color=colour,
        linewidth=width,
        shrinkA=0,
        shrinkB=0,
        capstyle="butt",
        joinstyle="miter",
    )
    ax.add_patch(patch)
    return patch


def _towards(centre, radius, point):
    """The point of the circle (``centre``, ``radius``) that faces ``point``."""
    dx, dy = point[0] - centre[0], point[1] - centre[1]
    length = math.hypot(dx, dy)
    return centre[0] + radius * dx / length, centre[1] + radius * dy / length


def _line(ax, points, colour=EDGE, dashed=False, width=1.1):
    """A polyline without arrowhead (the first legs of an elbow arrow)."""
    xs, ys = zip(*points)
    ax.plot(xs, ys, color=colour, linewidth=width, linestyle="--" if dashed else "-", solid_capstyle="butt")


def _heading(ax, position, text, **kwargs):
    """A column or panel heading: bold, dark, one size above the labels."""
    kwargs.setdefault("ha", "center")
    kwargs.setdefault("va", "center")
    return ax.text(*position, text, fontsize=FONT, weight="bold", color="#222222", **kwargs)


# -- lesson 02 -----------------------------------------------------------------------------------------------------
@diagram("02_diagram_attention")
def attention_picture():
    """What attention is, before any bound (lesson 02, the opening): every position i of the map makes a query, a
    key and a value by learned 1×1 convolutions; one output position j scores every key against its query, the
    kernel and the row normalisation turn the scores into weights P_ji that sum to 1, and o_j is the weighted sum
    of the values (arrow widths drawn in proportion to the weights)."""
    fig, ax = canvas(8.8, 4.7)
    up = 0.4  # everything below the headings sits this much above the canvas floor

    # left: every position makes a query, a key and a value
    _heading(ax, (1.45, 4.5), "every position $i = 1, \\dots, N$")
    box(ax, (0.42, 2.2 + up), "$x_i$", width=0.5, height=0.46, role="input", fontsize=FONT + 1)
    projections = [
        (3.05, "$q_i = W_q\\,x_i + b_q$"),
        (2.2, "$k_i = W_k\\,x_i + b_k$"),
        (1.35, "$v_i = W_v\\,x_i + b_v$"),
    ]
    for y, text in projections:
        box(ax, (1.95, y + up), text, width=1.62, height=0.44, role="layer")
        arrow(ax, (0.69, 2.2 + up + (y - 2.2) * 0.25), (1.12, y + up))
    label(ax, (1.45, 1.02), "$X = [x_1, \\dots, x_N] \\in \\mathbb{R}^{C\\times N}$", fontsize=FONT)
    label(ax, (1.45, 0.7), "positions: the pixels of a feature map")
    label(ax, (1.45, 0.4), "$W$, $b$: learned $1\\times1$ convolutions")
    ax.plot([3.05, 3.05], [0.05, 4.6], color="#bbbbbb", linewidth=0.8)

    # right: one output position j attends to every position i
    _heading(ax, (5.95, 4.5), "output position $j$ attends to every position $i$")
    rows = [(3.0, "1", 0.42), (2.3, "2", 0.08), (1.6, "3", 0.3), (0.62, "N", 0.16)]
    score_x, bar_x, value_x = 3.95, 4.95, 6.55
    bar_length = 1.05
    sum_centre, sum_radius = (7.55, 1.85 + up), 0.17
    box(ax, (score_x, 4.08), "$q_j$", width=0.5, height=0.36, role="layer")
    ax.add_patch(
        Rectangle(
            (score_x - 0.56, 0.3 + up), 1.12, 3.02, facecolor="none", edgecolor="#999999", linewidth=0.9, linestyle="--"
        )
    )
    arrow(ax, (score_x, 3.9), (score_x, 3.72))
    label(ax, (score_x, 0.14 + up), "scores $s_{ji}$")
    label(ax, (bar_x + 0.6, 4.08), "$P_{ji} = \\kappa(s_{ji})\\,/\\,\\sum_l\\,\\kappa(s_{jl})$", fontsize=FONT)
    label(ax, (bar_x + 0.6, 0.14 + up), "weights: $\\sum_i P_{ji} = 1$")
    label(ax, (value_x, 0.14 + up), "values")
    for y, index, weight in rows:
        y += up
        box(ax, (score_x, y), f"$s(q_j, k_{{{index}}})$", width=0.98, height=0.4, role="neutral")
        arrow(ax, (score_x + 0.49, y), (bar_x - 0.05, y))
        ax.add_patch(
            Rectangle(
                (bar_x, y - 0.09),
                bar_length * weight / 0.42,
                0.18,
                facecolor=COLOURS["output"],
                edgecolor=EDGE,
                linewidth=0.8,
            )
        )
        label(ax, (bar_x, y + 0.2), f"$P_{{j{index}}}$", ha="left")
        box(ax, (value_x, y), f"$v_{{{index}}}$", width=0.46, height=0.4, role="layer")
        label(ax, (value_x - 0.38, y), "$\\times$", fontsize=FONT)
        start = (value_x + 0.24, y)
        _thick_arrow(ax, start, _towards(sum_centre, sum_radius + 0.02, start), 0.8 + 9.0 * weight)
    for x in (score_x, bar_x + 0.3, value_x):
        label(ax, (x, 1.13 + up), "$\\vdots$", fontsize=FONT + 1, colour=EDGE)
    circle(ax, sum_centre, "$\\Sigma$", radius=sum_radius, fontsize=FONT)
    box(ax, (8.4, sum_centre[1]), "$o_j$", width=0.5, height=0.42, role="output", fontsize=FONT + 1)
    arrow(ax, (sum_centre[0] + sum_radius, sum_centre[1]), (8.15, sum_centre[1]))
    label(ax, (8.1, sum_centre[1] + 0.6), "$o_j = \\sum_i P_{ji}\\,v_i$", fontsize=FONT)
    label(ax, (8.1, sum_centre[1] - 0.6), "arrow widths:\nthe weights $P_{ji}$")
    label(ax, (5.95, 0.14), "kernel $\\kappa(s) = e^s$ (softmax) or $\\mathrm{ELU}(s) + 1$, by kind")
    return fig


def _panel(ax, left, top, width, height, title, lines, step=0.34):
    """A framed panel: ``title`` on top, then ``lines`` ((text, role or None), one per row, ``step`` apart); a
    line with a role is drawn as a box of that role across the panel."""
    ax.add_patch(Rectangle((left, top - height), width, height, facecolor="white", edgecolor="#888888", linewidth=0.9))
    ax.text(
        left + width / 2,
        top - 0.22,
        title,
        ha="center",
        va="center",
        fontsize=FONT + 1,
        weight="bold",
        family="monospace",
        color="#222222",
    )
    y = top - 0.22 - 0.4
    for text, role in lines:
        if role is None:
            label(ax, (left + width / 2, y), text, fontsize=FONT, colour="#222222")
        else:
            box(ax, (left + width / 2, y), text, width=width - 0.22, height=step - 0.05, role=role)
        y -= step


def _band(ax, left, bottom, width, height, text, role):
    """A full-width strip of one role with a centred explanation (what a row of panels has in common)."""
    ax.add_patch(Rectangle((left, bottom), width, height, facecolor=COLOURS[role], edgecolor="none"))
    label(ax, (left + width / 2, bottom + height / 2), text, fontsize=FONT, colour="#222222")


@diagram("02_diagram_score_functions")
def score_functions():
    """The score s_ji and kernel κ of each of the six kinds, side by side (lesson 02 §2–§6, lesson 03 §4): the
    paper's four kinds have no bound for every input, so invattn enforces a bounded domain by projecting queries, keys
    and values onto balls (|s_ji| ≤ B); L2 and LipschitzNorm are Lipschitz on every input without a projection."""
    width, margin, gap = 9.0, 0.04, 0.12
    inner = width - 2 * margin
    fig, ax = canvas(width, 6.95)
    label(
        ax,
        (width / 2, 6.75),
        "every kind: weights $P_{ji} = \\kappa(s_{ji})\\,/\\,\\sum_l\\,\\kappa(s_{jl})$,"
        "  output $o_j = \\sum_i P_{ji}\\,v_i$",
        fontsize=FONT + 1,
        colour="#222222",
    )

    _band(
        ax,
        margin,
        5.75,
        inner,
        0.62,
        "the paper's four kinds: no bound that holds for every input (lesson 02 §2). A bound needs a bounded\n"
        "domain, which invattn enforces: $\\pi_r(z) = z\\,\\min(1, r/\\Vert z\\Vert)$ on queries and keys, values "
        "$v_i = \\pi_{r_v}(W_v x_i + b_v)$",
        "constraint",
    )
    projected = ("$q_j = \\pi_r(W_q x_j + b_q)$", None), ("$k_i = \\pi_r(W_k x_i + b_k)$", None)
    panels = [
        (
            "concat",
            [
                *projected,
                ("$s_{ji} = \\omega_q^\\top q_j + \\omega_k^\\top k_i$", "layer"),
                ("$\\kappa(s) = \\mathrm{ELU}(s) + 1$", None),
                ("$|s_{ji}| \\leq r\\,(\\Vert\\omega_q\\Vert + \\Vert\\omega_k\\Vert)$", "constraint"),
            ],
        ),
        (
            "dot",
            [
                *projected,
                ("$s_{ji} = \\tau\\, q_j^\\top k_i$", "layer"),
                ("$\\kappa(s) = \\mathrm{ELU}(s) + 1$", None),
                ("$|s_{ji}| \\leq \\tau r^2$", "constraint"),
            ],
        ),
        (
            "embedded_gaussian",
            [
                *projected,
                ("$s_{ji} = \\tau\\, q_j^\\top k_i$", "layer"),
                ("$\\kappa(s) = e^s$ (softmax)", None),
                ("$|s_{ji}| \\leq \\tau r^2$", "constraint"),
            ],
        ),
        (
            "gaussian",
            [
                ("$q_i = k_i = \\pi_r(x_i)$", None),
                ("no $W_q$, $W_k$: $d = C$", None),
                ("$s_{ji} = \\tau\\, q_j^\\top k_i$", "layer"),
                ("$\\kappa(s) = e^s$ (softmax)", None),
                ("$|s_{ji}| \\leq \\tau r^2$", "constraint"),
            ],
        ),
    ]
    panel_width = (inner - 3 * gap) / 4
    for index, (title, lines) in enumerate(panels):
        _panel(ax, margin + index * (panel_width + gap), 5.65, panel_width, 2.4, title, lines)

    _band(
        ax,
        margin,
        2.8,
        inner,
        0.36,
        "Lipschitz everywhere: no domain needed, no projection (lesson 02 §5, §6)",
        "output",
    )
    wide = (inner - gap) / 2
    _panel(
        ax,
        margin,
        2.7,
        wide,
        2.65,
        "l2",
        [
            ("$q_i = W_q x_i$, keys tied: $k_i = q_i$", None),
            ("$s_{ji} = -\\tau\\,\\Vert q_j - q_i\\Vert^2$", "layer"),
            ("$\\kappa(s) = e^s$ (softmax)", None),
            ("values $v_i = W_v q_i$", None),
            (
                "bound on every input: $\\Vert W_o\\Vert_2\\Vert W_v\\Vert_2\\Vert W_q\\Vert_2\\,\\Lambda_N$",
                "constraint",
            ),
            ("$\\Lambda_N$ grows like $\\sqrt{N \\ln N}$", None),
        ],
    )
    _panel(
        ax,
        margin + wide + gap,
        2.7,
        wide,
        2.65,
        "lipnorm",
        [
            ("$q_i = W_q x_i + b_q$, $k_i$ and $v_i$ likewise", None),
            ("$s_{ji} = q_j^\\top k_i\\,/\\,D$", "layer"),
            ("$D = \\max(F_Q M_K,\\, F_Q M_V,\\, M_K M_V) + \\eta$", None),
            ("$F_Q = \\Vert Q\\Vert_F$, $M_K = \\max_i\\Vert k_i\\Vert$, $M_V = \\max_i\\Vert v_i\\Vert$", None),
            ("$\\kappa(s) = e^s$ (softmax)", None),
            ("$|s_{ji}| \\leq 1$ on every input", "constraint"),
        ],
    )
    return fig


# -- lesson 03 -----------------------------------------------------------------------------------------------------
# tints of the input colour, one per row of the squeezed grid, so that a row of positions can be followed into X
_ROW_TINTS = ("#b9d4ee", "#dbe9f6", "#9cc2e6", "#cfe1f3")
_PICKED = "#e07b39"  # the one position traced through every stage


def _sheets(ax, left, bottom, size, count, step, colour):
    """``count`` blank sheets behind a square of side ``size`` (the channels behind the front one), offset by
    ``step`` up and to the right."""
    for k in range(count, 0, -1):
        ax.add_patch(
            Rectangle(
                (left + k * step, bottom + k * step), size, size, facecolor=colour, edgecolor="#777777", linewidth=0.7
            )
        )


def _grid(ax, left, bottom, cells, cell, tint_of_row, picked=None, picked_size=1):
    """A ``cells`` × ``cells`` grid of squares of side ``cell`` (row 0 on top); the square block of ``picked_size``
    cells whose top-left cell is ``picked`` (row, column) is outlined in the highlight colour."""
    for row in range(cells):
        for column in range(cells):
            x, y = left + column * cell, bottom + (cells - 1 - row) * cell
            ax.add_patch(Rectangle((x, y), cell, cell, facecolor=tint_of_row(row), edgecolor="#555555", linewidth=0.6))
    if picked is not None:
        row, column = picked
        x, y = left + column * cell, bottom + (cells - picked_size - row) * cell
        ax.add_patch(
            Rectangle(
                (x, y), picked_size * cell, picked_size * cell, facecolor="none", edgecolor=_PICKED, linewidth=2.2
            )
        )


@diagram("03_diagram_image_to_positions")
def image_to_positions():
    """From a photograph to N positions (lesson 03 §1): a 3 × 32 × 32 crop, dequantised, is squeezed (every 2 × 2
    patch of RGB pixels becomes one position with 12 channels, 12 × 16 × 16), and the 16 × 16 grid, read row by row,
    becomes the N = 256 columns x_i of X ∈ R^{C×N}. Drawn with fewer pixels; one patch is traced through."""
    fig, ax = canvas(8.8, 3.4)
    base = 0.75

    # the photograph: 3 channels, drawn 8 × 8
    cell = 0.24
    _sheets(ax, 0.2, base, 8 * cell, 2, 0.09, COLOURS["input"])
    _grid(ax, 0.2, base, 8, cell, lambda row: _ROW_TINTS[(row // 2) % 4], picked=(2, 4), picked_size=2)
    _heading(ax, (1.25, 3.2), "photograph")
    label(ax, (1.25, 0.45), "$3\\times H\\times W = 3\\times32\\times32$", fontsize=FONT)
    label(ax, (1.25, 0.15), "dequantised: pixels in $[-0.5, 0.5)$")

    arrow(ax, (2.55, 1.7), (3.55, 1.7), "squeeze", text_offset=(0.0, 0.1))
    label(ax, (3.05, 1.58), "a $2\\times2$ patch\nbecomes\none position", va="top")

    # the squeezed map: 12 channels, drawn 4 × 4
    cell = 0.4
    _sheets(ax, 3.75, base, 4 * cell, 4, 0.06, COLOURS["input"])
    _grid(ax, 3.75, base, 4, cell, lambda row: _ROW_TINTS[row % 4], picked=(1, 2))
    _heading(ax, (4.65, 3.2), "feature map")
    label(ax, (4.65, 0.45), "$C\\times\\frac{H}{2}\\times\\frac{W}{2} = 12\\times16\\times16$", fontsize=FONT)
    label(ax, (4.65, 0.15), "$N = 16\\cdot16 = 256$ positions")

    arrow(ax, (5.75, 1.7), (6.5, 1.7), "flatten", text_offset=(0.0, 0.1))
    label(ax, (6.12, 1.58), "row by\nrow", va="top")

    # X: C rows, one column per position, grouped by grid row
    left, column_width, height = 6.65, 0.12, 1.6
    for i in range(16):
        ax.add_patch(
            Rectangle(
                (left + i * column_width, base),
                column_width,
                height,
                facecolor=_ROW_TINTS[i // 4],
                edgecolor="#555555",
                linewidth=0.5,
            )
        )
    picked = 4 + 2
    right = left + 16 * column_width
    ax.add_patch(
        Rectangle(
            (left + picked * column_width, base),
            column_width,
            height,
            facecolor="none",
            edgecolor=_PICKED,
            linewidth=2.2,
        )
    )
    _heading(ax, ((left + right) / 2, 3.2), "matrix $X$")
    label(
        ax,
        (left + (picked + 0.5) * column_width, base + height + 0.2),
        "$x_i \\in \\mathbb{R}^{C}$",
        fontsize=FONT,
        colour=_PICKED,
    )
    label(ax, (right + 0.1, base + height / 2), "$C$", fontsize=FONT)
    label(ax, ((left + right) / 2, 0.45), "$X \\in \\mathbb{R}^{C\\times N}$", fontsize=FONT)
    label(ax, ((left + right) / 2, 0.15), "$i = 16\\cdot\\mathrm{row} + \\mathrm{column}$")
    return fig


@diagram("03_diagram_attention_block")
def attention_block():
    """One invertible attention block as the library builds it (lesson 03 §2, §6), in the order of the code:
    1×1 convolutions make queries, keys and values, projected onto balls of radius r (queries, keys) and r_v
    (values); the kind's scores and kernel give the row-normalised map P; o_j = Σ_i P_ji v_i; then W_o, the output
    gain γ (from the current weights, so that Lip(g) ≤ c) and the bias; and the residual sum y = x + g(x)."""
    fig, ax = canvas(9.0, 4.75)
    rows = {"q": 3.55, "k": 2.75, "v": 1.95}
    affine_x, ball_x = 1.72, 3.02

    box(ax, (0.42, rows["k"]), "$x$", width=0.5, height=0.46, role="input", fontsize=FONT + 1)
    label(ax, (0.42, 3.28), "$C\\times H\\times W$")
    affine = {"q": "$W_q\\,x_j + b_q$", "k": "$W_k\\,x_i + b_k$", "v": "$W_v\\,x_i + b_v$"}
    balls = {"q": "$\\pi_r$", "k": "$\\pi_r$", "v": "$\\pi_{r_v}$"}
    for name, y in rows.items():
        arrow(ax, (0.67, rows["k"] + (y - rows["k"]) * 0.3), (affine_x - 0.62, y))
        box(ax, (affine_x, y), affine[name], width=1.24, height=0.44, role="layer")
        arrow(ax, (affine_x + 0.62, y), (ball_x - 0.3, y))
        box(ax, (ball_x, y), balls[name], width=0.6, height=0.44, role="constraint")
    _heading(ax, (affine_x, 4.3), "$1\\times1$ convolutions")
    _heading(ax, (ball_x, 4.3), "onto balls")
    label(ax, (2.35, 1.35), "gaussian: $q = k = \\pi_r(x)$;  l2, lipnorm: no projection", fontsize=FONT - 1)

    # scores and the map
    scores, weights = (4.5, 3.15), (6.0, 3.15)
    _heading(ax, (5.25, 4.3), "attention")
    box(ax, scores, "scores $s_{ji}$\nof the kind", width=1.1, height=0.76, role="layer")
    arrow(ax, (ball_x + 0.3, rows["q"]), (scores[0] - 0.55, 3.4), "$q_j$", text_offset=(-0.05, 0.06))
    arrow(ax, (ball_x + 0.3, rows["k"]), (scores[0] - 0.55, 2.9), "$k_i$", text_offset=(-0.05, -0.06))
    label(ax, (scores[0], 3.75), "$|s_{ji}| \\leq B$")
    box(
        ax,
        weights,
        "$P_{ji} = \\dfrac{\\kappa(s_{ji})}{\\sum_l\\,\\kappa(s_{jl})}$",
        width=1.4,
        height=0.76,
        role="neutral",
    )
    arrow(ax, (scores[0] + 0.55, 3.15), (weights[0] - 0.7, 3.15))
    label(ax, (weights[0], 3.75), "rows of $P$ sum to 1")
    attended = (weights[0], rows["v"])
    box(ax, attended, "$o_j = \\sum_i P_{ji}\\,v_i$", width=1.4, height=0.46, role="neutral")
    arrow(ax, (weights[0], 3.15 - 0.38), (weights[0], rows["v"] + 0.23))
    arrow(ax, (ball_x + 0.3, rows["v"]), (attended[0] - 0.7, rows["v"]), "$v_i \\in \\mathbb{R}^C$")

    # output map, gain, bias
    output = (7.6, rows["v"])
    box(ax, output, "$\\gamma\\,W_o\\,o_j + b_o$", width=1.3, height=0.46, role="layer")
    arrow(ax, (attended[0] + 0.7, rows["v"]), (output[0] - 0.65, rows["v"]))
    gain = (7.6, 4.25)
    box(
        ax,
        gain,
        "$\\gamma = c\\,/\\max(c, \\Vert W_o\\Vert_2\\,L_{\\mathrm{attn}})$",
        width=2.35,
        height=0.44,
        role="constraint",
    )
    arrow(ax, (output[0], gain[1] - 0.22), (output[0], rows["v"] + 0.23), dashed=True)
    label(
        ax,
        (output[0] + 0.12, 3.15),
        "$L_{\\mathrm{attn}}$: the kind's\nbound, from the\ncurrent weights",
        ha="left",
        fontsize=FONT - 1,
    )

    # the residual sum
    total = (output[0], 0.8)
    circle(ax, total, "+")
    arrow(ax, (output[0], rows["v"] - 0.23), (output[0], total[1] + 0.16), "$g(x)$", text_offset=(0.3, -0.05))
    _line(ax, [(0.42, rows["k"] - 0.23), (0.42, total[1])])
    arrow(ax, (0.42, total[1]), (total[0] - 0.16, total[1]), "$x$ (identity)", text_offset=(0.0, 0.06))
    box(ax, (8.55, total[1]), "$y$", width=0.42, height=0.4, role="output", fontsize=FONT + 1)
    arrow(ax, (total[0] + 0.16, total[1]), (8.34, total[1]))
    label(ax, (4.0, 0.3), "$y = x + g(x)$: invertible, since $\\mathrm{Lip}(g) \\leq c < 1$", fontsize=FONT)
    return fig


# -- lesson 05 -----------------------------------------------------------------------------------------------------
@diagram("05_diagram_experiment")
def validation_experiment():
    """The paper's validation experiment as lesson 05 §1 and §3 run it: one certified attention block F(x) = x + g(x)
    (C = 12, Lip(g) ≤ 0.9) is trained to regress dequantised, squeezed images onto one fixed Gaussian target T; on
    held-out images y = F(x) is inverted two ways, to a tolerance with a verdict and a certified error bound, and
    the paper's 50 unchecked fixed-point iterations, and x̂ is compared with x on float tensors."""
    fig, ax = canvas(9.0, 4.6)

    # training
    top = 3.7
    _heading(ax, (0.05, 4.45), "train", ha="left")
    box(ax, (0.5, top), "8-bit\nimages", width=0.8, height=0.6, role="input")
    box(ax, (1.9, top), "dequantise,\n$2\\times2$ squeeze", width=1.35, height=0.6, role="neutral")
    arrow(ax, (0.9, top), (1.22, top))
    box(ax, (4.25, top), "one block\n$F(x) = x + g(x)$", width=1.5, height=0.6, role="layer")
    arrow(ax, (2.58, top), (3.5, top), "$x$", text_offset=(0.0, 0.05))
    label(ax, (3.04, top - 0.17), "$12\\times16\\times16$", va="top")
    label(ax, (4.25, top - 0.45), "attention $g$, $C = 12$, $\\mathrm{Lip}(g) \\leq 0.9$", va="top")
    loss = (6.3, top)
    box(ax, loss, "$\\mathrm{MSE}(F(x),\\, T)$", width=1.45, height=0.6, role="neutral")
    arrow(ax, (5.0, top), (loss[0] - 0.725, top))
    box(ax, (8.2, top), "$T \\sim \\mathcal{N}(0, I)$\ndrawn once, fixed", width=1.5, height=0.6, role="input")
    arrow(ax, (7.45, top), (loss[0] + 0.725, top))
    arrow(
        ax,
        (loss[0] - 0.2, top + 0.3),
        (4.45, top + 0.3),
        "Adam steps on the weights of $g$",
        curve=0.35,
        dashed=True,
        text_offset=(0.0, 0.34),
    )
    ax.plot([0.05, 8.95], [2.95, 2.95], color="#bbbbbb", linewidth=0.8)

    # testing: invert two ways, measure the error
    middle = 1.6
    _heading(ax, (0.05, 2.72), "test on held-out images", ha="left")
    box(ax, (0.5, middle), "held-out\n$x$", width=0.8, height=0.6, role="input")
    box(ax, (1.75, middle), "trained $F$", width=1.0, height=0.46, role="layer")
    arrow(ax, (0.9, middle), (1.25, middle))
    split = (2.55, middle)
    arrow(ax, (2.25, middle), split, "$y$", text_offset=(0.0, 0.05))
    solve = {"tolerance": (4.5, 2.08), "paper": (4.5, 0.6)}
    box(
        ax,
        solve["tolerance"],
        "to a tolerance (Anderson), with a verdict:\n"
        "stops at $\\Vert F(\\hat x) - y\\Vert\\,/\\,\\Vert y\\Vert \\leq 10^{-6}$;\n"
        "certified, for $\\mathrm{Lip}(g) \\leq L < 1$:\n"
        "$\\Vert\\hat x - x\\Vert \\leq \\Vert F(\\hat x) - y\\Vert\\,/\\,(1 - L)$",
        width=3.2,
        height=1.12,
        role="constraint",
    )
    box(
        ax,
        solve["paper"],
        "the paper's way: 50 iterations\n$x \\leftarrow y - g(x)$, no check, no verdict",
        width=3.2,
        height=0.66,
        role="neutral",
    )
    for name, (x, y) in solve.items():
        arrow(ax, split, (x - 1.6, y))
    error = (7.9, 1.4)
    box(
        ax,
        error,
        "error of $\\hat x$ against $x$\non float tensors:\nMSE, PSNR, max-abs",
        width=1.9,
        height=0.92,
        role="output",
    )
    for name, (x, y) in solve.items():
        arrow(
            ax, (x + 1.6, y), (error[0] - 0.95, error[1] + (y - error[1]) * 0.3), "$\\hat x$", text_offset=(0.0, 0.04)
        )
    return fig


# -- lesson 08 -----------------------------------------------------------------------------------------------------
def _stack(ax, centre, text, width, height, role="layer", copies=2, step=0.07):
    """A box with ``copies`` outlines behind it, up and to the right: a stack of identical blocks."""
    x, y = centre
    for k in range(copies, 0, -1):
        box(ax, (x + k * step, y + k * step), "", width=width, height=height, role=role)
    return box(ax, centre, text, width=width, height=height, role=role)


def _group(ax, left, right, y, text):
    """A bracket over the boxes from ``left`` to ``right`` with ``text`` above it (a scale of the model)."""
    _line(ax, [(left, y - 0.08), (left, y), (right, y), (right, y - 0.08)], colour="#888888", width=0.9)
    _heading(ax, ((left + right) / 2, y + 0.18), text)


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
    _line(ax, [(blocks1[0] + 0.65 + 0.14, row), (8.9, row), (8.9, 2.1)])
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
