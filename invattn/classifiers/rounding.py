"""The rounding model behind :func:`~invattn.classifiers.certified_radius`: a bound on how far the i-ResNet
classifier's logits, computed in float32 or float64 on the CPU, can be from the exact network's over an ℓ₂ ball
(:func:`evaluation_error_bound`), and the check that a model is one it covers (:func:`check_rounding_model`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import InvertibleResidual
from ..lipschitz import lipschitz_bound
from ..norms import certify_operator_norm, layer_geometry, per_sample_norm, per_sample_norm_float64, unit_roundoff
from .iresnet import IResNetClassifier

__all__ = ["EXP_ULPS", "check_rounding_model", "evaluation_error_bound", "gamma"]


# the error of exp/expm1 assumed in ulps (glibc and SLEEF guarantee ≤ 1 ulp in float32 on the CPU)
EXP_ULPS = 8


def check_rounding_model(model: IResNetClassifier) -> None:
    """Refuse what :func:`evaluation_error_bound` does not cover.

    Arguments:
        model: the i-ResNet classifier to certify.
    Raises:
        ValueError: naming the reason and the remedy, for a dtype other than float32/float64, a device other than
            the CPU, a reduced-precision float32 mode (matmul precision, ``fp32_precision``, CPU autocast), or a
            block other than a convolutional residual one (ELU, zero-padded convolutions).
    """
    dtype, device = model.head.weight.dtype, model.head.weight.device
    remedy = (
        "certify the float64 model instead: certified_radius(model.double(), x.double())"
        if dtype != torch.float64
        else "no certified radius can be given for this model"
    )
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"certified radii of a {dtype} model are not covered (its arithmetic's rounding is only "
            f"analysed for float32 and float64 on the CPU); {remedy}"
        )
    if device.type != "cpu":
        raise ValueError(
            f"a model on {device.type} may compute with TF32 or FFT/Winograd convolutions, which break the "
            "rounding analysis of its certified radius; move it to the CPU (model.cpu(), x.cpu()): the "
            "radius then holds for the model evaluated there"
        )
    reduced = []
    try:  # the legacy switch; once the per-backend ``fp32_precision`` switches are used, torch refuses to read it
        legacy = torch.get_float32_matmul_precision() if dtype == torch.float32 else "highest"
    except RuntimeError:
        legacy = "highest"  # the per-backend settings below say what is in force
    if legacy != "highest":
        reduced.append(f"torch.set_float32_matmul_precision({legacy!r})")
    for name, backend in (
        ("torch.backends.fp32_precision", torch.backends),
        ("torch.backends.mkldnn.fp32_precision", torch.backends.mkldnn),
        ("torch.backends.mkldnn.matmul.fp32_precision", getattr(torch.backends.mkldnn, "matmul", None)),
        ("torch.backends.mkldnn.conv.fp32_precision", getattr(torch.backends.mkldnn, "conv", None)),
    ):
        setting = getattr(backend, "fp32_precision", None)
        if setting not in (None, "none", "ieee"):
            reduced.append(f"{name} = {setting!r}")
    if torch.is_autocast_enabled("cpu"):
        reduced.append("torch.autocast on the CPU")
    if reduced and dtype == torch.float32:
        raise ValueError(
            f"a reduced-precision float32 mode is on ({', '.join(reduced)}): the model then rounds more "
            f"than the certified radius allows for; switch it off, or {remedy}"
        )
    for stage in model.stages:
        for block in stage:
            layers = (
                list(block.g) if isinstance(block, InvertibleResidual) and isinstance(block.g, nn.Sequential) else None
            )
            covered = layers is not None and all(
                (isinstance(layer, nn.ELU) and float(layer.alpha) == 1.0)
                or (isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros")
                for layer in layers
            )
            if not covered:
                kind = type(block.g).__name__ if isinstance(block, InvertibleResidual) else type(block).__name__
                raise ValueError(
                    f"the rounding analysis of certified_radius covers convolutional residual "
                    f"blocks (ELU, zero-padded convolutions), not this model's {kind} block (an attention "
                    "block): no certified radius can be given for this model, in any dtype"
                )


def gamma(n: int, u: float) -> float:
    """γ_n = nu/(1 − nu) (Higham, 2002, §3.1): the relative error bound of a sum of n products.

    Arguments:
        n: the number of rounded operations.
        u: the format's unit roundoff.
    Returns:
        γ_n.
    Raises:
        ValueError: where nu ≥ 0.01 (no useful bound).
    """
    if n * u >= 0.01:
        raise ValueError(
            f"a sum of {n} terms in a format with unit roundoff {u:.1e} has no useful rounding bound; "
            "certify the float64 model instead: certified_radius(model.double(), x.double())"
        )
    return n * u / (1 - n * u)


def evaluation_error_bound(
    model: IResNetClassifier, reference: IResNetClassifier, x: torch.Tensor, radius: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on the rounding of the i-ResNet classifier's logits over ℓ₂ balls (the proof of :func:`certified_radius`).

    E ≥ ‖model(fl(x')) − f(x')‖₂ for every x' with ‖x' − x_b‖ ≤ radius_b, where ``model`` computes in its dtype
    (float32 or float64) on the CPU and f is ``reference`` (its float64 copy, or the model itself when it is float64)
    in exact arithmetic; E₆₄ ≥ ‖reference(x) − f(x)‖₂, the rounding of the float64 pass at x that gives the margins.

    The bound E, layer by layer (u the model dtype's unit roundoff, 2⁻²⁴ in float32; γ_n = nu/(1 − nu), Higham,
    *Accuracy and Stability of Numerical Algorithms*, 2002, §3.1): e_ℓ ≥ ‖ĥ_ℓ(x') − h_ℓ(x')‖ obeys
    e_ℓ ≤ Lip_ℓ·e_{ℓ−1} + local_ℓ. The input: fl₃₂(x')
    moves x' by ≤ u‖x'‖ (+ the subnormal spacing·√D). A convolution or linear layer with fan-in n, computed as sums
    of products in any order, with or without FMA, errs per output by ≤ γ_{n+1}(Σ|ŵ||ĥ| + |b|), in ℓ₂ by
    ≤ γ_{n+1}(Σ_taps ‖Ŵ_t‖_F·‖ĥ‖ + ‖b‖√positions) (a zero-padded convolution is Σ_t shift_t∘W_t, ‖shift_t‖ ≤ 1),
    plus (n + 1)·(smallest normal)·√outputs for products flushed to zero; its float32 effective weights Ŵ differ
    from the float64 copy's W (the spectral scale carries the dtype's margin), which adds Σ_t ‖Ŵ_t − W_t‖_F·‖ĥ‖,
    measured; Lip_ℓ is the float64 layer's certified norm. ELU (α = 1) as exp(t) − 1 or expm1 with exp ≤ k ulp
    off (k = 8 assumed; glibc and SLEEF guarantee 1) errs by ≤ (2k + 1)u per
    entry (the subtraction is exact by Sterbenz's lemma for exp ≥ ½, else rounds by ≤ u), ·√entries in ℓ₂; it is
    1-Lipschitz. A residual sum rounds by ≤ u‖ŷ‖; ReLU, squeezes and zero padding are exact; mean pooling over P
    positions errs by ≤ γ_{P+1}‖ĥ‖/√P and has norm 1/√P. The norms ‖ĥ_ℓ(x')‖ are bounded over the ball by
    ‖h_ℓ(x)‖ + Lip(prefix)·r₀ + e_ℓ, with ‖h_ℓ(x)‖ ≤ the float64 pass's norm (raised past its rounding) plus that
    pass's own error, bounded by the same recursion with u = 2⁻⁵³. The analysis assumes no overflow: every entry and
    every partial sum of a layer is at most its ℓ₂ bound ‖|W|‖·‖ĥ‖ + ‖b‖, and a sample where such a bound (or the
    float64 pass's) exceeds a quarter of the dtype's largest number, or any quantity is not finite, gets radius 0. E is
    a worst case (γ_n), far above the rounding usually seen.


    Arguments:
        model: the i-ResNet classifier as evaluated (float32 or float64, CPU; see :func:`check_rounding_model`).
        reference: its float64 copy (or the model itself when float64), in eval mode.
        x: the centres [B, C, H, W] float64.
        radius: the balls' radii [B] float64.
    Returns:
        (E, E₆₄), each [B] float64; inf for a sample whose bounds could overflow or are not finite.
    Raises:
        ValueError: when a sum is too long for a useful bound (:func:`gamma`), or the float64 copy's biases differ.
    """
    bound = RoundingBound(model.head.weight.dtype, x, radius)
    for _ in range(model.config.init_downsampling):
        bound.h = reference.squeeze(bound.h)
    for stride, pad, stage32, stage64 in zip(model.config.strides, reference.pads, model.stages, reference.stages):
        if stride == 2:
            bound.h = reference.squeeze(bound.h)
        bound.h = pad(bound.h)  # squeezes and zero padding: exact, isometric
        for block32, block64 in zip(stage32, stage64):
            bound.residual_block(block32, block64)
    bound.head(model, reference)
    bad = bound.unsafe | ~torch.isfinite(bound.err) | ~torch.isfinite(bound.err64)
    return torch.where(bad, math.inf, bound.err), torch.where(bad, math.inf, bound.err64)


