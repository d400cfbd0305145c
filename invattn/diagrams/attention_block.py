"""Diagrams of lessons 03 and 05: from an image to positions, the invertible attention block, and the paper's
validation experiment (see :mod:`invattn.diagrams`)."""

from __future__ import annotations

from matplotlib.patches import Rectangle

from ._draw import COLOURS, FONT, arrow, box, canvas, circle, diagram, heading, label, line

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
    heading(ax, (1.25, 3.2), "photograph")
    label(ax, (1.25, 0.45), "$3\\times H\\times W = 3\\times32\\times32$", fontsize=FONT)
    label(ax, (1.25, 0.15), "dequantised: pixels in $[-0.5, 0.5)$")

    arrow(ax, (2.55, 1.7), (3.55, 1.7), "squeeze", text_offset=(0.0, 0.1))
    label(ax, (3.05, 1.58), "a $2\\times2$ patch\nbecomes\none position", va="top")

    # the squeezed map: 12 channels, drawn 4 × 4
    cell = 0.4
    _sheets(ax, 3.75, base, 4 * cell, 4, 0.06, COLOURS["input"])
    _grid(ax, 3.75, base, 4, cell, lambda row: _ROW_TINTS[row % 4], picked=(1, 2))
    heading(ax, (4.65, 3.2), "feature map")
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
    heading(ax, ((left + right) / 2, 3.2), "matrix $X$")
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
    heading(ax, (affine_x, 4.3), "$1\\times1$ convolutions")
    heading(ax, (ball_x, 4.3), "onto balls")
    label(ax, (2.35, 1.35), "gaussian: $q = k = \\pi_r(x)$;  l2, lipnorm: no projection", fontsize=FONT - 1)

    # scores and the map
    scores, weights = (4.5, 3.15), (6.0, 3.15)
    heading(ax, (5.25, 4.3), "attention")
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
    line(ax, [(0.42, rows["k"] - 0.23), (0.42, total[1])])
    arrow(ax, (0.42, total[1]), (total[0] - 0.16, total[1]), "$x$ (identity)", text_offset=(0.0, 0.06))
    box(ax, (8.55, total[1]), "$y$", width=0.42, height=0.4, role="output", fontsize=FONT + 1)
    arrow(ax, (total[0] + 0.16, total[1]), (8.34, total[1]))
    label(ax, (4.0, 0.3), "$y = x + g(x)$: invertible, since $\\mathrm{Lip}(g) \\leq c < 1$", fontsize=FONT)
    return fig


@diagram("05_diagram_experiment")
def validation_experiment():
    """The paper's validation experiment as lesson 05 §1 and §3 run it: one certified attention block F(x) = x + g(x)
    (C = 12, Lip(g) ≤ 0.9) is trained to regress dequantised, squeezed images onto one fixed Gaussian target T; on
    held-out images y = F(x) is inverted two ways, to a tolerance with a verdict and a certified error bound, and
    the paper's 50 unchecked fixed-point iterations, and x̂ is compared with x on float tensors."""
    fig, ax = canvas(9.0, 4.6)

    # training
    top = 3.7
    heading(ax, (0.05, 4.45), "train", ha="left")
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
    heading(ax, (0.05, 2.72), "test on held-out images", ha="left")
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
