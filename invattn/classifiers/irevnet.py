"""i-RevNet (Jacobsen, Smeulders & Oyallon, 2018): an invertible classifier of coupling blocks, inverted
analytically."""

from __future__ import annotations

import torch

from ..attention import AttentionCoupling
from ..blocks import InvertibleSequential
from ..coupling import AdditiveCoupling, bottleneck_branch
from ..solvers import SolverOptions
from .base import Classifier, ClassifierInverseInfo
from .config import ClassifierConfig

__all__ = ["IRevNet"]


class IRevNet(Classifier):
    """i-RevNet (Jacobsen, Smeulders & Oyallon, "i-RevNet: Deep invertible networks", ICLR 2018).

    Images [B, C, H, W] → Φ [B, C', H', W'] through coupling blocks only, then ReLU → pool → linear. ``inverse``
    is analytic (no iteration, no Lipschitz constraint), exact up to float rounding. F of every block is
    :func:`~invattn.coupling.bottleneck_branch` with ``hidden`` channels (default: a quarter of the half, as in the
    paper). Differences from the paper, for a clean inverse: a stride-2 block is a squeeze followed by a stride-1
    coupling (the paper squeezes one half and strides F); the padding is applied where a stage needs it.

    Arguments:
        config: a :class:`ClassifierConfig` with ``architecture="irevnet"`` (``channels``: each half's, so a stage
            works on twice as many).
    Raises:
        ValueError: for another architecture, or stage channels the stem cannot provide (see :class:`Classifier`).
    """

    def __init__(self, config: ClassifierConfig) -> None:
        if config.architecture != "irevnet":
            raise ValueError(f"IRevNet needs architecture='irevnet', got {config.architecture!r}")
        super().__init__(config, tuple(2 * c for c in config.channels))
        for index, ((channels, _, _), n_blocks) in enumerate(zip(self.shapes, config.blocks)):
            half = channels // 2
            hidden = config.hidden or max(half // 4, 1)
            blocks = [
                AdditiveCoupling(bottleneck_branch(half, hidden, config.batch_norm), channels) for _ in range(n_blocks)
            ]
            if index == 0 and config.attention is not None:
                blocks.append(AttentionCoupling(config.attention, channels, variant=config.attention_variant))
            self.stages.append(InvertibleSequential(*blocks))

    def inverse(
        self, phi: torch.Tensor, return_info: bool = False, options: SolverOptions | None = None, **solver
    ) -> torch.Tensor | tuple[torch.Tensor, ClassifierInverseInfo]:
        """Φ's left inverse, analytically: [B, C', H', W'] → x̂ [B, C, H, W] (Jacobsen et al., 2018, §3).

        Around an injective padding P write Φ = C∘P∘A (A: everything before it, C: everything after it, both
        bijections). Backwards, every bijection is inverted exactly and P by its left inverse P⁺, which drops the
        appended channels: x̂ = A⁻¹(P⁺(C⁻¹(phi))) (with several paddings, the same from the last one backwards).
        For phi = Φ(x) in Φ's range this is x, exactly up to rounding. The injective variant's Φ has more numbers
        than x, so a phi outside the range (features plus noise, the mean of two images' features) has no
        preimage, and x̂ is the x whose padded tensor P(A(x)) equals C⁻¹(phi) with its padded channels set to 0:
        Φ(x̂) = C(Π C⁻¹(phi)) (Π zeroes the padded channels) ≠ phi, neither the point of the range nearest phi nor
        equal to phi on any channel in general (the couplings mix the padded channels into every other channel).
        With ``return_info=True`` returns
        ``(x̂, ClassifierInverseInfo)`` (no blocks: nothing iterates) with the share of the solution dropped at the
        padding and ‖Φ(x̂) − phi‖/‖phi‖; without it, warns :class:`OutsideRangeWarning` when the share dropped is
        clearly above what rounding leaves for phi in the range (more than 10⁻³ and ten times the share dropped
        inverting Φ(x̂)). ``options`` and ``solver`` keywords (as :meth:`IResNetClassifier.inverse` takes them) are
        checked and unused: nothing is solved. Raises ``ValueError`` for features of the wrong shape or non-finite,
        ``TypeError`` for an unknown solver keyword."""
        SolverOptions.of(options, **solver)  # checked, so code written for either road runs on both; none is needed
        self._check_features(phi)
        x, share, _ = self._invert(phi)
        return self._answer(phi, x, [], share, return_info, lambda again: self._invert(again)[1])
