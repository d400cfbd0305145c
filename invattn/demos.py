"""The logic behind the lessons' interactive demos: plain functions of the controls, unit-tested; widgets only draw.

* :func:`banach_state` (lesson 01): fixed-point iteration of x ↦ y − g(x) for g(x) = c·sin x (1-D) or
  c·(sin x₂, sin x₁) (2-D), its error against the a-priori bound, and the preimages of y: one when c < 1, several
  (the fold) when c > 1.
* :func:`bound_explorer_state` (lesson 02): one certified attention kind at N positions: the raw bound before the
  output gain, the certified bound after it, and the measured Lipschitz constant.
* :func:`attention_map_state` (lesson 03): the weights one query position of a photograph puts on every position.
* :func:`latent_state` (lesson 08): samples of the trained density model at a temperature, a straight walk in latent
  space between two encoded digits, and how far each decoded image re-encodes from its latent.
* :func:`two_roads_state` (lesson 09): one digit's final representation Φ(x) (optionally perturbed) inverted by
  i-RevNet, the i-ResNet classifier and the unconstrained ResNet; :func:`two_roads_models` loads (or trains) them.

Every function raises ``ValueError`` with a message a widget can show when a combination of controls is refused.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._validation import check_choice, check_finite, check_model, check_positive_float, check_positive_int
from .attention import KINDS, make_attention
from .blocks import Squeeze
from .lipschitz import estimate_lipschitz

__all__ = [
    "BanachState",
    "banach_state",
    "BoundState",
    "bound_explorer_state",
    "MapState",
    "attention_map_state",
    "LatentState",
    "latent_state",
    "TwoRoadsState",
    "two_roads_state",
    "two_roads_models",
    "BANACH_MAPS",
    "MAX_STEPS",
    "MAX_POSITIONS",
    "MAX_TEMPERATURE",
    "ROADS",
]

BANACH_MAPS = ("1d", "2d")
MAX_STEPS = 500  # the iteration sliders stop here: each step is one evaluation, and the plot is of every iterate
# The bound explorer measures Lip(g) by 10 Jacobian power iterations on one √N×√N input: a fraction of a second at
# N = 256 and seconds at N = 1024 on one CPU core (python -m invattn.bench demos); N = 4096 took 40–100 s, so the
# slider stops at 1024.
MAX_POSITIONS = 1024
DEFAULT_Y = {"1d": (3.0,), "2d": (0.5, -0.3)}


# -- lesson 01: Banach's iteration ---------------------------------------------------------------
def _residual_map(points: np.ndarray, c: float) -> np.ndarray:
    """g(x) = c·sin x (1-D) or c·(sin x₂, sin x₁) (2-D), for points [..., d]."""
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
            step = np.linalg.solve(jacobian, x + _residual_map(x, c) - y)
            x = x - step
            if np.abs(step).max() < 1e-14:
                break
        if np.linalg.norm(x + _residual_map(x, c) - y) < 1e-11 and not any(np.linalg.norm(x - f) < 1e-7 for f in found):
            found.append(x)
    return np.array(sorted(found, key=lambda p: tuple(p))).reshape(-1, 2)


@dataclass
class BanachState:
    """The iteration x_{k+1} = y − g(x_k) for one setting of the controls.

    ``iterates`` [steps + 1, d]; ``preimages`` [k, d] (every solution of x + g(x) = y); ``errors[k]`` the distance
    from x_k to the nearest preimage; ``bound[k]`` = c^k/(1 − c)·‖x₁ − x₀‖ when c < 1 (empty otherwise).
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
    """Run ``steps`` fixed-point iterations of x ↦ y − g(x) from ``x0`` (default: y) for the ``map`` "1d"
    (g = c·sin x) or "2d" (g = c·(sin x₂, sin x₁)); Lip(g) = c (lesson 01). ``c`` in (0, 4]: above 1 the map folds.
    Raises ``ValueError`` for another map, c outside (0, 4], steps outside 1..500, or y / x0 of the wrong length or
    not finite."""
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
        iterates.append(y_arr - _residual_map(iterates[-1], c))
    path = np.stack(iterates)
    roots = _preimages(y_arr, c)
    errors = [float(np.linalg.norm(roots - p, axis=1).min()) for p in path] if len(roots) else [math.nan] * len(path)
    bound = []
    if c < 1:
        first = float(np.linalg.norm(path[1] - path[0]))
        bound = [c**k / (1 - c) * first for k in range(len(path))]
    return BanachState(map=map, c=c, y=y_arr, iterates=path, preimages=roots, errors=errors, bound=bound)


