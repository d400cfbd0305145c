"""Diagrams of lesson 02: what attention is, and the score functions of its six kinds (see :mod:`invattn.diagrams`)."""

from __future__ import annotations

import math

from matplotlib.patches import FancyArrowPatch, Rectangle

from ._draw import COLOURS, EDGE, FONT, arrow, box, canvas, circle, diagram, heading, label


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


@diagram("02_diagram_attention")
def attention_picture():
    """What attention is, before any bound (lesson 02, the opening): every position i of the map makes a query, a
    key and a value by learned 1×1 convolutions; one output position j scores every key against its query, the
    kernel and the row normalisation turn the scores into weights P_ji that sum to 1, and o_j is the weighted sum
    of the values (arrow widths drawn in proportion to the weights)."""
    fig, ax = canvas(8.8, 4.7)
    up = 0.4  # everything below the headings sits this much above the canvas floor

    # left: every position makes a query, a key and a value
    heading(ax, (1.45, 4.5), "every position $i = 1, \\dots, N$")
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
    heading(ax, (5.95, 4.5), "output position $j$ attends to every position $i$")
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


def _paper_panels():
    """The paper's four kinds as :func:`_panel` contents: (title, lines) each."""
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
    return panels


def _lipschitz_panels(ax, margin, inner, gap):
    """The lower row: the band and the panels of the two kinds Lipschitz on every input (l2, lipnorm)."""
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
    panels = _paper_panels()
    panel_width = (inner - 3 * gap) / 4
    for index, (title, lines) in enumerate(panels):
        _panel(ax, margin + index * (panel_width + gap), 5.65, panel_width, 2.4, title, lines)

    _lipschitz_panels(ax, margin, inner, gap)
    return fig
