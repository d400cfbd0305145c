"""What both invertible classifiers share (:class:`Classifier`): the input check, the stem (squeezes, injective
padding), the stages, the head, and the left inverse's walk backwards with its report
(:class:`ClassifierInverseInfo`, :class:`OutsideRangeWarning`)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_finite, check_images
from ..blocks import Squeeze
from ..coupling import InjectivePad
from ..norms import per_sample_norm_float64
from ..solvers import InverseInfo, SolverOptions
from .config import ClassifierConfig

__all__ = ["Classifier", "ClassifierInverseInfo", "OutsideRangeWarning", "relative_to"]

# The inverse warns (return_info=False) when a sample's dropped share exceeds both of these: 10⁻³ absolutely, and ten
# times the share dropped when inverting Φ(x̂) (a point of Φ's range next to phi, so what solving and rounding alone
# leave there; computed only for samples above 10⁻³). The second test is needed because i-RevNet's inverse amplifies
# rounding (more in deeper networks), so features of images may drop more than 10⁻³ in float32 while phi outside the
# range drops orders of magnitude more than its re-inversion.
_DROPPED_SHARE_FLOOR = 1e-3
_DROPPED_SHARE_FACTOR = 10.0


class OutsideRangeWarning(UserWarning):
    """``inverse`` (without ``return_info``) was given features outside Φ's range: the returned x̂ has Φ(x̂) ≠ phi,
    because the injective padding's channels of the solution were dropped (see :class:`ClassifierInverseInfo`)."""


@dataclass
class ClassifierInverseInfo:
    """What :meth:`IResNetClassifier.inverse` and :meth:`IRevNet.inverse` report with ``return_info=True``.

    Iterating, ``len`` and indexing go over ``blocks``; :attr:`converged` says whether every block's solve reached its
    tolerance.

    Arguments:
        blocks: every residual block's :class:`invattn.InverseInfo`, last block first (empty for i-RevNet, whose
            inverse is analytic).
        dropped_share: float64 [B], per sample ‖dropped channels‖₂/‖tensor at that padding‖₂, the largest over the
            injective paddings (0 without one; exactly 0 only for phi whose backward reconstruction has zero padded
            channels).
        range_distance: float64 [B], ‖Φ(x̂) − phi‖₂/‖phi‖₂ measured by one forward pass in the model's dtype (inf for
            a non-finite x̂, or for phi = 0 when Φ(x̂) ≠ 0): rounding-level (about the solver's tolerance) for phi in
            Φ's range, larger for phi outside it.
    """

    blocks: list[InverseInfo]
    dropped_share: torch.Tensor
    range_distance: torch.Tensor

    @property
    def converged(self) -> bool:
        """Every block's solve reached its tolerance (True for the analytic i-RevNet)."""
        return all(info.converged for info in self.blocks)

    def __iter__(self):
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index):
        return self.blocks[index]

    def __repr__(self) -> str:
        return (
            f"ClassifierInverseInfo(blocks={len(self.blocks)}, converged={self.converged}, "
            f"dropped_share≤{float(self.dropped_share.max()) if self.dropped_share.numel() else 0:.2e}, "
            f"range_distance≤{float(self.range_distance.max()) if self.range_distance.numel() else 0:.2e})"
        )


