"""Certified upper bounds on the operator norm of a linear layer (``nn.Linear``, ``nn.Conv2d``).

Power iteration approaches σ_max from *below*, so it can never certify. This module computes a guaranteed
**upper** bound from the weights alone:

* **Matrices** (``nn.Linear``, a 1×1 convolution): the exact σ_max, as √λ_max(WᵀW) in float64.
* **k×k convolutions** at input size H×W (any stride, dilation, zero or circular padding, groups, rectangular
  kernels): the zero-padded convolution reads its input at rows o·s − p + t·d (t = 0..k−1). Embed the input in
  a torus of size m×n with m ≥ H + max(p_left, p_right) (so every padded read lands on a zero of the torus)
  and m > (H_out − 1)·s (so distinct outputs stay distinct): the layer is then R·C·E, with E an isometric
  embedding, C the circular convolution on the torus and R a selection of outputs, so ‖R·C·E‖ ≤ ‖C‖. The
  singular values of C are those of the C_out×C_in matrices K̂(ω), the kernel's 2-D DFT on the torus
  (Sedghi, Gupta & Long, "The singular values of convolutional layers", ICLR 2019), so
  ‖conv‖ ≤ max_ω σ_max(K̂(ω)). Circular padding *is* the circular convolution on the H×W torus (m = H).
  Groups make the operator block diagonal: the maximum over groups. Dilation is a kernel with holes.

Floating point: everything is computed in float64 from the exact values of the stored weights. With
N_abs = √(‖S‖₁‖S‖_∞) ≥ ‖S‖₂, S = Σ_taps |W| (so N_abs ≥ ‖K̂(ω)‖ for every ω), the computed λ is raised to
λ(1 + 10⁻⁹) + 10⁻⁹·N_abs²: more than 10³ times the float64 error bounds of the FFT (O(log(mn)·u)), of the
Gram product (O(C·u)·N_abs²) and of the symmetric eigensolver (O(C·u)·‖G‖) for channel counts up to 10⁴.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ConvGeometry", "NormCertificate", "certify_operator_norm", "layer_geometry", "unit_roundoff"]

LAMBDA_MARGIN = 1e-9
# What the kernel's DFT costs: above this many frequency matrices, refuse rather than stall.
_MAX_FREQUENCIES = 1 << 20


@dataclass(frozen=True)
class ConvGeometry:
    """How a convolution is applied: what its certified bound depends on besides the kernel.

    ``torus`` (m, n) is the size of the circular convolution whose norm bounds the layer's; (1, 1) for a
    pointwise (1×1, zero-padded) convolution, whose norm is the matrix norm of its kernel whatever the input.
    """

    torus: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    input_size: tuple[int, int] | None = None


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def layer_geometry(module: nn.Module, input_size: tuple[int, int] | None = None) -> ConvGeometry:
    """The :class:`ConvGeometry` of an ``nn.Linear`` or ``nn.Conv2d`` at ``input_size`` (H, W).

    Raises ``ValueError`` naming the option when a configuration has no certified bound here: padding modes
    ``"reflect"`` and ``"replicate"`` (their padding operators have norm above 1), a circular padding whose
    outputs wrap around the torus more than once, or a k×k / circular convolution without ``input_size``.
    """
    if isinstance(module, nn.Linear):
        return ConvGeometry(torus=(1, 1))
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"certified norms cover nn.Linear and nn.Conv2d, got {type(module).__name__}")
    if module.padding_mode in ("reflect", "replicate"):
        raise ValueError(
            f"padding_mode={module.padding_mode!r} is not supported: its padding copies input values, so the layer's "
            "norm can exceed the kernel's convolution norm; use padding_mode='zeros' or 'circular'"
        )
    kernel, dilation, stride = _pair(module.kernel_size), _pair(module.dilation), _pair(module.stride)
    circular = module.padding_mode == "circular"
    if kernel == (1, 1) and not circular:
        return ConvGeometry(torus=(1, 1), groups=module.groups)
    if input_size is None:
        raise ValueError(
            f"a {kernel[0]}×{kernel[1]} convolution's operator norm depends on the input size: pass input_size=(H, W)"
        )
    size = _pair(tuple(input_size))
    if min(size) < 1:
        raise ValueError(f"input_size must be positive, got {tuple(input_size)}")
    torus = []
    for dim in range(2):
        reach = dilation[dim] * (kernel[dim] - 1)  # the dilated kernel spans reach + 1 rows
        if isinstance(module.padding, str):  # "valid" or "same" (stride 1): PyTorch puts any odd extra on the right
            left, right = (0, 0) if module.padding == "valid" else (reach // 2, reach - reach // 2)
        else:
            left = right = int(module.padding[dim])
        n_out = (size[dim] + left + right - reach - 1) // stride[dim] + 1
        if n_out < 1:
            raise ValueError(f"input_size {tuple(size)} is smaller than the convolution's dilated kernel")
        if circular:
            if (n_out - 1) * stride[dim] >= size[dim]:
                raise ValueError(
                    f"padding_mode='circular' with padding {module.padding} wraps its {n_out} outputs around an input "
                    f"of {size[dim]} more than once, repeating rows: no certified bound; use less padding"
                )
            torus.append(size[dim])
        else:
            torus.append(max(size[dim] + max(left, right), (n_out - 1) * stride[dim] + 1))
    if torus[0] * (torus[1] // 2 + 1) * module.groups > _MAX_FREQUENCIES:
        raise ValueError(f"input_size {tuple(size)} needs {torus[0]}×{torus[1]} DFT frequencies: too many to certify")
    return ConvGeometry(torus=(torus[0], torus[1]), dilation=dilation, groups=module.groups, input_size=size)


def _spectrum(weight: torch.Tensor, geometry: ConvGeometry) -> tuple[torch.Tensor, tuple[int, int]]:
    """K̂ as [groups, frequencies, out/group, in/group] (complex unless the torus is 1×1), and (m, n)."""
    groups = geometry.groups
    w = weight.reshape(weight.shape[0], weight.shape[1], -1) if weight.dim() == 2 else weight
    if w.dim() == 3:  # a Linear's [out, in] as a 1×1 kernel
        w = w.unsqueeze(-1)
    m, n = geometry.torus
    out_channels, in_per_group = w.shape[0], w.shape[1]
    if (m, n) == (1, 1):
        summed = w.reshape(out_channels, in_per_group, -1).sum(-1)  # a 1×1 kernel: the sum is the one tap
        return summed.reshape(groups, 1, out_channels // groups, in_per_group), (1, 1)
    kh, kw = w.shape[-2:]
    dh, dw = geometry.dilation
    # The dilated kernel folded onto the m×n torus: tap (a, b) sits at (a·dh mod m, b·dw mod n).
    torus = w.new_zeros(out_channels, in_per_group, m, n)
    rows = (torch.arange(kh) * dh) % m
    cols = (torch.arange(kw) * dw) % n
    for a in range(kh):
        for b in range(kw):
            torus[:, :, rows[a], cols[b]] += w[:, :, a, b]
    spectrum = torch.fft.rfft2(torus)  # [out, in/g, m, n//2+1]; the rest are complex conjugates (same σ)
    spectrum = spectrum.reshape(groups, out_channels // groups, in_per_group, -1).permute(0, 3, 1, 2)
    return spectrum, (m, n)


@dataclass
class NormCertificate:
    """A certified σ_up ≥ ‖A(W)‖₂ for the weights W it was computed from, with what the bound's users need.

    ``sigma``: the certified upper bound (float, from float64 arithmetic). ``abs_norm``: N_abs ≥ ‖A(|W|)‖₂, the
    norm of the layer with every weight replaced by its absolute value (bounds the effect of rounding each weight).
    ``direction``: a tensor D shaped like W with ⟨D, W⟩ = the computed top singular value, i.e. the gradient of
    σ_max with respect to W (used to differentiate the normalisation); ``None`` until asked for.
    """

    sigma: float
    abs_norm: float
    direction: torch.Tensor | None = None


def _abs_norm(weight64: torch.Tensor, groups: int) -> float:
    flat = weight64.abs().reshape(weight64.shape[0], weight64.shape[1], -1).sum(-1)  # S = Σ_taps |W|
    blocks = flat.reshape(groups, flat.shape[0] // groups, flat.shape[1])
    rows = blocks.sum(dim=2).amax(dim=1)
    cols = blocks.sum(dim=1).amax(dim=1)
    return float(torch.sqrt(rows * cols).max())


@torch.no_grad()
def certify_operator_norm(weight: torch.Tensor, geometry: ConvGeometry, with_direction: bool = False) -> NormCertificate:
    """A certified upper bound on the operator norm of the layer with weight ``weight`` (module doc).

    ``weight``: [out, in] (Linear) or [out, in/groups, kh, kw] (Conv2d), any float dtype and device. Returns a
    :class:`NormCertificate`; with ``with_direction`` also the gradient direction D of the top singular value.
    Raises ``ValueError`` on non-finite weights.
    """
    if not torch.isfinite(weight).all():
        raise ValueError("the weight has non-finite values; no operator-norm bound exists")
    w64 = weight.detach().to(torch.float64)
    spectrum, (m, n) = _spectrum(w64, geometry)
    out_g, in_g = spectrum.shape[-2:]
    tall = out_g >= in_g  # the Gram matrix on the smaller side: KᴴK (in×in) or KKᴴ (out×out)
    gram = spectrum.mH @ spectrum if tall else spectrum @ spectrum.mH
    gram = 0.5 * (gram + gram.mH)
    vectors = None
    if with_direction and gram.shape[0] * gram.shape[1] == 1:  # one matrix: decompose it once, with its vectors
        values, vectors = torch.linalg.eigh(gram)
        top = values[..., -1]
    else:
        top = torch.linalg.eigvalsh(gram)[..., -1]  # [groups, frequencies]
    best = int(torch.argmax(top))
    lam = float(top.flatten()[best])
    abs_norm = _abs_norm(w64, geometry.groups)
    sigma = math.sqrt(max(lam, 0.0) * (1 + LAMBDA_MARGIN) + LAMBDA_MARGIN * abs_norm**2)
    certificate = NormCertificate(sigma=sigma, abs_norm=abs_norm)
    if with_direction:
        certificate.direction = _direction(w64, spectrum, gram, best, (m, n), geometry, tall, vectors).to(weight.device)
    return certificate


def _direction(w64, spectrum, gram, best, torus, geometry, tall, vectors=None) -> torch.Tensor:
    """D with ⟨D, W⟩ = Re(uᴴK̂(ω*)v) = σ_max at the maximising group and frequency (u, v its singular vectors)."""
    n_freq = spectrum.shape[1]
    group, freq = divmod(best, n_freq)
    k = spectrum[group, freq]
    if vectors is None:
        _, vectors = torch.linalg.eigh(gram[group, freq])
    else:
        vectors = vectors[group, freq]
    top = vectors[:, -1]
    if tall:
        v = top
        u = k @ v
    else:
        u = top
        v = k.mH @ u
    scale = torch.linalg.vector_norm(u if tall else v).clamp_min(1e-300)
    u, v = (u / scale, v) if tall else (u, v / scale)
    outer = torch.conj(u)[:, None] * v[None, :]  # [out/g, in/g]
    m, n = torus
    if (m, n) == (1, 1):
        block = outer.real.reshape(outer.shape[0], outer.shape[1], *([1] * (w64.dim() - 2)))
        block = block.expand(-1, -1, *w64.shape[2:]) if w64.dim() > 2 else block.reshape(outer.shape)
    else:
        half = n // 2 + 1
        omega_h, omega_w = divmod(freq, half)
        kh, kw = w64.shape[-2:]
        dh, dw = geometry.dilation
        a = torch.arange(kh, dtype=torch.float64, device=w64.device) * dh
        b = torch.arange(kw, dtype=torch.float64, device=w64.device) * dw
        angle = -2 * math.pi * (omega_h * a[:, None] / m + omega_w * b[None, :] / n)
        phase = torch.polar(torch.ones_like(angle), angle)  # e^{−2πi(ω_h a/m + ω_w b/n)}, the rfft2 sign
        block = (outer[:, :, None, None] * phase).real
    direction = torch.zeros_like(w64)
    rows = block.shape[0]
    direction[group * rows : (group + 1) * rows] = block
    return direction


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^−p for a float dtype with p significand bits: |fl(x) − x| ≤ u·|x|."""
    return torch.finfo(dtype).eps / 2

