"""``l2``: L2 self-attention with tied queries and keys (Kim et al., 2021), globally Lipschitz."""

from __future__ import annotations

import math

import torch

from .._validation import check_finite, check_positive_float, check_positive_int
from ..norms import certified_matrix_norm
from .core import AttentionCore, CertifiedAttention, uniform_init


def lambert_w0(x: float) -> float:
    """The principal branch W₀(x) for x ≥ 0: the w ≥ 0 with w·eʷ = x (Newton's method, to float precision).

    Arguments:
        x: a finite number ≥ 0.
    Returns:
        W₀(x) ≥ 0, a float.
    Raises:
        ValueError: x negative or not finite.
    """
    if x < 0 or not math.isfinite(x):
        raise ValueError(f"lambert_w0 needs a finite x >= 0, got {x}")
    w = math.log1p(x)
    for _ in range(100):
        step = (w * math.exp(w) - x) / (math.exp(w) * (w + 1.0))
        w -= step
        if abs(step) <= 1e-15 * max(1.0, w):
            break
    return w


def l2_attention_constant(n_positions: int) -> float:
    """L_u(N) = √((N+1)/2) + 2w + 2√(w·(N−1)·W₀(1/e)), w = W₀((N−1)/e): the Lipschitz constant of
    U ↦ (Σ_i P_ji u_i)_j for L2 attention on N tokens, for every temperature (derived in appendix 02a, section 5).

    Arguments:
        n_positions: N ≥ 1, the number of tokens (positions).
    Returns:
        L_u(N), a float.
    Raises:
        TypeError, ValueError: N not a positive integer.
    """
    n = check_positive_int(n_positions, "n_positions")
    w = lambert_w0((n - 1) / math.e)
    return math.sqrt((n + 1) / 2) + 2 * w + 2 * math.sqrt(w * (n - 1) * lambert_w0(1 / math.e))


class L2Attention(CertifiedAttention):
    """``"l2"``: L2 self-attention (Kim et al., 2021), globally Lipschitz without any domain restriction.

    Tied queries and keys q_i = W x_i, scores −τ‖q_j − q_i‖², values M q_i.
    Bound: Lip(g) ≤ min(c, ‖W_o‖·‖M‖·‖W‖·L_u(N)) with L_u(N) from :func:`l2_attention_constant` (≈ √(N/2)·(1 + 1.5√(ln
    N))).

    Arguments:
        channels: C of the inputs [B, C, H, W].
        coeff: the certified Lip(g) ≤ coeff, in (0, 1).
        reduction: query width C/reduction.
        temperature: τ of the scores (default 1/√(C/reduction)).
    Raises:
        ValueError, TypeError: an invalid number (named in the message).
    """

    kind = "l2"

    def __init__(self, channels: int, coeff: float = 0.9, reduction: int = 4, temperature: float | None = None) -> None:
        super().__init__(channels, coeff)
        self.reduction = check_positive_int(reduction, "reduction")
        self.head_dim = d = max(1, channels // self.reduction)
        self.temperature = check_positive_float(
            temperature if temperature is not None else 1 / math.sqrt(d), "temperature"
        )
        self.query_weight = uniform_init((d, channels), channels)
        self.value_weight = uniform_init((channels, d), d)

    def _attention_bound(self, n_positions: int | None) -> torch.Tensor:
        norms = certified_matrix_norm(self.value_weight) * certified_matrix_norm(self.query_weight)
        if n_positions is None:  # L_u grows without limit in N: the only N-free bound is the gain's c
            return torch.full_like(norms, math.inf)
        return norms * l2_attention_constant(n_positions)

    def core(self, x: torch.Tensor) -> AttentionCore:
        # −τ‖q_j − q_i‖² = 2τ q_jᵀq_i − τ‖q_i‖² − τ‖q_j‖²; the last term is constant along a row and cancels,
        # so the scores are a dot product of augmented vectors [2τq_j; 1] and [q_i; −τ‖q_i‖²].
        tau = self.temperature
        queries = torch.matmul(self.query_weight, x)
        squares = queries.square().sum(dim=1, keepdim=True)
        left = torch.cat([2 * tau * queries, torch.ones_like(squares)], dim=1)
        right = torch.cat([queries, -tau * squares], dim=1)
        try:
            check_finite(left, "2τq")
            check_finite(right, "τ‖q‖²")
        except ValueError:
            raise ValueError(
                f"l2 attention overflows {x.dtype} at this input scale (max |x| = {float(x.detach().abs().max()):.3g}, "
                f"temperature {tau:.3g}): the scores τ‖q_j − q_i‖² exceed the dtype's range; rescale the input, "
                "lower the temperature or compute in float64"
            ) from None
        return AttentionCore("dot", "exp", queries, left, right)  # average the d-dim queries, then map by M

    def _post(self, attended: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.value_weight, attended)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, head_dim={self.head_dim}, temperature={self.temperature:.4g}"
