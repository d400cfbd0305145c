"""Certified upper bounds on the operator norm of a linear layer (``nn.Linear``, ``nn.Conv2d``).

Power iteration approaches σ_max from *below*, so it can never certify. This module computes a guaranteed
**upper** bound from the weights alone:

* **Matrices** (``nn.Linear``, a 1×1 convolution): σ_max itself, as √λ_max(WᵀW) in float64 (for matrices larger
  than 256 on their smaller side, above it by at most a relative 10⁻⁶ when Lanczos's candidate is accurate, else by up
  to 5·10⁻⁵ or 5·10⁻³ of the next raise, see below).
* **k×k convolutions** at input size H×W (any stride, dilation, zero or circular padding, groups, rectangular
  kernels): the zero-padded convolution reads its input at rows o·s − p + t·d (t = 0..k−1). Embed the input in
  a torus of size m×n with m ≥ H + max(p_left, p_right) (so every padded read lands on a zero of the torus)
  and m > (H_out − 1)·s (so distinct outputs stay distinct): the layer is then R·C·E, with E an isometric
  embedding, C the circular convolution on the torus and R a selection of outputs, so ‖R·C·E‖ ≤ ‖C‖. The
  singular values of C are those of the C_out×C_in matrices K̂(ω), the kernel's 2-D DFT on the torus
  (Sedghi, Gupta & Long, "The singular values of convolutional layers", ICLR 2019), so
  ‖conv‖ ≤ max_ω σ_max(K̂(ω)). Circular padding *is* the circular convolution on the H×W torus (m = H).
  Groups make the operator block diagonal: the maximum over groups. Dilation is a kernel with holes.

How it is computed, cheaply (every training step certifies every layer):

* a k×k kernel's Grams G(ω) = K̂(ω)ᴴK̂(ω) are the DFT of the kernel's autocorrelation over the tap offsets:
  one real product of the taps stacked side by side, then a (2k−1)²-term DFT (:func:`_tap_grams`), instead of an
  FFT of the kernel zero-padded to the torus and one complex product per frequency (still used when
  taps² > 8·frequencies, large kernels on small tori). Then ``eigvalsh`` of the small c×c Grams, batched;
* one large Gram (a 1×1 convolution above 256 on its smaller side, e.g. 512×512): Lanczos from a fixed start
  gives a candidate θ ≤ λ_max (a function of the weights alone), and a Cholesky factorisation of θ(1 + r)·I − G
  *proves* λ_max ≤ θ(1 + r) + (rounding);
  see :func:`_cholesky_certifies`. r = 2·10⁻⁶, else 10⁻⁴, else 10⁻², else the full eigendecomposition.

Floating point: everything is computed in float64 from the exact values of the stored weights. With
N_abs = √(‖S‖₁‖S‖_∞) ≥ ‖S‖₂, S = Σ_taps |W| (so N_abs ≥ ‖K̂(ω)‖ for every ω), the computed λ is raised to
λ(1 + 10⁻⁹) + 10⁻⁹·N_abs²: more than 10² times the float64 error bounds of the FFT (O(log(mn)·u)) or of the
tap products and their DFT (C-term products, sums over at most k² tap pairs and (2k−1)² offsets:
O((C + 5k²)·u)·N_abs²), and of the symmetric eigensolver (O(c·u)·‖G‖), for channel counts C and kernel areas k²
up to 10⁴. The Cholesky route adds its own proven rounding term before this margin.

Differentiable dense matrices (the attention kinds' projections, whose bound is differentiated into their output
gain): :func:`certified_matrix_norm`, the float64 SVD's σ_max raised by the relative :data:`NORM_MARGIN`, a 0-d
tensor that autograd differentiates (:func:`certify_operator_norm` returns floats and a gradient direction instead).

Shared per-sample measures: :func:`per_sample_norm` ‖x_b‖₂ of each sample of a batch, :func:`relative_error`
‖x̂_b − x_b‖₂/‖x_b‖₂; :func:`unit_roundoff` u of a float dtype.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

__all__ = [
    "NORM_MARGIN",
    "ConvGeometry",
    "NormCertificate",
    "certified_matrix_norm",
    "certify_operator_norm",
    "layer_geometry",
    "per_sample_norm",
    "per_sample_norm_float64",
    "relative_error",
    "unit_roundoff",
]

LAMBDA_MARGIN = 1e-9
# Relative margin on every float64 SVD norm of certified_matrix_norm (its docstring proves it suffices).
NORM_MARGIN = 1e-12
# What the kernel's DFT costs: above this many frequency matrices, refuse rather than stall.
_MAX_FREQUENCIES = 1 << 20


@dataclass(frozen=True)
class ConvGeometry:
    """How a convolution is applied: what its certified bound depends on besides the kernel.

    Built by :func:`layer_geometry` from a layer.

    Arguments:
        torus: (m, n), the size of the circular convolution whose norm bounds the layer's; (1, 1) for a pointwise
            (1×1, zero-padded) convolution or a Linear, whose norm is the matrix norm of its kernel whatever the input.
        dilation: the kernel's (row, column) dilation.
        groups: the convolution's groups.
        input_size: (H, W), the input size the bound holds at; None when it holds at every size.
        kernel_size: (kh, kw) of the convolution it was built from (:func:`layer_geometry` records it), so that
            :func:`certify_operator_norm` refuses a kernel of another size; None: not checked.
    """

    torus: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    input_size: tuple[int, int] | None = None
    kernel_size: tuple[int, int] | None = None


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def layer_geometry(module: nn.Module, input_size: tuple[int, int] | None = None) -> ConvGeometry:
    """The :class:`ConvGeometry` of an ``nn.Linear`` or ``nn.Conv2d`` at ``input_size`` (H, W).

    A zero-padded convolution of output size n_out embeds in a circular one on a torus of
    max(H + max(pad_left, pad_right), (n_out − 1)·stride + 1) per dimension; a circular one's torus is (H, W).

    Arguments:
        module: the ``nn.Linear`` or ``nn.Conv2d``.
        input_size: (H, W) of the convolution's inputs; needed for a k×k or circular convolution, ignored otherwise.
    Returns:
        the :class:`ConvGeometry` (``torus=(1, 1)`` for a Linear or a zero-padded 1×1 convolution).
    Raises:
        ValueError: naming the option, when a configuration has no certified bound here: padding modes
            ``"reflect"`` and ``"replicate"`` (their padding operators have norm above 1), a circular padding whose
            outputs wrap around the torus more than once, or a k×k / circular convolution without ``input_size``;
            also a non-positive ``input_size``, one smaller than the dilated kernel, or one needing more than 2²⁰ DFT
            frequency matrices (frequencies × groups).
        TypeError: a module that is not ``nn.Linear``/``nn.Conv2d``.
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
        return ConvGeometry(torus=(1, 1), groups=module.groups, kernel_size=kernel)
    if input_size is None:
        raise ValueError(
            f"a {kernel[0]}×{kernel[1]} convolution's operator norm depends on the input size: pass input_size=(H, W)"
        )
    if len(tuple(input_size)) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in input_size
    ):
        raise ValueError(f"input_size must be two integers (H, W), got {input_size!r}")
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
    return ConvGeometry(
        torus=(torus[0], torus[1]), dilation=dilation, groups=module.groups, input_size=size, kernel_size=kernel
    )


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

    Arguments:
        sigma: the certified upper bound (float, from float64 arithmetic).
        abs_norm: N_abs ≥ ‖A(|W|)‖₂, the norm of the layer with every weight replaced by its absolute value (bounds
            the effect of rounding each weight).
        direction: a tensor D shaped like W with ⟨D, W⟩ = the computed top singular value, i.e. the gradient of
            σ_max with respect to W (used to differentiate the normalisation); ``None`` until asked for. On the
            Lanczos route (matrices above 256) the singular value is the Ritz value's, typically below σ_max by a
            relative 10⁻⁶ or less, and D as accurate as its Ritz vector (from a start nearly orthogonal to the top
            singular vector, that of a smaller singular value).
        vector: the top eigenvector (estimate) of the largest Gram matrix when one was computed (a matrix's
            eigendecomposition, or Lanczos and Cholesky); a warm start that :func:`certify_operator_norm` accepts as
            ``start``; otherwise ``None``.
    """

    sigma: float
    abs_norm: float
    direction: torch.Tensor | None = None
    vector: torch.Tensor | None = None


def _abs_norm(weight64: torch.Tensor, groups: int) -> float:
    flat = weight64.abs().reshape(weight64.shape[0], weight64.shape[1], -1).sum(-1)  # S = Σ_taps |W|
    blocks = flat.reshape(groups, flat.shape[0] // groups, flat.shape[1])
    rows = blocks.sum(dim=2).amax(dim=1)
    cols = blocks.sum(dim=1).amax(dim=1)
    return float(torch.sqrt(rows * cols).max())


@lru_cache(maxsize=32)
def _tap_dft(
    kh: int, kw: int, torus: tuple[int, int], dilation: tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`_tap_grams` needs of a kernel size and torus, computed once: the offset index of every tap pair
    (t, t') (row-major, δ = t' − t), and cos θ_δ(ω), sin θ_δ(ω) [frequencies, offsets] at every rfft2 frequency.
    The tensors are shared between calls (never modified in place) and kept for the 32 latest shapes."""
    with torch._C._DisableFuncTorch():  # plain tensors even inside torch.func: the cache outlives the call
        a = torch.arange(kh, device=device).repeat_interleave(kw)
        b = torch.arange(kw, device=device).repeat(kh)
        offset_index = (
            (a[None, :] - a[:, None] + kh - 1) * (2 * kw - 1) + (b[None, :] - b[:, None] + kw - 1)
        ).flatten()
        m, n = torus
        dh, dw = dilation
        half = n // 2 + 1
        freq_h = torch.arange(m, device=device).repeat_interleave(half)
        freq_w = torch.arange(half, device=device).repeat(m)
        delta_h = (torch.arange(-(kh - 1), kh, device=device) * dh).repeat_interleave(2 * kw - 1)
        delta_w = (torch.arange(-(kw - 1), kw, device=device) * dw).repeat(2 * kh - 1)
        # the phase reduced modulo 2π in integers first, so its float64 rounding does not grow with ω·δ
        turns = ((freq_h[:, None] * delta_h[None, :]) % m).double() / m + (
            (freq_w[:, None] * delta_w[None, :]) % n
        ).double() / n
        angle = 2 * math.pi * turns  # [frequencies, offsets]
        return offset_index, torch.cos(angle), torch.sin(angle)


