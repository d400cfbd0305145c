"""What the demos share: the widget front end (controls, status line, summary, figure) and the checks of the images
and indices that lessons 08 and 09's demos take.

Every demo is built by :func:`demo_box`: a row of controls, a "computing…" status line, a one-line summary and the
figure; a combination the state function refuses is shown as a message in bold, and the last figure stays.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from torchvision.utils import make_grid
from traitlets import TraitError

from .._validation import check_finite, check_positive_float, check_positive_int
from ..solvers import InversionError
from ..solvers import check_tol as check_solver_tol

__all__ = ["build_controls", "check_images", "check_index", "check_tol", "demo_box", "figure_png", "tiles"]


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes at 80 dpi; the figure is closed.

    Arguments:
        fig: a ``matplotlib.figure.Figure``.
    Returns:
        the PNG file's bytes.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def build_controls(make_controls: Callable[[], dict]) -> dict:
    """The controls ``make_controls()`` builds, with a starting value a control cannot take raised as ``ValueError``.

    Arguments:
        make_controls: a function of no arguments returning {name: ipywidgets control}.
    Returns:
        that dict.
    Raises:
        ValueError: when a starting value is an option a control does not offer (traitlets' ``TraitError``).
    """
    try:
        return make_controls()
    except TraitError as error:
        raise ValueError(f"a starting value is not one the demo's controls offer: {error}") from None


def _check_requested(controls: dict, requested: dict) -> None:
    """ValueError for a starting value a slider clamped (it did not survive into the control)."""
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


def demo_box(
    controls: dict, compute: Callable, draw: Callable, layout: list, requested: dict, note: str = ""
) -> widgets.VBox:
    """A demo: a VBox of rows of controls, a status line, a one-line summary and the figure as a PNG image.

    Every change of a control calls ``compute(**values)`` (a demo's state function) and ``draw(state)``, showing
    "computing…" meanwhile; a refused combination (``ValueError``, or :class:`invattn.InversionError` from a solve that
    did not converge) is shown in the summary, in bold, and the last figure stays.

    Arguments:
        controls: {name: ipywidgets control}; the names are ``compute``'s keyword arguments.
        compute: the state function; its result has a ``summary()`` method.
        draw: the plot function, state → matplotlib figure.
        layout: rows of control names, one ``HBox`` each.
        requested: the starting values the caller asked for (a slider clamps a value outside its range silently).
        note: a line shown under the controls (for example, which settings take longer).
    Returns:
        the ``ipywidgets.VBox``; ``.state`` holds the latest state, ``.controls``, ``.summary`` and ``.picture`` its
        parts, ``.refusal`` the latest refusal's message.
    Raises:
        ValueError: when a requested value did not survive into its control, or the starting values are refused.
    """
    _check_requested(controls, requested)
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
            png = figure_png(draw(state))
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


def tiles(images: torch.Tensor, columns: int) -> np.ndarray:
    """Images side by side, ``columns`` per row, one white pixel between them, for ``imshow``.

    Arguments:
        images: [n, C, H, W] in [−0.5, 0.5) (centred pixels), C = 1 or 3.
        columns: images per row.
    Returns:
        grey [h, w] (C = 1) or colour [h, w, 3] (C = 3), in [0, 1].
    """
    grid = make_grid((images.float() + 0.5).clamp(0, 1), nrow=columns, padding=1, pad_value=1.0)
    return grid[0].numpy() if images.shape[1] == 1 else grid.permute(1, 2, 0).numpy()


def check_images(images: torch.Tensor, expected: tuple[int, int, int], who: str) -> None:
    """Check images a model takes: [N, C, H, W] floats in [0, 1] (pixels/255), N ≥ 1, finite.

    Arguments:
        images: the images.
        expected: (C, H, W) the model takes.
        who: the model, as the message names it ("this model").
    Raises:
        ValueError: for anything else (not a float tensor, another shape, empty, non-finite, values outside [0, 1]).
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(
            f"images must be a float tensor [N, {', '.join(map(str, expected))}] in [0, 1], "
            f"got {getattr(images, 'dtype', type(images).__name__)}"
        )
    if images.dim() != 4 or tuple(images.shape[1:]) != expected or len(images) == 0:
        raise ValueError(
            f"images must be [N, {', '.join(map(str, expected))}] with N ≥ 1 for {who}, got {tuple(images.shape)}"
        )
    check_finite(images, "images")
    low, high = torch.aminmax(images)
    if low < 0 or high > 1:
        raise ValueError(
            f"images must be in [0, 1] (pixels/255, not centred), got values in [{float(low):.3g}, {float(high):.3g}]"
        )


def check_index(index: int, name: str, count: int) -> int:
    """``index`` as an ``int`` when it picks one of ``count`` images.

    Arguments:
        index: the index (a Python or numpy integer).
        name: its name in the message.
        count: how many images there are.
    Returns:
        ``int(index)``.
    Raises:
        TypeError: for a float or a bool.
        ValueError: for a negative index or one ≥ ``count``.
    """
    check_positive_int(index, name, minimum=0)  # TypeError for a float or a bool
    if index >= count:
        raise ValueError(f"{name} {index} is not among the {count} images (0 to {count - 1})")
    return int(index)


def check_tol(tol: float, dtype: torch.dtype | None = None) -> float:
    """A relative tolerance in (0, 1), refused before any work when ``dtype`` cannot reach it.

    Arguments:
        tol: the solver's relative tolerance per block.
        dtype: the model's dtype; when given, ``tol`` must not be below its 4 unit roundoffs
            (:func:`invattn.solvers.check_tol`).
    Returns:
        ``tol`` as a float.
    Raises:
        ValueError: for tol outside (0, 1) or below what ``dtype`` reaches.
    """
    tol = check_positive_float(tol, "tol")
    if tol >= 1:
        raise ValueError(f"tol is a relative tolerance and must be in (0, 1), got {tol}")
    return tol if dtype is None else check_solver_tol(tol, dtype)
