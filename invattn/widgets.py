"""The lessons' interactive demos: the inversion demo of lesson 04 (its logic here, as plain functions tested without
a browser), the front ends of the other demos, whose logic is in :mod:`invattn.demos`, and :func:`demo_app`, all six in
one page (what ``make demo`` serves with Voilà).

:func:`inversion_demo_state` squeezes an image to 12 channels, applies one invertible attention block
y = x + g(x), perturbs y with noise, and inverts with a fixed number of iterations of the chosen method,
recording the relative reconstruction error after every iteration beside the a-priori bound.
:func:`plot_inversion_demo` draws a state; :func:`inversion_demo` wires both to sliders.

Every demo is built by the same front end: a row of controls, a "computing…" status line, a one-line summary and the
figure; a combination the state function refuses is shown as a message in bold, and the last figure stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from ._validation import check_choice, check_coeff, check_finite, check_positive_int
from .attention import KINDS, PAPER_KINDS, make_attention
from .blocks import InvertibleResidual, Squeeze
from .solvers import METHODS

__all__ = [
    "DemoState",
    "error_map_range",
    "error_per_iteration",
    "inversion_demo_state",
    "plot_inversion_demo",
    "inversion_demo",
    "plot_banach",
    "banach_demo",
    "plot_bound_explorer",
    "bound_explorer_demo",
    "plot_attention_map",
    "attention_map_demo",
    "plot_latent",
    "latent_demo",
    "plot_two_roads",
    "two_roads_demo",
    "demo_app",
]

VARIANTS = ("certified", "paper")


@dataclass
class DemoState:
    """One state of the demo: the pictures ([3, H, W] / [H, W], in [0, 1]) and the error curve."""

    kind: str
    variant: str
    coeff: float
    method: str
    iterations: int
    noise: float
    original: torch.Tensor
    reconstruction: torch.Tensor
    error_map: torch.Tensor
    errors: list[float] = field(default_factory=list)  # relative error ‖x_k − x‖/‖x‖ after k = 0..iterations steps
    bound: list[float] = field(default_factory=list)  # a-priori bound L^k/(1 − L)·‖x_1 − x_0‖/‖x‖ (certified only)
    noise_floor: float = 0.0  # ‖δ‖/((1 − L)‖x‖): where the error must level off for noise δ on y
    lipschitz: float = math.inf

    @property
    def final_error(self) -> float:
        return self.errors[-1]

    def summary(self) -> str:
        return (
            f"{self.kind} ({self.variant}), c = {self.coeff:.2f}, {self.method}, {self.iterations} iterations, "
            f"noise {self.noise:g}: relative error {self.final_error:.2e}"
        )


def error_per_iteration(
    block: InvertibleResidual, x: torch.Tensor, y: torch.Tensor, method: str, iterations: int, **options
) -> tuple[list[float], torch.Tensor]:
    """Run exactly ``iterations`` steps of ``method`` towards the x with block(x) = y, starting at x_0 = y, and
    return ([‖x_k − x‖/‖x‖ for k = 0..iterations] (the largest over the batch), the last iterate)."""
    norms = x.flatten(1).norm(dim=1)
    errors: list[float] = []
    record = lambda k, iterate: errors.append(float(((iterate - x).flatten(1).norm(dim=1) / norms).max()))  # noqa: E731
    x_last = block.inverse(
        y, method=method, max_iter=iterations, tol=1e-300, on_failure="return", callback=record, **options
    )
    # A residual of exactly 0 stops the solver early (float64 reached its fixed point): the error stays there.
    errors += errors[-1:] * (iterations + 1 - len(errors))
    return errors[: iterations + 1], x_last


@lru_cache(maxsize=32)
def _block(kind: str, variant: str, coeff: float, seed: int) -> InvertibleResidual:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        g = make_attention(kind, 12, coeff=coeff, variant=variant)
    return InvertibleResidual(g.double()).eval()


def inversion_demo_state(
    image: torch.Tensor,
    kind: str = "concat",
    coeff: float = 0.9,
    iterations: int = 20,
    method: str = "fixed_point",
    noise: float = 0.0,
    variant: str = "certified",
    seed: int = 0,
) -> DemoState:
    """Invert one attention block on ``image`` ([3, H, W] in [0, 1], H and W even) with ``iterations``
    steps of ``method``, after adding Gaussian noise of standard deviation ``noise`` to y = F(x).

    Everything runs in float64 so that the curve shows the method, not rounding. Anderson mixes from its second
    step (``rate_gate=0``), the textbook algorithm, not the library's gated default. The block's weights
    depend only on (kind, variant, coeff, seed), so moving the iteration or noise sliders re-uses them.
    """
    check_choice(kind, "kind", KINDS)
    check_choice(variant, "variant", VARIANTS)
    if variant == "paper" and kind not in PAPER_KINDS:
        raise ValueError(f"variant='paper' exists for {PAPER_KINDS}; pick one of those for kind")
    coeff = check_coeff(coeff)
    check_positive_int(iterations, "iterations")
    check_choice(method, "method", METHODS)
    check_finite(image, "image")
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] % 2 or image.shape[2] % 2:
        raise ValueError(f"image must be [3, H, W] with H and W even, got {tuple(image.shape)}")
    if not (0.0 <= float(noise) < 1.0):
        raise ValueError(f"noise must be in [0, 1) (a standard deviation, images are in [0, 1]); got {noise}")
    block = _block(kind, variant, coeff, seed)
    squeeze = Squeeze()
    x = squeeze(image[None].double() - 0.5)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        y = block(x)
        delta = noise * torch.randn(y.shape, generator=generator, dtype=y.dtype)
        y = y + delta
    norm_x = float(x.norm())
    # rate_gate=0: the demo shows Anderson's mixing from the first step (the library's default waits until plain
    # iteration is seen to be slow, which on these fast-contracting blocks would make both curves the same)
    errors, x_hat = error_per_iteration(
        block, x, y, method, iterations, allow_uncertified=variant == "paper", rate_gate=0.0
    )
    lipschitz = block.lipschitz_bound() if variant == "certified" else math.inf
    bound: list[float] = []
    floor = 0.0
    if math.isfinite(lipschitz):
        with torch.no_grad():  # x_1 − x_0 = (y − g(y)) − y
            first_step = float(block.g(y).norm()) / norm_x
        bound = [lipschitz**k / (1 - lipschitz) * first_step for k in range(len(errors))]
        floor = float(delta.norm()) / ((1 - lipschitz) * norm_x)
    unsqueezed = lambda t: (squeeze.inverse(t)[0] + 0.5).float()  # noqa: E731
    reconstruction = unsqueezed(x_hat).nan_to_num(0.5).clamp(0, 1)
    # The difference is taken in float64, before the +0.5 shift and the cast: in float32 an error of 1e-13 on a
    # value near 0.5 rounds away, and the map would show zeros where the curve shows the true error.
    error_map = squeeze.inverse(x_hat - x)[0].abs().amax(dim=0).nan_to_num(1.0).float()
    return DemoState(
        kind=kind,
        variant=variant,
        coeff=coeff,
        method=method,
        iterations=iterations,
        noise=float(noise),
        original=image.float(),
        reconstruction=reconstruction,
        error_map=error_map,
        errors=errors,
        bound=bound,
        noise_floor=floor,
        lipschitz=lipschitz,
    )


def error_map_range(error_map: torch.Tensor, decades: float = 4.0) -> tuple[float, float]:
    """The log colour range (vmin, vmax) of an error map ([H, W], ≥ 0): vmax is its largest finite value, vmin its
    smallest positive one but at most ``decades`` powers of ten below vmax, so the map shows its own structure at
    any error level instead of one colour. An all-zero map gives (1e-20, 1e-16), drawn in the darkest colour."""
    finite = error_map[torch.isfinite(error_map) & (error_map > 0)]
    if not finite.numel():
        return 1e-20, 1e-16
    top = float(finite.max())
    bottom = max(float(finite.min()), top * 10.0 ** (-decades))
    return (bottom, top) if bottom < top else (top / 10, top)


def plot_inversion_demo(state: DemoState, figure=None):
    """Original | reconstruction | error map | error per iteration (log scale) beside the a-priori bound."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig = figure or plt.figure(figsize=(11, 3.0))
    fig.clear()
    fig.set_layout_engine("constrained", wspace=0.08)  # tight_layout left wide gaps around the square images
    axes = fig.subplots(1, 4, gridspec_kw=dict(width_ratios=[1, 1, 1.25, 1.5]))
    axes[0].imshow(state.original.permute(1, 2, 0).numpy())
    axes[0].set_title("original")
    axes[1].imshow(state.reconstruction.permute(1, 2, 0).numpy())
    axes[1].set_title(f"after {state.iterations} iterations")
    vmin, vmax = error_map_range(state.error_map)
    picture = axes[2].imshow(
        state.error_map.clamp(vmin, vmax).numpy(), cmap="magma", norm=LogNorm(vmin=vmin, vmax=vmax)
    )
    axes[2].set_title(f"|error| per pixel (max {vmax:.0e})")
    fig.colorbar(picture, ax=axes[2], fraction=0.046, pad=0.04, label="|x_k − x| per pixel")
    for ax in axes[:3]:
        ax.set_axis_off()
    curve = axes[3]
    finite = [e if math.isfinite(e) else float("nan") for e in state.errors]
    curve.semilogy(range(len(finite)), [max(e, 1e-17) for e in finite], "o-", ms=3, label=f"{state.method} error")
    if state.bound:
        curve.semilogy(range(len(state.bound)), state.bound, "--", color="grey", label="a-priori bound")
    if state.noise_floor > 0:
        curve.axhline(state.noise_floor, color="tab:red", lw=0.8, label="noise bound ‖δ‖/((1−L)‖x‖)")
    curve.set_xlabel("iteration k")
    curve.set_ylabel("‖x_k − x‖ / ‖x‖")
    curve.set_title(f"{state.kind} ({state.variant}), c = {state.coeff:.2f}")
    curve.legend(fontsize=8, loc="lower left")  # errors start high at the left: that corner stays free
    return fig