def _tap_grams(w64: torch.Tensor, geometry: ConvGeometry) -> tuple[torch.Tensor, bool]:
    """The Gram matrices G(ω) of K̂(ω) at every rfft2 frequency, [groups, frequencies, c, c] complex, and ``tall``.

    With θ_t(ω) = 2π(ω_h·a·d_h/m + ω_w·b·d_w/n) the phase of tap t = (a, b), K̂(ω) = Σ_t W_t e^{−iθ_t(ω)}, so
    K̂ᴴK̂ = Σ_δ A_δ e^{−iθ_δ(ω)} with A_δ = Σ_{t'−t=δ} W_tᵀW_t' (and K̂K̂ᴴ = Σ_δ B_δ e^{+iθ_δ(ω)},
    B_δ = Σ_{t'−t=δ} W_tW_t'ᵀ): the DFT of the kernel's autocorrelation over the (2k_h−1)(2k_w−1) tap offsets δ.
    One real product of the taps stacked side by side gives every W_tᵀW_t', so this costs (k_h k_w c)²·C_large
    multiply-adds instead of 4·frequencies·c²·C_large for the Grams of the FFT's spectra, c the smaller side.
    """
    groups = geometry.groups
    out_channels, in_g = w64.shape[:2]
    out_g = out_channels // groups
    kh, kw = w64.shape[-2:]
    taps = kh * kw
    tall = out_g >= in_g
    w = w64.reshape(groups, out_g, in_g, taps)
    if tall:  # products[t, t'] = W_tᵀ W_t' (in×in)
        stacked = w.permute(0, 1, 3, 2).reshape(groups, out_g, taps * in_g)
        products, c = stacked.mT @ stacked, in_g
    else:  # products[t, t'] = W_t W_t'ᵀ (out×out)
        stacked = w.permute(0, 3, 1, 2).reshape(groups, taps * out_g, in_g)
        products, c = stacked @ stacked.mT, out_g
    products = products.reshape(groups, taps, c, taps, c).transpose(2, 3).reshape(groups, taps * taps, c, c)
    offset_index, cosines, sines = _tap_dft(kh, kw, tuple(geometry.torus), tuple(geometry.dilation), w64.device)
    summed = products.new_zeros(groups, cosines.shape[1], c * c)
    summed.index_add_(1, offset_index, products.reshape(groups, taps * taps, c * c))
    real = cosines @ summed
    imag = (sines @ summed) if not tall else -(sines @ summed)
    gram = torch.complex(real, imag).reshape(groups, -1, c, c)
    return gram, tall