class RoundingBound:
    """The layer-by-layer recursion of :func:`evaluation_error_bound`: the float64 activation h at x, the Lipschitz
    bound ``lip`` of the prefix, and per sample the error bounds ``err`` (the model's dtype over the ball) and
    ``err64`` (the float64 pass at x), with ``unsafe`` marking samples whose bounds could overflow."""

    def __init__(self, dtype: torch.dtype, x: torch.Tensor, radius: torch.Tensor) -> None:
        self.u, self.u64 = unit_roundoff(dtype), unit_roundoff(torch.float64)
        self.tiny = torch.finfo(dtype).smallest_normal  # the absolute error of a product flushed to zero, or rounded
        self.r0 = radius.double()
        # No overflow anywhere over the ball: every entry and every partial sum Σ|w||h| of a layer is at most the ℓ₂
        # bound ‖|W|‖·‖ĥ‖ + ‖b‖ used below, so a sample whose bounds stay under a quarter of the dtype's largest number
        # (and of float64's for the reference pass) cannot overflow; any other sample gets E = inf (radius 0), as does
        # NaN.
        self.limit, self.limit64 = torch.finfo(dtype).max / 4, torch.finfo(torch.float64).max / 4
        self.unsafe = torch.zeros_like(radius, dtype=torch.bool)
        self.h, self.lip = x, 1.0
        # the input rounded to the dtype: ‖fl(x') − x'‖ ≤ u‖x'‖ + (subnormal spacing)·√D
        self.err = self.u * (self.computed_norm(x) + self.r0) + self.tiny * math.sqrt(x[0].numel())
        self.err64 = torch.zeros_like(self.r0)
        self.guard(self.computed_norm(x) + self.r0 + self.err, self.computed_norm(x))

    def computed_norm(self, h: torch.Tensor) -> torch.Tensor:  # ≥ ‖h_b‖ of the float64 tensor h, past its rounding
        return per_sample_norm_float64(h) * (1 + 2 * (h[0].numel() + 2) * self.u64)

    def guard(self, reach: torch.Tensor, reach64: torch.Tensor) -> None:
        self.unsafe = self.unsafe | ~(reach <= self.limit) | ~(reach64 <= self.limit64)  # NaN counts as unsafe

    def ball_norm(self, err: torch.Tensor | None = None) -> torch.Tensor:
        # ‖ĥ(x')‖ ≤ ‖h(x)‖ + Lip(prefix)·r₀ + e over the ball, ‖h(x)‖ ≤ ‖ĥ₆₄(x)‖ + e₆₄
        return self.computed_norm(self.h) + self.err64 + self.lip * self.r0 + (self.err if err is None else err)

    def linear(self, layer32: nn.Module, layer64: nn.Module, lip_layer: float) -> None:
        w32, w64 = layer32.weight.detach().double(), layer64.weight.detach()
        taps = lambda w: w.reshape(w.shape[0], w.shape[1], -1).permute(2, 0, 1)  # noqa: E731  [taps, out, in]
        abs32 = float(per_sample_norm(taps(w32)).sum())  # Σ_t ‖W_t‖_F ≥ ‖|W| as a layer‖₂
        abs64 = float(per_sample_norm(taps(w64)).sum())
        delta = float(per_sample_norm(taps(w32 - w64)).sum())  # ≥ ‖(Ŵ − W) as a layer‖₂
        fan_in = w64[0].numel()
        out = layer64(self.h)
        positions = out[0, 0].numel() if out.dim() > 2 else 1
        bias = 0.0 if layer64.bias is None else float(layer64.bias.detach().norm()) * math.sqrt(positions)
        if layer32.bias is not None and not torch.equal(layer32.bias.detach().double(), layer64.bias.detach()):
            raise ValueError("the float64 copy's biases differ from the model's")  # deepcopy().double() is exact
        ball, computed = self.ball_norm(), self.computed_norm(self.h)
        self.guard(abs32 * ball + bias, abs64 * computed + bias)
        local = gamma(fan_in + 1, self.u) * (abs32 * ball + bias) + (fan_in + 1) * self.tiny * math.sqrt(out[0].numel())
        self.err = lip_layer * self.err + local + delta * ball
        self.err64 = lip_layer * self.err64 + gamma(fan_in + 1, self.u64) * (abs64 * computed + bias)
        self.h, self.lip = out, self.lip * lip_layer

    def residual_block(self, block32: InvertibleResidual, block64: InvertibleResidual) -> None:
        a, lip_a, err_a, err64_a = self.h, self.lip, self.err, self.err64
        for layer32, layer64 in zip(block32.g, block64.g):
            if isinstance(layer64, nn.ELU):  # |fl(elu(t)) − elu(t)| ≤ (2k + 1)u per entry; 1-Lipschitz
                self.h = layer64(self.h)
                self.err = self.err + (2 * EXP_ULPS + 1) * self.u * math.sqrt(self.h[0].numel())
                self.err64 = self.err64 + (2 * EXP_ULPS + 1) * self.u64 * math.sqrt(self.h[0].numel())
            else:
                self.linear(layer32, layer64, lipschitz_bound(layer64))
        # y = a + g: |fl(s) − s| ≤ u|fl(s)| per entry
        self.h = a + self.h
        self.err64 = err64_a + self.err64 + self.u64 * self.computed_norm(self.h)
        self.lip = lip_a * (1 + block64.branch_lipschitz_bound())  # Lip(a + g(a)) ≤ 1 + Lip(g)
        self.guard(self.ball_norm(err_a + self.err), self.computed_norm(self.h) + self.err64)
        self.err = err_a + self.err
        self.err = self.err + self.u * self.ball_norm()

    def head(self, model: IResNetClassifier, reference: IResNetClassifier) -> None:
        """ReLU (exact, 1-Lipschitz), mean over P positions (γ_{P+1}: P − 1 additions and a division), linear."""
        self.h = F.relu(self.h)
        if model.config.pool:
            count = self.h[0, 0].numel()
            scale = 1 / math.sqrt(count)  # ‖mean‖ ≤ ‖h‖/√P and Σ_p|h_cp|/P ≤ ‖h_c‖/√P
            self.err = scale * (self.err + gamma(count + 1, self.u) * self.ball_norm())
            self.err64 = scale * (self.err64 + gamma(count + 1, self.u64) * self.computed_norm(self.h))
            self.h, self.lip = self.h.mean(dim=(2, 3)), self.lip * scale
        else:
            self.h = self.h.flatten(1)
        head_norm = certify_operator_norm(reference.head.weight, layer_geometry(reference.head)).sigma
        self.linear(model.head, reference.head, head_norm)
