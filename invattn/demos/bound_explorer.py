"""Lesson 02's demo, the bound explorer: one certified attention kind at N positions, its raw bound before the output
gain, its certified bound after it, and the Lipschitz constant measured on random inputs.
:func:`bound_explorer_state` computes, :func:`plot_bound_explorer` draws, :func:`bound_explorer_demo` wires both to
sliders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .._validation import check_choice, check_positive_int
from ..attention import KINDS, make_attention
from ..lipschitz import estimate_lipschitz
from .front import build_controls, demo_box

__all__ = [
    "MAX_POSITIONS",
    "OPTIONS",
    "BoundState",
    "bound_explorer_demo",
    "bound_explorer_state",
    "plot_bound_explorer",
]

# The bound explorer measures Lip(g) by 10 Jacobian power iterations through the whole N × N attention, so its time
# grows quickly with N (`python -m invattn.bench demos` times every control); the slider stops at N = 1024.
MAX_POSITIONS = 1024
OPTIONS = {  # which controls each kind has (the others do not exist for it)
    "concat": ("radius", "reduction"),
    "dot": ("radius", "temperature", "reduction"),
    "embedded_gaussian": ("radius", "temperature", "reduction"),
    "gaussian": ("radius", "temperature"),
    "l2": ("temperature", "reduction"),
    "lipnorm": ("reduction",),
}


@dataclass
class BoundState:
    """One attention kind's Lipschitz bounds at N positions (lesson 02): measured ≤ certified ≤ coeff.

    Arguments:
        kind: the attention kind, one of :data:`invattn.KINDS`.
        n_positions: N.
        options: {option: value} of the kind's options that were set (:data:`OPTIONS`).
        raw: ‖W_o‖·L_attn, the bound before the output gain.
        certified: the certified bound after the gain (≤ coeff).
        measured: a lower bound on Lip(g) from :func:`invattn.estimate_lipschitz` on random inputs.
        coeff: the certified bound's ceiling c.
    """

    kind: str
    n_positions: int
    options: dict
    raw: float
    certified: float
    measured: float
    coeff: float

    @property
    def gain(self) -> float:
        """certified/raw: the output gain the kind applied (0 for a raw bound of 0 or inf)."""
        return self.certified / self.raw if self.raw > 0 and math.isfinite(self.raw) else 0.0

    def summary(self) -> str:
        """One plain line: the kind, its options and N, and the three numbers."""
        used = ", ".join(f"{name} {value:g}" for name, value in self.options.items()) or "no options"
        return (
            f"{self.kind} ({used}), N = {self.n_positions}: raw bound {self.raw:.3g}, certified {self.certified:.3g} "
            f"(≤ c = {self.coeff:g}), measured {self.measured:.3g} (≤ certified: {self.measured <= self.certified})"
        )


def _chosen_options(kind: str, use: tuple[str, ...] | None, values: dict) -> dict:
    """{option: value} for the options of ``kind`` in ``use`` (default: all it has); ValueError for one it lacks."""
    allowed = OPTIONS[kind]
    chosen = allowed if use is None else tuple(use)
    extra = [name for name in chosen if name not in allowed]
    if extra:
        raise ValueError(f"{kind} has no {', '.join(extra)} (its options: {', '.join(allowed)})")
    return {name: values[name] for name in chosen}


def bound_explorer_state(
    kind: str = "dot",
    n_positions: int = 64,
    radius: float = 1.0,
    temperature: float = 1.0,
    reduction: int = 4,
    coeff: float = 0.9,
    channels: int = 12,
    seed: int = 0,
    use: tuple[str, ...] | None = None,
) -> BoundState:
    """One attention kind's Lipschitz bounds at N positions: raw ‖W_o‖·L_attn, certified, and measured (lesson 02).

    The kind is built with random weights from ``seed`` (``torch.manual_seed``); its input is one √N×√N map,
    [1, channels, √N, √N] uniform in [−1, 1). The measured constant is a lower bound on Lip(g) from 10 Jacobian power
    iterations (:func:`invattn.estimate_lipschitz`), so measured ≤ certified ≤ coeff.

    Arguments:
        kind: one of :data:`invattn.KINDS`.
        n_positions: N, a square number in 4..:data:`MAX_POSITIONS`.
        radius, temperature, reduction: the kind's options (those it has, :data:`OPTIONS`).
        coeff: the certified bound's ceiling c.
        channels: input channels.
        seed: the weights' and the input's seed.
        use: the options the caller set on purpose (default: those the kind has).
    Returns:
        a :class:`BoundState`.
    Raises:
        ValueError: for an unknown kind, an option in ``use`` the kind lacks, N not a square in 4..1024, or a value
            the kind refuses.
    """
    check_choice(kind, "kind", KINDS)
    check_positive_int(n_positions, "n_positions", minimum=4)
    side = math.isqrt(n_positions)
    if side * side != n_positions or n_positions > MAX_POSITIONS:
        raise ValueError(
            f"N = {n_positions}: the explorer uses square maps with 4 ≤ N ≤ {MAX_POSITIONS} (N = 16, 64, 256, …)"
        )
    options = _chosen_options(kind, use, dict(radius=radius, temperature=temperature, reduction=reduction))
    torch.manual_seed(seed)
    try:
        g = make_attention(kind, channels, coeff=coeff, **options).double().eval()
    except (TypeError, ValueError) as error:
        raise ValueError(str(error)) from None
    x = 2 * torch.rand(1, channels, side, side, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 1
    measured = estimate_lipschitz(g, x, n_iterations=10, pair_steps=0, seed=seed)
    return BoundState(
        kind=kind,
        n_positions=n_positions,
        options=options,
        raw=g.raw_lipschitz_bound(n_positions),
        certified=g.lipschitz_bound(n_positions),
        measured=measured,
        coeff=coeff,
    )


def plot_bound_explorer(state: BoundState, figure: Figure | None = None) -> Figure:
    """Draw a :class:`BoundState` as three bars (log scale): the raw bound, the certified bound, the measured constant.

    Arguments:
        state: from :func:`bound_explorer_state`.
        figure: a matplotlib figure to draw into (cleared first); default: a new 6 × 3.2 in one.
    Returns:
        the figure, with c drawn as a dashed line.
    """
    fig = figure or plt.figure(figsize=(6, 3.2))
    fig.clear()
    ax = fig.subplots()
    values = [state.raw, state.certified, state.measured]
    ax.bar(
        ["raw bound\n(before the gain)", "certified\nLip(g) ≤", "measured\nLip(g) ≥"], values, color=["0.6", "C0", "C1"]
    )
    ax.axhline(state.coeff, color="k", lw=0.8, ls="--", label=f"c = {state.coeff:g}")
    ax.set(yscale="log", title=f"{state.kind}, N = {state.n_positions}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def bound_explorer_demo(
    kind: str = "dot", n_positions: int = 64, radius: float = 1.0, temperature: float = 1.0, reduction: int = 4
) -> widgets.VBox:
    """Lesson 02's interactive demo: kind, N, radius, temperature and reduction.

    A kind's options that it lacks are ignored (the summary says which it has).

    Arguments:
        kind, n_positions, radius, temperature, reduction: the starting values (see :func:`bound_explorer_state`).
    Returns:
        the ``ipywidgets.VBox`` of :func:`invattn.demos.front.demo_box`; ``.state`` holds the latest
        :class:`BoundState`.
    Raises:
        ValueError: when a starting value is not one its control offers, or is refused by
            :func:`bound_explorer_state`.
    """
    sides = [s * s for s in range(2, math.isqrt(MAX_POSITIONS) + 1)]
    controls = build_controls(
        lambda: dict(
            kind=widgets.Dropdown(options=KINDS, value=kind, description="kind"),
            n_positions=widgets.SelectionSlider(
                options=sides, value=n_positions, description="N", continuous_update=False
            ),
            radius=widgets.FloatLogSlider(
                value=radius, base=10, min=-1, max=1, description="radius", continuous_update=False
            ),
            temperature=widgets.FloatLogSlider(
                value=temperature, base=10, min=-1, max=1, description="temperature", continuous_update=False
            ),
            reduction=widgets.IntSlider(
                value=reduction, min=1, max=12, description="reduction", continuous_update=False
            ),
        )
    )
    return demo_box(
        controls,
        bound_explorer_state,
        plot_bound_explorer,
        [["kind", "n_positions"], ["radius", "temperature", "reduction"]],
        dict(kind=kind, n_positions=n_positions, radius=radius, temperature=temperature, reduction=reduction),
        note="Large N takes longer (seconds near N = 1024): the measured constant runs power iterations "
        "through the whole N × N attention.",
    )
