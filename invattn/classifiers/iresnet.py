"""The i-ResNet classifier (Behrmann et al., 2019): contractive residual blocks x + g(x), inverted block by block
with the library's fixed-point solvers; ``coeff=None`` builds the unconstrained ResNet of the same shape."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..attention import make_attention
from ..blocks import InvertibleResidual, InvertibleSequential
from ..branches import conv_branch
from ..norms import certify_operator_norm, layer_geometry
from ..solvers import SolverOptions
from .base import Classifier, ClassifierInverseInfo
from .config import ClassifierConfig

__all__ = ["IResNetClassifier"]


class IResNetClassifier(Classifier):
    """The i-ResNet classifier (Behrmann et al., "Invertible residual networks", ICML 2019, §5).

    Stages of residual blocks x + g(x), g = [ELU] SN-conv3×3 → ELU → SN-conv1×1 → ELU → SN-conv3×3 with every
    convolution's operator norm certified ≤ ``coeff`` (so Lip(g) ≤ coeff³ < 1), squeezes between stages,
    then ReLU → pool → linear. ``coeff=None``: the same network without the constraint (an ordinary ResNet whose
    blocks need not be invertible). ``inverse(phi, tol=…)`` solves the blocks backwards with the library's solvers.

    Arguments:
        config: a :class:`ClassifierConfig` with ``architecture="iresnet"`` (``channels``: the residual stream's).
    Raises:
        ValueError: for another architecture, or stage channels the stem cannot provide (see :class:`Classifier`).
    """

    def __init__(self, config: ClassifierConfig) -> None:
        if config.architecture != "iresnet":
            raise ValueError(f"IResNetClassifier needs architecture='iresnet', got {config.architecture!r}")
        super().__init__(config, tuple(config.channels))
        for index, ((channels, size, _), n_blocks) in enumerate(zip(self.shapes, config.blocks)):
            width = config.hidden or channels
            blocks = []
            for i in range(n_blocks):
                g = conv_branch(channels, width, size, config.coeff, input_nonlinearity=(index > 0 or i > 0))
                blocks.append(InvertibleResidual(g))
            if index == 0 and config.attention is not None:
                blocks.append(InvertibleResidual(make_attention(config.attention, channels, coeff=config.coeff)))
            self.stages.append(InvertibleSequential(*blocks))

    def lipschitz_bound(self) -> float:
        """Certified Lip(Φ) ≤ Π (1 + Lip(g_i)) (squeezes and padding are isometries); ``ValueError`` for the
        unconstrained network, whose blocks have no certified bound."""
        if self.config.coeff is None:
            raise ValueError("the unconstrained ResNet (coeff=None) has no certified Lipschitz bound")
        total = 1.0
        for stage in self.stages:
            for block in stage:
                total *= block.lipschitz_bound()
        return total

    def logit_lipschitz_bound(self) -> float:
        """Certified Lip(x ↦ logits) ≤ ‖W_head‖₂ · (1/√(H'W') if pooled) · Lip(Φ) (ReLU is 1-Lipschitz; the mean
        over n positions has norm 1/√n); ‖W_head‖₂ is certified by :func:`invattn.norms.certify_operator_norm`."""
        head = certify_operator_norm(self.head.weight, layer_geometry(self.head)).sigma
        _, h, w = self.feature_shape
        pool = 1.0 / math.sqrt(h * w) if self.config.pool else 1.0
        return head * pool * self.lipschitz_bound()

    def inverse(
        self, phi: torch.Tensor, return_info: bool = False, options: SolverOptions | None = None, **solver
    ) -> torch.Tensor | tuple[torch.Tensor, ClassifierInverseInfo]:
        """Φ's left inverse, block by block backwards: [B, C', H', W'] → x̂ [B, C, H, W] (Behrmann et al., 2019, §2).

        Each residual block y = h + g(h) is solved for h to the solver's tolerance; ``options`` (a
        :class:`invattn.SolverOptions`) and ``solver`` keywords amending it go to
        :meth:`invattn.InvertibleResidual.inverse` (``tol``, ``method``, ``max_iter``, ``on_failure``...); for the
        unconstrained network ``allow_uncertified=True`` is implied (the solver tries and reports). The injective
        padding P (zero channels appended where a stage needs them) is inverted by its left inverse, which drops
        the appended channels. Around it Φ = C∘P∘A (A: everything before, C: the residual blocks and squeezes
        after, both bijections), so x̂ = A⁻¹(P⁺(C⁻¹(phi))) (several paddings: the same from the last backwards).
        For phi = Φ(x) in Φ's range, x̂ = x up to the solves' tolerance. A phi outside the range (features plus
        noise, the mean of two images' features) has no preimage: x̂ is then the x whose padded stem output
        P(A(x)) is C⁻¹(phi) with its padded channels set to 0, so Φ(x̂) = C(Π C⁻¹(phi)) (Π zeroes the padded
        channels) ≠ phi; since every residual block mixes the padded channels into all channels, Φ(x̂) is neither
        the point of the range nearest phi nor equal to phi on any channel in general.

        With ``return_info=True`` returns ``(x̂, ClassifierInverseInfo)``: every block's
        :class:`invattn.InverseInfo` (last block first), the share of the solution dropped at the padding and
        ‖Φ(x̂) − phi‖/‖phi‖ (one extra forward pass). Without it, warns :class:`OutsideRangeWarning` when every
        block converged and a sample's dropped share is clearly above what solving and rounding leave for phi in
        the range (more than 10⁻³ and ten times the share dropped when inverting Φ(x̂) again, which costs one
        forward pass and one inverse of those samples). Raises ``ValueError`` for features of the wrong shape or
        non-finite, :class:`invattn.InversionError` for a solve that fails with ``on_failure="raise"``."""
        self._check_features(phi)
        options = SolverOptions.of(options, **solver)
        if self.config.coeff is None and options.allow_uncertified is None:
            options = replace(options, allow_uncertified=True)
        x, share, infos = self._invert(phi, options)
        quiet = replace(options, on_failure="return")
        return self._answer(phi, x, infos, share, return_info, lambda again: self._invert(again, quiet)[1])
