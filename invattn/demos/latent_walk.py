"""Lesson 08's demo, samples and latent walks: samples of the trained density model at a temperature, a straight walk
in latent space between two encoded digits, and how far each decoded image re-encodes from its latent.
:func:`latent_state` computes, :func:`plot_latent` draws, :func:`latent_demo` wires both to sliders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .._validation import check_model, check_positive_int
from ..norms import relative_error
from .front import build_controls, check_images, check_index, check_tol, demo_box, tiles

__all__ = ["MAX_TEMPERATURE", "LatentState", "latent_demo", "latent_state", "plot_latent"]

MAX_TEMPERATURE = 1.5  # the prior's standard deviation times this; beyond it the digits dissolve into noise


def _relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Per sample ‖a − b‖/‖b‖ over latent pieces (lists of [B, ...] tensors): [B]."""
    difference = sum((x - y).flatten(1).pow(2).sum(1) for x, y in zip(a, b))
    size = sum(y.flatten(1).pow(2).sum(1) for y in b)
    return (difference / size.clamp_min(1e-300)).sqrt()


@dataclass
class LatentState:
    """Samples and a latent walk of a trained :class:`invattn.models.ResidualFlow` (lesson 08); tensors on the CPU.

    Images are on the model's scale (centred pixels: data lie in [−0.5, 0.5), samples at a high temperature may
    leave it).

    Arguments:
        temperature: T, the prior's standard deviation is multiplied by it.
        seed: the samples' seed.
        first, second: the indices of x_a and x_b in the images.
        samples: [count, C, H, W], decoded samples f⁻¹(T·z).
        walk: [steps, C, H, W], the images decoded along the line from f(x_a) to f(x_b).
        endpoints: [2, C, H, W], the two encoded images x_a, x_b.
        sample_errors: [count], the re-encoding errors ‖f(f⁻¹(z)) − z‖/‖z‖ of the samples.
        walk_errors: [steps], the same for the walk.
        endpoint_error: the largest ‖f⁻¹(f(x)) − x‖/‖x‖ of x_a and x_b.
    """

    temperature: float
    seed: int
    first: int
    second: int
    samples: torch.Tensor
    walk: torch.Tensor
    endpoints: torch.Tensor
    sample_errors: torch.Tensor
    walk_errors: torch.Tensor
    endpoint_error: float

    @property
    def reencoding_error(self) -> float:
        """The largest re-encoding error of the samples and the walk."""
        return float(torch.cat([self.sample_errors, self.walk_errors]).max())

    def summary(self) -> str:
        """One plain line: what was drawn and the largest errors."""
        return (
            f"T = {self.temperature:g}, seed {self.seed}: {len(self.samples)} samples; {len(self.walk)} images on the "
            f"line from image {self.first} to image {self.second}; largest re-encoding error "
            f"{self.reencoding_error:.1e}; the two images reconstructed to {self.endpoint_error:.1e}"
        )


def _check_settings(model, images, temperature, seed, first, second, count, steps, tol) -> tuple:
    """(temperature, seed, first, second, count, steps, tol) checked as :func:`latent_state` documents."""
    check_model(model, "model")
    temperature = float(temperature)
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be in [0, {MAX_TEMPERATURE}], got {temperature}")
    count = check_positive_int(count, "count")
    steps = check_positive_int(steps, "steps", minimum=2)
    seed = check_positive_int(seed, "seed", minimum=0)
    tol = check_tol(tol, next(model.parameters()).dtype)
    config = model.config
    check_images(images, (config.in_channels, config.image_size, config.image_size), "this model")
    first, second = check_index(first, "first", len(images)), check_index(second, "second", len(images))
    return temperature, seed, first, second, count, steps, tol