def inversion_demo(
    image: torch.Tensor,
    kind: str = "concat",
    coeff: float = 0.9,
    iterations: int = 20,
    method: str = "fixed_point",
    noise: float = 0.0,
    variant: str = "certified",
):
    """The interactive demo: sliders for kind, variant, c, iterations, method and noise; the figure and a
    one-line summary update when a slider is released (``continuous_update=False``, so a slow kernel shows
    the last state, never a mix); a refused combination (the paper variant of a kind that has none) is shown in
    bold. Returns the ipywidgets container; ``.state`` holds the latest DemoState."""
    import ipywidgets as widgets

    controls = _built(
        lambda: dict(
            kind=widgets.Dropdown(options=KINDS, value=kind, description="kind"),
            coeff=widgets.FloatSlider(
                value=coeff, min=0.05, max=0.99, step=0.01, description="c", continuous_update=False
            ),
            iterations=widgets.IntSlider(
                value=iterations, min=1, max=100, description="iterations", continuous_update=False
            ),
            method=widgets.ToggleButtons(options=METHODS, value=method, description="method"),
            variant=widgets.ToggleButtons(options=VARIANTS, value=variant, description="variant"),
            noise=widgets.FloatSlider(
                value=noise,
                min=0.0,
                max=0.1,
                step=0.001,
                readout_format=".3f",
                description="noise on y",
                continuous_update=False,
            ),
        )
    )
    return _demo(
        controls,
        lambda **values: inversion_demo_state(image, **values),
        plot_inversion_demo,
        [["kind", "coeff", "iterations"], ["method", "variant"], ["noise"]],
        dict(kind=kind, coeff=coeff, iterations=iterations, method=method, noise=noise, variant=variant),
    )


