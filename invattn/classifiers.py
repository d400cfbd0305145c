"""Two roads to an invertible classifier: i-RevNet (coupling, Jacobsen et al., 2018) and the i-ResNet
classifier (contractive residual blocks, Behrmann et al., 2019), built from one :class:`ClassifierConfig`.

Both map an image x to a representation Φ(x) with the input's information intact, then pool it and apply a
linear head: ``model(x)`` → logits [B, classes], ``model.features(x)`` → Φ(x) [B, C', H', W'],
``model.inverse(phi)`` → x.

* :class:`IRevNet`: ``init_downsampling`` squeezes, an :class:`~invattn.coupling.InjectivePad` when the first
  stage needs more channels than the input has (variant (a), injective; ``injective=False`` refuses it:
  variant (b), bijective), then stages of :class:`~invattn.coupling.AdditiveCoupling` blocks with i-RevNet's
  bottleneck F (batch norm, ReLU, 3×3 convolutions); a stride-2 stage starts with a space-to-depth squeeze. Its
  inverse is analytic: exact up to float rounding.
* :class:`IResNetClassifier`: the same layout with residual blocks x + g(x), g the density model's branch of
  spectral-normalised convolutions with Lip(g) ≤ ``coeff``: its inverse is a fixed-point solve per block, with the
  solvers' report. ``coeff=None`` builds the unconstrained ResNet of the same shape, for comparison (its blocks
  need not be invertible; the solver says when they are not).
* :func:`certified_radius`: for the i-ResNet classifier, whose logits have a certified Lipschitz bound L, the
  ℓ₂ radius margin/(√2·L) within which no perturbation can change the predicted class (Tsuzuku, Sato &
  Sugiyama, "Lipschitz-margin training", NeurIPS 2018).

``channels`` are per stage: for i-RevNet the channels of each *half* (the paper's CIFAR-10 model: 16-64-256,
i.e. 32-128-512 in all), for the i-ResNet classifier the channels of the residual stream.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._files import load_saved_model, write_atomically
from ._validation import check_choice, check_coeff, check_finite, check_images, check_model, check_positive_int
from .attention import KINDS, PAPER_KINDS, AttentionCoupling, make_attention
from .blocks import InvertibleResidual, Squeeze
from .coupling import AdditiveCoupling, InjectivePad, bottleneck_branch
from .lipschitz import lipschitz_bound
from .models import conv_branch
from .norms import certify_operator_norm, layer_geometry, unit_roundoff
from .solvers import InverseInfo, per_sample_norm

__all__ = [
    "ClassifierConfig",
    "ClassifierInverseInfo",
    "CLASSIFIER_PRESETS",
    "IRevNet",
    "IResNetClassifier",
    "OutsideRangeWarning",
    "build_classifier",
    "certified_radius",
    "classifier_preset",
    "load_classifier",
    "pgd_attack",
    "save_classifier",
]

ARCHITECTURES = ("irevnet", "iresnet")

# The inverse warns (return_info=False) when a sample's dropped share exceeds both of these: 10⁻³ absolutely, and ten
# times the share dropped when inverting Φ(x̂) (a point of Φ's range next to phi, so what solving and rounding alone
# leave there; computed only for samples above 10⁻³). Measured on the digits presets (64 held-out digits, trained):
# features of images drop ≤ 3·10⁻⁵ (i-ResNet, float32, tol 1e-5), ≤ 2·10⁻³ (i-RevNet, float32: its inverse amplifies
# rounding ~10⁴-fold, more in deeper networks, hence the second test), ≤ 2·10⁻¹⁰ in float64; the re-inversion's share
# is within a factor 0.6-2.2 of it; phi + 1 % noise or the mean of two digits' features drop 9-14 % (i-ResNet) and
# ~100 % (i-RevNet; ~1 % untrained), 10³-10¹¹ times the re-inversion's.
_DROPPED_SHARE_FLOOR = 1e-3
_DROPPED_SHARE_FACTOR = 10.0


class OutsideRangeWarning(UserWarning):
    """``inverse`` (without ``return_info``) was given features outside Φ's range: the returned x̂ has Φ(x̂) ≠ phi,
    because the injective padding's channels of the solution were dropped (see :class:`ClassifierInverseInfo`)."""


