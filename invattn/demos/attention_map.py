"""Lesson 03's demo, the attention-map explorer: the weights one query position of a photograph puts on every
position. :func:`attention_map_state` computes, :func:`plot_attention_map` draws, :func:`attention_map_demo` wires both
to sliders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .._validation import check_choice
from ..attention import KINDS, make_attention
from ..blocks import Squeeze
from .bound_explorer import OPTIONS
from .front import build_controls, demo_box

__all__ = ["MapState", "attention_map_demo", "attention_map_state", "plot_attention_map"]


@dataclass
class MapState:
    """The weights that query position (row, col) of the squeezed image puts on every position (lesson 03).

    Arguments:
        kind: the attention kind, one of :data:`invattn.KINDS`.
        row, col: the query position on the squeezed H/2 × W/2 grid.
        weights: [H/2, W/2], float32, the query's row A[q, :] of the attention matrix (they sum to 1).
        image: [3, H, W] in [0, 1], the photograph, for the overlay.
    """

    kind: str
    row: int
    col: int
    weights: torch.Tensor
    image: torch.Tensor

    @property
    def entropy_ratio(self) -> float:
        """Entropy of the weights over ln N: 1 for a uniform average, near 0 for a map that picks one position."""
        p = self.weights.flatten().double().clamp_min(1e-300)
        return float(-(p * p.log()).sum() / math.log(p.numel()))

    def summary(self) -> str:
        """One plain line: the largest and smallest weight and the entropy ratio."""
        w = self.weights
        return (
            f"{self.kind}, query ({self.row}, {self.col}): largest weight {float(w.max()):.3g} "
            f"({float(w.max()) * w.numel():.2f}× uniform), smallest {float(w.min()):.3g}; "
            f"entropy {self.entropy_ratio:.2f} of uniform's"
        )


def attention_map_state(
    image: torch.Tensor,
    kind: str = "dot",
    row: int = 0,
    col: int = 0,
    temperature: float = 1.0,
    radius: float = 1.0,
    seed: int = 0,
) -> MapState:
    """The attention weights A[q, :] of one query position q = (row, col) of a photograph (lesson 03).

    The image is centred (x − ½) and squeezed to 12 channels at H/2 × W/2 positions; the kind is built with random
    weights from ``seed`` (``torch.manual_seed``) and run in float64.

    Arguments:
        image: [3, H, W] in [0, 1], H and W even.
        kind: one of :data:`invattn.KINDS`.
        row, col: the query position on the squeezed H/2 × W/2 grid.
        temperature, radius: passed to the kinds that have them (:data:`invattn.demos.OPTIONS`), ignored by the others.
        seed: the weights' seed.
    Returns:
        a :class:`MapState` with ``weights`` [H/2, W/2] (float32, summing to 1).
    Raises:
        ValueError: for an unknown kind, an image of the wrong shape, a position outside the squeezed grid, or a value
            the kind refuses.

    >>> image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> state = attention_map_state(image, "dot", row=1, col=2)
    >>> state.weights.shape, round(float(state.weights.sum()), 4)
    (torch.Size([4, 4]), 1.0)
    """
    check_choice(kind, "kind", KINDS)
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] % 2 or image.shape[2] % 2:
        raise ValueError(f"image must be [3, H, W] with H and W even, got {tuple(image.shape)}")
    height, width = image.shape[1] // 2, image.shape[2] // 2
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"query ({row}, {col}) is outside the {height}×{width} grid of positions")
    options = {
        name: value for name, value in (("temperature", temperature), ("radius", radius)) if name in OPTIONS[kind]
    }
    torch.manual_seed(seed)
    try:
        g = make_attention(kind, 12, **options).double().eval()
    except (TypeError, ValueError) as error:
        raise ValueError(str(error)) from None
    x = Squeeze()(image[None].double() - 0.5)
    weights = g.attention_map(x)[0, row * width + col].view(height, width).float()
    return MapState(kind=kind, row=row, col=col, weights=weights, image=image)


def plot_attention_map(state: MapState, figure: Figure | None = None) -> Figure:
    """Draw a :class:`MapState`: the photograph with the query position marked, and the weights on every position.

    Arguments:
        state: from :func:`attention_map_state`.
        figure: a matplotlib figure to draw into (cleared first); default: a new 7 × 3.4 in one.
    Returns:
        the figure.
    """
    fig = figure or plt.figure(figsize=(7, 3.4))
    fig.clear()
    left, right = fig.subplots(1, 2)
    left.imshow(state.image.permute(1, 2, 0).numpy())
    left.plot(2 * state.col + 0.5, 2 * state.row + 0.5, "s", ms=8, mfc="none", mec="red", mew=1.5)
    left.set_title("query position (red)")
    shown = right.imshow(state.weights.numpy(), cmap="viridis")
    right.plot(state.col, state.row, "s", ms=8, mfc="none", mec="red", mew=1.5)
    fig.colorbar(shown, ax=right, fraction=0.046, pad=0.04, label="weight")
    right.set_title(f"{state.kind}: weights on every position")
    for ax in (left, right):
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def attention_map_demo(
    image: torch.Tensor,
    kind: str = "dot",
    temperature: float = 1.0,
    radius: float = 1.0,
    row: int | None = None,
    col: int | None = None,
) -> widgets.VBox:
    """Lesson 03's interactive demo: the query position (a pair of sliders), the kind, temperature and radius.

    Arguments:
        image: [3, H, W] in [0, 1], H and W even.
        kind, temperature, radius: the starting values (see :func:`attention_map_state`).
        row, col: the starting query position on the squeezed H/2 × W/2 grid (default: its centre).
    Returns:
        the ``ipywidgets.VBox`` of :func:`invattn.demos.front.demo_box`; ``.state`` holds the latest
        :class:`MapState`.
    Raises:
        ValueError: for a start outside the grid or another value its control does not offer, or one refused by
            :func:`attention_map_state`.
    """
    height, width = image.shape[1] // 2, image.shape[2] // 2
    controls = build_controls(
        lambda: dict(
            kind=widgets.Dropdown(options=KINDS, value=kind, description="kind"),
            row=widgets.IntSlider(
                value=height // 2 if row is None else row,
                min=0,
                max=height - 1,
                description="row",
                continuous_update=False,
            ),
            col=widgets.IntSlider(
                value=width // 2 if col is None else col,
                min=0,
                max=width - 1,
                description="column",
                continuous_update=False,
            ),
            temperature=widgets.FloatLogSlider(
                value=temperature, base=10, min=-1, max=1.5, description="temperature", continuous_update=False
            ),
            radius=widgets.FloatLogSlider(
                value=radius, base=10, min=-1, max=1, description="radius", continuous_update=False
            ),
        )
    )
    return demo_box(
        controls,
        lambda **values: attention_map_state(image, **values),
        plot_attention_map,
        [["kind"], ["row", "col"], ["temperature", "radius"]],
        dict(
            kind=kind,
            temperature=temperature,
            radius=radius,
            **({} if row is None else {"row": row}),
            **({} if col is None else {"col": col}),
        ),
    )
