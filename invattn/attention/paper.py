"""The original code's attention, both repositories' formulations, kept for comparison: not certified."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_coeff, check_positive_float, check_positive_int
from ..lipschitz import spectral_norm
from ..norms import certified_matrix_norm
from .core import check_input
from .kernel import PAPER_KINDS

REPOSITORIES = ("validation", "generation")
GENERATION_KINDS = ("concat", "dot")  # the generative repository's scale block builds only these two


class PaperAttention(nn.Module):
    """The original code's formulation (validation repository), for comparison; **not certified**.

    q, k, v by spectral-normalised 1×1 convolutions (coefficient ``coeff`` = 0.9; the value of ``"dot"`` at
    0.5), energies E_ij = ELU(w_catᵀ[q_i; k_j]) (concat), ELU(q_iᵀk_j) (dot), exp(q_iᵀk_j) (embedded
    Gaussian) or exp(x_iᵀx_j) (Gaussian), normalised per output column A_ij = E_ij / (1.5·Σ_i E_ij),
    o_j = Σ_i A_ij v_i, then a spectral-normalised 1×1 convolution γ. (The original builds the concat
    energies from a [B, 2C/k, N, N] tensor; this computes the same numbers by broadcasting.)

    ``repository="generation"`` is the generative repository's formulation (``variant="generative"`` of
    :func:`invattn.make_attention`, concat and dot only), which differs in five places: one normaliser over all
    N² entries, A_ij = E_ij / (1.5·Σ_kl E_kl), so the whole map sums to 2/3 and each output is O(1/N); plain
    (not spectral-normalised) query and key projections; a plain concat score vector; with a bias; and dot's value
    coefficient ``coeff`` (0.9) instead of 0.5.

    Arguments:
        kind: one of :data:`PAPER_KINDS` (``repository="generation"``: concat or dot).
        channels: C of the inputs [B, C, H, W].
        coeff: the spectral normalisation coefficient of the projections, in (0, 1).
        reduction: query/key width C/reduction.
        repository: ``"validation"`` or ``"generation"``.
    Raises:
        ValueError, TypeError: an unknown kind or repository, or an invalid number.

    :meth:`lipschitz_bound` is ``inf``, with the reason in :attr:`bound_reason`; for the exp kinds
    :meth:`local_lipschitz_bound` gives the bound that holds on inputs with ‖x_i‖ ≤ R.
    """

    def __init__(
        self, kind: str, channels: int, coeff: float = 0.9, reduction: int = 4, repository: str = "validation"
    ) -> None:
        super().__init__()
        self.repository = check_choice(repository, "repository", REPOSITORIES)
        generation = repository == "generation"
        self.kind = check_choice(kind, "kind", GENERATION_KINDS if generation else PAPER_KINDS)
        self.channels = check_positive_int(channels, "channels")
        self.coeff = check_coeff(coeff)
        self.head_dim = d = max(1, channels // check_positive_int(reduction, "reduction"))
        sn = lambda module, c=coeff: spectral_norm(module, coeff=c)  # noqa: E731
        plain_in_generation = (lambda module: module) if generation else sn
        if kind != "gaussian":
            self.query = plain_in_generation(nn.Conv2d(channels, d, 1))
            self.key = plain_in_generation(nn.Conv2d(channels, d, 1))
        if kind == "concat":
            self.concat = plain_in_generation(nn.Conv2d(2 * d, 1, 1, bias=generation))
        self.value = sn(nn.Conv2d(channels, channels, 1), 0.5 if kind == "dot" and not generation else coeff)
        self.gamma = sn(nn.Conv2d(channels, channels, 1))

    @property
    def bound_reason(self) -> str:
        if self.kind in ("concat", "dot"):
            sums = (
                "the sum Σ_kl E_kl over the whole map"
                if self.repository == "generation"
                else "each column sum Σ_i E_ij"
            )
            return (
                f"ELU energies can be negative, so {sums} that divides them can be 0 or change sign: "
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
        norm = lambda conv: float(certified_matrix_norm(conv.weight.flatten(1).double()))  # noqa: E731
        value = norm(self.value)
        if self.kind == "gaussian":
            wq = wk = 1.0
            rq = rk = radius
        else:
            wq, wk = norm(self.query), norm(self.key)
            rq = wq * radius + float(self.query.bias.double().norm())
            rk = wk * radius + float(self.key.bias.double().norm())
        rv = value * radius
        if rq * rk > 709.0:  # e^B overflows float64: no finite bound (the factor after it is positive)
            return math.inf
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
            if self.concat.bias is not None:
                a = a + self.concat.bias
            return F.elu(a[:, :, None] + b[:, None, :])
        products = torch.bmm(queries.transpose(1, 2), keys)
        return F.elu(products) if self.kind == "dot" else torch.exp(products)

    def _column_map(self, x: torch.Tensor) -> torch.Tensor:
        energies = self._energies(x)
        if self.repository == "generation":
            return energies / (1.5 * energies.sum(dim=(1, 2), keepdim=True))
        return energies / (1.5 * energies.sum(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        values = self.value(x).flatten(2)
        out = torch.bmm(values, self._column_map(x))
        return self.gamma(out.view_as(x))

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, N], row j = the weights A_ij that output position j puts on positions i (each row sums to 2/3;
        with ``repository="generation"`` the whole map does)."""
        check_input(x, self.channels)
        return self._column_map(x).transpose(1, 2)

    def extra_repr(self) -> str:
        variant = "generative" if self.repository == "generation" else "paper"
        return f"kind={self.kind!r}, variant={variant!r}, channels={self.channels}, coeff={self.coeff}"
