"""Density estimation in two dimensions with a small i-ResNet: toy data, the exact log-density, training,
and the arrays lesson 06 plots.

The model is F = (x + g_K(x)) ∘ ActNorm ∘ … ∘ (x + g_1(x)) ∘ ActNorm on ℝ², each g a perceptron with one hidden
layer, SN-Linear(2→w) → LipSwish → SN-Linear(w→2) whose linear layers have certified operator norm ≤ c, so
Lip(g) ≤ c² < 1 and every block is invertible (Behrmann et al., 2019, "Invertible Residual Networks"; the
LipSwish activation and the exact-likelihood view are from Chen et al., 2019, "Residual Flows for Invertible
Generative Modeling"). By the change of variables, with z = F(x) and a standard normal prior,

    log p(x) = log N(F(x); 0, I) + log |det J_F(x)|,

and in two dimensions J_F(x) is a 2×2 matrix that ``torch.func.jacrev`` (vectorised over points by ``vmap``)
computes exactly, so no log-determinant estimator is needed. Every log-density here is in **nats** (natural
logarithm); divide by ln 2 for bits.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ._validation import check_coeff, check_finite, check_positive_float, check_positive_int
from .blocks import ActNorm, InvertibleResidual, InvertibleSequential
from .lipschitz import LipSwish, spectral_norm
from .progress import progress
from .solvers import SolverOptions, check_tol

__all__ = [
    "DATASETS",
    "two_moons",
    "ring_of_gaussians",
    "checkerboard",
    "sample_data",
    "make_flow",
    "latent_and_log_det",
    "log_density",
    "mean_log_likelihood",
    "train_flow",
    "invert",
    "sample_flow",
    "log_density_on_grid",
    "deformed_grid",
]


# -- data -----------------------------------------------------------------------------------------------------


def two_moons(n: int, generator: torch.Generator, noise: float = 0.1) -> torch.Tensor:
    """n points on two interleaved half circles of radius 2 with Gaussian noise of std 2·``noise``.

    Centred near the origin (x₁ in about [−3.5, 3.5], x₂ in about [−2, 2]).

    Arguments:
        n: the number of points, ≥ 1.
        generator: the CPU ``torch.Generator`` every draw comes from.
        noise: the noise's standard deviation before the ×2 scaling, > 0 (default 0.1).
    Returns:
        points (n, 2), float32.
    Raises:
        ValueError: a non-positive ``n`` or ``noise`` (``TypeError`` for ones of the wrong type).
    """
    check_positive_int(n, "n")
    check_positive_float(noise, "noise")
    angle = math.pi * torch.rand(n, generator=generator)
    lower = torch.rand(n, generator=generator) < 0.5
    upper_moon = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    lower_moon = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
    points = torch.where(lower[:, None], lower_moon, upper_moon)
    points = points + noise * torch.randn(n, 2, generator=generator)
    return 2.0 * (points - torch.tensor([0.5, 0.25]))


def ring_of_gaussians(n: int, generator: torch.Generator, std: float = 0.3) -> torch.Tensor:
    """n points from an equal mixture of 8 Gaussians N(3·(cos 2πk/8, sin 2πk/8), std²·I), k = 0, …, 7.

    The means are evenly spaced on the circle of radius 3.

    Arguments:
        n: the number of points, ≥ 1.
        generator: the CPU ``torch.Generator`` every draw comes from.
        std: the standard deviation of each Gaussian, > 0 (default 0.3).
    Returns:
        points (n, 2), float32.
    Raises:
        ValueError: a non-positive ``n`` or ``std`` (``TypeError`` for ones of the wrong type).
    """
    check_positive_int(n, "n")
    check_positive_float(std, "std")
    mode = torch.randint(8, (n,), generator=generator)
    angle = 2 * math.pi * mode.to(torch.float32) / 8
    centres = 3.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centres + std * torch.randn(n, 2, generator=generator)


def checkerboard(n: int, generator: torch.Generator) -> torch.Tensor:
    """n points uniform on the 8 black squares (side 2) of a 4×4 checkerboard covering [−4, 4]²: density 1/32.

    So no model can reach a mean log-likelihood above −ln 32 ≈ −3.47 nats.

    Arguments:
        n: the number of points, ≥ 1.
        generator: the CPU ``torch.Generator`` every draw comes from.
    Returns:
        points (n, 2), float32.
    Raises:
        ValueError: a non-positive ``n`` (``TypeError`` for one that is not an integer).
    """
    check_positive_int(n, "n")
    column = torch.randint(4, (n,), generator=generator)
    row = 2 * torch.randint(2, (n,), generator=generator) + column % 2  # column + row even: a black square
    corner = 2.0 * torch.stack([column, row], dim=1).to(torch.float32) - 4.0
    return corner + 2.0 * torch.rand(n, 2, generator=generator)


DATASETS: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {
    "two_moons": two_moons,
    "ring_of_gaussians": ring_of_gaussians,
    "checkerboard": checkerboard,
}


def sample_data(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """n points of the toy density ``name``, drawn with a ``torch.Generator`` seeded with ``seed``.

    The same call returns the same points on every machine.

    Arguments:
        name: one of :data:`DATASETS` (``"two_moons"``, ``"ring_of_gaussians"``, ``"checkerboard"``).
        n: the number of points, ≥ 1.
        seed: the generator's seed, ≥ 0 (default 0).
    Returns:
        points (n, 2), float32.
    Raises:
        ValueError: an unknown ``name`` (naming the known data sets), a non-positive ``n`` or a negative ``seed``.
        TypeError: an ``n`` or ``seed`` that is not an integer.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; the toy data sets are: {', '.join(DATASETS)}")
    check_positive_int(n, "n")
    check_positive_int(seed, "seed", minimum=0)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return DATASETS[name](n, generator)


