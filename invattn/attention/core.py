"""The shared floor of every attention kind: the memory-lean O = V·Pᵀ core (a custom autograd function),
the domain projections, and :class:`CertifiedAttention`, which turns a kind's bound into its output gain."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_coeff, check_finite, check_positive_int

def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """PyTorch's default Linear/Conv initialisation: U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def _norm2(matrix: torch.Tensor) -> torch.Tensor:
    """Exact spectral norm (largest singular value), differentiable."""
    return torch.linalg.matrix_norm(matrix, ord=2)


def _project_to_ball(z: torch.Tensor, radius: float) -> torch.Tensor:
    """Project every column z[:, :, i] onto the Euclidean ball of ``radius``: z·min(1, r/‖z‖).

    A projection onto a convex set, hence 1-Lipschitz; applied position by position it is the projection
    onto a product of balls (again convex), so it is 1-Lipschitz on the whole [B, d, N] tensor too.
    """
    norm = z.norm(dim=1, keepdim=True)
    return z * (radius / norm.clamp_min(radius))


def _affine(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A 1×1 convolution on flattened maps: [d, C] @ [B, C, N] (+ bias) → [B, d, N]."""
    out = torch.matmul(weight, x)
    return out if bias is None else out + bias[:, None]


def _row_normalise(scores: torch.Tensor, kernel: str, shift: float | None = None) -> torch.Tensor:
    """P_ji = k(s_ji) / Σ_l k(s_jl) for the positive kernel ``exp`` or ``elu1`` (ELU(s) + 1).

    Without autograd the scores buffer is overwritten in place, so an attention map costs one N×N
    buffer per sample; with autograd the ops are out of place. ``shift`` (exp only) is subtracted before
    exponentiating: the known score bound for certified kinds, the row maximum otherwise.
    """
    in_place = not (torch.is_grad_enabled() and scores.requires_grad)
    if kernel == "exp":
        offset = scores.detach().amax(dim=-1, keepdim=True) if shift is None else shift
        if in_place:
            weights = scores.sub_(offset).exp_()
        else:
            weights = torch.exp(scores - offset)
    elif kernel == "elu1":
        weights = F.elu(scores, inplace=True).add_(1.0) if in_place else F.elu(scores) + 1.0
    else:  # pragma: no cover - guarded by the constructors
        raise ValueError(kernel)
    total = weights.sum(dim=-1, keepdim=True)
    return weights.div_(total) if in_place else weights / total


@dataclass(frozen=True)
class _Core:
    """What every certified kind reduces to: O = V·Pᵀ with P = row_normalise(kernel, S), where the scores
    S are ``left[:, j] + right[:, i]`` (``mode="sum"``, concat) or ``left[:, :, j]ᵀ right[:, :, i]``
    (``mode="dot"``). ``left``/``right`` are [B, N] or [B, d, N]: O(N·d) inputs for an O(N²) map."""

    mode: str
    kernel: str
    shift: float | None
    values: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor

    def scores(self) -> torch.Tensor:
        return _scores(self.mode, self.left, self.right)

    def weights(self) -> torch.Tensor:
        return _row_normalise(self.scores(), self.kernel, self.shift)

    def output(self) -> torch.Tensor:
        if torch._C._are_functorch_transforms_active():
            # torch.func (jvp, vjp, jacrev) can't see inside a custom autograd.Function without extra rules;
            # there the plain differentiable ops are used (same numbers, more memory).
            return torch.bmm(self.values, self.weights().transpose(1, 2))
        return _AttentionCore.apply(self.mode, self.kernel, self.shift, self.values, self.left, self.right)


def _scores(mode: str, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    if mode == "sum":
        return left[:, :, None] + right[:, None, :]
    return torch.bmm(left.transpose(1, 2), right)


class _AttentionCore(torch.autograd.Function):
    """O = V·Pᵀ that keeps only V, left and right for backward (O(N·d)) and recomputes the N×N map there.

    Forward holds one N×N buffer per sample, backward two (the map and ∂L/∂P, both updated in place),
    where plain autograd would keep the scores, the kernel values and the map. When backward itself must
    be differentiable (``create_graph=True``, e.g. inside the log-det's vector–Jacobian products) it
    differentiates an out-of-place recomputation instead, so higher derivatives are exact.
    """

    @staticmethod
    def forward(ctx, mode, kernel, shift, values, left, right):  # noqa: D102
        ctx.config = (mode, kernel, shift)
        ctx.save_for_backward(values, left, right)
        weights = _row_normalise(_scores(mode, left, right), kernel, shift)
        return torch.bmm(values, weights.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        mode, kernel, shift = ctx.config
        values, left, right = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        if torch.is_grad_enabled():
            # Fresh aliases: the saved tensors may depend on one another (the same x feeds queries, keys and
            # values), and a gradient with respect to the saved tensors themselves would then count those
            # paths twice. The aliases stay attached to the graph, so the result is differentiable again.
            values, left, right = (t.view_as(t) if t.requires_grad else t for t in (values, left, right))
            wanted = [t for t, need in zip((values, left, right), needs) if need]
            out = torch.bmm(values, _row_normalise(_scores(mode, left, right), kernel, shift).transpose(1, 2))
            found = iter(torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True))
            return (None, None, None, *[next(found) if need else None for need in needs])
        weights = _scores(mode, left, right)  # buffer 1: scores → kernel values → P, in place
        if kernel == "exp":
            weights.sub_(weights.amax(dim=-1, keepdim=True) if shift is None else shift).exp_()
        else:
            F.elu(weights, inplace=True).add_(1.0)
        total = weights.sum(dim=-1, keepdim=True)
        weights.div_(total)
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
            else:  # ELU + 1: k' = min(k, 1), so k'/Z = min(P, 1/Z)
                dmap.mul_(torch.minimum(weights, total.reciprocal(), out=weights))
            if mode == "sum":
                grad_left = dmap.sum(dim=-1) if needs[1] else None
                grad_right = dmap.sum(dim=-2) if needs[2] else None
            else:
                grad_left = torch.bmm(right, dmap.transpose(1, 2)) if needs[1] else None
                grad_right = torch.bmm(left, dmap) if needs[2] else None
        return None, None, None, grad_values, grad_left, grad_right


def _check_input(x: torch.Tensor, channels: int) -> None:
    check_finite(x, "x")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"attention over {channels} channels needs x of shape [B, {channels}, H, W], got {tuple(x.shape)}")


class CertifiedAttention(nn.Module):
    """Base class: g(x)_j = gain · W_o o_j + b_o with the gain set from the certified bound (see module doc).

    Subclasses provide ``_core(X) → _Core`` on flattened maps ``X: [B, C, N]`` (and optionally
    ``_post(O)``), and ``_attention_bound(n_positions) → L_attn`` (a 0-d tensor, differentiable in the weights).
    """

    kind: str = ""

    def __init__(self, channels: int, coeff: float = 0.9) -> None:
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        self.coeff = check_coeff(coeff)
        self.out_weight = _uniform((channels, channels), channels)
        self.out_bias = nn.Parameter(torch.zeros(channels))

    # -- subclasses -------------------------------------------------------------------------------
    def _core(self, x: torch.Tensor) -> _Core:
        raise NotImplementedError

    def _post(self, attended: torch.Tensor) -> torch.Tensor:
        return attended

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return self._post(self._core(x).output())

    def _attention_bound(self, n_positions: int | None) -> torch.Tensor:
        raise NotImplementedError

    # -- the certificate ---------------------------------------------------------------------------
    def _raw_bound(self, n_positions: int | None) -> torch.Tensor:
        with torch.autocast(device_type=self.out_weight.device.type, enabled=False):  # the bound in full precision
            return _norm2(self.out_weight) * self._attention_bound(n_positions)

    @torch.no_grad()
    def raw_lipschitz_bound(self, n_positions: int | None = None) -> float:
        """‖W_o‖·L_attn before the output gain, from the current weights (float64). It moves with training;
        the gain divides it down to ``coeff`` whenever it is larger."""
        return float(self._bound_float64(n_positions))

    def _bound_float64(self, n_positions: int | None) -> torch.Tensor:
        # In float64 (exact norms of the float32 weights), on a copy: the projections are small matrices.
        return copy.deepcopy(self).double()._raw_bound(n_positions)

    def lipschitz_bound(self, n_positions: int | None = None) -> float:
        """Certified L with Lip(g) ≤ L ≤ coeff for every input: min(coeff, ‖W_o‖·L_attn).

        For kinds whose L_attn depends on N (``"l2"``), pass ``n_positions`` for the bound at that size;
        without it the bound is the one that holds for every N.
        """
        if n_positions is not None:
            check_positive_int(n_positions, "n_positions")
        return min(self.coeff, self.raw_lipschitz_bound(n_positions))

    def gain(self, n_positions: int) -> torch.Tensor:
        """The output gain coeff / max(coeff, ‖W_o‖·L_attn) at N = ``n_positions`` (differentiable)."""
        return self.coeff / torch.clamp(self._raw_bound(n_positions), min=self.coeff)

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.channels)
        flat = x.flatten(2)
        mixed = torch.matmul(self.out_weight, self._attend(flat))
        out = self.gain(flat.shape[-1]) * mixed + self.out_bias[:, None]
        return out.view_as(x)

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights P, [B, N, N]: row j is the distribution over positions i that output
        position j averages (positions in row-major order of the H×W map)."""
        _check_input(x, self.channels)
        return self._core(x.flatten(2)).weights()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, channels={self.channels}, coeff={self.coeff}"
