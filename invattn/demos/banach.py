"""Lesson 01's demo, Banach's iteration: fixed-point iteration of x ↦ y − g(x) for g(x) = c·sin x (1-D) or
c·(sin x₂, sin x₁) (2-D), its error against the a-priori bound, and the preimages of y: one when c < 1, several (the
fold) when c > 1. :func:`banach_state` computes, :func:`plot_banach` draws, :func:`banach_demo` wires both to sliders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .._validation import check_choice, check_positive_float, check_positive_int
from .front import build_controls, demo_box

__all__ = ["BANACH_MAPS", "MAX_STEPS", "BanachState", "banach_demo", "banach_state", "plot_banach", "residual_map"]

BANACH_MAPS = ("1d", "2d")
MAX_STEPS = 500  # the iteration sliders stop here: each step is one evaluation, and the plot is of every iterate
DEFAULT_Y = {"1d": (3.0,), "2d": (0.5, -0.3)}


def residual_map(points: np.ndarray, c: float) -> np.ndarray:
    """The demo's residual branch g(x) = c·sin x (1-D) or c·(sin x₂, sin x₁) (2-D); Lip(g) = c.

    Arguments:
        points: [..., d] with d = 1 or 2.
        c: the gain.
    Returns:
        g(points), [..., d].
    """
    if points.shape[-1] == 1:
        return c * np.sin(points)
    return c * np.stack([np.sin(points[..., 1]), np.sin(points[..., 0])], axis=-1)


def _preimages(y: np.ndarray, c: float) -> np.ndarray:
    """Every x with x + g(x) = y, [k, d]. A solution has |x_i − y_i| = |g_i(x)| ≤ c, so the search covers
    y ± (c + ½): in 1-D every sign change of F − y on a grid of 20,001 points, refined by bisection; in 2-D Newton
    from a 21×21 grid of starts, duplicates merged."""
    d = y.shape[0]
    if d == 1:
        grid = np.linspace(y[0] - c - 0.5, y[0] + c + 0.5, 20_001)
        values = grid + c * np.sin(grid) - y[0]
        left = np.nonzero(np.sign(values[:-1]) != np.sign(values[1:]))[0]
        a, b = grid[left], grid[left + 1]
        for _ in range(60):  # vectorised bisection of every bracket at once
            middle = 0.5 * (a + b)
            same = np.sign(a + c * np.sin(a) - y[0]) == np.sign(middle + c * np.sin(middle) - y[0])
            a, b = np.where(same, middle, a), np.where(same, b, middle)
        return (0.5 * (a + b)).reshape(-1, 1)
    axis = np.linspace(-c - 0.5, c + 0.5, 21)
    starts = y + np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    found: list[np.ndarray] = []
    for x in starts:
        for _ in range(60):
            jacobian = np.array([[1.0, c * math.cos(x[1])], [c * math.cos(x[0]), 1.0]])
            if abs(np.linalg.det(jacobian)) < 1e-12:
                break
            step = np.linalg.solve(jacobian, x + residual_map(x, c) - y)
            x = x - step
            if np.abs(step).max() < 1e-14:
                break
        if np.linalg.norm(x + residual_map(x, c) - y) < 1e-11 and not any(np.linalg.norm(x - f) < 1e-7 for f in found):
            found.append(x)
    return np.array(sorted(found, key=lambda p: tuple(p))).reshape(-1, 2)


@dataclass
class BanachState:
    """The iteration x_{k+1} = y − g(x_k) for one setting of the controls (lesson 01).

    Arguments:
        map: "1d" or "2d" (:data:`BANACH_MAPS`), the dimension d.
        c: the gain, Lip(g) = c.
        y: [d], the target.
        iterates: [steps + 1, d], x_0 … x_steps.
        preimages: [k, d], every solution of x + g(x) = y.
        errors: ``errors[k]`` the distance from x_k to the nearest preimage (nan when none was found).
        bound: ``bound[k]`` = c^k/(1 − c)·‖x₁ − x₀‖ when c < 1 (empty otherwise).
    """

    map: str
    c: float
    y: np.ndarray
    iterates: np.ndarray
    preimages: np.ndarray
    errors: list[float] = field(default_factory=list)
    bound: list[float] = field(default_factory=list)

    @property
    def settles(self) -> bool:
        """Whether the last ten iterates agree to 1e-9 (converged, as far as the plot can tell)."""
        tail = self.iterates[-10:]
        return len(tail) == 10 and float(np.abs(tail - tail[-1]).max()) < 1e-9

    @property
    def bound_holds(self) -> bool:
        """Whether every error is within the a-priori bound (vacuously true when c ≥ 1: there is none)."""
        return all(e <= b * (1 + 1e-9) + 1e-15 for e, b in zip(self.errors, self.bound))

    def summary(self) -> str:
        """One plain line: the number of preimages and whether the iteration converges or settles."""
        count = len(self.preimages)
        head = f"c = {self.c:g}: y has {count} preimage{'s' if count != 1 else ''}"
        if self.c < 1:
            return (
                f"{head}; the iteration converges (error {self.errors[-1]:.1e} after {len(self.errors) - 1} steps, "
                "within the bound)"
            )
        return (
            f"{head} (F folds: det J_F changes sign); the iteration {'settles' if self.settles else 'does not settle'}"
        )


def banach_state(
    map: str = "1d",
    c: float = 0.9,
    steps: int = 30,
    y: tuple[float, ...] | None = None,
    x0: tuple[float, ...] | None = None,
) -> BanachState:
    """Run fixed-point iteration x_{k+1} = y − g(x_k) towards the preimages of y under F(x) = x + g(x) (lesson 01).

    g = c·sin x ("1d") or c·(sin x₂, sin x₁) ("2d"), so Lip(g) = c: below 1 the iteration contracts and the
    a-priori bound c^k/(1 − c)·‖x₁ − x₀‖ holds (Banach's fixed-point theorem); above 1 the map F folds.

    Arguments:
        map: "1d" or "2d".
        c: the gain, in (0, 4].
        steps: iterations, 1 to :data:`MAX_STEPS`.
        y: the target, d numbers (default: 3 in 1-D, (0.5, −0.3) in 2-D).
        x0: the start, d numbers (default: y).
    Returns:
        a :class:`BanachState` (iterates [steps + 1, d], preimages [k, d], errors and bound per iterate).
    Raises:
        ValueError: for another map, c outside (0, 4], steps outside 1..500, or y / x0 of the wrong length or not
            finite.
        TypeError: for a non-integer number of steps.

    >>> state = banach_state("1d", c=0.5, steps=20)
    >>> len(state.preimages), state.bound_holds
    (1, True)
    >>> state.summary()
    'c = 0.5: y has 1 preimage; the iteration converges (error 6.2e-08 after 20 steps, within the bound)'
    """
    check_choice(map, "map", BANACH_MAPS)
    c = check_positive_float(c, "c")
    if c > 4:
        raise ValueError(f"c = {c:g}: the demo shows 0 < c ≤ 4 (beyond, the fold has too many sheets to plot)")
    check_positive_int(steps, "steps")
    if steps > MAX_STEPS:
        raise ValueError(f"steps = {steps}: at most {MAX_STEPS}")
    d = 1 if map == "1d" else 2
    y_arr = np.array(DEFAULT_Y[map] if y is None else y, dtype=np.float64).reshape(-1)
    x_arr = y_arr.copy() if x0 is None else np.array(x0, dtype=np.float64).reshape(-1)
    for name, value in (("y", y_arr), ("x0", x_arr)):
        if value.shape != (d,) or not np.isfinite(value).all():
            raise ValueError(f"{name} must be {d} finite number(s) for the {map} map, got {value.tolist()}")
    iterates = [x_arr]
    for _ in range(steps):
        iterates.append(y_arr - residual_map(iterates[-1], c))
    path = np.stack(iterates)
    roots = _preimages(y_arr, c)
    errors = [float(np.linalg.norm(roots - p, axis=1).min()) for p in path] if len(roots) else [math.nan] * len(path)
    bound = []
    if c < 1:
        first = float(np.linalg.norm(path[1] - path[0]))
        bound = [c**k / (1 - c) * first for k in range(len(path))]
    return BanachState(map=map, c=c, y=y_arr, iterates=path, preimages=roots, errors=errors, bound=bound)


def _draw_map(ax, state: BanachState) -> None:
    """The map F(x) = x + g(x) with y and its preimages (1-D), or the iterates in the plane (2-D)."""
    path = state.iterates
    if path.shape[1] == 1:
        xs = np.linspace(float(state.y[0]) - 8, float(state.y[0]) + 8, 800)
        ax.plot(xs, xs + state.c * np.sin(xs), lw=1.2, label="F(x) = x + c·sin x")
        ax.axhline(float(state.y[0]), color="k", lw=0.8, ls="--", label=f"y = {float(state.y[0]):g}")
        ax.plot(
            state.preimages[:, 0],
            np.full(len(state.preimages), float(state.y[0])),
            "o",
            color="C2",
            label=f"{len(state.preimages)} preimage(s)",
        )
        ax.plot(path[:, 0], path[:, 0] + state.c * np.sin(path[:, 0]), ".", color="C3", ms=4, label="iterates x_k")
        ax.set(xlabel="x", ylabel="F(x)")
    else:
        ax.plot(path[:, 0], path[:, 1], ".-", color="C3", ms=4, lw=0.6, label="iterates x_k")
        ax.plot(
            state.preimages[:, 0], state.preimages[:, 1], "o", color="C2", label=f"{len(state.preimages)} preimage(s)"
        )
        ax.set(xlabel="x₁", ylabel="x₂", aspect="equal")


def plot_banach(state: BanachState, figure: Figure | None = None) -> Figure:
    """Draw a :class:`BanachState`: the map (1-D) or the iterates (2-D), and the error per iteration with its bound.

    Arguments:
        state: from :func:`banach_state`.
        figure: a matplotlib figure to draw into (cleared first); default: a new 10 × 3.6 in one.
    Returns:
        the figure: left, F with y and its preimages (1-D) or the iterates in the plane (2-D); right, the error per
        iteration (log scale) beside the a-priori bound (when c < 1).
    """
    fig = figure or plt.figure(figsize=(10, 3.6))
    fig.clear()
    left, right = fig.subplots(1, 2)
    _draw_map(left, state)
    left.set_title(f"c = {state.c:g}" + (": F folds" if len(state.preimages) > 1 else ""))
    left.legend(fontsize=7)
    steps = range(len(state.errors))
    right.semilogy(steps, [max(e, 1e-17) for e in state.errors], "o-", ms=2.5, label="|x_k − nearest preimage|")
    if state.bound:
        right.semilogy(steps, state.bound, "--", color="grey", label="a-priori bound c^k/(1−c)·|x₁ − x₀|")
    right.set(xlabel="iteration k", ylabel="error", title="fixed-point iteration x ← y − g(x)")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def banach_demo(map: str = "1d", c: float = 0.9, steps: int = 30) -> widgets.VBox:
    """Lesson 01's interactive demo: the map (1-D or 2-D), c from 0.05 to 4 (the fold from c > 1), and the steps.

    Arguments:
        map, c, steps: the starting values (see :func:`banach_state`).
    Returns:
        the ``ipywidgets.VBox`` of :func:`invattn.demos.front.demo_box`; ``.state`` holds the latest
        :class:`BanachState`.
    Raises:
        ValueError: when a starting value is not one its control offers, or is refused by :func:`banach_state`.
    """
    controls = build_controls(
        lambda: dict(
            map=widgets.ToggleButtons(options=BANACH_MAPS, value=map, description="map"),
            c=widgets.FloatSlider(value=c, min=0.05, max=4.0, step=0.05, description="c", continuous_update=False),
            steps=widgets.IntSlider(value=steps, min=1, max=MAX_STEPS, description="steps", continuous_update=False),
        )
    )
    return demo_box(controls, banach_state, plot_banach, [["map"], ["c", "steps"]], dict(map=map, c=c, steps=steps))
