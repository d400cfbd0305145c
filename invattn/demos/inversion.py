"""Lesson 04's demo, inverting one invertible attention block y = x + g(x) step by step.

:func:`error_per_iteration` runs a set number of solver steps and records the relative error after each;
:func:`inversion_demo_state` squeezes an image to 12 channels, applies one block, perturbs y with noise and inverts it,
beside the a-priori bound L^k/(1 − L)·‖x₁ − x₀‖ (L = Lip(g)); :func:`plot_inversion_demo` draws a state;
:func:`inversion_demo` wires both to sliders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .._validation import check_choice, check_coeff, check_finite, check_positive_int
from ..attention import KINDS, PAPER_KINDS, make_attention
from ..blocks import InvertibleResidual, Squeeze
from ..lipschitz import lipschitz_bound
from ..norms import relative_error
from ..solvers import METHODS
from .front import build_controls, demo_box

__all__ = [
    "VARIANTS",
    "DemoState",
    "error_map_range",
    "error_per_iteration",
    "inversion_demo",
    "inversion_demo_state",
    "plot_inversion_demo",
]

VARIANTS = ("certified", "paper")


@dataclass
class DemoState:
    """One state of the inversion demo (lesson 04): the pictures and the error curve beside its bound.

    Arguments:
        kind, variant, coeff, method, iterations, noise: the settings (see :func:`inversion_demo_state`).
        original: [3, H, W] in [0, 1], float32, the image.
        reconstruction: [3, H, W] in [0, 1], float32, the last iterate (NaN shown as 0.5, clamped to [0, 1]).
        error_map: [H, W], float32, the largest |x_k − x| over the channels per pixel (NaN shown as 1).
        errors: the relative error ‖x_k − x‖/‖x‖ after k = 0..iterations steps.
        bound: the a-priori bound L^k/(1 − L)·‖x₁ − x₀‖/‖x‖ per step (certified only; empty otherwise).
        noise_floor: ‖δ‖/((1 − L)‖x‖), where the error must level off for noise δ on y (0 without noise or bound).
        lipschitz: L = Lip(g), the certified contraction rate (inf for the paper variant).
    """

    kind: str
    variant: str
    coeff: float
    method: str
    iterations: int
    noise: float
    original: torch.Tensor
    reconstruction: torch.Tensor
    error_map: torch.Tensor
    errors: list[float] = field(default_factory=list)
    bound: list[float] = field(default_factory=list)
    noise_floor: float = 0.0
    lipschitz: float = math.inf

    @property
    def final_error(self) -> float:
        """The relative error after the last iteration."""
        return self.errors[-1]

    def summary(self) -> str:
        """One plain line: the settings and the final relative error."""
        return (
            f"{self.kind} ({self.variant}), c = {self.coeff:.2f}, {self.method}, {self.iterations} iterations, "
            f"noise {self.noise:g}: relative error {self.final_error:.2e}"
        )


def error_per_iteration(
    block: InvertibleResidual, x: torch.Tensor, y: torch.Tensor, method: str, iterations: int, **options
) -> tuple[list[float], torch.Tensor]:
    """Run exactly ``iterations`` steps of ``method`` towards the x with block(x) = y, from x_0 = y, recording errors.

    Arguments:
        block: the invertible residual block F(x) = x + g(x).
        x: the true preimage [B, ...].
        y: F(x) (possibly perturbed), [B, ...].
        method: one of :data:`invattn.solvers.METHODS`.
        iterations: the number of steps.
        **options: passed to :meth:`invattn.InvertibleResidual.inverse` (``rate_gate``, ``allow_uncertified``, …).
    Returns:
        ([‖x_k − x‖/‖x‖ for k = 0..iterations], the largest over the batch; the last iterate [B, ...]).

    >>> import invattn as ia
    >>> torch.manual_seed(0) and None
    >>> g = torch.nn.Sequential(ia.spectral_norm(torch.nn.Linear(4, 4), 0.5), torch.nn.Tanh())
    >>> block = ia.InvertibleResidual(g).double()
    >>> x = torch.randn(3, 4, dtype=torch.float64)
    >>> errors, x_last = error_per_iteration(block, x, block(x).detach(), "fixed_point", 5)
    >>> len(errors), all(later < earlier for earlier, later in zip(errors, errors[1:])), x_last.shape
    (6, True, torch.Size([3, 4]))
    """
    errors: list[float] = []
    record = lambda k, iterate: errors.append(float(relative_error(iterate, x).max()))  # noqa: E731
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


def _check_settings(image: torch.Tensor, kind: str, coeff: float, iterations: int, method: str, noise, variant: str):
    """The checked coeff; ValueError for any setting :func:`inversion_demo_state` refuses."""
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
    return coeff


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
    """Invert one attention block y = x + g(x) on an image with a set number of steps, after noise on y (lesson 04).

    Everything runs in float64 so that the curve shows the method, not rounding. For the certified variant,
    L = Lip(g) ≤ c bounds the error: ‖x_k − x‖ ≤ L^k/(1 − L)·‖x₁ − x₀‖ without noise, and noise δ on y moves the
    fixed point by at most ‖δ‖/(1 − L). Anderson mixes from its second step (``rate_gate=0``), the textbook algorithm,
    not the library's gated default. The block's weights depend only on (kind, variant, coeff, seed), so moving the
    iteration or noise sliders re-uses them; the noise is drawn from a generator seeded with ``seed + 1``.

    Arguments:
        image: [3, H, W] in [0, 1], H and W even (centred and squeezed to [1, 12, H/2, W/2]).
        kind: one of :data:`invattn.KINDS`.
        coeff: c, in (0, 1).
        iterations: solver steps, ≥ 1.
        method: one of :data:`invattn.solvers.METHODS`.
        noise: the standard deviation of the Gaussian noise on y, in [0, 1).
        variant: "certified" or "paper" (the paper's formulation, for :data:`invattn.PAPER_KINDS`: no bound).
        seed: the weights' seed.
    Returns:
        a :class:`DemoState`.
    Raises:
        ValueError: for an unknown kind, variant or method, a paper variant the kind lacks, c outside (0, 1),
            iterations < 1, an image of the wrong shape or not finite, or noise outside [0, 1).
    """
    coeff = _check_settings(image, kind, coeff, iterations, method, noise, variant)
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
    lipschitz = lipschitz_bound(block.g) if variant == "certified" else math.inf  # L = Lip(g), the contraction rate
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
    """The log colour range (vmin, vmax) that shows an error map's own structure at any error level.

    Arguments:
        error_map: [H, W], ≥ 0 (inf and nan ignored).
        decades: the most powers of ten between vmin and vmax.
    Returns:
        (vmin, vmax): vmax the largest finite value, vmin the smallest positive one but at most ``decades`` powers of
        ten below vmax; (1e-20, 1e-16) for an all-zero map, drawn in the darkest colour.
    """
    finite = error_map[torch.isfinite(error_map) & (error_map > 0)]
    if not finite.numel():
        return 1e-20, 1e-16
    top = float(finite.max())
    bottom = max(float(finite.min()), top * 10.0 ** (-decades))
    return (bottom, top) if bottom < top else (top / 10, top)


def _draw_curve(curve, state: DemoState) -> None:
    """The error per iteration (log scale), the a-priori bound and the noise bound, on one axes."""
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


def plot_inversion_demo(state: DemoState, figure: Figure | None = None) -> Figure:
    """Draw a :class:`DemoState`: original | reconstruction | error map | error per iteration beside its bound.

    Arguments:
        state: from :func:`inversion_demo_state`.
        figure: a matplotlib figure to draw into (cleared first); default: a new 11 × 3 in one.
    Returns:
        the figure: four panels and the error map's colour bar (log colours, :func:`error_map_range`).
    """
    fig = figure or plt.figure(figsize=(11, 3.0))
    fig.clear()
    fig.set_layout_engine("constrained", wspace=0.08)  # constrained: tight_layout leaves wide gaps around the images
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
    _draw_curve(axes[3], state)
    return fig


def inversion_demo(
    image: torch.Tensor,
    kind: str = "concat",
    coeff: float = 0.9,
    iterations: int = 20,
    method: str = "fixed_point",
    noise: float = 0.0,
    variant: str = "certified",
) -> widgets.VBox:
    """Lesson 04's interactive demo: kind, variant, c, iterations, method and noise on y.

    The figure and summary update when a slider is released (``continuous_update=False``, so a slow kernel shows the
    last state, never a mix); a refused combination (the paper variant of a kind that has none) is shown in bold.

    Arguments:
        image: [3, H, W] in [0, 1], H and W even.
        kind, coeff, iterations, method, noise, variant: the starting values (see :func:`inversion_demo_state`).
    Returns:
        the ``ipywidgets.VBox`` of :func:`invattn.demos.front.demo_box`; ``.state`` holds the latest
        :class:`DemoState`.
    Raises:
        ValueError: when a starting value is not one its control offers, or is refused by
            :func:`inversion_demo_state`.
    """
    controls = build_controls(
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
    return demo_box(
        controls,
        lambda **values: inversion_demo_state(image, **values),
        plot_inversion_demo,
        [["kind", "coeff", "iterations"], ["method", "variant"], ["noise"]],
        dict(kind=kind, coeff=coeff, iterations=iterations, method=method, noise=noise, variant=variant),
    )