def relative_to(difference: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The relative size per sample, ‖difference_b‖₂/‖reference_b‖₂, in float64 (0/0 = 0 and x/0 = inf for x > 0).

    The norms are :func:`invattn.norms.per_sample_norm_float64`'s (taken in float64, so they do not overflow).

    Arguments:
        difference: [B, ...], any floating dtype.
        reference: [B, ...], the same batch size.
    Returns:
        float64 [B], ≥ 0 (inf where only the reference is 0).
    """
    top, bottom = per_sample_norm_float64(difference), per_sample_norm_float64(reference)
    ratio = top / torch.where(bottom > 0, bottom, torch.ones_like(bottom))
    return torch.where(bottom > 0, ratio, torch.where(top > 0, torch.full_like(top, math.inf), torch.zeros_like(top)))


class Classifier(nn.Module):
    """What both roads share: the input check, the stem (squeezes, injective padding), the stages, the head.

    Builds the stem for each stage (a squeeze where its stride is 2, then an :class:`~invattn.coupling.InjectivePad`
    where it needs more channels than it receives) and the head (ReLU, global average pool or flatten, linear);
    a subclass appends one :class:`invattn.InvertibleSequential` per stage to ``stages``. ``shapes`` holds the
    (channels, height, width) entering each stage's blocks; ``feature_shape`` = [C', H', W'] of Φ(x).

    Arguments:
        config: the :class:`ClassifierConfig` (input shape, strides, ``init_downsampling``, ``injective``, ``pool``,
            ``classes``).
        total_channels: the channels each stage's blocks work on, one entry per stage (i-RevNet: both halves).
    Raises:
        ValueError: when a stage needs more channels than it receives and ``config.injective`` is False, or asks
            for fewer (channels only grow).
    """

    def __init__(self, config: ClassifierConfig, total_channels: tuple[int, ...]) -> None:
        super().__init__()
        self.config = config
        self.squeeze = Squeeze()
        channels = config.in_channels * 4**config.init_downsampling
        size = config.image_size // 2**config.init_downsampling
        self.pads = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.shapes: list[tuple[int, int, int]] = []  # (channels, size) entering each stage's blocks
        for index, (stride, wanted) in enumerate(zip(config.strides, total_channels)):
            if stride == 2:
                channels, size = channels * 4, size // 2
            if wanted > channels:
                if not config.injective:
                    raise ValueError(
                        f"stage {index} needs {wanted} channels but receives {channels}: that takes an injective "
                        "padding (injective=True, i-RevNet (a)); for the bijective variant choose channels and "
                        "init_downsampling so the counts match"
                    )
                self.pads.append(InjectivePad(channels, wanted))
                channels = wanted
            elif wanted < channels:
                raise ValueError(
                    f"stage {index} asks for {wanted} channels but receives {channels}: channels only grow"
                )
            else:
                self.pads.append(nn.Identity())
            self.shapes.append((channels, size, size))
        self.feature_shape = self.shapes[-1]
        c, h, w = self.feature_shape
        self.head = nn.Linear(c if config.pool else c * h * w, config.classes)

    def _check(self, x: torch.Tensor) -> None:
        check_images(x, "x", self.head.weight.dtype, self.head.weight.device)
        check_finite(x, "x")
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"this model takes images [B, {expected[0]}, {expected[1]}, {expected[2]}], got {tuple(x.shape)}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Φ(x): the invertible representation before pooling, [B, C', H', W'] (``feature_shape``)."""
        self._check(x)
        h = x
        for _ in range(self.config.init_downsampling):
            h = self.squeeze(h)
        for stride, pad, stage in zip(self.config.strides, self.pads, self.stages):
            if stride == 2:
                h = self.squeeze(h)
            h = stage(pad(h))
        return h

    def logits_from_features(self, phi: torch.Tensor) -> torch.Tensor:
        """The head: ReLU, global average pool (or flatten), linear: [B, C', H', W'] → [B, classes]."""
        h = F.relu(phi)
        h = h.mean(dim=(2, 3)) if self.config.pool else h.flatten(1)
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, classes] for images x [B, C, H, W]."""
        return self.logits_from_features(self.features(x))

    def _check_features(self, phi: torch.Tensor) -> None:
        check_images(phi, "phi", self.head.weight.dtype, self.head.weight.device)
        check_finite(phi, "phi")
        if phi.dim() != 4 or tuple(phi.shape[1:]) != self.feature_shape:
            raise ValueError(f"features are [B, {', '.join(map(str, self.feature_shape))}], got {tuple(phi.shape)}")

    def _unstem(self, h: torch.Tensor, index: int) -> torch.Tensor:
        h = self.pads[index].inverse(h) if isinstance(self.pads[index], InjectivePad) else h
        if self.config.strides[index] == 2:
            h = self.squeeze.inverse(h)
        return h

    def _finish_inverse(self, h: torch.Tensor) -> torch.Tensor:
        for _ in range(self.config.init_downsampling):
            h = self.squeeze.inverse(h)
        return h

    def _invert(
        self, phi: torch.Tensor, options: SolverOptions | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[InverseInfo]]:
        """(x̂, dropped share float64 [B], the solves' reports, last block first): each stage (an
        :class:`invattn.InvertibleSequential`) inverted as ``options`` say, last stage first, every injective
        padding's channels dropped and their share of the tensor there recorded (the largest)."""
        share = torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device)
        infos: list[InverseInfo] = []
        h = phi
        for index in reversed(range(len(self.stages))):
            h, found = self.stages[index].inverse_with_info(h, options)
            infos += found
            pad = self.pads[index]
            if isinstance(pad, InjectivePad):
                share = torch.maximum(share, relative_to(h[:, pad.in_channels :], h))
            h = self._unstem(h, index)
        return self._finish_inverse(h), share, infos

    def _answer(
        self,
        phi: torch.Tensor,
        x: torch.Tensor,
        blocks: list[InverseInfo],
        share: torch.Tensor,
        return_info: bool,
        reinvert,
    ):
        """``(x, ClassifierInverseInfo)`` or ``x``, warning (:class:`OutsideRangeWarning`) in the latter case when
        phi is clearly outside Φ's range (thresholds at ``_DROPPED_SHARE_FLOOR``); ``reinvert(phi)`` → dropped share."""
        if return_info:
            with torch.no_grad():
                distance = torch.full_like(share, math.inf)
                finite = torch.isfinite(x.detach().flatten(1)).all(dim=1)
                if bool(finite.any()):
                    distance[finite] = relative_to(
                        self.features(x.detach()[finite]) - phi.detach()[finite], phi.detach()[finite]
                    )
            return x, ClassifierInverseInfo(blocks, share, distance)
        # a solve that stopped short explains its own dropped channels: the solver's on_failure policy reports it
        suspects = share > _DROPPED_SHARE_FLOOR
        if bool(suspects.any()) and all(info.converged for info in blocks):
            with torch.no_grad():
                again = reinvert(self.features(x.detach()[suspects]))
            outside = share[suspects] > torch.clamp(_DROPPED_SHARE_FACTOR * again, min=_DROPPED_SHARE_FLOOR)
            if bool(outside.any()):
                worst = float(share[suspects][outside].max())
                warnings.warn(
                    f"phi is outside Φ's range for {int(outside.sum())} of {phi.shape[0]} samples: the inverse dropped "
                    f"up to {worst:.1%} of the solution at the injective padding (Φ(x̂) ≠ phi; no x has Φ(x) = phi); "
                    "pass return_info=True for the report (dropped_share, range_distance)",
                    OutsideRangeWarning,
                    stacklevel=3,
                )
        return x
