"""``lipnorm``: dot-product attention with LipschitzNorm (Dasoulas et al., 2021), Lipschitz on every input."""

from __future__ import annotations

import math

import torch

from .._validation import check_positive_int
from ..norms import certified_matrix_norm, per_sample_norm
from .core import AttentionCore, CertifiedAttention, affine, uniform_init


class LipNormAttention(CertifiedAttention):
    """``"lipnorm"``: dot-product attention with LipschitzNorm (Dasoulas et al., 2021), Lipschitz on all inputs.

    Scores q_jᵀk_i / max(u·v, u·w, v·w), u = ‖Q‖_F, v = max_i‖k_i‖, w = max_i‖v_i‖ (recomputed per input).
    Bound: Lip(g) ≤ min(c, ‖W_o‖·e·(‖W_v‖ + ‖W_q‖ + ‖W_k‖/√N + max(‖W_q‖+‖W_k‖, ‖W_q‖+‖W_v‖, ‖W_k‖+‖W_v‖))).

    Arguments:
        channels: C of the inputs [B, C, H, W].
        coeff: the certified Lip(g) ≤ coeff, in (0, 1).
        reduction: query/key width C/reduction.
    Raises:
        ValueError, TypeError: an invalid number (named in the message).
    """

    kind = "lipnorm"
    EPS = 1e-12

    def __init__(self, channels: int, coeff: float = 0.9, reduction: int = 4) -> None:
        super().__init__(channels, coeff)
        self.reduction = check_positive_int(reduction, "reduction")
        self.head_dim = d = max(1, channels // self.reduction)
        self.query_weight, self.query_bias = uniform_init((d, channels), channels), uniform_init((d,), channels)
        self.key_weight, self.key_bias = uniform_init((d, channels), channels), uniform_init((d,), channels)
        self.value_weight, self.value_bias = (
            uniform_init((channels, channels), channels),
            uniform_init((channels,), channels),
        )

    def _attention_bound(self, n_positions: int | None) -> torch.Tensor:
        q, k, v = (certified_matrix_norm(w) for w in (self.query_weight, self.key_weight, self.value_weight))
        key_term = k / math.sqrt(n_positions) if n_positions is not None else k
        pairs = torch.stack([q + k, q + v, k + v]).max()
        return math.e * (v + q + key_term + pairs)

    def core(self, x: torch.Tensor) -> AttentionCore:
        queries = affine(self.query_weight, self.query_bias, x)
        keys = affine(self.key_weight, self.key_bias, x)
        values = affine(self.value_weight, self.value_bias, x)
        u = per_sample_norm(queries)
        v = keys.norm(dim=1).amax(dim=1)
        w = values.norm(dim=1).amax(dim=1)
        scale = torch.stack([u * v, u * w, v * w]).amax(dim=0) + self.EPS
        return AttentionCore("dot", "exp", values, queries / scale[:, None, None], keys)