# -- the shared front end, and the demos whose logic is in invattn.demos ----------------------------------------
def _figure_png(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def _built(make_controls):
    """``make_controls()`` (a dict of ipywidgets controls), with a starting value that a control cannot take (an
    option it does not offer) raised as ``ValueError``, not as traitlets' ``TraitError``."""
    from traitlets import TraitError

    try:
        return make_controls()
    except TraitError as error:
        raise ValueError(f"a starting value is not one the demo's controls offer: {error}") from None


def _demo(controls: dict, compute, draw, layout: list, requested: dict, note: str = ""):
    """A VBox of ``layout`` (rows of control names), a status line, a one-line summary and the figure as a PNG image.

    Every change of a control calls ``compute(**values)`` (a state function of :mod:`invattn.demos`) and
    ``draw(state)``, showing "computing…" meanwhile; a refused combination (``ValueError``, or
    :class:`invattn.InversionError` from a solve that did not converge) is shown in the summary, in bold, and the last
    figure stays. ``requested``: the starting values the caller asked for; a slider clamps a value outside its range
    silently, so one that did not survive is refused here (``ValueError``). ``note``: a line shown under the controls
    (for example, which settings take longer)."""
    import html

    import ipywidgets as widgets

    from .solvers import InversionError

    for name, value in requested.items():
        shown = controls[name].value
        if shown != value and not (
            isinstance(value, float) and math.isclose(shown, value, rel_tol=1e-9, abs_tol=1e-12)
        ):
            control = controls[name]
            if hasattr(control, "base"):  # a log slider's min and max are exponents
                span = f" (from {control.base**control.min:g} to {control.base**control.max:g})"
            else:
                span = f" (from {control.min} to {control.max})" if hasattr(control, "max") else ""
            raise ValueError(f"{name} = {value!r} is not a value its control offers{span}")
    status = widgets.HTML().add_class("invattn-status")
    summary = widgets.HTML().add_class("invattn-summary")  # the classes let a browser test find them
    picture = widgets.Image(format="png")
    rows = [widgets.HBox([controls[name] for name in row]) for row in layout]
    box = widgets.VBox(
        [*rows, *([widgets.HTML(f"<i>{html.escape(note)}</i>")] if note else []), status, summary, picture]
    )
    box.state = None

    def update(change=None) -> None:
        status.value = "<i>computing…</i>"
        try:
            try:
                state = compute(**{name: control.value for name, control in controls.items()})
            except (ValueError, InversionError) as error:
                box.refusal = str(error)
                summary.value = f"<b>{html.escape(box.refusal)}</b>"
                return
            png = _figure_png(draw(state))
            box.state = state
            picture.value = png
            summary.value = (
                f"<code>{html.escape(state.summary())}</code>"  # last: a new summary means the new figure is there
            )
        finally:
            status.value = ""

    for control in controls.values():
        control.observe(update, names="value")
    box.controls, box.summary, box.picture = controls, summary, picture
    update()
    if box.state is None:  # the starting values themselves are refused: the caller hears it, not only the widget
        raise ValueError(f"the demo's starting values are refused: {box.refusal}")
    return box


def plot_banach(state, figure=None):
    """The map F(x) = x + g(x) with y and its preimages (1-D) or the iterates in the plane (2-D), and the error per
    iteration beside the a-priori bound (when c < 1)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig = figure or plt.figure(figsize=(10, 3.6))
    fig.clear()
    left, right = fig.subplots(1, 2)
    path = state.iterates
    if path.shape[1] == 1:
        xs = np.linspace(float(state.y[0]) - 8, float(state.y[0]) + 8, 800)
        left.plot(xs, xs + state.c * np.sin(xs), lw=1.2, label="F(x) = x + c·sin x")
        left.axhline(float(state.y[0]), color="k", lw=0.8, ls="--", label=f"y = {float(state.y[0]):g}")
        left.plot(
            state.preimages[:, 0],
            np.full(len(state.preimages), float(state.y[0])),
            "o",
            color="C2",
            label=f"{len(state.preimages)} preimage(s)",
        )
        left.plot(path[:, 0], path[:, 0] + state.c * np.sin(path[:, 0]), ".", color="C3", ms=4, label="iterates x_k")
        left.set(xlabel="x", ylabel="F(x)")
    else:
        left.plot(path[:, 0], path[:, 1], ".-", color="C3", ms=4, lw=0.6, label="iterates x_k")
        left.plot(
            state.preimages[:, 0], state.preimages[:, 1], "o", color="C2", label=f"{len(state.preimages)} preimage(s)"
        )
        left.set(xlabel="x₁", ylabel="x₂", aspect="equal")
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


def banach_demo(map: str = "1d", c: float = 0.9, steps: int = 30):
    """Lesson 01's demo: the map (1-D or 2-D), c from 0.05 to 4 (the fold from c > 1) and the number of steps;
    ``.state`` holds the latest :class:`invattn.demos.BanachState`."""
    import ipywidgets as widgets

    from .demos import BANACH_MAPS, MAX_STEPS, banach_state

    controls = _built(
        lambda: dict(
            map=widgets.ToggleButtons(options=BANACH_MAPS, value=map, description="map"),
            c=widgets.FloatSlider(value=c, min=0.05, max=4.0, step=0.05, description="c", continuous_update=False),
            steps=widgets.IntSlider(value=steps, min=1, max=MAX_STEPS, description="steps", continuous_update=False),
        )
    )
    return _demo(controls, banach_state, plot_banach, [["map"], ["c", "steps"]], dict(map=map, c=c, steps=steps))


def plot_bound_explorer(state, figure=None):
    """Bars: the raw bound ‖W_o‖·L_attn, the certified bound after the gain, the measured constant (log scale)."""
    import matplotlib.pyplot as plt

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
):
    """Lesson 02's demo: kind, N, radius, temperature and reduction; a kind's options that it lacks are ignored
    (the summary says which it has). ``.state`` holds the latest :class:`invattn.demos.BoundState`."""
    import ipywidgets as widgets

    from .demos import MAX_POSITIONS, bound_explorer_state

    sides = [s * s for s in range(2, math.isqrt(MAX_POSITIONS) + 1)]
    controls = _built(
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
    return _demo(
        controls,
        bound_explorer_state,
        plot_bound_explorer,
        [["kind", "n_positions"], ["radius", "temperature", "reduction"]],
        dict(kind=kind, n_positions=n_positions, radius=radius, temperature=temperature, reduction=reduction),
        note="Large N takes longer (seconds near N = 1024): the measured constant runs power iterations "
        "through the whole N × N attention.",
    )


def plot_attention_map(state, figure=None):
    """The photograph with the query position marked, and the weights it puts on every position."""
    import matplotlib.pyplot as plt

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
):
    """Lesson 03's demo: a slider pair for the query position on ``image`` ([3, H, W], H and W even), starting at
    (``row``, ``col``) on the squeezed H/2 × W/2 grid (default: its centre), the kind, temperature and radius.
    ``.state`` holds the latest :class:`invattn.demos.MapState`. ``ValueError`` for a start outside the grid."""
    import ipywidgets as widgets

    from .demos import attention_map_state

    height, width = image.shape[1] // 2, image.shape[2] // 2
    controls = _built(
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
    return _demo(
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


def _tiles(images: torch.Tensor, columns: int):
    """[n, C, H, W] images in [−0.5, 0.5) (C = 1 or 3) → one picture for ``imshow`` (grey [h, w] or colour
    [h, w, 3]), ``columns`` per row, one white pixel between them."""
    from torchvision.utils import make_grid

    grid = make_grid((images.float() + 0.5).clamp(0, 1), nrow=columns, padding=1, pad_value=1.0)
    return grid[0].numpy() if images.shape[1] == 1 else grid.permute(1, 2, 0).numpy()


def plot_latent(state, figure=None):
    """Samples at the temperature, the walk between two encoded digits (with the digits at its ends), and every
    decoded image's re-encoding error (log scale)."""
    import matplotlib.pyplot as plt

    fig = figure or plt.figure(figsize=(11, 3.6))
    fig.clear()
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 1.6, 1.1], height_ratios=[1, 1])
    samples = fig.add_subplot(grid[:, 0])
    samples.imshow(_tiles(state.samples, math.ceil(math.sqrt(len(state.samples)))), cmap="gray", vmin=0, vmax=1)
    samples.set_title(f"samples, T = {state.temperature:g}, seed {state.seed}", fontsize=9)
    ends = fig.add_subplot(grid[0, 1])
    ends.imshow(_tiles(torch.stack([state.endpoints[0], state.endpoints[1]]), 2), cmap="gray", vmin=0, vmax=1)
    ends.set_title(f"x_a, x_b: images {state.first} and {state.second}", fontsize=9)
    walk = fig.add_subplot(grid[1, 1])
    walk.imshow(_tiles(state.walk, len(state.walk)), cmap="gray", vmin=0, vmax=1)
    walk.set_title(f"{len(state.walk)} images decoded along z_t = (1 − t)·f(x_a) + t·f(x_b)", fontsize=9)
    for ax in (samples, ends, walk):
        ax.set_axis_off()
    errors = fig.add_subplot(grid[:, 2])
    floor = 1e-12
    errors.semilogy(
        range(len(state.sample_errors)), state.sample_errors.clamp_min(floor).numpy(), "o", ms=3, label="samples"
    )
    errors.semilogy(range(len(state.walk_errors)), state.walk_errors.clamp_min(floor).numpy(), "s", ms=3, label="walk")
    errors.set(xlabel="image", ylabel="‖f(f⁻¹(z)) − z‖ / ‖z‖", title="re-encoding error")
    errors.legend(fontsize=7)
    fig.tight_layout()
    return fig


