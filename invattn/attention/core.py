"""The shared floor of every attention kind: the memory-lean O = V·Pᵀ core (:class:`AttentionCore`, computed by the
custom autograd function :class:`AttentionCoreFunction`), the row normalisation, the domain projections, the input
check and initialisation every kind uses, and :class:`CertifiedAttention`, which turns a kind's bound into its output
gain. Every matrix norm in a bound is :func:`invattn.norms.certified_matrix_norm` (raised by ``NORM_MARGIN``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_coeff, check_finite, check_positive_int
from ..norms import NORM_MARGIN, certified_matrix_norm, unit_roundoff

__all__ = [
    "LEAN_BACKWARD_ENTRIES",
    "NORM_MARGIN",
    "AttentionCore",
    "AttentionCoreFunction",
    "CertifiedAttention",
    "affine",
    "check_input",
    "project_to_ball",
    "row_normalise",
    "uniform_init",
]


def uniform_init(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """A new parameter drawn from PyTorch's default Linear/Conv initialisation: U(−1/√fan_in, 1/√fan_in).

    Draws ``prod(shape)`` numbers from the global torch generator (``torch.manual_seed`` reproduces them).

    Arguments:
        shape: the parameter's shape.
        fan_in: the number of inputs each output sums over (sets the range).
    Returns:
        an ``nn.Parameter`` of ``shape``, float32 (the default dtype), on the CPU.
    Raises:
        ZeroDivisionError: when ``fan_in`` is 0.
    """
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def _plain_evaluation(t: torch.Tensor) -> bool:
    """True when nothing differentiates through ``t`` (no autograd graph, no torch.func transform, no forward-mode
    dual): only then may buffers be overwritten in place."""
    if torch._C._are_functorch_transforms_active():
        return False
    if torch.is_grad_enabled() and t.requires_grad:
        return False
    return torch.autograd.forward_ad._current_level < 0


def project_to_ball(z: torch.Tensor, radius: float) -> torch.Tensor:
    """Project every column z[:, :, i] onto the Euclidean ball of ``radius``: z·min(1, r/‖z‖).

    A projection onto a convex set, hence 1-Lipschitz; applied position by position it is the projection
    onto a product of balls (again convex), so it is 1-Lipschitz on the whole [B, d, N] tensor too.

    Arguments:
        z: vectors [B, d, N], one d-vector per position (dimension 1 is the one normed).
        radius: r > 0, the balls' radius (in z's units).
    Returns:
        the projected tensor, [B, d, N], z's dtype and device (each column of norm ≤ r, columns inside unchanged).
    """
    norm = z.norm(dim=1, keepdim=True)
    return z * (radius / norm.clamp_min(radius))


def affine(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A 1×1 convolution on flattened maps: W·x (+ b), [d, C] @ [B, C, N] (+ bias) → [B, d, N].

    Arguments:
        weight: W [d, C].
        bias: b [d], added at every position, or None for none.
        x: flattened feature maps [B, C, N].
    Returns:
        W·x + b, [B, d, N] (the dtype of ``torch.matmul(weight, x)``).
    """
    out = torch.matmul(weight, x)
    return out if bias is None else out + bias[:, None]


def _row_shift(scores: torch.Tensor, kernel: str) -> torch.Tensor:
    """What to subtract from each row of scores before the kernel so no row underflows to 0/0 or overflows.

    exp: the row maximum (softmax is shift-invariant; the largest weight becomes 1). ELU + 1: min(row max, 0).
    If a row's maximum is negative, every score in it is, where ELU(s) + 1 = eˢ: shifting by that maximum
    scales the whole row by one factor, which the normalisation cancels; otherwise the row already holds a
    weight ≥ 1 and nothing is shifted. Either way the result is the same P, in float32 for every score range.
    """
    top = scores.detach().amax(dim=-1, keepdim=True)
    return top if kernel == "exp" else top.clamp(max=0.0)


