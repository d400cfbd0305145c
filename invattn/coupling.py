"""Coupling blocks: invertible by construction, whatever the branch F (i-RevNet, Jacobsen et al., 2018).

A residual block x + g(x) transforms every channel but is invertible only when Lip(g) < 1 (so it needs the
certified bounds of :mod:`invattn.lipschitz`). A coupling block splits the channels in two halves and
transforms one half with a function of the other; its inverse is two lines, *exact*, and F can be anything:
an unconstrained convolution stack, a batch-normalised bottleneck, or attention with no Lipschitz bound at all.

* :class:`AdditiveCoupling`: y₁ = x₂ + F(x₁), y₂ = x₁ (i-RevNet's block, NICE's additive coupling with the
  halves swapped so the next block transforms the other half). Inverse: x₁ = y₂, x₂ = y₁ − F(y₂). The Jacobian
  [[J_F, I], [I, 0]] becomes block triangular with identity diagonal blocks once the two output halves are swapped:
  |det| = 1, log|det| = 0. Rounding: x₂ comes back to within u·(|x₂| + |F(x₁)|) per entry (the rounding of the
  sum y₁), so a small x₂ beside a large F(x₁) loses relative accuracy, in every block it passes.
* :class:`AffineCoupling`: y₁ = x₂·exp(s(x₁)) + t(x₁), y₂ = x₁ (Real NVP, Dinh et al., 2017), with
  s = a·tanh(ŝ/a) bounded by ``max_log_scale`` = a. log|det| = Σ s(x₁), exact.
* :class:`InjectivePad`: appends zero channels (i-RevNet (a)): injective, not bijective; its inverse drops them.
* :class:`invattn.attention.AttentionCoupling` (one floor up, with the attention kinds): an additive coupling
  whose F is attention of any kind, including the paper's unbounded formulation.
* i-RevNet's invertible downsampling is space-to-depth, :class:`invattn.Squeeze`.

All blocks keep the contract of :class:`invattn.blocks.InvertibleBlock`, take [B, C, ...] tensors with the halves
along dimension 1 and raise ``ValueError`` on a wrong channel count or non-finite values.
"""

from __future__ import annotations

import torch
from torch import nn

from ._validation import NonFiniteError, check_finite, check_positive_float, check_positive_int, unchanged_by_inverse
from .blocks import InvertibleBlock
from .logdet import LogdetOptions
from .norms import per_sample_norm
from .solvers import SolverOptions

__all__ = ["AdditiveCoupling", "AffineCoupling", "InjectivePad", "bottleneck_branch"]