def latent_demo(model, images: torch.Tensor, temperature: float = 0.8, seed: int = 0, first: int = 0, second: int = 1):
    """Lesson 08's demo for a trained :class:`~invattn.models.ResidualFlow`: temperature (0 to 1.5), seed (0 to 99),
    and the two images of ``images`` ([N, C, H, W] in [0, 1], e.g. held-out digits) to walk between.
    ``.state`` holds the latest :class:`invattn.demos.LatentState`. Raises ``ValueError`` when a starting value is
    outside its control's range or refused by :func:`invattn.demos.latent_state`."""
    import ipywidgets as widgets

    from .demos import MAX_TEMPERATURE, latent_state

    controls = _built(
        lambda: dict(
            temperature=widgets.FloatSlider(
                value=temperature, min=0.0, max=MAX_TEMPERATURE, step=0.05, description="T", continuous_update=False
            ),
            seed=widgets.IntSlider(value=seed, min=0, max=max(99, seed), description="seed", continuous_update=False),
            first=widgets.IntSlider(
                value=first, min=0, max=max(len(images) - 1, 0), description="from image", continuous_update=False
            ),
            second=widgets.IntSlider(
                value=second, min=0, max=max(len(images) - 1, 0), description="to image", continuous_update=False
            ),
        )
    )
    return _demo(
        controls,
        lambda **values: latent_state(model, images, **values),
        plot_latent,
        [["temperature", "seed"], ["first", "second"]],
        dict(temperature=temperature, seed=seed, first=first, second=second),
    )