def _check_points(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Points (n, 2) of a floating dtype with finite values, or a ``ValueError``/``TypeError`` saying what is wrong."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, 2), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, 2) with n ≥ 1 (points of the plane), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point (float32 or float64), got {x.dtype}")
    return check_finite(x, name)


# -- model ----------------------------------------------------------------------------------------------------


def make_flow(n_blocks: int = 6, width: int = 64, coeff: float = 0.9) -> InvertibleSequential:
    """The 2-D i-ResNet of the module docstring: ``n_blocks`` × (ActNorm(2) → x + g(x)), g = SN-Linear(2→width)
    → LipSwish → SN-Linear(width→2), each linear layer's operator norm certified ≤ ``coeff``.

    So Lip(g) ≤ coeff² per block (``block.branch_lipschitz_bound()`` reports the certified value). Returned in eval
    mode, its ActNorms the identity: an untrained flow is already a density (a standard normal, bent by the random
    branches). :func:`train_flow` sets each ActNorm's scale and shift from the first batch. The weights are drawn
    from the global torch generator.

    Arguments:
        n_blocks: the number of (ActNorm → residual) pairs, ≥ 1 (default 6).
        width: the hidden width w of each branch, ≥ 1 (default 64).
        coeff: the certified bound on each linear layer's operator norm, in (0, 1) (default 0.9).
    Returns:
        an :class:`invattn.InvertibleSequential` of 2·n_blocks blocks mapping points (n, 2) to (n, 2), float32.
    Raises:
        ValueError: a ``coeff`` outside (0, 1), a non-positive ``n_blocks`` or ``width``.
        TypeError: an ``n_blocks`` or ``width`` that is not an integer.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> flow = make_flow(n_blocks=2, width=8).double()  # ActNorm, x + g(x), ActNorm, x + g(x)
    >>> print(all(flow[i].branch_lipschitz_bound() <= 0.9**2 for i in (1, 3)))
    True
    >>> x = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    >>> with torch.no_grad():
    ...     back, bound = invert(flow, flow(x))  # F⁻¹(F(x)) and its certified error bound per point
    >>> print(float((back - x).abs().max()) < 1e-9, bool(bound.max() < 1e-8))
    True True
    >>> samples, bound = sample_flow(flow, n=3, seed=0)  # F⁻¹(z), z ~ N(0, I)
    >>> print(tuple(samples.shape), bool(bound.max() < 1e-8))
    (3, 2) True
    """
    check_positive_int(n_blocks, "n_blocks")
    check_positive_int(width, "width")
    coeff = check_coeff(coeff)
    parts: list[nn.Module] = []
    for _ in range(n_blocks):
        g = nn.Sequential(
            spectral_norm(nn.Linear(2, width), coeff),
            LipSwish(),
            spectral_norm(nn.Linear(width, 2), coeff),
        )
        parts += [ActNorm(2), InvertibleResidual(g)]
    return InvertibleSequential(*parts).eval()


