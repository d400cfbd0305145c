"""Invertible attention: six attention types with a certified Lipschitz bound below 1, plus the original
paper's formulation for comparison.

Every module here is a residual branch g acting on feature maps ``[B, C, H, W]`` (N = H·W positions):
put it in :class:`invattn.InvertibleResidual` to get the invertible block x + g(x). Notation used in the
docstrings (derivations in lesson 02): x_i ∈ R^C is the feature at position i; row j of the attention
map P holds the weights with which output position j averages the values v_i,

    o_j = Σ_i P_ji v_i,        g(x)_j = gain · W_o o_j + b_o.

How the certificate works, for every certified kind:

1. A bound L_attn on Lip(X ↦ O) is computed **from the current weights** (exact spectral norms of the
   small projection matrices, so it follows training) and holds for **every** input: kinds whose raw
   formula is only locally Lipschitz enforce their domain themselves (1-Lipschitz projections of
   queries, keys and values onto balls, or of scalar scores onto intervals).
2. The output gain is ``coeff / max(coeff, ‖W_o‖·L_attn)``, so Lip(g) ≤ min(coeff, ‖W_o‖·L_attn) ≤ coeff
   during and after training, which is what :meth:`lipschitz_bound` returns.

The kinds, their scores and kernels:

============================ =============================================== =================================
kind                         scores s_ji                                     weights P_ji (normalised over i)
============================ =============================================== =================================
``"concat"``                 w_qᵀq_j + w_kᵀk_i, q, k projected onto r-balls    ELU(s) + 1 (positive)
``"dot"``                    τ q_jᵀk_i, q, k projected onto the ball of r       ELU(s) + 1
``"embedded_gaussian"``      τ q_jᵀk_i, q, k projected onto the ball of r       exp(s) (softmax)
``"gaussian"``               τ x̃_jᵀx̃_i, x̃ = x projected onto the ball of r     exp(s)
``"l2"``                     −τ‖q_j − q_i‖², q = W x (tied), values M q         exp(s), no projection
``"lipnorm"``                q_jᵀk_i / max(‖Q‖_F·max‖k‖, ‖Q‖_F·max‖v‖, …)      exp(s), no projection
============================ =============================================== =================================
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import check_choice, check_coeff, check_finite, check_positive_float, check_positive_int
from .lipschitz import spectral_norm

__all__ = [
    "KINDS",
    "PAPER_KINDS",
    "make_attention",
    "CertifiedAttention",
    "KernelAttention",
    "L2Attention",
    "LipNormAttention",
    "PaperAttention",
    "lambert_w0",
]

KINDS = ("concat", "dot", "embedded_gaussian", "gaussian", "l2", "lipnorm")
PAPER_KINDS = ("concat", "dot", "embedded_gaussian", "gaussian")


def lambert_w0(x: float) -> float:
    """The principal branch W₀(x) for x ≥ 0: the w ≥ 0 with w·eʷ = x (Newton's method, to float precision)."""
    if x < 0 or not math.isfinite(x):
        raise ValueError(f"lambert_w0 needs a finite x >= 0, got {x}")
    w = math.log1p(x)
    for _ in range(100):
        step = (w * math.exp(w) - x) / (math.exp(w) * (w + 1.0))
        w -= step
        if abs(step) <= 1e-15 * max(1.0, w):
            break
    return w


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


class KernelAttention(CertifiedAttention):
    """``"concat"``, ``"dot"``, ``"embedded_gaussian"`` and ``"gaussian"`` attention on an enforced domain.

    Bound: Lip(g) ≤ min(c, ‖W_o‖·√ρ·(‖W_v‖ + r_v·(L_a + L_b))), where |s_ji| ≤ B on the enforced domain,
    ρ = max k / min k over [−B, B] (e^{2B} for exp, (1+B)e^B for ELU+1), and L_a, L_b bound the scores'
    sensitivity to the queries and keys (τ·r·‖W_q‖ and τ·r·‖W_k‖; ‖w_q‖·‖W_q‖ and ‖w_k‖·‖W_k‖ for concat,
    whose B = r·(‖w_q‖ + ‖w_k‖) follows the weights).

    Options: ``reduction`` (query/key width C/reduction, 4 as in the paper), ``radius`` r of the query/key
    balls, ``value_radius`` r_v of the value balls, ``temperature`` τ (not used by concat).
    """

    def __init__(
        self,
        kind: str,
        channels: int,
        coeff: float = 0.9,
        reduction: int = 4,
        radius: float = 1.0,
        value_radius: float = 1.0,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(channels, coeff)
        self.kind = check_choice(kind, "kind", PAPER_KINDS)
        self.reduction = check_positive_int(reduction, "reduction")
        self.radius = check_positive_float(radius, "radius")
        self.value_radius = check_positive_float(value_radius, "value_radius")
        self.temperature = check_positive_float(temperature, "temperature")
        self.kernel = "elu1" if kind in ("concat", "dot") else "exp"
        self.head_dim = max(1, channels // self.reduction)
        d = self.head_dim
        if kind != "gaussian":
            self.query_weight, self.query_bias = _uniform((d, channels), channels), _uniform((d,), channels)
            self.key_weight, self.key_bias = _uniform((d, channels), channels), _uniform((d,), channels)
        if kind == "concat":  # the paper's 1×1 conv from [q; k] (2d channels) to one score, split in two
            self.query_score, self.key_score = _uniform((d,), 2 * d), _uniform((d,), 2 * d)
        self.value_weight, self.value_bias = _uniform((channels, channels), channels), _uniform((channels,), channels)

    def score_bound(self) -> torch.Tensor:
        """B with |s_ji| ≤ B for every input: τr² (dot kinds), r·(‖w_q‖ + ‖w_k‖) (concat; follows the weights)."""
        if self.kind == "concat":
            return self.radius * (self.query_score.norm() + self.key_score.norm())
        return self.value_weight.new_tensor(self.temperature * self.radius**2)

    def _sqrt_kernel_ratio(self, bound: torch.Tensor) -> torch.Tensor:
        """√ρ, ρ = max k(s) / min k(s) over |s| ≤ B: every weight P_ji ≤ ρ/N, so P's column sums are ≤ ρ."""
        if self.kernel == "exp":
            return torch.exp(bound)
        return torch.sqrt(1.0 + bound) * torch.exp(0.5 * bound)

    def _score_sensitivities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """L_a, L_b with ‖dS‖_F ≤ √N·(L_a‖dX‖ + L_b‖dX‖)."""
        if self.kind == "concat":
            return self.query_score.norm() * _norm2(self.query_weight), self.key_score.norm() * _norm2(self.key_weight)
        if self.kind == "gaussian":
            one = self.value_weight.new_tensor(self.temperature * self.radius)
            return one, one
        scale = self.temperature * self.radius
        return scale * _norm2(self.query_weight), scale * _norm2(self.key_weight)

    def _attention_bound(self, n_positions: int | None) -> torch.Tensor:
        sensitivity_q, sensitivity_k = self._score_sensitivities()
        spread = _norm2(self.value_weight) + self.value_radius * (sensitivity_q + sensitivity_k)
        return self._sqrt_kernel_ratio(self.score_bound()) * spread

    def _core(self, x: torch.Tensor) -> _Core:
        values = _project_to_ball(_affine(self.value_weight, self.value_bias, x), self.value_radius)
        if self.kind == "gaussian":
            queries = keys = _project_to_ball(x, self.radius)
        else:
            queries = _project_to_ball(_affine(self.query_weight, self.query_bias, x), self.radius)
            keys = _project_to_ball(_affine(self.key_weight, self.key_bias, x), self.radius)
        if self.kind == "concat":
            # w_qᵀq_j + w_kᵀk_i by broadcasting two N-vectors: never the [B, 2d, N, N] concatenation.
            a = torch.einsum("d,bdn->bn", self.query_score, queries)
            b = torch.einsum("d,bdn->bn", self.key_score, keys)
            return _Core("sum", self.kernel, None, values, a, b)
        shift = self.temperature * self.radius**2  # |s| ≤ B: exp(s − B) ≤ 1 never overflows
        return _Core("dot", self.kernel, shift, values, self.temperature * queries, keys)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, head_dim={self.head_dim}, radius={self.radius}, "
            f"value_radius={self.value_radius}, temperature={self.temperature}, kernel={self.kernel!r}"
        )


def l2_attention_constant(n_positions: int) -> float:
    """L_u(N) = √((N+1)/2) + 2w + 2√(w·(N−1)·W₀(1/e)), w = W₀((N−1)/e): the Lipschitz constant of
    U ↦ (Σ_i P_ji u_i)_j for L2 attention on N tokens, for every temperature (derived in lesson 02)."""
    n = check_positive_int(n_positions, "n_positions")
    w = lambert_w0((n - 1) / math.e)
    return math.sqrt((n + 1) / 2) + 2 * w + 2 * math.sqrt(w * (n - 1) * lambert_w0(1 / math.e))


class L2Attention(CertifiedAttention):
    """``"l2"``: L2 self-attention (Kim et al., 2021), globally Lipschitz without any domain restriction.

    Tied queries and keys q_i = W x_i, scores −τ‖q_j − q_i‖², values M q_i.
    Bound: Lip(g) ≤ min(c, ‖W_o‖·‖M‖·‖W‖·L_u(N)) with L_u(N) from :func:`l2_attention_constant` (≈ √(N/2)·(1 + 1.5√(ln N))).
    """

    kind = "l2"

    def __init__(self, channels: int, coeff: float = 0.9, reduction: int = 4, temperature: float | None = None) -> None:
        super().__init__(channels, coeff)
        self.reduction = check_positive_int(reduction, "reduction")
        self.head_dim = d = max(1, channels // self.reduction)
        self.temperature = check_positive_float(temperature if temperature is not None else 1 / math.sqrt(d), "temperature")
        self.query_weight = _uniform((d, channels), channels)
        self.value_weight = _uniform((channels, d), d)

    def _attention_bound(self, n_positions: int | None) -> torch.Tensor:
        norms = _norm2(self.value_weight) * _norm2(self.query_weight)
        if n_positions is None:  # L_u grows without limit in N: the only N-free bound is the gain's c
            return torch.full_like(norms, math.inf)
        return norms * l2_attention_constant(n_positions)

    def _core(self, x: torch.Tensor) -> _Core:
        # −τ‖q_j − q_i‖² = 2τ q_jᵀq_i − τ‖q_i‖² − τ‖q_j‖²; the last term is constant along a row and cancels,
        # so the scores are a dot product of augmented vectors [2τq_j; 1] and [q_i; −τ‖q_i‖²].
        tau = self.temperature
        queries = torch.matmul(self.query_weight, x)
        squares = queries.square().sum(dim=1, keepdim=True)
        left = torch.cat([2 * tau * queries, torch.ones_like(squares)], dim=1)
        right = torch.cat([queries, -tau * squares], dim=1)
        return _Core("dot", "exp", None, queries, left, right)  # average the d-dim queries, then map by M

    def _post(self, attended: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.value_weight, attended)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, head_dim={self.head_dim}, temperature={self.temperature:.4g}"


class LipNormAttention(CertifiedAttention):
    """``"lipnorm"``: dot-product attention with LipschitzNorm (Dasoulas et al., 2021), Lipschitz on all inputs.

    Scores q_jᵀk_i / max(u·v, u·w, v·w), u = ‖Q‖_F, v = max_i‖k_i‖, w = max_i‖v_i‖ (recomputed per input).
    Bound: Lip(g) ≤ min(c, ‖W_o‖·e·(‖W_v‖ + ‖W_q‖ + ‖W_k‖/√N + max(‖W_q‖+‖W_k‖, ‖W_q‖+‖W_v‖, ‖W_k‖+‖W_v‖))).
    """

    kind = "lipnorm"
    EPS = 1e-12

    def __init__(self, channels: int, coeff: float = 0.9, reduction: int = 4) -> None:
        super().__init__(channels, coeff)
        self.reduction = check_positive_int(reduction, "reduction")
        self.head_dim = d = max(1, channels // self.reduction)
        self.query_weight, self.query_bias = _uniform((d, channels), channels), _uniform((d,), channels)
        self.key_weight, self.key_bias = _uniform((d, channels), channels), _uniform((d,), channels)
        self.value_weight, self.value_bias = _uniform((channels, channels), channels), _uniform((channels,), channels)

    def _attention_bound(self, n_positions: int | None) -> torch.Tensor:
        q, k, v = _norm2(self.query_weight), _norm2(self.key_weight), _norm2(self.value_weight)
        key_term = k / math.sqrt(n_positions) if n_positions is not None else k
        pairs = torch.stack([q + k, q + v, k + v]).max()
        return math.e * (v + q + key_term + pairs)

    def _core(self, x: torch.Tensor) -> _Core:
        queries = _affine(self.query_weight, self.query_bias, x)
        keys = _affine(self.key_weight, self.key_bias, x)
        values = _affine(self.value_weight, self.value_bias, x)
        u = queries.flatten(1).norm(dim=1)
        v = keys.norm(dim=1).amax(dim=1)
        w = values.norm(dim=1).amax(dim=1)
        scale = torch.stack([u * v, u * w, v * w]).amax(dim=0) + self.EPS
        # |s_ji| ≤ ‖q_j‖‖k_i‖/(u·v) ≤ 1, so exp(s − 1) ≤ 1.
        return _Core("dot", "exp", 1.0, values, queries / scale[:, None, None], keys)


class PaperAttention(nn.Module):
    """The original code's formulation (validation repository), for comparison; **not certified**.

    q, k, v by spectral-normalised 1×1 convolutions (coefficient ``coeff`` = 0.9; the value of ``"dot"`` at
    0.5), energies E_ij = ELU(w_catᵀ[q_i; k_j]) (concat), ELU(q_iᵀk_j) (dot), exp(q_iᵀk_j) (embedded
    Gaussian) or exp(x_iᵀx_j) (Gaussian), normalised per output column A_ij = E_ij / (1.5·Σ_i E_ij),
    o_j = Σ_i A_ij v_i, then a spectral-normalised 1×1 convolution γ. (The original builds the concat
    energies from a [B, 2C/k, N, N] tensor; this computes the same numbers by broadcasting.)

    :meth:`lipschitz_bound` is ``inf``, with the reason in :attr:`bound_reason`; for the exp kinds
    :meth:`local_lipschitz_bound` gives the bound that holds on inputs with ‖x_i‖ ≤ R.
    """

    def __init__(self, kind: str, channels: int, coeff: float = 0.9, reduction: int = 4, n_power_iterations: int = 5) -> None:
        super().__init__()
        self.kind = check_choice(kind, "kind", PAPER_KINDS)
        self.channels = check_positive_int(channels, "channels")
        self.coeff = check_coeff(coeff)
        self.head_dim = d = max(1, channels // check_positive_int(reduction, "reduction"))
        sn = lambda module, c=coeff: spectral_norm(module, coeff=c, n_power_iterations=n_power_iterations)  # noqa: E731
        if kind != "gaussian":
            self.query = sn(nn.Conv2d(channels, d, 1))
            self.key = sn(nn.Conv2d(channels, d, 1))
        if kind == "concat":
            self.concat = sn(nn.Conv2d(2 * d, 1, 1, bias=False))
        self.value = sn(nn.Conv2d(channels, channels, 1), 0.5 if kind == "dot" else coeff)
        self.gamma = sn(nn.Conv2d(channels, channels, 1))

    @property
    def bound_reason(self) -> str:
        if self.kind in ("concat", "dot"):
            return (
                "ELU energies can be negative, so the column sums Σ_i E_ij that divide them can be 0 or change sign: "
                "the map has no finite Lipschitz bound, not even on bounded inputs"
            )
        scores = "x_iᵀx_j" if self.kind == "gaussian" else "q_iᵀk_j"
        return (
            f"the scores {scores} grow without limit with the input, and softmax attention over unbounded dot "
            "products is not globally Lipschitz (Kim et al., 2021); bounds hold only on a bounded domain "
            "(see local_lipschitz_bound)"
        )

    def lipschitz_bound(self) -> float:
        """``inf``: no bound holds for every input (see :attr:`bound_reason`)."""
        return math.inf

    @torch.no_grad()
    def local_lipschitz_bound(self, input_radius: float) -> float:
        """A bound valid on inputs with every ‖x_i‖ ≤ ``input_radius`` (exp kinds; inf for the ELU kinds):
        (2/3)‖W_γ‖·e^B·(‖W_v‖ + r_v(r_k‖W_q‖ + r_q‖W_k‖)), B = r_q·r_k, r_q = ‖W_q‖R + ‖b_q‖, r_v = ‖W_v‖R."""
        radius = check_positive_float(input_radius, "input_radius")
        if self.kind in ("concat", "dot"):
            return math.inf
        norm = lambda conv: float(_norm2(conv.weight.flatten(1).double()))  # noqa: E731
        value = norm(self.value)
        if self.kind == "gaussian":
            wq = wk = 1.0
            rq = rk = radius
        else:
            wq, wk = norm(self.query), norm(self.key)
            rq = wq * radius + float(self.query.bias.double().norm())
            rk = wk * radius + float(self.key.bias.double().norm())
        rv = value * radius
        return (2 / 3) * norm(self.gamma) * math.exp(rq * rk) * (value + rv * (rk * wq + rq * wk))

    def _energies(self, x: torch.Tensor) -> torch.Tensor:
        """E[b, i, j] (i: query position, j: key position), as the original computes it."""
        flat = x.flatten(2)
        if self.kind == "gaussian":
            return torch.exp(torch.bmm(flat.transpose(1, 2), flat))
        queries, keys = self.query(x).flatten(2), self.key(x).flatten(2)
        if self.kind == "concat":
            w = self.concat.weight.flatten()
            d = self.head_dim
            a = torch.einsum("c,bcn->bn", w[:d], queries)
            b = torch.einsum("c,bcn->bn", w[d:], keys)
            return F.elu(a[:, :, None] + b[:, None, :])
        products = torch.bmm(queries.transpose(1, 2), keys)
        return F.elu(products) if self.kind == "dot" else torch.exp(products)

    def _column_map(self, x: torch.Tensor) -> torch.Tensor:
        energies = self._energies(x)
        return energies / (1.5 * energies.sum(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.channels)
        values = self.value(x).flatten(2)
        out = torch.bmm(values, self._column_map(x))
        return self.gamma(out.view_as(x))

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, N], row j = the weights A_ij that output position j puts on positions i (rows sum to 2/3)."""
        _check_input(x, self.channels)
        return self._column_map(x).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, variant='paper', channels={self.channels}, coeff={self.coeff}"


def make_attention(kind: str, channels: int, coeff: float = 0.9, variant: str = "certified", **options) -> nn.Module:
    """The residual branch g of an invertible attention block over ``channels`` feature channels.

    ``kind``: one of :data:`KINDS`. ``variant="certified"`` (default) returns a module whose
    ``lipschitz_bound()`` is a certified L ≤ ``coeff`` < 1 for every input; ``variant="paper"`` (the four
    paper kinds) returns the original formulation, whose bound is ``inf`` (see :class:`PaperAttention`).
    ``options`` go to the kind's class: :class:`KernelAttention` (``reduction``, ``radius``,
    ``value_radius``, ``temperature``), :class:`L2Attention` (``reduction``, ``temperature``),
    :class:`LipNormAttention` (``reduction``), :class:`PaperAttention` (``reduction``, ``n_power_iterations``).
    """
    check_choice(kind, "kind", KINDS)
    check_choice(variant, "variant", ("certified", "paper"))
    if variant == "paper":
        if kind not in PAPER_KINDS:
            raise ValueError(f"variant='paper' exists for the paper's kinds {PAPER_KINDS}; {kind!r} is not one of them")
        builder = lambda: PaperAttention(kind, channels, coeff, **options)  # noqa: E731
    elif kind == "l2":
        builder = lambda: L2Attention(channels, coeff, **options)  # noqa: E731
    elif kind == "lipnorm":
        builder = lambda: LipNormAttention(channels, coeff, **options)  # noqa: E731
    else:
        builder = lambda: KernelAttention(kind, channels, coeff, **options)  # noqa: E731
    try:
        return builder()
    except TypeError as error:
        if "unexpected keyword argument" in str(error):
            raise TypeError(f"make_attention({kind!r}, variant={variant!r}): {error}") from None
        raise