# -- lesson 02: the bound explorer --------------------------------------------------------------
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
    """One attention kind at N positions: ``raw`` = ‖W_o‖·L_attn before the gain, ``certified`` after it (≤ coeff),
    ``measured`` a lower bound on Lip(g) from :func:`invattn.estimate_lipschitz` on random inputs."""

    kind: str
    n_positions: int
    options: dict
    raw: float
    certified: float
    measured: float
    coeff: float

    @property
    def gain(self) -> float:
        return self.certified / self.raw if self.raw > 0 and math.isfinite(self.raw) else 0.0

    def summary(self) -> str:
        used = ", ".join(f"{name} {value:g}" for name, value in self.options.items()) or "no options"
        return (
            f"{self.kind} ({used}), N = {self.n_positions}: raw bound {self.raw:.3g}, certified {self.certified:.3g} "
            f"(≤ c = {self.coeff:g}), measured {self.measured:.3g} (≤ certified: {self.measured <= self.certified})"
        )


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
    """Build attention ``kind`` (random weights from ``seed``) with the given options and report its bounds at
    N = ``n_positions`` (a square number: the input is one √N×√N map, [1, channels, √N, √N] uniform in [−1, 1)).

    ``use``: the options the caller set on purpose (default: those the kind has, see :data:`OPTIONS`). An option in
    ``use`` that the kind does not have is refused. Raises ``ValueError`` (a message for the widget) for an unknown
    kind, an option the kind lacks, N not a square in 4..1024, or a value the kind refuses."""
    check_choice(kind, "kind", KINDS)
    check_positive_int(n_positions, "n_positions", minimum=4)
    side = math.isqrt(n_positions)
    if side * side != n_positions or n_positions > MAX_POSITIONS:
        raise ValueError(
            f"N = {n_positions}: the explorer uses square maps with 4 ≤ N ≤ {MAX_POSITIONS} (N = 16, 64, 256, …)"
        )
    allowed = OPTIONS[kind]
    chosen = allowed if use is None else tuple(use)
    extra = [name for name in chosen if name not in allowed]
    if extra:
        raise ValueError(f"{kind} has no {', '.join(extra)} (its options: {', '.join(allowed)})")
    values = dict(radius=radius, temperature=temperature, reduction=reduction)
    options = {name: values[name] for name in chosen}
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


# -- lesson 03: the attention-map explorer ------------------------------------------------------
@dataclass
class MapState:
    """The weights that query position (row, col) of the squeezed image puts on every position: ``weights``
    [H/2, W/2] (they sum to 1), and ``image`` [3, H, W] for the overlay."""

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
    """Attention ``kind`` (random weights from ``seed``) on ``image`` [3, H, W] in [0, 1] (H, W even), squeezed to
    12 channels at H/2 × W/2 positions (lesson 03); return the map row of query position (``row``, ``col``).
    ``temperature`` and ``radius`` are passed to the kinds that have them (:data:`OPTIONS`) and ignored by the others.
    Raises ``ValueError`` for a position outside the squeezed grid, an image of the wrong shape, or a value the kind
    refuses."""
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


# -- lesson 08: sampling and latent walks ---------------------------------------------------------
MAX_TEMPERATURE = 1.5  # the prior's standard deviation times this; beyond it the digits dissolve into noise


def _relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Per sample ‖a − b‖/‖b‖ over latent pieces (lists of [B, ...] tensors): [B]."""
    difference = sum((x - y).flatten(1).pow(2).sum(1) for x, y in zip(a, b))
    size = sum(y.flatten(1).pow(2).sum(1) for y in b)
    return (difference / size.clamp_min(1e-300)).sqrt()


def _check_images(images: torch.Tensor, expected: tuple[int, int, int], who: str) -> None:
    """Images [N, C, H, W] of floats in [0, 1] (pixels/255), N ≥ 1, of the shape the model takes; else ValueError."""
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


def _check_index(index: int, name: str, count: int) -> int:
    check_positive_int(index, name, minimum=0)  # TypeError for a float or a bool
    if index >= count:
        raise ValueError(f"{name} {index} is not among the {count} images (0 to {count - 1})")
    return int(index)


def _check_tol(tol: float, dtype: torch.dtype | None = None) -> float:
    """``tol`` in (0, 1); with ``dtype``, also not below the 4 unit roundoffs of ``dtype`` that a solve accepts
    (:func:`invattn.solvers.check_tol`), so a tolerance the model's dtype cannot reach is refused before any work."""
    tol = check_positive_float(tol, "tol")
    if tol >= 1:
        raise ValueError(f"tol is a relative tolerance and must be in (0, 1), got {tol}")
    from .solvers import check_tol

    return tol if dtype is None else check_tol(tol, dtype)


