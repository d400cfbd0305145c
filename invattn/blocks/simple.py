"""The exactly invertible blocks with a closed-form log-determinant: ActNorm and Squeeze."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_finite
from ..logdet import LogdetOptions
from ..norms import per_sample_norm, unit_roundoff
from ..solvers import SolverOptions
from .base import InvertibleBlock

__all__ = ["ActNorm", "Squeeze"]


class ActNorm(InvertibleBlock):
    """y = x·exp(s) + b per channel, with s and b set from the first training batch so y has zero mean and unit
    variance per channel (Kingma & Dhariwal, 2018). log|det| = (positions per channel)·Σ s.

    Arguments:
        channels: C, for inputs [B, C, ...].
    Raises:
        ValueError: (forward, inverse) an input that is not [B, C, ...] or not finite.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, *[1] * (x.dim() - 2))

    def _check(self, x: torch.Tensor) -> None:
        check_finite(x, "x")
        if x.dim() < 2 or x.shape[1] != self.log_scale.numel():
            raise ValueError(
                f"ActNorm({self.log_scale.numel()}) needs inputs [B, {self.log_scale.numel()}, ...], got "
                f"{tuple(x.shape)}"
            )

    def _prepare(self, x: torch.Tensor) -> None:
        """Check x; in training mode a first batch sets s and b (forward and logdet alike: the same map either way)."""
        self._check(x)
        if self.training and not bool(self.initialized):
            self._initialize(x)

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
        mean, var = per_channel.mean(dim=1), per_channel.var(dim=1, unbiased=False)
        self.log_scale.copy_(-0.5 * torch.log(var + 1e-5))
        self.bias.copy_(-mean * self.log_scale.exp())
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x·exp(s) + b; in training mode the first batch sets s and b first."""
        self._prepare(x)
        return x * self._view(self.log_scale.exp(), x) + self._view(self.bias, x)

    def inverse(self, y: torch.Tensor, options: SolverOptions | None = None, **keywords) -> torch.Tensor:
        """(y − b)·exp(−s), exact up to rounding (``options`` unused)."""
        SolverOptions.of(options, **keywords)  # checked; an exact inverse takes no solver options
        self._check(y)
        return (y - self._view(self.bias, y)) * self._view(torch.exp(-self.log_scale), y)

    def logdet(self, x: torch.Tensor, options: LogdetOptions | None = None) -> torch.Tensor:
        """log|det ∂y/∂x| for each sample: positions·Σ s, [B] (``options`` unused).

        In training mode a first batch sets s and b here, as :meth:`forward` would, so the log-det is that of the
        map forward applies (whichever of the two runs first).
        """
        self._prepare(x)
        positions = x[0, 0].numel()
        return (positions * self.log_scale.sum()).expand(x.shape[0])

    def inverse_and_error_bound(
        self, y: torch.Tensor, error: torch.Tensor, options: SolverOptions | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, bound)``: x = inverse(y), bound = error·max exp(−s) + 8u‖x‖ per sample (u the unit roundoff of y's
        dtype: the rounding of one subtraction and one product)."""
        x = self.inverse(y)
        stretch = float(torch.exp(-self.log_scale.detach().double()).max())
        return x, error * stretch + 8 * unit_roundoff(y.dtype) * per_sample_norm(x.detach().double())


class Squeeze(InvertibleBlock):
    """Space-to-depth: [B, C, H, W] → [B, 4C, H/2, W/2] (``pixel_unshuffle``); a permutation, log|det| = 0.

    i-RevNet's invertible downsampling (Jacobsen et al., 2018; after Dinh et al.'s Real NVP squeeze), used by the
    density model between scales and by :mod:`invattn.classifiers` at every stride-2 stage.

    Arguments:
        factor: the side of each square of pixels moved into channels.
    Raises:
        ValueError: (forward) an input that is not [B, C, H, W] with H, W divisible by ``factor``; (inverse) one whose
            C is not divisible by factor².
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def _check(self, x: torch.Tensor) -> None:
        check_finite(x, "x")
        if x.dim() != 4 or x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(
                f"Squeeze({self.factor}) needs [B, C, H, W] with H and W divisible by {self.factor}, got "
                f"{tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``pixel_unshuffle(x, factor)``."""
        self._check(x)
        return F.pixel_unshuffle(x, self.factor)

    def inverse(self, y: torch.Tensor, options: SolverOptions | None = None, **keywords) -> torch.Tensor:
        """``pixel_shuffle(y, factor)``, exact (``options`` unused)."""
        SolverOptions.of(options, **keywords)  # checked; an exact inverse takes no solver options
        check_finite(y, "y")
        if y.dim() != 4 or y.shape[1] % (self.factor**2):
            raise ValueError(
                f"Squeeze.inverse needs [B, C, H, W] with C divisible by {self.factor**2}, got {tuple(y.shape)}"
            )
        return F.pixel_shuffle(y, self.factor)

    def logdet(self, x: torch.Tensor, options: LogdetOptions | None = None) -> torch.Tensor:
        """0 for every sample, [B]: a permutation (``x`` checked as :meth:`forward` checks it)."""
        self._check(x)
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def lipschitz_bound(self) -> float:
        """1: a permutation of the entries is an isometry."""
        return 1.0
