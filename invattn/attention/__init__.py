"""Invertible attention: six attention types with a certified Lipschitz bound below 1, plus the original
paper's formulation for comparison.

Every module here is a residual branch g acting on feature maps ``[B, C, H, W]`` (N = H·W positions):
put it in :class:`invattn.InvertibleResidual` to get the invertible block x + g(x), or use it as the F of a
coupling block, :class:`AttentionCoupling`, invertible whatever its Lipschitz constant. Notation used in the
docstrings (derivations in appendix 02a, results in lesson 02): x_i ∈ R^C is the feature at position i; row j of the
attention
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

from torch import nn

from .._validation import check_choice
from ..coupling import AdditiveCoupling, check_even_channels
from .core import CertifiedAttention
from .kernel import PAPER_KINDS, KernelAttention
from .l2 import L2Attention, l2_attention_constant, lambert_w0
from .lipnorm import LipNormAttention
from .paper import GENERATION_KINDS, PaperAttention
from .tightness import Tightness, attention_tightness, search_lipschitz

__all__ = [
    "KINDS",
    "VARIANTS",
    "GENERATION_KINDS",
    "PAPER_KINDS",
    "make_attention",
    "AttentionCoupling",
    "CertifiedAttention",
    "KernelAttention",
    "L2Attention",
    "LipNormAttention",
    "PaperAttention",
    "lambert_w0",
    "l2_attention_constant",
    "Tightness",
    "attention_tightness",
    "search_lipschitz",
]

KINDS = ("concat", "dot", "embedded_gaussian", "gaussian", "l2", "lipnorm")
# "certified": this project's kinds (bound ≤ coeff < 1); "paper": the validation repository's formulation;
# "generative": the generative repository's (global normaliser, plain q/k); the last two are not certified
VARIANTS = ("certified", "paper", "generative")


def make_attention(kind: str, channels: int, coeff: float = 0.9, variant: str = "certified", **options) -> nn.Module:
    """The residual branch g(x)_j = gain · W_o Σ_i P_ji v_i + b_o of an invertible attention block (module doc).

    ``variant="certified"`` (default) returns a module whose ``lipschitz_bound()`` is a certified L ≤ ``coeff`` < 1
    for every input; ``variant="paper"`` (the four paper kinds) returns the original formulation of the validation
    repository and ``variant="generative"`` (concat, dot) that of the generative repository, whose bounds are ``inf``
    (see :class:`PaperAttention`).

    Arguments:
        kind: one of :data:`KINDS` (:data:`PAPER_KINDS` for ``"paper"``, :data:`GENERATION_KINDS` for
            ``"generative"``).
        channels: C of the feature maps [B, C, H, W] the branch maps to [B, C, H, W].
        coeff: the certified bound's ceiling, in (0, 1) (default 0.9).
        variant: ``"certified"``, ``"paper"`` or ``"generative"`` (one of :data:`VARIANTS`).
        **options: go to the kind's class: :class:`KernelAttention` (``reduction``, ``radius``, ``value_radius``,
            ``temperature``), :class:`L2Attention` (``reduction``, ``temperature``), :class:`LipNormAttention`
            (``reduction``), :class:`PaperAttention` (``reduction``).
    Returns:
        the branch, an ``nn.Module`` (a :class:`CertifiedAttention` for the certified variant, float32 weights).
    Raises:
        ValueError: an unknown kind or variant, or a kind the variant does not have (and the kind class's own
            errors for a bad ``channels``, ``coeff`` or option value).
        TypeError: an option the kind's class does not take, or a ``channels`` that is not an integer.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> g = make_attention("dot", channels=8, coeff=0.9)
    >>> g(torch.randn(2, 8, 4, 4)).shape
    torch.Size([2, 8, 4, 4])
    >>> print(g.lipschitz_bound(n_positions=16) <= 0.9, round(g.lipschitz_bound(n_positions=16), 4))
    True 0.9
    """
    check_choice(kind, "kind", KINDS)
    check_choice(variant, "variant", VARIANTS)
    if variant in ("paper", "generative"):
        kinds = PAPER_KINDS if variant == "paper" else GENERATION_KINDS
        if kind not in kinds:
            raise ValueError(f"variant={variant!r} exists for the kinds {kinds}; {kind!r} is not one of them")
        repository = "validation" if variant == "paper" else "generation"
        builder = lambda: PaperAttention(kind, channels, coeff, repository=repository, **options)  # noqa: E731
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


class AttentionCoupling(AdditiveCoupling):
    """An additive coupling whose F is attention over the first half's C/2 channels (any kind of
    :data:`invattn.KINDS`; ``variant="paper"`` gives the original, unbounded formulation of Zha et al., 2021).

    Invertible and exact whatever F's Lipschitz constant: the coupling's inverse never iterates. The price: each
    block transforms only half of the channels; a residual attention block x + a(x) transforms all of them but
    needs Lip(a) < 1. It keeps the contract of :class:`invattn.blocks.InvertibleBlock` (log|det| = 0).

    Arguments:
        kind: one of :data:`KINDS` (the paper variant: :data:`PAPER_KINDS`).
        channels: C of the inputs [B, C, H, W], even (F acts on C/2 channels).
        variant: "certified", "paper" or "generative" (:func:`make_attention`).
        coeff: F's certified bound for the certified variant (not needed for invertibility here).
        **options: go to :func:`invattn.make_attention`.
    Raises:
        ValueError: an odd channel count, an unknown kind or variant.
    """

    def __init__(self, kind: str, channels: int, variant: str = "certified", coeff: float = 0.9, **options) -> None:
        check_even_channels(channels, "AttentionCoupling")
        super().__init__(make_attention(kind, channels // 2, coeff=coeff, variant=variant, **options), channels)
        self.kind, self.variant = kind, variant