def latent_state(
    model,
    images: torch.Tensor,
    temperature: float = 0.8,
    seed: int = 0,
    first: int = 0,
    second: int = 1,
    count: int = 16,
    steps: int = 8,
    tol: float = 1e-6,
) -> LatentState:
    """Samples of a trained density model at a temperature, and the images decoded along a line in latent space.

    ``count`` samples f⁻¹(T·z), z drawn from the prior by a generator seeded with ``seed``; and ``steps`` images decoded
    from z_t = (1 − t)·f(x_a) + t·f(x_b), t = 0, 1/(steps − 1), …, 1, between images ``first`` and ``second``,
    encoded at the centre of each 8-bit bin: (round(255·x) + ½)/256 − ½ (lesson 08). Every decoded image is encoded
    again and its relative distance to its z reported: the inverse's error, seen from the latent side (measured, not
    bounded by ``tol``).

    Arguments:
        model: a trained :class:`~invattn.models.ResidualFlow` (any device and dtype).
        images: [N, C, H, W] in [0, 1] of the model's shape (e.g. held-out digits).
        temperature: T, in [0, :data:`MAX_TEMPERATURE`].
        seed: the samples' seed, ≥ 0.
        first, second: the indices of x_a and x_b in ``images``.
        count: samples, ≥ 1.
        steps: images along the line, ≥ 2.
        tol: the solver's relative tolerance per block (:meth:`invattn.InvertibleResidual.inverse`).
    Returns:
        a :class:`LatentState` (tensors on the CPU).
    Raises:
        ValueError: for a temperature outside [0, MAX_TEMPERATURE], an index outside ``images``, count < 1, steps < 2,
            tol outside (0, 1) or below 4 unit roundoffs of the model's dtype (2.4e-7 in float32: the residual's own
            rounding), or images that are not floats in [0, 1] of the model's shape (or empty or non-finite).
        TypeError: for a non-integer index, count, steps or seed.
        invattn.InversionError: if an inverse does not reach ``tol`` (within max_iter, or its residual stalls at the
            rounding floor above it).
    """
    temperature, seed, first, second, count, steps, tol = _check_settings(
        model, images, temperature, seed, first, second, count, steps, tol
    )
    parameter = next(model.parameters())
    with torch.no_grad():
        drawn = model.prior_sample(count, temperature, torch.Generator().manual_seed(seed))
        samples = model.inverse(drawn, tol=tol)
        sample_errors = _relative(model.latents(samples), drawn)
        x = ((torch.round(images[[first, second]].detach() * 255) + 0.5) / 256 - 0.5).to(parameter)
        ends = model.latents(x)
        t = torch.linspace(0, 1, steps, dtype=parameter.dtype, device=parameter.device)
        line = [(1 - t).view(-1, 1, 1, 1) * z[:1] + t.view(-1, 1, 1, 1) * z[1:] for z in ends]
        walk = model.inverse(line, tol=tol)
        walk_errors = _relative(model.latents(walk), line)
        endpoint_error = float(relative_error(walk[[0, -1]], x).max())
    return LatentState(
        temperature=temperature,
        seed=seed,
        first=first,
        second=second,
        samples=samples.cpu(),
        walk=walk.cpu(),
        endpoints=x.cpu(),
        sample_errors=sample_errors.cpu(),
        walk_errors=walk_errors.cpu(),
        endpoint_error=endpoint_error,
    )


def plot_latent(state: LatentState, figure: Figure | None = None) -> Figure:
    """Draw a :class:`LatentState`: the samples, the walk with the digits at its ends, and the re-encoding errors.

    Arguments:
        state: from :func:`latent_state`.
        figure: a matplotlib figure to draw into (cleared first); default: a new 11 × 3.6 in one.
    Returns:
        the figure; the errors on a log scale, per image.
    """
    fig = figure or plt.figure(figsize=(11, 3.6))
    fig.clear()
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 1.6, 1.1], height_ratios=[1, 1])
    samples = fig.add_subplot(grid[:, 0])
    samples.imshow(tiles(state.samples, math.ceil(math.sqrt(len(state.samples)))), cmap="gray", vmin=0, vmax=1)
    samples.set_title(f"samples, T = {state.temperature:g}, seed {state.seed}", fontsize=9)
    ends = fig.add_subplot(grid[0, 1])
    ends.imshow(tiles(torch.stack([state.endpoints[0], state.endpoints[1]]), 2), cmap="gray", vmin=0, vmax=1)
    ends.set_title(f"x_a, x_b: images {state.first} and {state.second}", fontsize=9)
    walk = fig.add_subplot(grid[1, 1])
    walk.imshow(tiles(state.walk, len(state.walk)), cmap="gray", vmin=0, vmax=1)
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


def latent_demo(
    model, images: torch.Tensor, temperature: float = 0.8, seed: int = 0, first: int = 0, second: int = 1
) -> widgets.VBox:
    """Lesson 08's interactive demo: temperature (0 to 1.5), seed (0 to 99, or the given seed), and the two images.

    Arguments:
        model: a trained :class:`~invattn.models.ResidualFlow`.
        images: [N, C, H, W] in [0, 1], e.g. held-out digits (the image sliders span them).
        temperature, seed, first, second: the starting values (see :func:`latent_state`).
    Returns:
        the ``ipywidgets.VBox`` of :func:`invattn.demos.front.demo_box`; ``.state`` holds the latest
        :class:`LatentState`.
    Raises:
        ValueError: when a starting value is outside its control's range, or refused by :func:`latent_state`.
    """
    controls = build_controls(
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
    return demo_box(
        controls,
        lambda **values: latent_state(model, images, **values),
        plot_latent,
        [["temperature", "seed"], ["first", "second"]],
        dict(temperature=temperature, seed=seed, first=first, second=second),
    )