def _halves(x: torch.Tensor, channels: int, name: str, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    check_finite(x, name)
    if x.dim() < 2 or x.shape[1] != channels:
        raise ValueError(f"{who} takes [B, {channels}, ...] ({channels // 2} channels per half), got {tuple(x.shape)}")
    return x[:, : channels // 2], x[:, channels // 2 :]


def check_even_channels(channels: int, who: str) -> int:
    check_positive_int(channels, "channels", minimum=2)
    if channels % 2:
        raise ValueError(f"{who} splits the channels in two equal halves: {channels} is odd (pad it: InjectivePad)")
    return channels


class AdditiveCoupling(InvertibleBlock):
    """i-RevNet's block on [B, C, ...]: (x₁, x₂) ↦ (x₂ + F(x₁), x₁), halves of C/2 channels; log|det| = 0.

    ``inverse`` is exact up to the rounding of one addition and one subtraction: x₁ = y₂, x₂ = y₁ − F(y₂) (module
    docstring: the error is relative to |x₂| + |F(x₁)|). F is evaluated on the same x₁ as in the forward pass, so it
    must be deterministic: ``inverse`` refuses (``RuntimeError``) while F holds batch normalisation or dropout in
    training mode.

    Arguments:
        f: F, any module mapping [B, C/2, ...] to [B, C/2, ...] (no Lipschitz constraint).
        channels: C, even and ≥ 2.
    Raises:
        TypeError: an ``f`` that is not an ``nn.Module``, a ``channels`` that is not an integer.
        ValueError: an odd or too small ``channels``; when called, an input of another channel count, non-finite
            values, or an F that changes the half's shape.
    """

    def __init__(self, f: nn.Module, channels: int) -> None:
        super().__init__()
        if not isinstance(f, nn.Module):
            raise TypeError(f"f must be an nn.Module, got {type(f).__name__}")
        self.f = f
        self.channels = check_even_channels(channels, "AdditiveCoupling")

    def _f(self, x1: torch.Tensor) -> torch.Tensor:
        out = self.f(x1)
        if out.shape != x1.shape:
            raise ValueError(f"F must keep the half's shape {tuple(x1.shape)}, returned {tuple(out.shape)}")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = _halves(x, self.channels, "x", type(self).__name__)
        return torch.cat([x2 + self._f(x1), x1], dim=1)

    def inverse(self, y: torch.Tensor, options: SolverOptions | None = None, **keywords) -> torch.Tensor:
        """x from y = forward(x): x₁ = y₂, x₂ = y₁ − F(y₂); [B, C, ...] → [B, C, ...]. Raises ``RuntimeError`` while F
        holds batch normalisation or dropout in training mode, or in training mode changes a buffer or draws random
        numbers while inverting (call ``model.eval()``: F then depends on the batch or on chance, and the inverse would
        be silently wrong for a sub-batch and change the model; buffers and random state are restored)."""
        SolverOptions.of(options, **keywords)  # checked; an exact inverse takes no solver options
        y1, y2 = _halves(y, self.channels, "y", type(self).__name__)
        with unchanged_by_inverse(self.f, f"{type(self).__name__}.inverse"):
            return torch.cat([y2, y1 - self._f(y2)], dim=1)

    def logdet(self, x: torch.Tensor, options: LogdetOptions | None = None) -> torch.Tensor:
        """0 for every sample: the Jacobian [[J_F, I], [I, 0]] has determinant ±1."""
        _halves(x, self.channels, "x", type(self).__name__)
        return x.new_zeros(x.shape[0])


def _finite(out: torch.Tensor, where: str) -> torch.Tensor:
    try:
        return check_finite(out, f"AffineCoupling's {where} output")
    except NonFiniteError as error:
        raise NonFiniteError(
            f"{error}: F's scale or shift overflowed the dtype; bound F's output or use float64"
        ) from None


class AffineCoupling(InvertibleBlock):
    """(x₁, x₂) ↦ (x₂·exp(s) + t, x₁) with (ŝ, t) = F(x₁) and s = a·tanh(ŝ/a), a = ``max_log_scale``.

    log|det| = Σ s over the transformed half (exact, per sample). The bounded s keeps exp(±s) ≤ eᵃ, so the
    rounding of y₁ (relative to |x₂·eˢ| + |t|) grows by at most eᵃ in x₂. Real NVP's coupling (Dinh et al., 2017).

    Arguments:
        f: F, mapping [B, C/2, ...] to [B, C, ...]: the first C/2 output channels are ŝ, the last C/2 are t.
        channels: C, even and ≥ 2.
        max_log_scale: a, in (0, 10] (default 2.0): at most 10 so eᵃ stays far inside every float range.
    Raises:
        TypeError: an ``f`` that is not an ``nn.Module``; a ``channels`` or ``max_log_scale`` of the wrong type.
        ValueError: an odd or too small ``channels``, a ``max_log_scale`` outside (0, 10]; when called, a non-finite
            output (an F that overflows), a wrong input channel count or an F output of the wrong shape.
    """

    def __init__(self, f: nn.Module, channels: int, max_log_scale: float = 2.0) -> None:
        super().__init__()
        if not isinstance(f, nn.Module):
            raise TypeError(f"f must be an nn.Module, got {type(f).__name__}")
        self.f = f
        self.channels = check_even_channels(channels, "AffineCoupling")
        self.max_log_scale = check_positive_float(max_log_scale, "max_log_scale")
        if self.max_log_scale > 10:
            raise ValueError(f"max_log_scale must be at most 10 (exp(10) ≈ 2.2e4), got {max_log_scale}")

    def _scale_shift(self, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.f(x1)
        expected = (x1.shape[0], self.channels, *x1.shape[2:])
        if tuple(out.shape) != expected:
            raise ValueError(
                f"F must return [B, {self.channels}, ...] (ŝ and t for the other half), got {tuple(out.shape)}"
            )
        raw, shift = out[:, : self.channels // 2], out[:, self.channels // 2 :]
        return self.max_log_scale * torch.tanh(raw / self.max_log_scale), shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_and_logdet(x)[0]

    def inverse(self, y: torch.Tensor, options: SolverOptions | None = None, **keywords) -> torch.Tensor:
        """x from y = forward(x): x₁ = y₂, x₂ = (y₁ − t(y₂))·exp(−s(y₂)); [B, C, ...] → [B, C, ...]. Raises
        ``RuntimeError`` while F holds batch normalisation or dropout in training mode (as
        :meth:`AdditiveCoupling.inverse`) and ``ValueError`` when the result overflows."""
        SolverOptions.of(options, **keywords)  # checked; an exact inverse takes no solver options
        y1, y2 = _halves(y, self.channels, "y", type(self).__name__)
        with unchanged_by_inverse(self.f, f"{type(self).__name__}.inverse"):
            log_scale, shift = self._scale_shift(y2)
        return _finite(torch.cat([y2, (y1 - shift) * torch.exp(-log_scale)], dim=1), "inverse")

    def forward_and_logdet(
        self, x: torch.Tensor, options: LogdetOptions | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, log|det ∂y/∂x|)`` per sample, Σ s over the transformed half, from one evaluation of F (exact:
        ``options`` unused)."""
        x1, x2 = _halves(x, self.channels, "x", type(self).__name__)
        log_scale, shift = self._scale_shift(x1)
        y = _finite(torch.cat([x2 * torch.exp(log_scale) + shift, x1], dim=1), "forward")
        return y, log_scale.flatten(1).sum(1)

    def logdet(self, x: torch.Tensor, options: LogdetOptions | None = None) -> torch.Tensor:
        """Σ s(x₁) per sample, [B] (exact)."""
        return self.forward_and_logdet(x)[1]


class InjectivePad(InvertibleBlock):
    """Append ``out_channels − in_channels`` zero channels: [B, in, ...] → [B, out, ...] (i-RevNet (a)).

    Injective, not bijective: ``inverse`` drops the appended channels, so inverse(forward(x)) = x exactly, while
    forward(inverse(y)) = y only for y whose appended channels are zero (:meth:`distance_from_range` measures
    how far a y is from that range). There is no log-determinant of a map between spaces of different dimension.

    Arguments:
        in_channels: the input's channel count, ≥ 1.
        out_channels: the output's channel count, ≥ ``in_channels``.
    Raises:
        ValueError: a non-positive count or ``out_channels`` < ``in_channels``; when called, a wrong channel count or
            non-finite values; :meth:`logdet` always.
        TypeError: a count that is not an integer.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(out_channels, "out_channels")
        if out_channels < in_channels:
            raise ValueError(f"InjectivePad adds channels: out_channels {out_channels} < in_channels {in_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_finite(x, "x")
        if x.dim() < 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"InjectivePad takes [B, {self.in_channels}, ...], got {tuple(x.shape)}")
        padding = x.new_zeros(x.shape[0], self.out_channels - self.in_channels, *x.shape[2:])
        return torch.cat([x, padding], dim=1)

    def inverse(self, y: torch.Tensor, options: SolverOptions | None = None, **keywords) -> torch.Tensor:
        SolverOptions.of(options, **keywords)  # checked; an exact inverse takes no solver options
        check_finite(y, "y")
        if y.dim() < 2 or y.shape[1] != self.out_channels:
            raise ValueError(f"InjectivePad.inverse takes [B, {self.out_channels}, ...], got {tuple(y.shape)}")
        return y[:, : self.in_channels]

    def distance_from_range(self, y: torch.Tensor) -> torch.Tensor:
        """‖appended channels of y‖₂ per sample: 0 exactly when y = forward(x) for some x."""
        self.inverse(y)  # the same checks
        return per_sample_norm(y[:, self.in_channels :])

    def logdet(self, x: torch.Tensor, options: LogdetOptions | None = None) -> torch.Tensor:
        """Refused with ``ValueError``: a map into a larger space has no log-determinant."""
        raise ValueError("InjectivePad maps into a larger space: it has no log-determinant (it is not bijective)")

    def lipschitz_bound(self) -> float:
        """1: appending zero channels keeps every distance, ‖P(x) − P(x')‖ = ‖x − x'‖ (an isometry onto its range)."""
        return 1.0

    def extra_repr(self) -> str:
        return f"{self.in_channels} → {self.out_channels}"


def bottleneck_branch(channels: int, hidden: int, batch_norm: bool = True) -> nn.Sequential:
    """i-RevNet's F: [BN →] ReLU → conv3×3 (C→hidden) → [BN →] ReLU → conv3×3 (hidden→hidden) → [BN →] ReLU →
    conv3×3 (hidden→C), padding 1, no Lipschitz constraint.

    The paper's stride-2 blocks are a :class:`invattn.Squeeze` before a stride-1 block here
    (:class:`invattn.classifiers.IRevNet`). The convolutions draw their initial weights from the global torch generator.

    Arguments:
        channels: C, the branch's input and output channels.
        hidden: the channels of the two inner convolutions.
        batch_norm: put a BatchNorm2d before each ReLU (default True).
    Returns:
        an ``nn.Sequential`` mapping [B, C, H, W] to [B, C, H, W].
    Raises:
        ValueError: a non-positive ``channels`` or ``hidden`` (``TypeError``: not an integer).
    """
    check_positive_int(channels, "channels")
    check_positive_int(hidden, "hidden")

    def unit(c_in: int, c_out: int) -> list[nn.Module]:
        return ([nn.BatchNorm2d(c_in)] if batch_norm else []) + [nn.ReLU(), nn.Conv2d(c_in, c_out, 3, padding=1)]

    return nn.Sequential(*unit(channels, hidden), *unit(hidden, hidden), *unit(hidden, channels))