def latent_and_log_det(flow: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, log_det)``: z = F(x) and log|det J_F(x)|, from the exact 2×2 Jacobian of the whole flow at each point.

    The Jacobians come from ``torch.func.vmap`` over points of ``torch.func.jacrev``; both outputs are
    differentiable w.r.t. the flow's parameters.

    Arguments:
        flow: a flow on points (n, 2), e.g. :func:`make_flow`'s, in x's dtype.
        x: points (n, 2), n ≥ 1, finite, floating point.
    Returns:
        ``(z, log_det)``: z (n, 2) and log_det (n,) in nats, x's dtype.
    Raises:
        ValueError: points that are not (n, 2) or not finite; an ActNorm in training mode not yet initialised.
        TypeError: points that are not a floating-point tensor, or of another dtype than the flow's parameters.
        RuntimeError: a Jacobian determinant that is not positive (impossible while every block is certified
            invertible: det > 0).
    """
    _check_points(x)
    weight = next(flow.parameters(), None)
    if weight is not None and weight.dtype != x.dtype:
        raise TypeError(
            f"x is {x.dtype} but the flow computes in {weight.dtype}: convert one of them "
            f"(x.to({weight.dtype}) or a copy of the flow with .to({x.dtype}))"
        )
    if any(isinstance(m, ActNorm) and m.training and not bool(m.initialized) for m in flow.modules()):
        raise ValueError(
            "an ActNorm is in training mode but not initialised, and it can't initialise itself inside the "
            "Jacobian transforms: train with train_flow (which initialises it) or call flow.eval() first"
        )

    def at_one_point(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = flow(point.unsqueeze(0)).squeeze(0)
        return image, image

    # Every spectral-normalised weight is computed once, here, outside the transforms, and reused inside them:
    # computed inside, the spectral norms would cache tensors wrapped by torch.func (and copying the flow fails).
    with parametrize.cached():
        for module in flow.modules():
            if parametrize.is_parametrized(module):
                for tensor_name in module.parametrizations:
                    getattr(module, tensor_name)
        jacobian, z = torch.func.vmap(torch.func.jacrev(at_one_point, has_aux=True))(x)
    sign, log_det = torch.linalg.slogdet(jacobian)
    if not bool((sign > 0).all()):
        raise RuntimeError(
            f"{int((sign <= 0).sum())} Jacobian determinant(s) are not positive: the flow is not a certified "
            "i-ResNet (is every residual branch's Lipschitz bound below 1?)"
        )
    return z, log_det


def _standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) per row, in nats."""
    return -0.5 * z.square().sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def log_density(flow: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log N(F(x); 0, I) + log|det J_F(x)| for points x (n, 2): a tensor (n,) in nats (÷ ln 2 for bits).

    Exact: the 2×2 Jacobian of :func:`latent_and_log_det`, no estimator.

    Arguments:
        flow: a flow on points (n, 2), in x's dtype.
        x: points (n, 2), finite, floating point.
    Returns:
        log p(x), (n,), x's dtype, in nats; differentiable w.r.t. the flow's parameters.
    Raises:
        ValueError, TypeError, RuntimeError: as :func:`latent_and_log_det`.
    """
    z, log_det = latent_and_log_det(flow, x)
    return _standard_normal_log_density(z) + log_det


def mean_log_likelihood(flow: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> float:
    """The mean of :func:`log_density` over the points x, (1/n)·Σ_i log p(x_i), in nats per point.

    Evaluated in chunks of ``batch_size`` without building a graph for the parameters (use it on held-out data).

    Arguments:
        flow: a flow on points (n, 2), in x's dtype.
        x: points (n, 2), finite, floating point.
        batch_size: points per chunk, ≥ 1 (default 4096).
    Returns:
        the mean log-likelihood, a Python float in nats per point.
    Raises:
        ValueError, TypeError, RuntimeError: as :func:`latent_and_log_det`; also a non-positive ``batch_size``.
    """
    _check_points(x)
    check_positive_int(batch_size, "batch_size")
    with torch.no_grad():
        total = sum(float(log_density(flow, chunk).sum()) for chunk in x.split(batch_size))
    return total / x.shape[0]


def train_flow(
    flow: nn.Module,
    data: torch.Tensor,
    steps: int = 400,
    batch_size: int = 512,
    lr: float = 3e-2,
    seed: int = 0,
    description: str = "training",
) -> np.ndarray:
    """Fit ``flow`` to the points ``data`` by maximum likelihood: Adam on −mean :func:`log_density` of a batch.

    ``batch_size`` points are drawn (with a generator seeded with ``seed``) at each of ``steps`` steps, the learning
    rate ``lr`` decayed to zero on a cosine. A :func:`invattn.progress.progress` bar shows the mean batch
    log-likelihood of the last 25 steps (the defaults are lesson 06's). ActNorm layers not yet initialised are set
    from the first ``batch_size`` points. Deterministic on the CPU for a given seed. Leaves ``flow`` in eval mode.

    Arguments:
        flow: the flow to train in place (e.g. :func:`make_flow`'s), in data's dtype.
        data: points (n, 2), finite, floating point.
        steps: Adam steps, ≥ 1 (default 400).
        batch_size: points per step, ≥ 1 (default 512).
        lr: the initial learning rate, > 0 (default 3e-2).
        seed: seeds the batches, ≥ 0 (default 0).
        description: the progress bar's label.
    Returns:
        the batch mean log-likelihood at every step, an array (steps,) in nats per point.
    Raises:
        ValueError: data that is not finite (n, 2) points; a non-positive steps, batch_size or lr, a negative seed.
        TypeError: data that is not a floating-point tensor; a count of the wrong type.
    """
    _check_points(data, "data")
    check_positive_int(steps, "steps")
    check_positive_int(batch_size, "batch_size")
    check_positive_float(lr, "lr")
    check_positive_int(seed, "seed", minimum=0)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    flow.train()
    with torch.no_grad():  # ActNorm's data-dependent initialisation, outside the Jacobian transforms
        flow(data[torch.randperm(data.shape[0], generator=generator)[:batch_size]])
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = np.empty(steps)
    bar = progress(range(steps), desc=description)
    for step in bar:
        batch = data[torch.randint(data.shape[0], (batch_size,), generator=generator)]
        log_likelihood = log_density(flow, batch).mean()
        optimizer.zero_grad()
        (-log_likelihood).backward()
        optimizer.step()
        schedule.step()
        history[step] = float(log_likelihood.detach())
        if step % 25 == 0 or step == steps - 1:
            bar.set_postfix_str(f"{history[max(0, step - 24) : step + 1].mean():.3f} nats", refresh=False)
    bar.close()
    flow.eval()
    return history


# -- inversion and sampling -----------------------------------------------------------------------------------


def invert(
    flow: InvertibleSequential, z: torch.Tensor, options: SolverOptions | None = None, **keywords
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, bound)``: x = F⁻¹(z) computed block by block, and per point a certified bound on ‖x − F⁻¹(z)‖.

    The chain's :meth:`~invattn.blocks.InvertibleBlock.inverse_and_error_bound` walks it backwards. Each residual
    block is solved by :meth:`InvertibleResidual.inverse` to ``tol``; its :class:`invattn.InverseInfo`
    ``sample_error_bounds`` certify that solve, point by point. Errors already present in the block's input grow by
    at most Lip(F_k⁻¹) ≤ 1/(1 − L_k), L_k the block's certified Lip(g), and by at most max exp(−s) through an ActNorm
    (which adds its own rounding, ≤ 8u‖x‖), so the bound is carried through the chain:
    bound ← bound/(1 − L_k) + error_bound_k·‖y_k‖. Example: :func:`make_flow`.

    Arguments:
        flow: an :class:`invattn.InvertibleSequential` of ActNorm and InvertibleResidual blocks on points (n, 2).
        z: latent points (n, 2), finite, floating point, in the flow's dtype.
        options: the solver's :class:`invattn.SolverOptions`; keyword arguments (``tol``, ``method``, ``max_iter``,
            ``callback``, …) build or amend it. Its ``tol`` defaults to :func:`invattn.solvers.default_tol` of z's
            dtype: 1e-10 in float64, 1e-5 in float32, 16 unit roundoffs in float16 and bfloat16.
    Returns:
        ``(x, bound)``: x (n, 2) in z's dtype, and bound (n,) float64 in the units of x, F⁻¹(z) the exact preimage.
    Raises:
        InversionError: a block does not converge (:class:`invattn.InversionError`).
        ValueError: z that is not finite (n, 2) points; a tol below 4 unit roundoffs of z's dtype.
        TypeError: a flow that is not an InvertibleSequential, or holds a block other than ActNorm and
            InvertibleResidual (no certified inverse error); an unknown solver keyword.
    """
    _check_points(z, "z")
    if not isinstance(flow, InvertibleSequential):
        raise TypeError(f"invert walks an InvertibleSequential block by block, got {type(flow).__name__}")
    options = SolverOptions.of(options, **keywords)
    tol = check_tol(options.tol, z.dtype)  # the dtype's default, or ValueError for a tol below its rounding floor
    bound = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    with torch.no_grad():
        return flow.inverse_and_error_bound(z, bound, replace(options, tol=tol))


def sample_flow(
    flow: InvertibleSequential,
    n: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    options: SolverOptions | None = None,
    **keywords,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, bound)``: n samples of the flow's density, x = F⁻¹(z) for z ~ N(0, I) drawn with a seeded generator.

    The inverse runs in ``dtype`` (float64 by default, where the solver's tolerance is 1e-10); ``flow`` is
    not changed (a copy is converted). Example: :func:`make_flow`.

    Arguments:
        flow: an :class:`invattn.InvertibleSequential` of ActNorm and InvertibleResidual blocks on points (n, 2).
        n: the number of samples, ≥ 1.
        seed: seeds z (a CPU generator, so the same z on every device), ≥ 0 (default 0).
        dtype: the dtype of z and of the inversion (default float64).
        options: the solver's :class:`invattn.SolverOptions`, keywords amending it, as :func:`invert`.
    Returns:
        ``(x, bound)``: x (n, 2) in ``dtype`` and the certified per-sample bound (n,) of :func:`invert` on
        ‖x − F⁻¹(z)‖, float64.
    Raises:
        ValueError: a non-positive ``n``, a negative ``seed``; as :func:`invert`.
        TypeError, InversionError: as :func:`invert` (and for an ``n`` or ``seed`` that is not an integer).
    """
    check_positive_int(n, "n")
    check_positive_int(seed, "seed", minimum=0)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(n, 2, generator=generator, dtype=dtype).to(_device(flow))
    return invert(_in_dtype(flow, dtype), z, options, **keywords)


def _device(flow: nn.Module) -> torch.device:
    return next(flow.parameters()).device


def _in_dtype(flow: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``flow`` itself if its parameters are already ``dtype``, else a converted copy (certificates recomputed)."""
    if next(flow.parameters()).dtype == dtype:
        return flow
    return copy.deepcopy(flow).to(dtype)


# -- arrays for the figures -----------------------------------------------------------------------------------


def _grid_points(extent: float, resolution: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of a ``resolution``² grid on [−extent, extent]²: (centres (r,), points (r², 2) row-major in x₂)."""
    step = 2 * extent / resolution
    centres = -extent + step * (torch.arange(resolution, dtype=dtype) + 0.5)
    x2, x1 = torch.meshgrid(centres, centres, indexing="ij")
    return centres, torch.stack([x1.reshape(-1), x2.reshape(-1)], dim=1)


def log_density_on_grid(
    flow: nn.Module, extent: float = 4.5, resolution: int = 120, dtype: torch.dtype = torch.float32
) -> tuple[np.ndarray, np.ndarray]:
    """``(centres, log_p)``: the log-density log p(x) in nats at the cell centres of a grid on [−extent, extent]².

    The cells have area (2·extent/resolution)², so ``exp(log_p).sum()`` times that area is the midpoint-rule
    integral of the density over the square (≈ 1 when the square holds nearly all the mass). ``flow`` is not changed
    (a copy is converted to ``dtype`` if needed).

    Arguments:
        flow: a flow on points (n, 2).
        extent: the half-width of the square, > 0 (default 4.5).
        resolution: cells per side, ≥ 2 (default 120).
        dtype: the dtype the density is evaluated in (default float32).
    Returns:
        ``(centres, log_p)``: numpy arrays, centres (resolution,) and log_p (resolution, resolution) with
        ``log_p[i, j]`` at (x₁, x₂) = (centres[j], centres[i]) (image layout for ``imshow(origin="lower")``).
    Raises:
        ValueError: a non-positive ``extent``, a ``resolution`` below 2; as :func:`latent_and_log_det`.
    """
    check_positive_float(extent, "extent")
    check_positive_int(resolution, "resolution", minimum=2)
    centres, points = _grid_points(extent, resolution, dtype)
    flow = _in_dtype(flow, dtype)
    with torch.no_grad():
        values = torch.cat([log_density(flow, chunk.to(_device(flow))) for chunk in points.split(8192)])
    return centres.numpy(), values.reshape(resolution, resolution).cpu().numpy()


def deformed_grid(
    flow: nn.Module, extent: float = 4.0, n_lines: int = 17, n_points: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """``(lines, images)``: a grid of lines of [−extent, extent]² and their images F(lines): the grid as F deforms it.

    Arguments:
        flow: a flow on points (n, 2), evaluated in the dtype and on the device of its parameters.
        extent: the half-width of the square, > 0 (default 4.0).
        n_lines: vertical and as many horizontal lines, ≥ 2 (default 17).
        n_points: points sampled along each line, ≥ 2 (default 200).
    Returns:
        ``(lines, images)``: numpy arrays (2·n_lines, n_points, 2), float32: the lines in data space (vertical ones
        first) and their images in latent space.
    Raises:
        ValueError: a non-positive ``extent``, an ``n_lines`` or ``n_points`` below 2.
    """
    check_positive_float(extent, "extent")
    check_positive_int(n_lines, "n_lines", minimum=2)
    check_positive_int(n_points, "n_points", minimum=2)
    positions = torch.linspace(-extent, extent, n_lines)
    along = torch.linspace(-extent, extent, n_points)
    vertical = torch.stack([positions[:, None].expand(n_lines, n_points), along.expand(n_lines, n_points)], dim=-1)
    horizontal = vertical.flip(-1)
    lines = torch.cat([vertical, horizontal])
    with torch.no_grad():
        parameter = next(flow.parameters())
        images = flow(lines.reshape(-1, 2).to(parameter.device, parameter.dtype)).reshape(lines.shape)
    return lines.numpy(), images.cpu().float().numpy()