def plot_two_roads(state, figure=None):
    """The digit and its three reconstructions from (perturbed) features, each titled with its error, and |x̂ − x|
    per road on one log colour scale."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from .demos import ROADS

    fig = figure or plt.figure(figsize=(10, 4.4))
    fig.clear()
    axes = fig.subplots(2, 4)
    axes[0, 0].imshow(_tiles(state.image[None], 1), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(f"test image {state.index}", fontsize=9)
    axes[1, 0].text(
        0.5,
        0.5,
        f"noise on Φ: {state.noise:g}\n{state.method}\n≤ {state.iterations} steps per block",
        ha="center",
        va="center",
        fontsize=9,
        transform=axes[1, 0].transAxes,
    )
    low = 1e-8
    maps = [(state.reconstructions[road] - state.image).abs().amax(0).nan_to_num(nan=1e3, posinf=1e3) for road in ROADS]
    high = max(1.0, max(float(m.max()) for m in maps))
    for column, (road, difference) in enumerate(zip(ROADS, maps), start=1):
        axes[0, column].imshow(
            _tiles(state.reconstructions[road].nan_to_num(nan=0.0)[None], 1), cmap="gray", vmin=0, vmax=1
        )
        how = (
            "analytic"
            if state.converged[road] is None
            else ("converged" if state.converged[road] else "not converged") + f", {state.evaluations[road]} evals"
        )
        axes[0, column].set_title(
            f"{road}: error {state.errors[road]:.1e}\n{how}\nclass of the clean x: {state.predictions[road]}",
            fontsize=8,
        )
        shown = axes[1, column].imshow(difference.clamp_min(low).numpy(), cmap="magma", norm=LogNorm(low, high))
    fig.colorbar(shown, ax=axes[1, 1:].tolist(), fraction=0.03, pad=0.02, label="|x̂ − x|")
    for ax in axes.flat:
        ax.set_axis_off()
    return fig


NOISE_LEVELS = (0.0, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3)  # relative to ‖Φ(x)‖; 0: the features as computed


def two_roads_demo(
    models: dict,
    images: torch.Tensor,
    index: int = 0,
    noise: float = 0.0,
    method: str = "fixed_point",
    iterations: int = 100,
):
    """Lesson 09's demo for the three classifiers of :func:`invattn.demos.two_roads_models`: the test image of
    ``images`` ([N, C, H, W] in [0, 1]), the noise added to its features (one of :data:`NOISE_LEVELS`, or ``noise``
    itself), the solver and its steps per block (1 to 200). ``.state`` holds the latest
    :class:`invattn.demos.TwoRoadsState`. Raises ``ValueError`` when a starting value is outside its control's range
    or refused by :func:`invattn.demos.two_roads_state`."""
    import ipywidgets as widgets

    from .demos import two_roads_state

    controls = _built(
        lambda: dict(
            index=widgets.IntSlider(
                value=index, min=0, max=max(len(images) - 1, 0), description="test image", continuous_update=False
            ),
            noise=widgets.SelectionSlider(
                options=NOISE_LEVELS if noise in NOISE_LEVELS else sorted({*NOISE_LEVELS, noise}),
                value=noise,
                description="noise on Φ",
                continuous_update=False,
            ),
            method=widgets.ToggleButtons(options=METHODS, value=method, description="method"),
            iterations=widgets.IntSlider(
                value=iterations, min=1, max=200, description="steps/block", continuous_update=False
            ),
        )
    )
    return _demo(
        controls,
        lambda **values: two_roads_state(models, images, **values),
        plot_two_roads,
        [["index", "noise"], ["method", "iterations"]],
        dict(index=index, noise=noise, method=method, iterations=iterations),
    )


# -- all six demos in one page: what `make demo` serves --------------------------------------------
DEMO_TABS = (  # (tab title, lesson, one plain sentence: the app shows no code and typesets no math)
    (
        "Banach's iteration",
        "01",
        "Step the fixed-point iteration x ← y − g(x) for g = c·sin: it converges for c < 1; "
        "above 1 the map folds (its Jacobian changes sign), and for larger c the chosen y has "
        "several preimages.",
    ),
    (
        "Bound explorer",
        "02",
        "Each attention kind's bound before the output gain, after it (the certified one) and the "
        "Lipschitz constant measured on random inputs, at N positions.",
    ),
    (
        "Attention map",
        "03",
        "Where one query position of the photograph looks: its attention weights on every position.",
    ),
    (
        "Inversion",
        "04",
        "Invert one attention block y = x + g(x) step by step: the error per iteration beside the a-priori "
        "bound, and the error per pixel.",
    ),
    (
        "Samples and walks",
        "08",
        "The trained digits model: samples at a temperature, a straight walk in latent "
        "space between two held-out digits, and each decoded image's re-encoding error.",
    ),
    (
        "Two roads",
        "09",
        "Invert a classifier's final features back to the digit: i-RevNet analytically, the i-ResNet "
        "classifier and an unconstrained ResNet by iteration, with optional noise on the features.",
    ),
)


def demo_app(checkpoints: str = "../checkpoints"):
    """The six lesson demos in one tabbed widget (the app ``make demo`` serves with Voilà), each with its lesson
    number and one sentence. ``checkpoints``: the folder holding ``digits-200/concat-seed1.pt`` (lesson 08's trained
    model, :func:`invattn.ablation.load_model`) and ``two-roads/`` (lesson 09's classifiers, trained there first if
    missing: :func:`invattn.demos.two_roads_models`). Returns the ``ipywidgets.Tab``; ``.demos`` maps each title to
    its demo (whose ``.state`` is the latest state)."""
    from pathlib import Path

    import ipywidgets as widgets

    from .ablation import HELD_OUT_FROM, load_model
    from .data import digits, load_labelled, photograph_crops, photograph_thumbnail
    from .demos import two_roads_models

    folder = Path(checkpoints)
    held_out = digits()[0][HELD_OUT_FROM:]  # the digits the density model never saw
    test_digits = load_labelled("digits", split="test")[0]  # the classifiers' held-out split
    demos = {
        "Banach's iteration": lambda: banach_demo(map="1d", c=0.9, steps=30),
        "Bound explorer": lambda: bound_explorer_demo(kind="l2", n_positions=256),
        "Attention map": lambda: attention_map_demo(
            photograph_crops(1, 64, seed=0)[0], kind="gaussian", temperature=3.0, radius=3.0
        ),
        "Inversion": lambda: inversion_demo(photograph_thumbnail(64), kind="concat", iterations=8),
        "Samples and walks": lambda: latent_demo(
            load_model(folder / "digits-200" / "concat-seed1.pt"), held_out, first=0, second=1
        ),
        "Two roads": lambda: two_roads_demo(two_roads_models(folder / "two-roads"), test_digits),
    }
    built, pages = {}, []
    for title, lesson, sentence in DEMO_TABS:
        built[title] = demos[title]()
        pages.append(widgets.VBox([widgets.HTML(f"<p><b>Lesson {lesson}.</b> {sentence}</p>"), built[title]]))
    tab = widgets.Tab(children=pages, titles=[title for title, _, _ in DEMO_TABS])
    tab.demos = built
    return tab