@dataclass
class ClassifierInverseInfo:
    """What :meth:`IResNetClassifier.inverse` and :meth:`IRevNet.inverse` report with ``return_info=True``.

    ``blocks``: every residual block's :class:`invattn.InverseInfo`, last block first (empty for i-RevNet, whose
    inverse is analytic). ``dropped_share``: float64 [B], per sample ‖dropped channels‖₂/‖tensor at that padding‖₂,
    the largest over the injective paddings (0 without one; exactly 0 only for phi whose backward reconstruction has
    zero padded channels). ``range_distance``: float64 [B], ‖Φ(x̂) − phi‖₂/‖phi‖₂ measured by one forward pass in the
    model's dtype (inf for a non-finite x̂, or for phi = 0 when Φ(x̂) ≠ 0): rounding-level (about the solver's
    tolerance) for phi in Φ's range, larger for phi outside it. Iterating, ``len`` and indexing go over ``blocks``.
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


def _relative_to(difference: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """‖difference_b‖/‖reference_b‖ per sample, float64; 0/0 = 0 and x/0 = inf for x > 0."""
    top, bottom = per_sample_norm(difference), per_sample_norm(reference)
    ratio = top / torch.where(bottom > 0, bottom, torch.ones_like(bottom))
    return torch.where(bottom > 0, ratio, torch.where(top > 0, torch.full_like(top, math.inf), torch.zeros_like(top)))


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that defines a classifier (saved in checkpoints).

    ``architecture``: "irevnet" or "iresnet". ``blocks``/``strides``/``channels``: one entry per stage (strides 1
    or 2; 2 = a squeeze at the stage's start). ``init_downsampling``: squeezes applied to the input first.
    ``injective``: allow zero channels to be appended where a stage needs more than it receives.
    ``hidden``: the branch's hidden channels (None: a quarter of the half for i-RevNet, as in the paper; the
    stream's channels for the i-ResNet classifier). ``batch_norm``: batch normalisation in i-RevNet's F.
    ``coeff``: i-ResNet only: every convolution of a block's branch has operator norm ≤ ``coeff``, so
    Lip(g) ≤ coeff³ < 1; None builds the unconstrained ResNet (i-RevNet has no Lipschitz constraint and ignores it).
    ``attention``: a kind of :data:`invattn.KINDS` for one extra block at the end of the first stage: for i-RevNet a
    coupling whose F is attention of variant ``attention_variant`` ("certified", or "paper" for the original,
    unbounded formulation of the four paper kinds); for the i-ResNet classifier a certified residual attention
    block (so ``attention_variant`` must be "certified", and the unconstrained ResNet takes none).
    ``pool``: global average pooling before the linear head (the papers); False flattens Φ.

    Inputs are images centred to [−0.5, 0.5) (pixels in [0, 1] minus 0.5, as the training loop feeds them).
    """

    architecture: str = "irevnet"
    in_channels: int = 3
    image_size: int = 32
    classes: int = 10
    blocks: tuple[int, ...] = (18, 18, 18)
    strides: tuple[int, ...] = (1, 2, 2)
    channels: tuple[int, ...] = (16, 64, 256)
    init_downsampling: int = 0
    injective: bool = True
    hidden: int | None = None
    coeff: float | None = 0.9
    batch_norm: bool = True
    attention: str | None = None
    attention_variant: str = "certified"
    pool: bool = True

    def __post_init__(self) -> None:
        check_choice(self.architecture, "architecture", ARCHITECTURES)
        for name in ("in_channels", "image_size", "classes"):
            check_positive_int(getattr(self, name), name)
        if not (len(self.blocks) == len(self.strides) == len(self.channels)) or not self.blocks:
            raise ValueError("blocks, strides and channels need one entry per stage")
        if any(s not in (1, 2) for s in self.strides):
            raise ValueError(f"strides are 1 or 2, got {self.strides}")
        for b in self.blocks:
            check_positive_int(b, "blocks", minimum=0)
        check_positive_int(self.init_downsampling, "init_downsampling", minimum=0)
        if self.coeff is not None:
            check_coeff(self.coeff)
        if self.classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {self.classes}")
        if self.hidden is not None:
            check_positive_int(self.hidden, "hidden")
        for name in ("injective", "batch_norm", "pool"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_choice(self.attention_variant, "attention_variant", ("certified", "paper"))
        if self.attention is not None:
            check_choice(self.attention, "attention", KINDS)
            if self.architecture == "iresnet" and self.attention_variant != "certified":
                raise ValueError(
                    "the i-ResNet classifier's attention is a residual block, which must be certified: "
                    "use attention_variant='certified' (the paper's variant belongs in an i-RevNet coupling)"
                )
            if self.architecture == "iresnet" and self.coeff is None:
                raise ValueError("the unconstrained ResNet (coeff=None) takes no attention block")
            if self.attention_variant == "paper" and self.attention not in PAPER_KINDS:
                raise ValueError(f"attention_variant='paper' exists for {PAPER_KINDS}, not {self.attention!r}")
        squeezes = self.init_downsampling + sum(s == 2 for s in self.strides)
        if self.image_size % (2**squeezes):
            raise ValueError(f"image_size {self.image_size} cannot be squeezed {squeezes} times")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ClassifierConfig:
        return cls(**{k: tuple(v) if k in ("blocks", "strides", "channels") else v for k, v in values.items()})


CLASSIFIER_PRESETS: dict[tuple[str, str], ClassifierConfig] = {
    # seconds on a CPU: the pipeline end to end
    ("irevnet", "smoke"): ClassifierConfig(
        in_channels=1, image_size=8, blocks=(1, 1), strides=(1, 2), channels=(2, 8), hidden=8
    ),
    ("iresnet", "smoke"): ClassifierConfig(
        architecture="iresnet", in_channels=1, image_size=8, blocks=(1, 1), strides=(1, 2), channels=(4, 16), hidden=16
    ),
    # the offline 8×8 digits, CPU minutes
    # the same layout: i-RevNet's 4-16 channels per half are the i-ResNet's 8-32 channel stream
    ("irevnet", "digits"): ClassifierConfig(
        in_channels=1, image_size=8, blocks=(3, 3), strides=(1, 2), channels=(4, 16), hidden=32, pool=False
    ),
    ("iresnet", "digits"): ClassifierConfig(
        architecture="iresnet",
        in_channels=1,
        image_size=8,
        blocks=(3, 3),
        strides=(1, 2),
        channels=(8, 32),
        hidden=32,
        pool=False,
    ),
    # the papers' CIFAR-10 models (a GPU): i-RevNet (a), injective, 18-18-18, 16-64-256 per half
    ("irevnet", "cifar10-paper"): ClassifierConfig(),
    # i-ResNet's classifier: 3 stages, squeeze downsampling, c = 0.9; (7-7-7 blocks here, 32-128-512 channels)
    ("iresnet", "cifar10-paper"): ClassifierConfig(
        architecture="iresnet", blocks=(7, 7, 7), channels=(32, 128, 512), hidden=None
    ),
}


def classifier_preset(architecture: str, preset: str) -> ClassifierConfig:
    """The :class:`ClassifierConfig` of ``preset`` ("smoke", "digits", "cifar10-paper") for ``architecture``."""
    check_choice(architecture, "model", ARCHITECTURES)
    presets = sorted({p for _, p in CLASSIFIER_PRESETS})
    check_choice(preset, "preset", tuple(presets))
    return CLASSIFIER_PRESETS[(architecture, preset)]


class _Classifier(nn.Module):
    """What both roads share: the input check, the stem (squeezes, injective padding), the stages, the head."""

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

    def _invert(self, phi: torch.Tensor, solve) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂, dropped share float64 [B]): the stages backwards, ``solve(block, h)`` inverting each block, every
        injective padding's channels dropped and their share of the tensor there recorded (the largest)."""
        share = torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device)
        h = phi
        for index in reversed(range(len(self.stages))):
            for block in reversed(self.stages[index]):
                h = solve(block, h)
            pad = self.pads[index]
            if isinstance(pad, InjectivePad):
                share = torch.maximum(share, _relative_to(h[:, pad.in_channels :], h))
            h = self._unstem(h, index)
        return self._finish_inverse(h), share

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
                    distance[finite] = _relative_to(
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


class IRevNet(_Classifier):
    """i-RevNet (Jacobsen, Smeulders & Oyallon, "i-RevNet: Deep invertible networks", ICLR 2018).

    Images [B, C, H, W] → Φ [B, C', H', W'] through coupling blocks only, then ReLU → pool → linear. ``inverse``
    is analytic (no iteration, no Lipschitz constraint), exact up to float rounding. F of every block is
    :func:`~invattn.coupling.bottleneck_branch` with ``hidden`` channels (default: a quarter of the half, as in the
    paper). Differences from the paper, for a clean inverse: a stride-2 block is a squeeze followed by a stride-1
    coupling (the paper squeezes one half and strides F); the padding is applied where a stage needs it.
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
            self.stages.append(nn.Sequential(*blocks))

    def inverse(
        self, phi: torch.Tensor, return_info: bool = False
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
        inverting Φ(x̂)). Raises ``ValueError`` for features of the wrong shape or non-finite."""
        self._check_features(phi)
        x, share = self._invert(phi, lambda block, h: block.inverse(h))
        return self._answer(
            phi, x, [], share, return_info, lambda again: self._invert(again, lambda block, h: block.inverse(h))[1]
        )


class IResNetClassifier(_Classifier):
    """The i-ResNet classifier (Behrmann et al., "Invertible residual networks", ICML 2019, §5).

    Stages of residual blocks x + g(x), g = [ELU] SN-conv3×3 → ELU → SN-conv1×1 → ELU → SN-conv3×3 with every
    convolution's operator norm certified ≤ ``coeff`` (so Lip(g) ≤ coeff³ < 1), squeezes between stages,
    then ReLU → pool → linear. ``coeff=None``: the same network without the constraint (an ordinary ResNet whose
    blocks need not be invertible). ``inverse(phi, tol=…)`` solves the blocks backwards with the library's solvers.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        if config.architecture != "iresnet":
            raise ValueError(f"IResNetClassifier needs architecture='iresnet', got {config.architecture!r}")
        super().__init__(config, tuple(config.channels))
        for index, ((channels, size, _), n_blocks) in enumerate(zip(self.shapes, config.blocks)):
            width = config.hidden or channels
            blocks = []
            for i in range(n_blocks):
                if config.coeff is None:
                    g = _unconstrained_branch(channels, width, input_nonlinearity=(index > 0 or i > 0))
                else:
                    g = conv_branch(channels, width, size, config.coeff, input_nonlinearity=(index > 0 or i > 0))
                blocks.append(InvertibleResidual(g))
            if index == 0 and config.attention is not None:
                blocks.append(InvertibleResidual(make_attention(config.attention, channels, coeff=config.coeff)))
            self.stages.append(nn.Sequential(*blocks))

    def lipschitz_bound(self) -> float:
        """Certified Lip(Φ) ≤ Π (1 + Lip(g_i)) (squeezes and padding are isometries); ``ValueError`` for the
        unconstrained network, whose blocks have no certified bound."""
        if self.config.coeff is None:
            raise ValueError("the unconstrained ResNet (coeff=None) has no certified Lipschitz bound")
        total = 1.0
        for stage in self.stages:
            for block in stage:
                total *= 1.0 + block.lipschitz_bound()
        return total

    def logit_lipschitz_bound(self) -> float:
        """Certified Lip(x ↦ logits) ≤ ‖W_head‖₂ · (1/√(H'W') if pooled) · Lip(Φ) (ReLU is 1-Lipschitz; the mean
        over n positions has norm 1/√n); ‖W_head‖₂ is certified by :func:`invattn.norms.certify_operator_norm`."""
        head = certify_operator_norm(self.head.weight, layer_geometry(self.head)).sigma
        _, h, w = self.feature_shape
        pool = 1.0 / math.sqrt(h * w) if self.config.pool else 1.0
        return head * pool * self.lipschitz_bound()

    def inverse(
        self, phi: torch.Tensor, return_info: bool = False, **solver
    ) -> torch.Tensor | tuple[torch.Tensor, ClassifierInverseInfo]:
        """Φ's left inverse, block by block backwards: [B, C', H', W'] → x̂ [B, C, H, W] (Behrmann et al., 2019, §2).

        Each residual block y = h + g(h) is solved for h to the solver's tolerance; ``solver`` options go to
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
        if self.config.coeff is None:
            solver = {"allow_uncertified": True, **solver}
        infos: list[InverseInfo] = []

        def solve(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
            h, info = block.inverse(h, return_info=True, **solver)
            infos.append(info)
            return h

        x, share = self._invert(phi, solve)
        quiet = {**solver, "on_failure": "return"}
        return self._answer(
            phi,
            x,
            infos,
            share,
            return_info,
            lambda again: self._invert(again, lambda block, h: block.inverse(h, **quiet))[1],
        )


def _unconstrained_branch(channels: int, width: int, input_nonlinearity: bool) -> nn.Sequential:
    """The i-ResNet branch without spectral normalisation: what an ordinary ResNet block computes."""
    layers = [nn.ELU()] if input_nonlinearity else []
    layers += [
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ELU(),
        nn.Conv2d(width, width, 1),
        nn.ELU(),
        nn.Conv2d(width, channels, 3, padding=1),
    ]
    return nn.Sequential(*layers)


def build_classifier(config: ClassifierConfig) -> _Classifier:
    """:class:`IRevNet` or :class:`IResNetClassifier`, as ``config.architecture`` says."""
    return IRevNet(config) if config.architecture == "irevnet" else IResNetClassifier(config)


def save_classifier(model: _Classifier, path: str | Path, **record) -> None:
    """Save ``model``'s weights and config, and ``record`` (plain values: accuracy, epochs, …), to ``path``
    atomically (a temporary file renamed over it), for :func:`load_classifier`. Raises ``TypeError`` for a record value
    that is not a bool, int, float, str or None (``weights_only`` loading could not read it back)."""
    check_model(model, "model", _Classifier)
    for name, value in record.items():
        if value is not None and type(value) not in (bool, int, float, str):
            raise TypeError(
                f"record values must be plain bool, int, float, str or None; {name} is {type(value).__name__}"
            )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    payload = dict(model=model.state_dict(), model_config=model.config.to_dict(), record=record)
    write_atomically(path, lambda handle: torch.save(payload, handle))


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[_Classifier, dict]:
    """(model in eval mode on ``device``, record) from a file saved by :func:`save_classifier`, or from what
    ``python -m invattn.train --task classify --out DIR`` wrote (``DIR`` or ``DIR/checkpoint.pt``; the record then
    holds the run's task, preset, step and last held-out accuracy). Loaded with ``weights_only=True`` (no code runs),
    certificates recomputed from the weights. Raises ``FileNotFoundError`` when ``path`` is missing and
    ``ValueError`` when it holds something else (a density model, pickled objects, a damaged file) or ``device`` is
    absent."""
    model, state = load_saved_model(
        path,
        device,
        lambda config: build_classifier(ClassifierConfig.from_dict(config)),
        missing=f"no classifier at {path}",
        foreign=f"{path} is not a classifier saved by save_classifier or invattn.train",
        task="classify",
    )
    if "record" in state:
        return model, dict(state["record"])
    tested = [h["test_accuracy"] for h in state.get("history", []) if "test_accuracy" in h]
    return model, dict(
        task="classify",
        preset=state.get("preset"),
        step=state.get("step"),
        test_accuracy=tested[-1] if tested else None,
    )


@torch.no_grad()
def certified_radius(model: IResNetClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(radius [B], predicted class [B]) for images x [B, C, H, W] (centred to [−0.5, 0.5), as the model was
    trained): no perturbation δ with ‖δ‖₂ < radius changes the predicted class of x + δ.

    With L ≥ Lip(x ↦ logits) certified, each logit difference f_k − f_j is √2·L-Lipschitz (its gradient is
    (e_k − e_j)ᵀJ and ‖e_k − e_j‖ = √2), so the top logit stays on top while ‖δ‖ < margin/(√2·L), margin =
    f_top − f_second (Tsuzuku, Sato & Sugiyama, 2018, Prop. 1). L is certified for f, the network in exact arithmetic
    with the effective weights of the float64 model (a float64 copy of a float32 model, with its own certificates);
    the margins are computed by that float64 model at x, and E₆₄ ≥ ‖f̂₆₄(x) − f(x)‖₂ bounds that pass's rounding (the
    recursion below with u = 2⁻⁵³), so the exact margin is ≥ margin − √2·E₆₄.

    Which function the radius is for: ``model(x')`` as the user evaluates it, in the model's own dtype (float32 or
    float64), eval mode, on the CPU. Let f̂(x') = model(fl(x')) computed in that dtype and r₀ = max(0, margin)/(√2·L);
    :func:`_evaluation_error_bound` proves E ≥ ‖f̂(x') − f(x')‖₂ for every x' with ‖x' − x‖ ≤ r₀ (below), so for
    k ≠ top, f̂_top − f̂_k ≥ f_top − f_k − √2·E ≥ margin − √2·E₆₄ − √2·L‖x' − x‖ − √2·E (as |a| + |b| ≤ √2‖(a, b)‖),
    and the returned radius is max(0, margin − √2·(E + E₆₄))/(√2·L) ≤ r₀: inside it the model's prediction is the
    certified class (at x itself too, so a point whose prediction in the model's dtype differs gets 0). For a float64
    model E and E₆₄ are about 10⁻¹³ of the logits, for a float32 model E is about 10⁻⁴ of them (no guessed
    allowance: a crafted model whose logits cancel to nearly 0 gets the rounding it really has).

    The bound E, layer by layer (u the model dtype's unit roundoff, 2⁻²⁴ in float32; γ_n = nu/(1 − nu), Higham,
    *Accuracy and Stability of Numerical
    Algorithms*, 2002, §3.1): e_ℓ ≥ ‖ĥ_ℓ(x') − h_ℓ(x')‖ obeys e_ℓ ≤ Lip_ℓ·e_{ℓ−1} + local_ℓ. The input: fl₃₂(x')
    moves x' by ≤ u‖x'‖ (+ the subnormal spacing·√D). A convolution or linear layer with fan-in n, computed as sums
    of products in any order, with or without FMA, errs per output by ≤ γ_{n+1}(Σ|ŵ||ĥ| + |b|), in ℓ₂ by
    ≤ γ_{n+1}(Σ_taps ‖Ŵ_t‖_F·‖ĥ‖ + ‖b‖√positions) (a zero-padded convolution is Σ_t shift_t∘W_t, ‖shift_t‖ ≤ 1),
    plus (n + 1)·(smallest normal)·√outputs for products flushed to zero; its float32 effective weights Ŵ differ
    from the float64 copy's W (the spectral scale carries the dtype's margin), which adds Σ_t ‖Ŵ_t − W_t‖_F·‖ĥ‖,
    measured; Lip_ℓ is the float64 layer's certified norm. ELU (α = 1) as exp(t) − 1 or expm1 with exp ≤ k ulp
    off (k = 8 assumed; glibc and SLEEF guarantee 1, and PyTorch's ELU measures ≤ 1·u) errs by ≤ (2k + 1)u per
    entry (the subtraction is exact by Sterbenz's lemma for exp ≥ ½, else rounds by ≤ u), ·√entries in ℓ₂; it is
    1-Lipschitz. A residual sum rounds by ≤ u‖ŷ‖; ReLU, squeezes and zero padding are exact; mean pooling over P
    positions errs by ≤ γ_{P+1}‖ĥ‖/√P and has norm 1/√P. The norms ‖ĥ_ℓ(x')‖ are bounded over the ball by
    ‖h_ℓ(x)‖ + Lip(prefix)·r₀ + e_ℓ, with ‖h_ℓ(x)‖ ≤ the float64 pass's norm (raised past its rounding) plus that
    pass's own error, bounded by the same recursion with u = 2⁻⁵³. The analysis assumes no overflow: every entry and
    every partial sum of a layer is at most its ℓ₂ bound ‖|W|‖·‖ĥ‖ + ‖b‖, and a sample where such a bound (or the
    float64 pass's) exceeds a quarter of the dtype's largest number, or any quantity is not finite, gets radius 0. E is
    typically ~10³ times the measured
    |f̂ − f| (the worst-case γ_n), and shrinks ordinary radii by ~2 %.

    Assumptions, refused otherwise with a ``ValueError`` that says why and what to do: the model is float32 or
    float64 and runs on the CPU (on CUDA, TF32 and FFT/Winograd convolutions break the rounding model: move model and
    x to the CPU), a float32 model with no reduced-precision float32 mode (``torch.set_float32_matmul_precision``
    other than "highest", an ``fp32_precision`` of "tf32"/"bf16", CPU autocast; or certify ``model.double()``), and
    only convolutional residual blocks (an attention block is not covered: no radius is given for such a model); the
    CPU convolution is a direct or GEMM-based one (PyTorch's oneDNN and im2col kernels), not Winograd. ``x`` must be
    a floating-point tensor of the model's dtype and device (``TypeError``/``ValueError`` otherwise). Raises
    ``ValueError`` for a model without a certified bound (i-RevNet, the unconstrained ResNet), ``TypeError`` for a
    model wrapped in ``DataParallel`` (pass ``.module``).
    """
    check_model(model, "model")
    check_images(x, "x")
    if not isinstance(model, IResNetClassifier) or model.config.coeff is None:
        raise ValueError(
            f"certified radii need a certified Lipschitz bound; this {type(model).__name__} has none "
            "(i-RevNet and the unconstrained ResNet are not Lipschitz-constrained)"
        )
    dtype = model.head.weight.dtype
    _check_rounding_model(model)
    check_images(x, "x", dtype, model.head.weight.device)
    check_finite(x, "x")
    reference = model if dtype == torch.float64 else copy.deepcopy(model).double()
    was_training = reference.training
    reference.eval()
    try:
        try:
            bound = reference.logit_lipschitz_bound()
        except OverflowError:
            raise ValueError(
                "the model's weights are too large for a certified Lipschitz bound (their norms overflow "
                "float64): no certified radius can be given"
            ) from None
        logits = reference(x.double())
        top2 = logits.topk(2, dim=1)
        margin = top2.values[:, 0] - top2.values[:, 1]
        ball = torch.clamp(margin, min=0) / (math.sqrt(2) * bound)  # r₀ ≥ every radius returned below
        # certify what the user evaluates (the model in its own dtype) and the margin of exact arithmetic
        error, error64 = _evaluation_error_bound(model, reference, x.double(), ball)
        radius = torch.clamp(margin - math.sqrt(2) * (error + error64), min=0) / (math.sqrt(2) * bound)
        radius = torch.where(torch.isfinite(radius), radius, torch.zeros_like(radius))  # an overflowing pass: none
    finally:
        reference.train(was_training)
    rounded = radius.to(x.dtype)
    rounded = torch.where(rounded.double() > radius, torch.nextafter(rounded, torch.zeros_like(rounded)), rounded)
    return rounded, top2.indices[:, 0]  # rounded toward zero: never above the proven radius


# exp/expm1 in float32 on the CPU (glibc, SLEEF) err by ≤ 1 ulp, and PyTorch's ELU measured ≤ 1·u off; assumed ≤ 8 ulp
_EXP_ULPS = 8


def _check_rounding_model(model: IResNetClassifier) -> None:
    """Refuse (ValueError, with the reason and the remedy) what :func:`_evaluation_error_bound` does not cover."""
    dtype, device = model.head.weight.dtype, model.head.weight.device
    remedy = (
        "certify the float64 model instead: certified_radius(model.double(), x.double())"
        if dtype != torch.float64
        else "no certified radius can be given for this model"
    )
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"certified radii of a {dtype} model are not covered (its arithmetic's rounding is only "
            f"analysed for float32 and float64 on the CPU); {remedy}"
        )
    if device.type != "cpu":
        raise ValueError(
            f"a model on {device.type} may compute with TF32 or FFT/Winograd convolutions, which break the "
            "rounding analysis of its certified radius; move it to the CPU (model.cpu(), x.cpu()): the "
            "radius then holds for the model evaluated there"
        )
    reduced = []
    try:  # the legacy switch; once the per-backend ``fp32_precision`` switches are used, torch refuses to read it
        legacy = torch.get_float32_matmul_precision() if dtype == torch.float32 else "highest"
    except RuntimeError:
        legacy = "highest"  # the per-backend settings below say what is in force
    if legacy != "highest":
        reduced.append(f"torch.set_float32_matmul_precision({legacy!r})")
    for name, backend in (
        ("torch.backends.fp32_precision", torch.backends),
        ("torch.backends.mkldnn.fp32_precision", torch.backends.mkldnn),
        ("torch.backends.mkldnn.matmul.fp32_precision", getattr(torch.backends.mkldnn, "matmul", None)),
        ("torch.backends.mkldnn.conv.fp32_precision", getattr(torch.backends.mkldnn, "conv", None)),
    ):
        setting = getattr(backend, "fp32_precision", None)
        if setting not in (None, "none", "ieee"):
            reduced.append(f"{name} = {setting!r}")
    if torch.is_autocast_enabled("cpu"):
        reduced.append("torch.autocast on the CPU")
    if reduced and dtype == torch.float32:
        raise ValueError(
            f"a reduced-precision float32 mode is on ({', '.join(reduced)}): the model then rounds more "
            f"than the certified radius allows for; switch it off, or {remedy}"
        )
    for stage in model.stages:
        for block in stage:
            layers = (
                list(block.g) if isinstance(block, InvertibleResidual) and isinstance(block.g, nn.Sequential) else None
            )
            covered = layers is not None and all(
                (isinstance(layer, nn.ELU) and float(layer.alpha) == 1.0)
                or (isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros")
                for layer in layers
            )
            if not covered:
                kind = type(block.g).__name__ if isinstance(block, InvertibleResidual) else type(block).__name__
                raise ValueError(
                    f"the rounding analysis of certified_radius covers convolutional residual "
                    f"blocks (ELU, zero-padded convolutions), not this model's {kind} block (an attention "
                    "block): no certified radius can be given for this model, in any dtype"
                )


def _gamma(n: int, u: float) -> float:
    """γ_n = nu/(1 − nu) (Higham, 2002, §3.1), refused where nu is not small."""
    if n * u >= 0.01:
        raise ValueError(
            f"a sum of {n} terms in a format with unit roundoff {u:.1e} has no useful rounding bound; "
            "certify the float64 model instead: certified_radius(model.double(), x.double())"
        )
    return n * u / (1 - n * u)


def _evaluation_error_bound(
    model: IResNetClassifier, reference: IResNetClassifier, x: torch.Tensor, radius: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, E₆₄), each [B] float64: E ≥ ‖model(fl(x')) − f(x')‖₂ for every x' with ‖x' − x_b‖ ≤ radius_b, where
    ``model`` computes in its dtype (float32 or float64) on the CPU and f is ``reference`` (its float64 copy, or the
    model itself when it is float64) in exact arithmetic; E₆₄ ≥ ‖reference(x) − f(x)‖₂, the rounding of the float64
    pass at x that gives the margins. The proof is :func:`certified_radius`'s docstring. ``x`` [B, C, H, W] float64;
    ``reference`` in eval mode."""
    bound = _RoundingBound(model.head.weight.dtype, x, radius)
    for _ in range(model.config.init_downsampling):
        bound.h = reference.squeeze(bound.h)
    for stride, pad, stage32, stage64 in zip(model.config.strides, reference.pads, model.stages, reference.stages):
        if stride == 2:
            bound.h = reference.squeeze(bound.h)
        bound.h = pad(bound.h)  # squeezes and zero padding: exact, isometric
        for block32, block64 in zip(stage32, stage64):
            bound.residual_block(block32, block64)
    bound.head(model, reference)
    bad = bound.unsafe | ~torch.isfinite(bound.err) | ~torch.isfinite(bound.err64)
    return torch.where(bad, math.inf, bound.err), torch.where(bad, math.inf, bound.err64)


class _RoundingBound:
    """The layer-by-layer recursion of :func:`_evaluation_error_bound`: the float64 activation h at x, the Lipschitz
    bound ``lip`` of the prefix, and per sample the error bounds ``err`` (the model's dtype over the ball) and
    ``err64`` (the float64 pass at x), with ``unsafe`` marking samples whose bounds could overflow."""

    def __init__(self, dtype: torch.dtype, x: torch.Tensor, radius: torch.Tensor) -> None:
        self.u, self.u64 = unit_roundoff(dtype), unit_roundoff(torch.float64)
        self.tiny = torch.finfo(dtype).smallest_normal  # the absolute error of a product flushed to zero, or rounded
        self.r0 = radius.double()
        # No overflow anywhere over the ball: every entry and every partial sum Σ|w||h| of a layer is at most the ℓ₂
        # bound ‖|W|‖·‖ĥ‖ + ‖b‖ used below, so a sample whose bounds stay under a quarter of the dtype's largest number
        # (and of float64's for the reference pass) cannot overflow; any other sample gets E = inf (radius 0), as does
        # NaN.
        self.limit, self.limit64 = torch.finfo(dtype).max / 4, torch.finfo(torch.float64).max / 4
        self.unsafe = torch.zeros_like(radius, dtype=torch.bool)
        self.h, self.lip = x, 1.0
        # the input rounded to the dtype: ‖fl(x') − x'‖ ≤ u‖x'‖ + (subnormal spacing)·√D
        self.err = self.u * (self.computed_norm(x) + self.r0) + self.tiny * math.sqrt(x[0].numel())
        self.err64 = torch.zeros_like(self.r0)
        self.guard(self.computed_norm(x) + self.r0 + self.err, self.computed_norm(x))

    def computed_norm(self, h: torch.Tensor) -> torch.Tensor:  # ≥ ‖h_b‖ of the float64 tensor h, past its rounding
        return per_sample_norm(h) * (1 + 2 * (h[0].numel() + 2) * self.u64)

    def guard(self, reach: torch.Tensor, reach64: torch.Tensor) -> None:
        self.unsafe = self.unsafe | ~(reach <= self.limit) | ~(reach64 <= self.limit64)  # NaN counts as unsafe

    def ball_norm(self, err: torch.Tensor | None = None) -> torch.Tensor:
        # ‖ĥ(x')‖ ≤ ‖h(x)‖ + Lip(prefix)·r₀ + e over the ball, ‖h(x)‖ ≤ ‖ĥ₆₄(x)‖ + e₆₄
        return self.computed_norm(self.h) + self.err64 + self.lip * self.r0 + (self.err if err is None else err)

    def linear(self, layer32: nn.Module, layer64: nn.Module, lip_layer: float) -> None:
        w32, w64 = layer32.weight.detach().double(), layer64.weight.detach()
        taps = lambda w: w.reshape(w.shape[0], w.shape[1], -1).permute(2, 0, 1)  # noqa: E731  [taps, out, in]
        abs32 = float(taps(w32).flatten(1).norm(dim=1).sum())  # Σ_t ‖W_t‖_F ≥ ‖|W| as a layer‖₂
        abs64 = float(taps(w64).flatten(1).norm(dim=1).sum())
        delta = float(taps(w32 - w64).flatten(1).norm(dim=1).sum())  # ≥ ‖(Ŵ − W) as a layer‖₂
        fan_in = w64[0].numel()
        out = layer64(self.h)
        positions = out[0, 0].numel() if out.dim() > 2 else 1
        bias = 0.0 if layer64.bias is None else float(layer64.bias.detach().norm()) * math.sqrt(positions)
        if layer32.bias is not None and not torch.equal(layer32.bias.detach().double(), layer64.bias.detach()):
            raise ValueError("the float64 copy's biases differ from the model's")  # deepcopy().double() is exact
        ball, computed = self.ball_norm(), self.computed_norm(self.h)
        self.guard(abs32 * ball + bias, abs64 * computed + bias)
        local = _gamma(fan_in + 1, self.u) * (abs32 * ball + bias) + (fan_in + 1) * self.tiny * math.sqrt(
            out[0].numel()
        )
        self.err = lip_layer * self.err + local + delta * ball
        self.err64 = lip_layer * self.err64 + _gamma(fan_in + 1, self.u64) * (abs64 * computed + bias)
        self.h, self.lip = out, self.lip * lip_layer

    def residual_block(self, block32: InvertibleResidual, block64: InvertibleResidual) -> None:
        a, lip_a, err_a, err64_a = self.h, self.lip, self.err, self.err64
        for layer32, layer64 in zip(block32.g, block64.g):
            if isinstance(layer64, nn.ELU):  # |fl(elu(t)) − elu(t)| ≤ (2k + 1)u per entry; 1-Lipschitz
                self.h = layer64(self.h)
                self.err = self.err + (2 * _EXP_ULPS + 1) * self.u * math.sqrt(self.h[0].numel())
                self.err64 = self.err64 + (2 * _EXP_ULPS + 1) * self.u64 * math.sqrt(self.h[0].numel())
            else:
                self.linear(layer32, layer64, lipschitz_bound(layer64))
        # y = a + g: |fl(s) − s| ≤ u|fl(s)| per entry
        self.h = a + self.h
        self.err64 = err64_a + self.err64 + self.u64 * self.computed_norm(self.h)
        self.lip = lip_a * (1 + block64.lipschitz_bound())  # Lip(a + g(a)) ≤ 1 + Lip(g)
        self.guard(self.ball_norm(err_a + self.err), self.computed_norm(self.h) + self.err64)
        self.err = err_a + self.err
        self.err = self.err + self.u * self.ball_norm()

    def head(self, model: IResNetClassifier, reference: IResNetClassifier) -> None:
        """ReLU (exact, 1-Lipschitz), mean over P positions (γ_{P+1}: P − 1 additions and a division), linear."""
        self.h = F.relu(self.h)
        if model.config.pool:
            count = self.h[0, 0].numel()
            scale = 1 / math.sqrt(count)  # ‖mean‖ ≤ ‖h‖/√P and Σ_p|h_cp|/P ≤ ‖h_c‖/√P
            self.err = scale * (self.err + _gamma(count + 1, self.u) * self.ball_norm())
            self.err64 = scale * (self.err64 + _gamma(count + 1, self.u64) * self.computed_norm(self.h))
            self.h, self.lip = self.h.mean(dim=(2, 3)), self.lip * scale
        else:
            self.h = self.h.flatten(1)
        head_norm = certify_operator_norm(reference.head.weight, layer_geometry(reference.head)).sigma
        self.linear(model.head, reference.head, head_norm)


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    predicted: torch.Tensor,
    radius: torch.Tensor,
    steps: int = 40,
    step_fraction: float = 0.25,
) -> torch.Tensor:
    """Which predictions a projected-gradient attack changes inside ℓ₂ balls: [B] bool.

    Ascends the runner-up logit minus the predicted one over δ, steps of ``step_fraction``·radius along the
    normalised gradient, each projected back onto ‖δ‖ ≤ radius (per sample, ``radius`` [B]). A check of
    :func:`certified_radius`, never a proof: finding nothing inside the certified radius is what it must do.
    """
    check_positive_int(steps, "steps")
    classes = None
    delta = torch.zeros_like(x, requires_grad=True)
    shape = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(steps):
        logits = model(x + delta)
        classes = classes if classes is not None else nn.functional.one_hot(predicted, logits.shape[1]).bool()
        runner_up = logits.masked_fill(classes, -math.inf).amax(1)
        gap = (runner_up - logits.gather(1, predicted[:, None])[:, 0]).sum()
        (grad,) = torch.autograd.grad(gap, delta)
        with torch.no_grad():
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-30)
            delta += step_fraction * radius.view(shape) * grad / norm.view(shape)
            length = delta.flatten(1).norm(dim=1).clamp_min(1e-30)
            delta *= torch.clamp(radius / length, max=1.0).view(shape)
    with torch.no_grad():
        return model(x + delta).argmax(1) != predicted
