"""``concat``, ``dot``, ``embedded_gaussian`` and ``gaussian``: the paper's four kinds, on an enforced domain."""

from __future__ import annotations

import torch

from .._validation import check_choice, check_positive_float, check_positive_int
from ..norms import certified_matrix_norm
from .core import AttentionCore, CertifiedAttention, affine, project_to_ball, uniform_init

PAPER_KINDS = ("concat", "dot", "embedded_gaussian", "gaussian")


class KernelAttention(CertifiedAttention):
    """``"concat"``, ``"dot"``, ``"embedded_gaussian"`` and ``"gaussian"`` attention on an enforced domain.

    Bound: Lip(g) ≤ min(c, ‖W_o‖·√ρ·(‖W_v‖ + r_v·(L_a + L_b))), where |s_ji| ≤ B on the enforced domain,
    ρ = max k / min k over [−B, B] (e^{2B} for exp, (1+B)e^B for ELU+1), and L_a, L_b bound the scores'
    sensitivity to the queries and keys (τ·r·‖W_q‖ and τ·r·‖W_k‖; ‖w_q‖·‖W_q‖ and ‖w_k‖·‖W_k‖ for concat,
    whose B = r·(‖w_q‖ + ‖w_k‖) follows the weights).

    Arguments:
        kind: ``"concat"``, ``"dot"``, ``"embedded_gaussian"`` or ``"gaussian"``.
        channels: C of the inputs [B, C, H, W] (the N = H·W positions attend to one another).
        coeff: the certified Lip(g) ≤ coeff, in (0, 1).
        reduction: query/key width C/reduction (4 as in the paper).
        radius: r of the query/key balls.
        value_radius: r_v of the value balls.
        temperature: τ of the scores (not used by concat).
    Raises:
        ValueError, TypeError: an unknown kind or an invalid number (named in the message).
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
        for name, value in (("radius", radius), ("value_radius", value_radius)):
            if value > 1e100:
                raise ValueError(f"{name}={value:g} is beyond what any dtype can score (at most 1e100)")
        if temperature * radius**2 > 1e300:
            raise ValueError(
                f"temperature·radius² = {temperature * radius**2:g} overflows the score bound (at most 1e300)"
            )
        self.kernel = "elu1" if kind in ("concat", "dot") else "exp"
        self.head_dim = max(1, channels // self.reduction)
        d = self.head_dim
        if kind != "gaussian":
            self.query_weight, self.query_bias = uniform_init((d, channels), channels), uniform_init((d,), channels)
            self.key_weight, self.key_bias = uniform_init((d, channels), channels), uniform_init((d,), channels)
        if kind == "concat":  # the paper's 1×1 conv from [q; k] (2d channels) to one score, split in two
            self.query_score, self.key_score = uniform_init((d,), 2 * d), uniform_init((d,), 2 * d)
        self.value_weight, self.value_bias = (
            uniform_init((channels, channels), channels),
            uniform_init((channels,), channels),
        )

    def score_bound(self) -> torch.Tensor:
        """B with |s_ji| ≤ B for every input: τr² (dot kinds), r·(‖w_q‖ + ‖w_k‖) (concat; follows the weights)."""
        if self.kind == "concat":
            return self.radius * (self.query_score.double().norm() + self.key_score.double().norm())
        return torch.tensor(self.temperature * self.radius**2, dtype=torch.float64, device=self.value_weight.device)

    def _sqrt_kernel_ratio(self, bound: torch.Tensor) -> torch.Tensor:
        """√ρ, ρ = max k(s) / min k(s) over |s| ≤ B: every weight P_ji ≤ ρ/N, so P's column sums are ≤ ρ."""
        if self.kernel == "exp":
            return torch.exp(bound)
        return torch.sqrt(1.0 + bound) * torch.exp(0.5 * bound)

    def _score_sensitivities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """L_a, L_b with ‖dS‖_F ≤ √N·(L_a‖dX‖ + L_b‖dX‖)."""
        if self.kind == "concat":
            query = self.query_score.double().norm() * certified_matrix_norm(self.query_weight)
            key = self.key_score.double().norm() * certified_matrix_norm(self.key_weight)
            return query, key
        if self.kind == "gaussian":
            one = torch.tensor(self.temperature * self.radius, dtype=torch.float64, device=self.value_weight.device)
            return one, one
        scale = self.temperature * self.radius
        return scale * certified_matrix_norm(self.query_weight), scale * certified_matrix_norm(self.key_weight)

    def _attention_bound(self, n_positions: int | None) -> torch.Tensor:
        sensitivity_q, sensitivity_k = self._score_sensitivities()
        spread = certified_matrix_norm(self.value_weight) + self.value_radius * (sensitivity_q + sensitivity_k)
        return self._sqrt_kernel_ratio(self.score_bound()) * spread

    def core(self, x: torch.Tensor) -> AttentionCore:
        values = project_to_ball(affine(self.value_weight, self.value_bias, x), self.value_radius)
        if self.kind == "gaussian":
            queries = keys = project_to_ball(x, self.radius)
        else:
            queries = project_to_ball(affine(self.query_weight, self.query_bias, x), self.radius)
            keys = project_to_ball(affine(self.key_weight, self.key_bias, x), self.radius)
        if self.kind == "concat":
            # w_qᵀq_j + w_kᵀk_i by broadcasting two N-vectors: never the [B, 2d, N, N] concatenation.
            a = torch.einsum("d,bdn->bn", self.query_score, queries)
            b = torch.einsum("d,bdn->bn", self.key_score, keys)
            return AttentionCore("sum", self.kernel, values, a, b)
        return AttentionCore("dot", self.kernel, values, self.temperature * queries, keys)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, head_dim={self.head_dim}, radius={self.radius}, "
            f"value_radius={self.value_radius}, temperature={self.temperature}, kernel={self.kernel!r}"
        )