def row_normalise(
    scores: torch.Tensor, kernel: str, with_total: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The attention weights P_ji = k(s_ji) / Σ_l k(s_jl) of a positive kernel k, computed stably.

    k is ``"exp"`` (softmax) or ``"elu1"`` (ELU(s) + 1). Each row is first shifted (``_row_shift``) so that none
    underflows to 0/0 or overflows; the shift cancels in the quotient. When nothing differentiates through
    ``scores`` its buffer is **overwritten in place**, so an attention map costs one N×N buffer per sample;
    otherwise (autograd, torch.func, forward-mode AD) the ops are out of place.

    Arguments:
        scores: S [B, N, N], row j the scores of output position j over the positions l.
        kernel: ``"exp"`` or ``"elu1"``.
        with_total: also return Z [B, N, 1], the row sums of the shifted kernel values.
    Returns:
        P [B, N, N] (each row sums to 1), or ``(P, Z)`` with ``with_total``.
    Raises:
        ValueError: for another kernel.
    """
    if kernel not in ("exp", "elu1"):
        raise ValueError(f"kernel must be 'exp' or 'elu1', got {kernel!r}")
    in_place = _plain_evaluation(scores)
    shift = _row_shift(scores, kernel)
    if in_place:
        scores.sub_(shift)
        weights = scores.exp_() if kernel == "exp" else F.elu(scores, inplace=True).add_(1.0)
        total = weights.sum(dim=-1, keepdim=True)
        weights.div_(total)
        return (weights, total) if with_total else weights
    shifted = scores - shift
    if kernel == "exp":
        weights = torch.exp(shifted)
    else:  # a shifted row is all ≤ 0, where ELU + 1 is exp: say so, so its largest entry isn't on ELU's kink at 0
        weights = torch.where(shift < 0, torch.exp(shifted), F.elu(shifted) + 1.0)
    total = weights.sum(dim=-1, keepdim=True)
    return (weights / total, total) if with_total else weights / total


@dataclass(frozen=True)
class AttentionCore:
    """What every certified kind reduces to: O = V·Pᵀ with P = row_normalise(S, kernel).

    The scores are S_ji = ``left[:, j] + right[:, i]`` (``mode="sum"``, concat) or ``left[:, :, j]ᵀ right[:, :, i]``
    (``mode="dot"``): O(N·d) inputs for an O(N²) map. :meth:`output` gives O [B, d_v, N], :meth:`weights`
    P [B, N, N], :meth:`scores` S [B, N, N].

    Arguments:
        mode: ``"sum"`` (concat) or ``"dot"``.
        kernel: ``"exp"`` (softmax) or ``"elu1"`` (ELU(s) + 1), see :func:`row_normalise`.
        values: V [B, d_v, N].
        left: [B, N] (sum) or [B, d, N] (dot), the query side j.
        right: [B, N] (sum) or [B, d, N] (dot), the key side i.
    """

    mode: str
    kernel: str
    values: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor

    def scores(self) -> torch.Tensor:
        return _scores(self.mode, self.left, self.right)

    def weights(self) -> torch.Tensor:
        return row_normalise(self.scores(), self.kernel)

    def output(self) -> torch.Tensor:
        if torch._C._are_functorch_transforms_active() or torch.autograd.forward_ad._current_level >= 0:
            # torch.func (jvp, vjp, jacrev) and forward-mode AD can't see inside a custom autograd.Function
            # without extra rules; there the plain differentiable ops are used (same numbers, more memory).
            return torch.bmm(self.values, self.weights().transpose(1, 2))
        return AttentionCoreFunction.apply(self.mode, self.kernel, self.values, self.left, self.right)


# B·N² (entries of the batch's attention maps) above which backward recomputes the maps instead of keeping them:
# 2²² entries are 16 MiB in float32, e.g. a batch of 64 at N = 256 (CIFAR-10 after the squeeze) is exactly that.
LEAN_BACKWARD_ENTRIES = 2**22


def _scores(mode: str, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    if mode == "sum":
        return left[:, :, None] + right[:, None, :]
    return torch.bmm(left.transpose(1, 2), right)


class AttentionCoreFunction(torch.autograd.Function):
    """O = V·Pᵀ that keeps only V, left and right for backward (O(N·d)) and recomputes the N×N map there.

    Forward holds one N×N buffer per sample, backward two (the map and ∂L/∂P, both updated in place),
    where plain autograd would keep the scores, the kernel values and the map. When backward itself must
    be differentiable (``create_graph=True``, e.g. inside the log-det's vector–Jacobian products) it
    differentiates an out-of-place recomputation instead, so higher derivatives are exact.

    Arguments:
        mode, kernel, values, left, right: passed to ``AttentionCoreFunction.apply(mode, kernel, values, left,
            right)``, the fields of :class:`AttentionCore` (its shapes).
    Returns:
        (from ``apply``) O [B, d_v, N], the dtype of ``values``.
    """

    @staticmethod
    def forward(ctx, mode, kernel, values, left, right):  # noqa: D102
        ctx.config = (mode, kernel)
        ctx.save_for_backward(values, left, right)
        scores = _scores(mode, left, right)
        # Small maps (B·N² ≤ LEAN_BACKWARD_ENTRIES) are kept, with ELU's row sums, so that a backward without a graph
        # (the Neumann-series log-det's vector–Jacobian products) does not recompute them every time.
        keep = scores.numel() <= LEAN_BACKWARD_ENTRIES
        weights, total = row_normalise(scores, kernel, with_total=True)
        ctx.kept = (weights, total) if keep else None
        return torch.bmm(values, weights.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        mode, kernel = ctx.config
        values, left, right = ctx.saved_tensors
        needs = ctx.needs_input_grad[2:]
        if torch.is_grad_enabled():
            # Fresh aliases: the saved tensors may depend on one another (the same x feeds queries, keys and
            # values), and a gradient with respect to the saved tensors themselves would then count those
            # paths twice. The aliases stay attached to the graph, so the result is differentiable again.
            values, left, right = (t.view_as(t) if t.requires_grad else t for t in (values, left, right))
            wanted = [t for t, need in zip((values, left, right), needs) if need]
            out = torch.bmm(values, row_normalise(_scores(mode, left, right), kernel).transpose(1, 2))
            found = iter(torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True))
            return (None, None, *[next(found) if need else None for need in needs])
        if ctx.kept is not None:
            weights, total = ctx.kept
            if kernel != "exp":
                weights = weights.clone()  # the ELU branch below writes into it, and backward may run again
        else:
            weights, total = row_normalise(_scores(mode, left, right), kernel, with_total=True)  # buffer 1, in place
        grad_values = torch.bmm(grad, weights) if needs[0] else None
        grad_left = grad_right = None
        if needs[1] or needs[2]:
            # ∂L/∂S_ji = k'(S_ji)/Z_j · (∂L/∂P_ji − Σ_l ∂L/∂P_jl P_jl); the row sums Σ_l ∂L/∂P_jl P_jl equal
            # Σ_c G_cj O_cj, so no N×N product is formed for them.
            row = (grad * torch.bmm(values, weights.transpose(1, 2))).sum(dim=1)
            dmap = torch.bmm(grad.transpose(1, 2), values)  # buffer 2: ∂L/∂P, then ∂L/∂S
            dmap.sub_(row[:, :, None])
            if kernel == "exp":  # k' = k, so k'/Z = P
                dmap.mul_(weights)
            else:  # ELU + 1 (after the shift): k' = min(k, 1), so k'/Z = min(P, 1/Z)
                dmap.mul_(torch.minimum(weights, total.reciprocal(), out=weights))
            if mode == "sum":
                grad_left = dmap.sum(dim=-1) if needs[1] else None
                grad_right = dmap.sum(dim=-2) if needs[2] else None
            else:
                grad_left = torch.bmm(right, dmap.transpose(1, 2)) if needs[1] else None
                grad_right = torch.bmm(left, dmap) if needs[2] else None
        return None, None, grad_values, grad_left, grad_right


def check_input(x: torch.Tensor, channels: int) -> None:
    """Check an attention module's input: finite feature maps [B, ``channels``, H, W].

    Arguments:
        x: the input.
        channels: the channel count C the module was built for.
    Raises:
        ValueError: when ``x`` holds a NaN or an infinity, or is not of shape [B, C, H, W].
    """
    check_finite(x, "x")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"attention over {channels} channels needs x of shape [B, {channels}, H, W], got {tuple(x.shape)}"
        )


class CertifiedAttention(nn.Module):
    """Base class: g(x)_j = gain · W_o o_j + b_o with the gain set from the certified bound (see module doc).

    Subclasses provide ``core(X) → AttentionCore`` on flattened maps ``X: [B, C, N]`` (and optionally
    ``_post(O)``), and ``_attention_bound(n_positions) → L_attn`` (a 0-d tensor, differentiable in the weights).
    The module maps feature maps [B, C, H, W] to [B, C, H, W]; W_o [C, C] starts as PyTorch's default
    initialisation (drawn from the global torch generator), b_o [C] at 0.

    Arguments:
        channels: C, a positive integer.
        coeff: the ceiling of the certified bound, in (0, 1) (default 0.9).
    Raises:
        ValueError: a non-positive ``channels``, a ``coeff`` outside (0, 1).
        TypeError: a ``channels`` that is not an integer, a ``coeff`` that is not a number.
    """

    kind: str = ""

    def __init__(self, channels: int, coeff: float = 0.9) -> None:
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        self.coeff = check_coeff(coeff)
        self.out_weight = uniform_init((channels, channels), channels)
        self.out_bias = nn.Parameter(torch.zeros(channels))

    # -- subclasses -------------------------------------------------------------------------------
    def core(self, x: torch.Tensor) -> AttentionCore:
        """The attention's inner computation on flattened maps, before the output projection and gain.

        Arguments:
            x: flattened feature maps [B, C, N] (N positions).
        Returns:
            an :class:`AttentionCore` whose ``scores()`` are the pre-normalisation scores [B, N, N], ``weights()``
            the attention matrix and ``output()`` the attended features [B, C, N].
        Raises:
            NotImplementedError: on the base class (each kind provides it).
        """
        raise NotImplementedError

    def _post(self, attended: torch.Tensor) -> torch.Tensor:
        return attended

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return self._post(self.core(x).output())

    def _attention_bound(self, n_positions: int | None) -> torch.Tensor:
        raise NotImplementedError

    # -- the certificate ---------------------------------------------------------------------------
    def _raw_bound(self, n_positions: int | None) -> torch.Tensor:
        """‖W_o‖·L_attn in float64 from the stored weights (every norm an upper bound: ``certified_matrix_norm``)."""
        with torch.autocast(device_type=self.out_weight.device.type, enabled=False):  # the bound in full precision
            return certified_matrix_norm(self.out_weight) * self._attention_bound(n_positions).to(torch.float64)

    @torch.no_grad()
    def raw_lipschitz_bound(self, n_positions: int | None = None) -> float:
        """‖W_o‖·L_attn before the output gain, from the current weights (float64). It moves with training;
        the gain divides it down to ``coeff`` whenever it is larger."""
        return float(self._raw_bound(n_positions))

    def lipschitz_bound(self, n_positions: int | None = None) -> float:
        """Certified L with Lip(g) ≤ L ≤ coeff for every input: ‖W_o‖·L_attn times the gain actually applied.

        The gain is the float64 value coeff/max(coeff, ‖W_o‖·L_attn) lowered by 2u (u the unit roundoff of the
        weights' dtype) before rounding to that dtype, so the rounded gain never exceeds the float64 one and
        L ≤ coeff·(1 − u). For kinds whose L_attn depends on N (``"l2"``), pass ``n_positions`` for the bound at
        that size; without it the bound is the one that holds for every N (``coeff`` for l2, whose gain is
        then the only control).
        """
        if n_positions is not None:
            check_positive_int(n_positions, "n_positions")
        with torch.no_grad():
            raw = self._raw_bound(n_positions)
            if not math.isfinite(float(raw)):
                if n_positions is None:
                    return self.coeff  # no N-free bound of ‖W_o‖·L_attn: the gain at each N keeps Lip(g) ≤ coeff
                return 0.0  # the gain is 0: g is the constant bias
            applied = float(self._gain64(raw).to(self.out_weight.dtype))
        return float(raw) * applied

    def _gain64(self, raw: torch.Tensor) -> torch.Tensor:
        u = unit_roundoff(self.out_weight.dtype)
        return self.coeff * (1 - 2 * u) / torch.clamp(raw, min=self.coeff)

    def gain(self, n_positions: int) -> torch.Tensor:
        """The output gain coeff(1 − 2u)/max(coeff, ‖W_o‖·L_attn) at N = ``n_positions``, computed in float64
        and rounded to the weights' dtype (differentiable; 0 if the bound overflows float64)."""
        raw = self._raw_bound(n_positions)
        if raw.requires_grad:
            # The value from the same no-grad computation lipschitz_bound() reports (an SVD with vectors may round
            # differently in the last bit, and the rounded gain with it); the gradient from the tracked one.
            with torch.no_grad():
                value = self._raw_bound(n_positions)
            tracked = raw - raw.detach()  # 0 in value; NaN where the bound overflowed (inf − inf): then no gradient
            raw = value + torch.where(torch.isfinite(value), tracked, torch.zeros_like(tracked))
        return self._gain64(raw).to(self.out_weight.dtype)

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        flat = x.flatten(2)
        mixed = torch.matmul(self.out_weight, self._attend(flat))
        out = self.gain(flat.shape[-1]) * mixed + self.out_bias[:, None]
        return out.view_as(x)

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights P, [B, N, N]: row j is the distribution over positions i that output
        position j averages (positions in row-major order of the H×W map)."""
        check_input(x, self.channels)
        return self.core(x.flatten(2)).weights()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, channels={self.channels}, coeff={self.coeff}"
