"""Lesson 09's demo, two roads back from a classifier's features: one digit's final representation Φ(x), optionally
perturbed, inverted by i-RevNet, the i-ResNet classifier and the unconstrained ResNet (the models:
:func:`invattn.pretrained.two_roads_models`). :func:`two_roads_state` computes, :func:`plot_two_roads` draws,
:func:`two_roads_demo` wires both to sliders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .._validation import check_choice, check_positive_int
from ..pretrained import ROADS, check_road
from ..solvers import METHODS
from .front import build_controls, check_images, check_index, check_tol, demo_box, tiles

__all__ = ["NOISE_LEVELS", "ROADS", "TwoRoadsState", "plot_two_roads", "two_roads_demo", "two_roads_state"]

NOISE_LEVELS = (0.0, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3)  # relative to ‖Φ(x)‖; 0: the features as computed


@dataclass
class TwoRoadsState:
    """One test image and, per road (:data:`ROADS`), the inverse of its (perturbed) features (lesson 09).

    Every dict maps each road of :data:`ROADS` to its value; tensors are on the CPU.

    Arguments:
        index, noise, method, iterations: the settings (see :func:`two_roads_state`).
        image: [C, H, W], the test image, centred (pixels − ½).
        reconstructions: road → x̂ [C, H, W], the inverse of the (perturbed) features.
        errors: road → the relative error ‖x̂ − x‖/‖x‖ (inf for a non-finite x̂).
        predictions: road → the class the model predicts for the clean image.
        converged: road → whether every block's solve converged (False for a non-finite x̂; None: i-RevNet's
            analytic inverse).
        evaluations: road → the evaluations of g the inverse took (0 for i-RevNet).
    """

    index: int
    noise: float
    method: str
    iterations: int
    image: torch.Tensor
    reconstructions: dict
    errors: dict
    predictions: dict
    converged: dict
    evaluations: dict

    def summary(self) -> str:
        """One plain line: the settings and, per road, the error and how the inverse went."""
        parts = []
        for road in ROADS:
            how = (
                "analytic"
                if self.converged[road] is None
                else f"{'converged' if self.converged[road] else 'NOT converged'}, {self.evaluations[road]} evaluations"
            )
            parts.append(f"{road} error {self.errors[road]:.1e} ({how})")
        return (
            f"test image {self.index}, noise {self.noise:g} on Φ, {self.method} ≤ {self.iterations} steps/block: "
            + "; ".join(parts)
        )


def _check_settings(models: dict, images: torch.Tensor, index, noise, method, iterations, tol, seed) -> tuple:
    """(index, noise, iterations, tol, seed) checked as :func:`two_roads_state` documents."""
    missing = [road for road in ROADS if road not in models]
    if missing:
        raise ValueError(f"models needs every road of {ROADS}; missing {missing}")
    for road in ROADS:
        check_road(road, models[road])
    check_choice(method, "method", METHODS)
    iterations = check_positive_int(iterations, "iterations")
    seed = check_positive_int(seed, "seed", minimum=0)
    tol = check_tol(tol)
    config = models["i-RevNet"].config
    check_images(images, (config.in_channels, config.image_size, config.image_size), "these classifiers")
    index = check_index(index, "test image", len(images))
    noise = float(noise)
    if not 0 <= noise <= 1:
        raise ValueError(f"noise is relative to ‖Φ(x)‖ and must be in [0, 1], got {noise}")
    return index, noise, iterations, tol, seed


def _invert_road(road: str, model, image: torch.Tensor, noise: float, seed: int, method: str, iterations, tol):
    """(x on the model's device and dtype, x̂, predicted class, converged or None, evaluations of g) for one road."""
    x = image.to(next(model.parameters()))
    with torch.no_grad():
        phi = model.features(x)
        prediction = int(model.logits_from_features(phi).argmax(1))
        direction = torch.randn(phi.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        direction = (direction / direction.norm()).to(phi)
        phi = phi + noise * phi.norm() * direction
        # return_info=True: the noisy phi is outside Φ's range on purpose, so the report replaces the warning
        if road == "i-RevNet":
            (x_hat, _), converged, evaluations = model.inverse(phi, return_info=True), None, 0
        else:
            x_hat, report = model.inverse(
                phi, return_info=True, method=method, max_iter=iterations, tol=tol, on_failure="return"
            )
            converged = all(info.converged for info in report.blocks)
            evaluations = sum(info.function_evals for info in report.blocks)
    return x, x_hat, prediction, converged, evaluations


def two_roads_state(
    models: dict,
    images: torch.Tensor,
    index: int = 0,
    noise: float = 0.0,
    method: str = "fixed_point",
    iterations: int = 100,
    tol: float = 1e-6,
    seed: int = 0,
) -> TwoRoadsState:
    """One test image through each road's classifier to its final features Φ(x), perturbed, and back (lesson 09).

    The image is centred (x − ½, as the classifiers were trained) and follows each model's device and dtype. Noise of
    relative size ``noise`` is added, Φ(x) + noise·‖Φ(x)‖·δ with ‖δ‖ = 1 (one fixed direction drawn from ``seed``),
    and the result inverted: i-RevNet analytically; the two residual networks by ``method`` with at most
    ``iterations`` steps and relative tolerance ``tol`` per block (a solve that stops short is shown, not raised: the
    unconstrained ResNet's often does).

    Arguments:
        models: {road: classifier} for every road of :data:`ROADS` (:func:`invattn.pretrained.two_roads_models`).
        images: [N, C, H, W] in [0, 1] of the models' input shape.
        index: the test image.
        noise: in [0, 1], relative to ‖Φ(x)‖.
        method: one of :data:`invattn.solvers.METHODS`.
        iterations: solver steps per block, ≥ 1.
        tol: relative tolerance per block, in (0, 1).
        seed: the noise direction's seed, ≥ 0.
    Returns:
        a :class:`TwoRoadsState` (relative errors ‖x̂ − x‖/‖x‖, inf for a non-finite x̂).
    Raises:
        ValueError: for a road missing from ``models`` or holding another kind of model, an index outside
            ``images``, a noise outside [0, 1], an unknown method, iterations < 1, tol outside (0, 1), images that are
            not floats in [0, 1] of the models' input shape (or non-finite), or an image that is 0 after centring
            (its relative error is undefined).
        TypeError: for a non-integer index, iterations or seed.
    """
    index, noise, iterations, tol, seed = _check_settings(models, images, index, noise, method, iterations, tol, seed)
    image = images[index : index + 1].detach() - 0.5
    if not bool(image.any()):
        raise ValueError(f"test image {index} is 0.5 everywhere, 0 after centring: its relative error is undefined")
    state = TwoRoadsState(
        index=index,
        noise=noise,
        method=method,
        iterations=iterations,
        image=image[0].cpu(),
        reconstructions={},
        errors={},
        predictions={},
        converged={},
        evaluations={},
    )
    for road in ROADS:
        x, x_hat, state.predictions[road], converged, evaluations = _invert_road(
            road, models[road], image, noise, seed, method, iterations, tol
        )
        finite = bool(torch.isfinite(x_hat).all())
        state.reconstructions[road] = x_hat[0].cpu()
        state.errors[road] = float((x_hat - x).norm() / x.norm()) if finite else math.inf
        state.converged[road] = converged if finite or converged is None else False
        state.evaluations[road] = evaluations
    return state


def plot_two_roads(state: TwoRoadsState, figure: Figure | None = None) -> Figure:
    """Draw a :class:`TwoRoadsState`: the digit, its three reconstructions, and |x̂ − x| per road.

    Arguments:
        state: from :func:`two_roads_state`.
        figure: a matplotlib figure to draw into (cleared first); default: a new 10 × 4.4 in one.
    Returns:
        the figure: each reconstruction titled with its error, the differences on one log colour scale.
    """
    fig = figure or plt.figure(figsize=(10, 4.4))
    fig.clear()
    axes = fig.subplots(2, 4)
    axes[0, 0].imshow(tiles(state.image[None], 1), cmap="gray", vmin=0, vmax=1)
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
            tiles(state.reconstructions[road].nan_to_num(nan=0.0)[None], 1), cmap="gray", vmin=0, vmax=1
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


def two_roads_demo(
    models: dict,
    images: torch.Tensor,
    index: int = 0,
    noise: float = 0.0,
    method: str = "fixed_point",
    iterations: int = 100,
) -> widgets.VBox:
    """Lesson 09's interactive demo: the test image, the noise on its features, the solver and its steps per block.

    Arguments:
        models: {road: classifier}, as :func:`invattn.pretrained.two_roads_models` returns.
        images: [N, C, H, W] in [0, 1] (the image slider spans them).
        index, method: the starting values (see :func:`two_roads_state`).
        noise: the starting noise, one of :data:`NOISE_LEVELS` or a level of one's own (it joins the options).
        iterations: the starting steps per block, 1 to 200.
    Returns:
        the ``ipywidgets.VBox`` of :func:`invattn.demos.front.demo_box`; ``.state`` holds the latest
        :class:`TwoRoadsState`.
    Raises:
        ValueError: when a starting value is outside its control's range, or refused by :func:`two_roads_state`.
    """
    controls = build_controls(
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
    return demo_box(
        controls,
        lambda **values: two_roads_state(models, images, **values),
        plot_two_roads,
        [["index", "noise"], ["method", "iterations"]],
        dict(index=index, noise=noise, method=method, iterations=iterations),
    )
