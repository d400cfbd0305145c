"""How tight is a certified bound? A search for the steepest pair of inputs, beside the bound it must stay under.

The search itself is :func:`invattn.lipschitz.search_lipschitz` (re-exported here), which shares its Adam ascent
with :func:`invattn.estimate_lipschitz`'s pair search (:func:`invattn.lipschitz.ascend_quotient`).

A certified bound L says ‖g(x) − g(x')‖ ≤ L‖x − x'‖ for every pair. Any pair found by any search gives a quotient
that is a lower bound on Lip(g); the ratio quotient / L is then at most 1 if the certificate is right, and says how
much of the bound a determined search can realise (Kim et al., 2021, ask the same of their L2-attention bound).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from .._validation import check_positive_float, check_positive_int
from ..lipschitz import LipschitzSearch, estimate_lipschitz, search_lipschitz
from ..norms import per_sample_norm
from .core import CertifiedAttention
from .paper import PaperAttention

__all__ = ["LipschitzSearch", "Tightness", "search_lipschitz", "attention_tightness", "scale_with_positions"]


@dataclass(frozen=True)
class Tightness:
    """What :func:`attention_tightness` found: a lower bound on Lip(g) beside g's certified upper bound.

    Both are for the float64 copy of g's weights (same values, see :func:`attention_tightness`); :attr:`ratio` is
    measured / bound.

    Arguments:
        measured: the largest Lipschitz quotient ‖g(x) − g(x')‖/‖x − x'‖ found for g (a lower bound on Lip(g)).
        bound: g's certified ``lipschitz_bound(N)``.
    """

    measured: float
    bound: float

    @property
    def ratio(self) -> float:
        """measured / bound: at most 1 if the certificate holds; close to 1 if the bound is tight."""
        return self.measured / self.bound


def attention_tightness(
    module: torch.nn.Module,
    size: tuple[int, int],
    starts: int = 8,
    steps: int = 100,
    scales: tuple[float, float] = (0.3, 10.0),
    lr: float = 0.05,
    polish_iterations: int = 10,
    seed: int = 0,
) -> Tightness:
    """The share of a certified attention branch's bound that an input search realises on H×W maps: measured / L.

    A float64 copy of the module (its float32 weights convert exactly; its gain is recomputed in float64) is
    searched with :func:`search_lipschitz` from ``starts`` Gaussian inputs whose scales run log-evenly from
    ``scales[0]`` to ``scales[1]``, for ``steps`` Adam steps; the Jacobian norm at each start's best point is then
    refined by ``polish_iterations`` power iterations (:func:`invattn.estimate_lipschitz`). The module itself is
    not changed.

    Arguments:
        module: a certified attention branch (e.g. ``make_attention(kind, C)``) acting on [B, C, H, W].
        size: (H, W), so N = H·W positions.
        starts: the number of search starts (inputs [starts, C, H, W]).
        steps: Adam steps of the pair search.
        scales: (smallest, largest) input scale, in input units: the standard deviation of each entry.
        lr: the Adam learning rate of the search.
        polish_iterations: power iterations refining the Jacobian norm at each start's best point.
        seed: seeds the starts, the search and the polish (deterministic for a given seed).
    Returns:
        a :class:`Tightness`: the larger of the two measurements, and the copy's ``lipschitz_bound(N)``.
    Raises:
        ValueError: the paper variant (its bound is ``inf``: nothing to compare with), a ``size`` that is not two
            positive integers, or invalid ``starts``/``steps``/``scales``/``lr``.
        TypeError: a module that is not a certified attention branch.
    """
    if isinstance(module, PaperAttention):
        raise ValueError(
            "variant='paper' has no certified bound (its lipschitz_bound() is inf): nothing to compare with"
        )
    if not isinstance(module, CertifiedAttention):
        raise TypeError(
            f"attention_tightness needs a certified attention branch (make_attention(...)), got {type(module).__name__}"
        )
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise ValueError(f"size must be (H, W), got {size!r}")
    height, width = (check_positive_int(s, "size") for s in size)
    check_positive_int(starts, "starts")
    low, high = (check_positive_float(s, "scales") for s in scales)
    if low > high:
        raise ValueError(f"scales must be (smallest, largest), got {scales!r}")
    probe = copy.deepcopy(module).double().requires_grad_(False)
    bound = probe.lipschitz_bound(height * width)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    shape = (starts, probe.channels, height, width)
    spread = torch.logspace(math.log10(low), math.log10(high), starts, dtype=torch.float64).view(-1, 1, 1, 1)
    device = next(probe.parameters()).device
    points = (torch.randn(shape, generator=generator, dtype=torch.float64) * spread).to(device)
    found = search_lipschitz(probe, points, steps=steps, lr=lr, seed=seed)
    polished = estimate_lipschitz(probe, found.inputs, n_iterations=polish_iterations, pair_steps=0, seed=seed)
    return Tightness(measured=max(found.quotient, polished), bound=bound)


def scale_with_positions(
    g: torch.nn.Module,
    channels: int,
    sizes: tuple[int, ...] = (4, 8, 16, 32),
    seed: int = 0,
    batch: int = 2,
) -> list[dict]:
    """How an attention branch's output ratio ‖g(x) − g(0)‖/‖x‖ and Lipschitz constant change with N positions.

    For each side length s in ``sizes`` (N = s² positions), on inputs x ∈ [−½, ½)^{C×s×s} (seeded): the output ratio
    ‖g(x) − g(0)‖/‖x‖ (largest over ``batch`` samples; what the branch adds to x + g(x), without its constant
    part) and :func:`invattn.estimate_lipschitz` (a lower bound on Lip(g), measured at x). For the generative
    repository's normaliser, one sum over all N² energies, both fall like 1/N; for a row-normalised map (the
    certified kinds) the measured constant stays of the same size as N grows.

    Arguments:
        g: an attention branch on [B, C, H, W], evaluated in the dtype and on the device of its parameters (float64
            on the CPU if it has none).
        channels: C of its inputs.
        sizes: the side lengths s to try (maps s×s).
        seed: seeds the inputs and the estimate.
        batch: samples per size.
    Returns:
        ``[{"positions": N, "output_ratio": ..., "measured": ...}, ...]``, one dict per size (floats).
    Raises:
        ValueError: a non-positive channels, size or batch.
    """
    check_positive_int(channels, "channels")
    check_positive_int(batch, "batch")
    parameter = next(g.parameters(), torch.empty((), dtype=torch.float64))
    rows = []
    generator = torch.Generator().manual_seed(seed)
    for size in sizes:
        check_positive_int(size, "size")
        x = (torch.rand(batch, channels, size, size, generator=generator, dtype=torch.float64) - 0.5).to(parameter)
        with torch.no_grad():
            moved = g(x) - g(torch.zeros_like(x))
        ratio = float((per_sample_norm(moved) / per_sample_norm(x)).max())
        measured = estimate_lipschitz(g, x, n_iterations=20, pair_steps=0, seed=seed)
        rows.append(dict(positions=size * size, output_ratio=ratio, measured=measured))
    return rows
