"""A classifier's configuration (:class:`ClassifierConfig`) and the presets of a classifier run: each preset's
model for both architectures and its training settings, in one table (:data:`CLASSIFIER_PRESETS`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .._validation import check_choice, check_coeff, check_positive_int
from ..attention import KINDS, PAPER_KINDS

__all__ = ["ARCHITECTURES", "CLASSIFIER_PRESETS", "ClassifierConfig", "ClassifierPreset", "classifier_preset"]

ARCHITECTURES = ("irevnet", "iresnet")


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that defines a classifier (saved in checkpoints), checked when built.

    Inputs are images centred to [−0.5, 0.5) (pixels in [0, 1] minus 0.5, as the training loop feeds them).

    Arguments:
        architecture: "irevnet" or "iresnet".
        in_channels, image_size, classes: the input images [B, in_channels, image_size, image_size] and the number
            of classes (≥ 2).
        blocks, strides, channels: one entry per stage: blocks per stage (≥ 0), strides 1 or 2 (2 = a squeeze at the
            stage's start), channels (i-RevNet: of each half; the i-ResNet classifier: of the residual stream).
        init_downsampling: squeezes applied to the input first.
        injective: allow zero channels to be appended where a stage needs more than it receives.
        hidden: the branch's hidden channels (None: a quarter of the half for i-RevNet, as in the paper; the stream's
            channels for the i-ResNet classifier).
        coeff: i-ResNet only: every convolution of a block's branch has operator norm ≤ ``coeff``, so
            Lip(g) ≤ coeff³ < 1; None builds the unconstrained ResNet (i-RevNet has no Lipschitz constraint and
            ignores it).
        batch_norm: batch normalisation in i-RevNet's F.
        attention: a kind of :data:`invattn.KINDS` for one extra block at the end of the first stage (None: none):
            for i-RevNet a coupling whose F is attention of variant ``attention_variant``; for the i-ResNet
            classifier a certified residual attention block (so ``attention_variant`` must be "certified", and the
            unconstrained ResNet takes none).
        attention_variant: "certified", or "paper" for the original, unbounded formulation of the four paper kinds.
        pool: global average pooling before the linear head (the papers); False flattens Φ.
    Raises:
        ValueError: for an unknown architecture, attention kind or variant, stage tuples of different or zero
            lengths, a stride other than 1 or 2, in_channels, image_size or hidden below 1, a block count or
            init_downsampling below 0, a coeff outside (0, 1), fewer than 2 classes, an attention the architecture
            cannot take (above), or an image_size that cannot be squeezed as often as the strides and
            ``init_downsampling`` ask.
        TypeError: for a count that is not an integer, or injective, batch_norm or pool not True or False.
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
        """The fields as a plain dict (what checkpoints store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ClassifierConfig:
        """The config of :meth:`to_dict`'s dict (lists read back as tuples); ``ValueError``/``TypeError`` as the
        constructor."""
        return cls(**{k: tuple(v) if k in ("blocks", "strides", "channels") else v for k, v in values.items()})


@dataclass(frozen=True)
class ClassifierPreset:
    """One classifier run's preset: the model of each architecture and how to train it.

    Arguments:
        models: architecture ("irevnet", "iresnet") → :class:`ClassifierConfig`.
        training: the fields of :class:`invattn.train.TrainConfig` that differ from its defaults (plain values, so
            this table sits below the training loop).
    """

    models: dict[str, ClassifierConfig]
    training: dict = field(default_factory=dict)


CLASSIFIER_PRESETS: dict[str, ClassifierPreset] = {
    # seconds on a CPU: the pipeline end to end
    "smoke": ClassifierPreset(
        models=dict(
            irevnet=ClassifierConfig(
                in_channels=1, image_size=8, blocks=(1, 1), strides=(1, 2), channels=(2, 8), hidden=8
            ),
            iresnet=ClassifierConfig(
                architecture="iresnet",
                in_channels=1,
                image_size=8,
                blocks=(1, 1),
                strides=(1, 2),
                channels=(4, 16),
                hidden=16,
            ),
        ),
        training=dict(
            dataset="digits",
            n_train=256,
            batch_size=32,
            epochs=1,
            steps=8,
            lr=1e-3,
            optimizer="adam",
            checkpoint_every=4,
            samples_per_epoch=0,
        ),
    ),
    # the offline 8×8 digits, CPU minutes; the same layout: i-RevNet's 4-16 channels per half are the i-ResNet's
    # 8-32 channel stream. Adam with cosine decay: the last epochs settle the weights, so the final accuracy does
    # not hang on the last few steps.
    "digits": ClassifierPreset(
        models=dict(
            irevnet=ClassifierConfig(
                in_channels=1, image_size=8, blocks=(3, 3), strides=(1, 2), channels=(4, 16), hidden=32, pool=False
            ),
            iresnet=ClassifierConfig(
                architecture="iresnet",
                in_channels=1,
                image_size=8,
                blocks=(3, 3),
                strides=(1, 2),
                channels=(8, 32),
                hidden=32,
                pool=False,
            ),
        ),
        training=dict(
            dataset="digits",
            batch_size=64,
            epochs=12,
            lr=2e-3,
            optimizer="adam",
            checkpoint_every=100,
            samples_per_epoch=0,
            lr_schedule="cosine",
        ),
    ),
    # the papers' CIFAR-10 models (a GPU): i-RevNet (a), injective, 18-18-18, 16-64-256 per half; i-ResNet's
    # classifier: 3 stages, squeeze downsampling, c = 0.9 (7-7-7 blocks here, 32-128-512 channels). Training: the
    # i-RevNet paper's SGD (momentum 0.9, weight decay 5·10⁻⁴, lr 0.1, batch 128), without its step schedule and data
    # augmentation.
    "cifar10-paper": ClassifierPreset(
        models=dict(
            irevnet=ClassifierConfig(),
            iresnet=ClassifierConfig(architecture="iresnet", blocks=(7, 7, 7), channels=(32, 128, 512), hidden=None),
        ),
        training=dict(
            dataset="cifar10",
            batch_size=128,
            epochs=200,
            lr=0.1,
            optimizer="sgd",
            weight_decay=5e-4,
            warmup_steps=391,
            checkpoint_every=1000,
            samples_per_epoch=0,
        ),
    ),
}


def classifier_preset(architecture: str, preset: str) -> ClassifierConfig:
    """The model of a classifier preset.

    Arguments:
        architecture: "irevnet" or "iresnet".
        preset: "smoke" (seconds on a CPU), "digits" (the 8×8 digits, CPU minutes) or "cifar10-paper" (a GPU).
    Returns:
        The :class:`ClassifierConfig` of ``preset`` for ``architecture``.
    Raises:
        ValueError: for an unknown architecture or preset.

    >>> classifier_preset("iresnet", "smoke").channels
    (4, 16)
    """
    check_choice(architecture, "model", ARCHITECTURES)
    check_choice(preset, "preset", tuple(sorted(CLASSIFIER_PRESETS)))
    return CLASSIFIER_PRESETS[preset].models[architecture]