@dataclass
class LatentState:
    """Samples and a latent walk of a trained :class:`invattn.models.ResidualFlow`.

    ``samples`` [count, C, H, W] and ``walk`` [steps, C, H, W] are decoded images on the model's scale (centred pixels:
    data lie in [−0.5, 0.5), samples at a high temperature may leave it); ``endpoints`` [2, C, H, W] the two encoded
    images x_a, x_b on the same scale. ``sample_errors`` [count] and ``walk_errors`` [steps] are the re-encoding errors
    ‖f(f⁻¹(z)) − z‖/‖z‖ of every decoded image; ``endpoint_error`` the largest ‖f⁻¹(f(x)) − x‖/‖x‖ of x_a and x_b."""

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
        return float(torch.cat([self.sample_errors, self.walk_errors]).max())

    def summary(self) -> str:
        return (
            f"T = {self.temperature:g}, seed {self.seed}: {len(self.samples)} samples; {len(self.walk)} images on the "
            f"line from image {self.first} to image {self.second}; largest re-encoding error "
            f"{self.reencoding_error:.1e}; the two images reconstructed to {self.endpoint_error:.1e}"
        )


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
    """``count`` samples of ``model`` (a trained :class:`~invattn.models.ResidualFlow`) at ``temperature`` (the
    prior's standard deviation scaled by it, draws from the generator seeded with ``seed``), and ``steps`` images
    decoded from the straight line z_t = (1 − t)·f(x_a) + t·f(x_b), t = 0, 1/(steps − 1), …, 1, between images
    ``first`` and ``second`` of ``images`` ([N, C, H, W] in [0, 1], encoded at the centre of each 8-bit bin:
    (round(255·x) + ½)/256 − ½). Every decoded image is encoded again and its relative distance to its z reported: the
    inverse's error, seen from the latent side. ``tol``: the solver's relative tolerance per block
    (:meth:`invattn.InvertibleResidual.inverse`); the re-encoding error is measured, not bounded by it.

    Raises ``ValueError`` for a temperature outside [0, MAX_TEMPERATURE], an index outside ``images``, ``count`` < 1,
    ``steps`` < 2, ``tol`` outside (0, 1) or below 4 unit roundoffs of the model's dtype (2.4e-7 in float32: the
    residual's own rounding), images that are not floats in [0, 1] of the model's shape (or empty or non-finite);
    ``TypeError`` for a non-integer index, count, steps or seed; :class:`invattn.InversionError` if an inverse does not
    reach ``tol`` (within max_iter, or its residual stalls at the rounding floor above it)."""
    check_model(model, "model")
    temperature = float(temperature)
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be in [0, {MAX_TEMPERATURE}], got {temperature}")
    count = check_positive_int(count, "count")
    steps = check_positive_int(steps, "steps", minimum=2)
    seed = check_positive_int(seed, "seed", minimum=0)
    tol = _check_tol(tol, next(model.parameters()).dtype)
    config = model.config
    _check_images(images, (config.in_channels, config.image_size, config.image_size), "this model")
    first, second = _check_index(first, "first", len(images)), _check_index(second, "second", len(images))
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
        endpoint_error = float(((walk[[0, -1]] - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).max())
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


# -- lesson 09: two roads back from a classifier's features ----------------------------------------
ROADS = ("i-RevNet", "i-ResNet", "ResNet")
_ROAD_MODELS = {  # file name, architecture, model overrides of the "digits" preset (lesson 09's models)
    "i-RevNet": ("irevnet.pt", "irevnet", {}),
    "i-ResNet": ("iresnet-c0.9.pt", "iresnet", {"coeff": 0.9}),
    "ResNet": ("resnet-unconstrained.pt", "iresnet", {"coeff": None}),
}


def _check_road(road: str, model) -> None:
    """ValueError unless ``model`` is what ``road`` names: an IRevNet, a constrained or an unconstrained i-ResNet."""
    from .classifiers import IResNetClassifier, IRevNet

    check_model(model, f"models[{road!r}]")
    config = getattr(model, "config", None)
    if road == "i-RevNet":
        fits = isinstance(model, IRevNet)
    else:
        fits = isinstance(model, IResNetClassifier) and ((config.coeff is None) == (road == "ResNet"))
    if not fits:
        wanted = {
            "i-RevNet": "an IRevNet",
            "i-ResNet": "an IResNetClassifier with a coeff",
            "ResNet": "an IResNetClassifier with coeff=None",
        }[road]
        found = type(model).__name__ + (f" (coeff {config.coeff})" if hasattr(config, "coeff") else "")
        raise ValueError(f"the {road} road needs {wanted}, got {found}")


def two_roads_models(
    folder: str | Path, train_missing: bool = True, epochs: int = 12, progress_bar: bool = True
) -> dict:
    """The three digits classifiers of lesson 09, {road: model in eval mode}: i-RevNet (injective variant),
    the i-ResNet classifier at c = 0.9, and the unconstrained ResNet of the same shape.

    Each is loaded from ``folder`` (:func:`invattn.classifiers.load_classifier`); a missing one is trained on the
    offline digits for ``epochs`` epochs (the "digits" preset, about 10–40 s each on a CPU, with a progress bar unless
    ``progress_bar=False``) and saved there, unless ``train_missing=False``, which raises ``FileNotFoundError``
    instead. Raises ``ValueError`` for a file that is not a classifier, or holds another model than its name says
    (an i-ResNet in ``irevnet.pt``, another c, …), and for ``epochs`` < 1."""
    from .classifiers import load_classifier, save_classifier
    from .train import train

    epochs = check_positive_int(epochs, "epochs")
    folder = Path(folder)
    models = {}
    for road, (name, architecture, overrides) in _ROAD_MODELS.items():
        path = folder / name
        if not path.is_file():
            if not train_missing:
                raise FileNotFoundError(
                    f"no {road} classifier at {path}: call two_roads_models({str(folder)!r}) to "
                    "train the three (about a minute on a CPU)"
                )
            with tempfile.TemporaryDirectory() as run:
                result = train(
                    "digits",
                    run,
                    task="classify",
                    architecture=architecture,
                    model_overrides=overrides,
                    training_overrides=dict(epochs=epochs, checkpoint_every=10_000),
                    progress_bar=progress_bar,
                )
            save_classifier(result["model"].eval(), path, test_accuracy=result["test_accuracy"], epochs=epochs)
        model = load_classifier(path)[0]
        try:
            _check_road(road, model)
            if "coeff" in overrides and model.config.coeff != overrides["coeff"]:
                raise ValueError(f"the {road} road needs coeff {overrides['coeff']}, got {model.config.coeff}")
        except ValueError as error:
            raise ValueError(f"{path}: {error}; delete it and call two_roads_models again to retrain") from None
        models[road] = model
    return models


@dataclass
class TwoRoadsState:
    """One test image ``image`` [C, H, W] (centred: pixels − ½) and, per road (:data:`ROADS`), the inverse of its
    (perturbed) features (``reconstructions`` [C, H, W]), the relative error ‖x̂ − x‖/‖x‖, the class the model
    predicts for the clean image, whether the solve converged (None: i-RevNet's analytic inverse) and the evaluations
    of g it took (0 for i-RevNet). Tensors are on the CPU."""

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
    """Test image ``index`` of ``images`` ([N, C, H, W] in [0, 1], centred to x − ½ as the classifiers were trained)
    through each model of ``models`` ({road: classifier} for every road of :data:`ROADS`, see
    :func:`two_roads_models`; any device and dtype: the image follows each model) to its final features Φ(x); add
    noise of relative size ``noise`` (‖δ‖ = noise·‖Φ(x)‖, one fixed direction drawn from ``seed``); invert. i-RevNet
    inverts analytically; the two residual networks by ``method`` with at most ``iterations`` steps per block and
    relative tolerance ``tol`` per block (a solve that stops short is shown, not raised: the unconstrained ResNet's
    often does).

    Raises ``ValueError`` for a road missing from ``models`` or holding another kind of model, an index outside
    ``images``, a noise outside [0, 1], an unknown method, ``iterations`` < 1, ``tol`` outside (0, 1), images that are
    not floats in [0, 1] of the models' input shape (or non-finite), or an image that is 0 after centring (its relative
    error is undefined); ``TypeError`` for a non-integer index, iterations or seed."""
    from .solvers import METHODS

    missing = [road for road in ROADS if road not in models]
    if missing:
        raise ValueError(f"models needs every road of {ROADS}; missing {missing}")
    for road in ROADS:
        _check_road(road, models[road])
    check_choice(method, "method", METHODS)
    iterations = check_positive_int(iterations, "iterations")
    seed = check_positive_int(seed, "seed", minimum=0)
    tol = _check_tol(tol)
    config = models["i-RevNet"].config
    _check_images(images, (config.in_channels, config.image_size, config.image_size), "these classifiers")
    index = _check_index(index, "test image", len(images))
    noise = float(noise)
    if not 0 <= noise <= 1:
        raise ValueError(f"noise is relative to ‖Φ(x)‖ and must be in [0, 1], got {noise}")
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
        model = models[road]
        x = image.to(next(model.parameters()))
        with torch.no_grad():
            phi = model.features(x)
            state.predictions[road] = int(model.logits_from_features(phi).argmax(1))
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
        finite = bool(torch.isfinite(x_hat).all())
        state.reconstructions[road] = x_hat[0].cpu()
        state.errors[road] = float((x_hat - x).norm() / x.norm()) if finite else math.inf
        state.converged[road] = converged if finite or converged is None else False
        state.evaluations[road] = evaluations
    return state