@lru_cache(maxsize=1024)
def _phase_parts(
    kh: int, kw: int, torus: tuple[int, int], dilation: tuple[int, int], freq: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos θ_t(ω), sin θ_t(ω) [kh, kw] float64 at one rfft2 frequency index (shared: never modified in place)."""
    with torch._C._DisableFuncTorch():  # as in _tap_dft
        m, n = torus
        omega_h, omega_w = divmod(freq, n // 2 + 1)
        a = torch.arange(kh, device=device) * dilation[0]
        b = torch.arange(kw, device=device) * dilation[1]
        turns = ((omega_h * a[:, None]) % m).double() / m + ((omega_w * b[None, :]) % n).double() / n
        angle = 2 * math.pi * turns
        return torch.cos(angle), torch.sin(angle)


def _spectrum_at(w64: torch.Tensor, geometry: ConvGeometry, group: int, freq: int) -> torch.Tensor:
    """K̂(ω) of one group at one rfft2 frequency index, [out/groups, in/groups] complex (same sign as rfft2):
    Σ_t W_t e^{−iθ_t(ω)}, as two real products with cos θ_t and sin θ_t."""
    cosines, sines = _phase_parts(*w64.shape[-2:], tuple(geometry.torus), tuple(geometry.dilation), freq, w64.device)
    rows = w64.shape[0] // geometry.groups
    block = w64[group * rows : (group + 1) * rows].flatten(2)  # [out/g, in/g, taps]
    return torch.complex(block @ cosines.flatten(), -(block @ sines.flatten()))


# Lanczos steps for the candidate λ of a large Gram matrix, and the relative raises tried before falling back
_LANCZOS_STEPS = 32
_CANDIDATE_RAISES = (2e-6, 1e-4, 1e-2)
_LARGE_GRAM = 256


def _lanczos_top(gram: torch.Tensor, start: torch.Tensor | None) -> tuple[float, torch.Tensor]:
    """Largest Ritz value θ ≤ λ_max(gram) and its Ritz vector, from Lanczos with full reorthogonalisation.

    ``gram``: a real [n, n] float64 matrix, symmetric up to the rounding of its computation (θ is then a Ritz value of
    a matrix within that rounding). ``start``: a warm start (the previous top eigenvector of nearby weights) or
    ``None`` (a fixed pseudo-random start). A Ritz value is a Rayleigh quotient, so θ is only a candidate:
    :func:`_cholesky_certifies` proves the bound.
    """
    n = gram.shape[0]
    steps = min(n, _LANCZOS_STEPS)
    if start is None or start.shape != (n,) or not torch.isfinite(start).all() or float(start.norm()) == 0.0:
        generator = torch.Generator().manual_seed(0)
        start = torch.randn(n, generator=generator, dtype=torch.float64).to(gram.device)
    basis = gram.new_zeros(steps, n)
    basis[0] = start.to(gram) / start.norm()
    alphas, betas = [], []
    for j in range(steps):
        w = gram @ basis[j]
        alphas.append(float(basis[j] @ w))
        w = w - basis[: j + 1].mT @ (basis[: j + 1] @ w)  # full reorthogonalisation, twice
        w = w - basis[: j + 1].mT @ (basis[: j + 1] @ w)
        beta = float(w.norm())
        if j + 1 == steps or beta <= 1e-12 * max(abs(alphas[-1]), 1e-300):
            break
        betas.append(beta)
        basis[j + 1] = w / beta
        if (j + 1) % 8 == 0:  # a warm start converges in a few steps: stop once the top Ritz pair's residual is tiny
            values, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas[:-1]))
            if beta * abs(float(vectors[-1, -1])) <= 1e-8 * abs(float(values[-1])):
                break
    k = len(alphas)
    values, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas[: k - 1]))
    ritz = vectors[:, -1].to(gram.device) @ basis[:k]
    return float(values[-1]), ritz / ritz.norm()


def _tridiagonal(alphas: list[float], betas: list[float]) -> torch.Tensor:
    matrix = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        matrix += torch.diag(off, 1) + torch.diag(off, -1)
    return matrix


def _cholesky_certifies(gram: torch.Tensor, candidate: float) -> float | None:
    """An upper bound on λ_max(gram) near ``candidate`` if the Cholesky factorisation of candidate·I − gram
    completes in floating point; ``None`` if it breaks down. ``gram`` means the symmetric matrix its lower triangle
    defines (the triangle the factorisation reads; a computed Gram need not be symmetric to the last bit).

    Proof. Let A be the computed candidate·I − gram (A is exact up to one rounding on its diagonal, at most
    u·candidate per entry). If Cholesky runs to completion with the computed factor R̂, then
    R̂ᵀR̂ = A + ΔA with |ΔA| ≤ γ_{n+1}|R̂ᵀ||R̂| (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
    Thm 10.3; blocked implementations with conventional matrix products satisfy it with a modestly larger
    constant, hence the factor 16 below). R̂ᵀR̂ ⪰ 0, so λ_min(A) ≥ −‖ΔA‖₂ ≥ −γ_{n+1}‖|R̂|‖₂² ≥ −γ_{n+1}‖R̂‖_F², i.e.
    λ_max(gram) ≤ candidate + u·candidate + γ_{n+1}‖R̂‖_F².
    """
    n = gram.shape[0]
    shifted = -gram  # candidate·I − gram: exact off the diagonal, one rounding on it
    shifted.diagonal().add_(candidate)
    factor, info = torch.linalg.cholesky_ex(shifted)
    if int(info) != 0:
        return None
    u = unit_roundoff(torch.float64)
    gamma = 16 * (n + 1) * u / (1 - 16 * (n + 1) * u)
    return candidate * (1 + u) + gamma * float((factor * factor).sum())


def _top_eigenvalue(gram: torch.Tensor, start: torch.Tensor | None, need_vector: bool):
    """(λ_up ≥ λ_max of each gram up to the module's margin, index of the largest, top eigenvector or None).

    Small Grams (the per-frequency c×c matrices of a convolution): ``eigvalsh``, batched. One large Gram (an
    n×n matrix, n > 256, e.g. a 512×512 1×1 convolution): a Lanczos candidate certified by a Cholesky
    factorisation (:func:`_cholesky_certifies`), cheaper than a full symmetric eigendecomposition; if
    three raises of the candidate fail, the eigendecomposition.

    ``gram`` as computed, Hermitian up to rounding. The Lanczos route uses it so (symmetrising would cost a third of
    its product): the Cholesky factorisation reads the lower triangle only, every entry of either triangle is a
    float64 dot product within the rounding the margin covers (module doc), so the symmetric matrix built from it is
    within that rounding of the true Gram; Lanczos, which multiplies by all of it, only proposes the candidate. The
    eigensolvers get it symmetrised to the last bit (a complex diagonal exactly real).
    """
    if gram.shape[0] * gram.shape[1] == 1 and gram.shape[-1] > _LARGE_GRAM and not gram.is_complex():
        matrix = gram[0, 0]
        theta, ritz = _lanczos_top(matrix, start)
        for raise_ in _CANDIDATE_RAISES:
            bound = _cholesky_certifies(matrix, theta * (1 + raise_) + raise_ * 1e-300)
            if bound is not None:
                return bound, 0, ritz
    gram = 0.5 * (gram + gram.mH)
    if need_vector and gram.shape[0] * gram.shape[1] == 1:
        values, vectors = torch.linalg.eigh(gram)
        return float(values[0, 0, -1]), 0, vectors[0, 0, :, -1]
    top = torch.linalg.eigvalsh(gram)[..., -1]  # [groups, frequencies]
    best = int(torch.argmax(top))
    return float(top.flatten()[best]), best, None


@torch.no_grad()
def certify_operator_norm(
    weight: torch.Tensor, geometry: ConvGeometry, with_direction: bool = False, start: torch.Tensor | None = None
) -> NormCertificate:
    """A certified upper bound σ_up ≥ ‖A(W)‖₂ on the operator norm of the layer with weight W (module doc).

    σ_up = √(λ(1 + 10⁻⁹) + 10⁻⁹·N_abs²) for a computed λ ≥ max_ω λ_max(K̂(ω)ᴴK̂(ω)) (a matrix: ω = 0 only,
    K̂ = W), then rounded one ulp up at the weights' scale (Sedghi, Gupta & Long, ICLR 2019, for the convolutions).

    Arguments:
        weight: W, [out, in] (Linear) or [out, in/groups, kh, kw] (Conv2d), any float dtype and device.
        geometry: how the layer applies W, from :func:`layer_geometry`.
        with_direction: also return D with ⟨D, W⟩ = σ_max, the gradient of the top singular value.
        start: the ``vector`` of an earlier certificate of nearby weights (a warm start; never affects validity).
    Returns:
        a :class:`NormCertificate` (``sigma``, ``abs_norm``; ``direction`` with ``with_direction``; ``vector``).
    Raises:
        TypeError: when ``weight`` is not a real floating-point tensor or ``geometry`` not a :class:`ConvGeometry`.
        ValueError: when ``weight`` has non-finite values, is neither 2-D nor 4-D, or does not fit ``geometry``
            (output channels not divisible by its groups, a 4-D kernel of another size than the one it was built for,
            or a torus that is not positive).

    >>> layer = nn.Linear(3, 2, bias=False)
    >>> _ = layer.weight.data.copy_(torch.tensor([[3.0, 0.0, 0.0], [0.0, -4.0, 0.0]]))
    >>> sigma = certify_operator_norm(layer.weight, layer_geometry(layer)).sigma
    >>> 4.0 <= sigma <= 4.0 * (1 + 1e-8)
    True
    """
    _check_weight_fits(weight, geometry)
    if not torch.isfinite(weight).all():
        raise ValueError("the weight has non-finite values; no operator-norm bound exists")
    w64 = weight.detach().to(torch.float64)
    largest = float(w64.abs().max()) if w64.numel() else 0.0
    if largest == 0.0:  # the zero layer: σ = 0 exactly, and any direction is a subgradient
        return NormCertificate(sigma=0.0, abs_norm=0.0, direction=torch.zeros_like(weight) if with_direction else None)
    # Scale by a power of two so the largest weight is in [1/2, 1): exact, and the Gram matrix can neither
    # overflow nor underflow (weights 2¹⁰⁷⁴ times smaller than the largest may vanish, far inside the margin).
    exponent = math.frexp(largest)[1]
    for part in (exponent // 2, exponent - exponent // 2):  # two exact halves: 2^±1074 itself overflows
        w64 = w64 * math.ldexp(1.0, -part)
    certificate = _certify_scaled(w64, geometry, with_direction, start)
    # back to the weights' scale, one ulp up: exact in the normal range, and covering a subnormal result's rounding
    certificate.sigma = math.nextafter(math.ldexp(certificate.sigma, exponent), math.inf)
    certificate.abs_norm = math.nextafter(math.ldexp(certificate.abs_norm, exponent), math.inf)
    if certificate.direction is not None:
        certificate.direction = certificate.direction.to(weight.device)
    return certificate


def _check_weight_fits(weight: torch.Tensor, geometry: ConvGeometry) -> None:
    """Refuse a weight the geometry cannot describe (certify_operator_norm's Raises)."""
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        kind = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise TypeError(f"weight must be a real floating-point tensor, got {kind}")
    if not isinstance(geometry, ConvGeometry):
        raise TypeError(f"geometry must be a ConvGeometry (from layer_geometry), got {type(geometry).__name__}")
    if weight.dim() not in (2, 4):
        raise ValueError(f"weight must be [out, in] or [out, in/groups, kh, kw], got shape {tuple(weight.shape)}")
    if min(geometry.torus) < 1 or geometry.groups < 1 or weight.shape[0] % geometry.groups:
        raise ValueError(
            f"a weight of shape {tuple(weight.shape)} does not fit torus {tuple(geometry.torus)} with "
            f"{geometry.groups} groups: the torus must be positive and the output channels divisible by the groups"
        )
    kernel = geometry.kernel_size
    if kernel is not None and weight.dim() == 4 and tuple(weight.shape[-2:]) != tuple(kernel):
        raise ValueError(
            f"this geometry was built for a {kernel[0]}×{kernel[1]} kernel, got a weight of shape "
            f"{tuple(weight.shape)}: build the geometry from the layer the weight belongs to (layer_geometry)"
        )


def _certify_scaled(w64: torch.Tensor, geometry: ConvGeometry, with_direction: bool, start) -> NormCertificate:
    if geometry.torus == (1, 1):
        spectrum, _ = _spectrum(w64, geometry)
        tall = spectrum.shape[-2] >= spectrum.shape[-1]
        gram = spectrum.mT @ spectrum if tall else spectrum @ spectrum.mT
    elif w64.shape[-2] ** 2 * w64.shape[-1] ** 2 <= 8 * geometry.torus[0] * (geometry.torus[1] // 2 + 1):
        gram, tall = _tap_grams(w64, geometry)  # the cheaper route when taps² ≤ 8·frequencies (module doc)
    else:
        spectrum, _ = _spectrum(w64, geometry)
        tall = spectrum.shape[-2] >= spectrum.shape[-1]
        gram = spectrum.mH @ spectrum if tall else spectrum @ spectrum.mH
    lam, best, vector = _top_eigenvalue(gram, start, with_direction)
    abs_norm = _abs_norm(w64, geometry.groups)
    sigma = math.sqrt(max(lam, 0.0) * (1 + LAMBDA_MARGIN) + LAMBDA_MARGIN * abs_norm**2)
    certificate = NormCertificate(sigma=sigma, abs_norm=abs_norm, vector=vector)
    if with_direction:
        n_freq = gram.shape[1]
        group, freq = divmod(best, n_freq)
        if geometry.torus == (1, 1):
            k = spectrum[group, 0]
        else:
            k = _spectrum_at(w64, geometry, group, freq)
        if vector is None:
            small = k.mH @ k if tall else k @ k.mH
            _, vectors = torch.linalg.eigh(0.5 * (small + small.mH))
            vector = vectors[:, -1]
        certificate.direction = _direction(w64, k, vector, group, freq, geometry, tall)
    return certificate


def _direction(w64, k, top, group, freq, geometry, tall) -> torch.Tensor:
    """D with ⟨D, W⟩ = Re(uᴴK̂(ω*)v) = σ_max at the maximising group and frequency (u, v its singular vectors).

    ``k`` = K̂(ω*) [out/groups, in/groups]; ``top``: the top eigenvector of its Gram matrix (v if ``tall``, else u).
    """
    top = top.to(k.dtype)
    if tall:
        v = top
        u = k @ v
    else:
        u = top
        v = k.mH @ u
    scale = torch.linalg.vector_norm(u if tall else v).clamp_min(1e-300)
    u, v = (u / scale, v) if tall else (u, v / scale)
    outer = torch.conj(u)[:, None] * v[None, :]  # [out/g, in/g]
    m, n = geometry.torus
    if (m, n) == (1, 1):
        block = outer.real.reshape(outer.shape[0], outer.shape[1], *([1] * (w64.dim() - 2)))
        block = block.expand(-1, -1, *w64.shape[2:]) if w64.dim() > 2 else block.reshape(outer.shape)
    else:
        # Re(outer·e^{−iθ_t}) = Re(outer)·cos θ_t + Im(outer)·sin θ_t
        cosines, sines = _phase_parts(
            *w64.shape[-2:], tuple(geometry.torus), tuple(geometry.dilation), freq, w64.device
        )
        block = outer.real[:, :, None, None] * cosines + outer.imag[:, :, None, None] * sines
    direction = torch.zeros_like(w64)
    rows = block.shape[0]
    direction[group * rows : (group + 1) * rows] = block
    return direction


def unit_roundoff(dtype: torch.dtype) -> float:
    """The unit roundoff u = ε/2 = 2^−p of a float dtype with p significand bits: |fl(x) − x| ≤ u·|x|.

    Arguments:
        dtype: a floating-point torch dtype.
    Returns:
        u as a Python float (2⁻²⁴ for float32, 2⁻⁵³ for float64).
    Raises:
        TypeError: for a dtype that is not floating point (``torch.finfo`` refuses it).

    >>> unit_roundoff(torch.float64) == 2.0**-53
    True
    """
    return torch.finfo(dtype).eps / 2


def certified_matrix_norm(matrix: torch.Tensor) -> torch.Tensor:
    """A certified upper bound on the spectral norm of a dense matrix, differentiable: σ̂_max(W)·(1 + NORM_MARGIN).

    σ̂_max is the largest singular value that ``torch.linalg.matrix_norm(W, ord=2)`` computes from W converted to
    float64 (exact for float16, bfloat16, float32 and float64 weights). Proof of the upper bound: LAPACK's SVD is
    backward stable: the computed singular values are the exact ones of W + E with ‖E‖₂ ≤ p(m, n)·u·‖W‖₂, p a
    modest polynomial in the sides m, n and u = 2⁻⁵³ (Golub & Van Loan, *Matrix Computations*, 4th ed., §8.6.1;
    Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.). By Weyl's inequality
    |σ̂_max − σ_max| ≤ ‖E‖₂, so σ_max ≤ σ̂_max/(1 − p·u). With NORM_MARGIN = 10⁻¹² ≥ 2·p·u for p ≤ 4500 (the
    attention kinds' matrices have sides of at most a few hundred), σ̂_max·(1 + NORM_MARGIN) rounded to the nearest
    float64 (one more factor 1 + u) is ≥ σ_max. Autograd differentiates it (the top singular vectors' outer
    product); the value is the same with or without a graph up to the SVD's last-bit rounding.

    Arguments:
        matrix: W [m, n], any float dtype and device, with or without a graph.
    Returns:
        a 0-d float64 tensor σ_up ≥ ‖W‖₂ on ``matrix``'s device.
    Raises:
        RuntimeError: from ``torch.linalg.matrix_norm`` when ``matrix`` has fewer than 2 dimensions (a batch
        [..., m, n] gives one bound per matrix).

    >>> certified_matrix_norm(torch.tensor([[3.0, 0.0], [0.0, -4.0]])).item() >= 4.0
    True
    """
    return torch.linalg.matrix_norm(matrix.to(torch.float64), ord=2) * (1 + NORM_MARGIN)


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of every sample of a batch: ‖t_b‖₂ = √(Σ_i t_b,i²) over all entries of sample b.

    Arguments:
        t: a batch [B, ...] (any shape with the batch first), any float dtype.
    Returns:
        [B], in ``t``'s dtype: ``t.reshape(B, -1).norm(dim=1)`` (a [B] tensor is B samples of one entry each),
        differentiable. See :func:`per_sample_norm_float64` for norms that must not overflow.

    >>> per_sample_norm(torch.tensor([[3.0, 4.0], [0.0, 1.0]])).tolist()
    [5.0, 1.0]
    """
    return t.reshape(t.shape[0], -1).norm(dim=1)


def per_sample_norm_float64(t: torch.Tensor) -> torch.Tensor:
    """‖t_b‖₂ per sample in float64, scaled by the sample's largest entry first so that it never overflows.

    ‖t_b‖ = m_b · ‖t_b / m_b‖ with m_b = max_i |t_b,i| (1 where the sample is zero): the sum of squares of a float32
    norm overflows at ‖t‖ ≈ 1.8e19 and a float64 one at about 1e154, and a relative residual would overflow with it.

    Arguments:
        t: a batch [B, ...], any float dtype (an empty sample has norm 0).
    Returns:
        [B], float64, detached (no gradient flows through it).

    >>> t = torch.tensor([[3e20, 4e20]])  # float32: the sum of squares overflows
    >>> per_sample_norm(t).tolist(), f"{float(per_sample_norm_float64(t)):.3e}"
    ([inf], '5.000e+20')
    """
    flat = t.detach().reshape(t.shape[0], -1).double()
    largest = flat.abs().amax(dim=1, keepdim=True) if flat.shape[1] else flat.new_zeros(flat.shape[0], 1)
    unit = torch.where(largest > 0, largest, torch.ones_like(largest))
    return (flat / unit).norm(dim=1) * unit.squeeze(1)


def relative_error(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The relative error of every sample of a batch: ‖x̂_b − x_b‖₂ / ‖x_b‖₂ (norms over all entries of sample b).

    Arguments:
        estimate: x̂ [B, ...], e.g. a reconstruction.
        reference: x, the same shape (broadcastable against ``estimate``; its norm is the denominator).
    Returns:
        [B]: ``per_sample_norm(estimate − reference) / per_sample_norm(reference)``; ``inf`` or ``nan`` for a sample
        whose reference is zero. Reduce it with ``.max()`` for the worst sample.

    >>> reference = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    >>> relative_error(reference + torch.tensor([[0.0, 0.5], [0.0, 0.25]]), reference).tolist()
    [0.10000000149011612, 0.25]
    """
    return per_sample_norm(estimate - reference) / per_sample_norm(reference)
