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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._files import load_saved_model, write_atomically
from ._validation import check_choice, check_coeff, check_finite, check_positive_int
from .attention import KINDS, PAPER_KINDS, AttentionCoupling, make_attention
from .blocks import InvertibleResidual, Squeeze
from .coupling import AdditiveCoupling, InjectivePad, bottleneck_branch
from .models import conv_branch
from .norms import certify_operator_norm, layer_geometry
from .solvers import InverseInfo

__all__ = ["ClassifierConfig", "CLASSIFIER_PRESETS", "IRevNet", "IResNetClassifier", "build_classifier",
           "certified_radius", "classifier_preset", "load_classifier", "pgd_attack", "save_classifier"]

ARCHITECTURES = ("irevnet", "iresnet")


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
                raise ValueError("the i-ResNet classifier's attention is a residual block, which must be certified: "
                                 "use attention_variant='certified' (the paper's variant belongs in an i-RevNet coupling)")
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
    def from_dict(cls, values: dict) -> "ClassifierConfig":
        return cls(**{k: tuple(v) if k in ("blocks", "strides", "channels") else v for k, v in values.items()})


CLASSIFIER_PRESETS: dict[tuple[str, str], ClassifierConfig] = {
    # seconds on a CPU: the pipeline end to end
    ("irevnet", "smoke"): ClassifierConfig(in_channels=1, image_size=8, blocks=(1, 1), strides=(1, 2),
                                           channels=(2, 8), hidden=8),
    ("iresnet", "smoke"): ClassifierConfig(architecture="iresnet", in_channels=1, image_size=8, blocks=(1, 1),
                                           strides=(1, 2), channels=(4, 16), hidden=16),
    # the offline 8×8 digits, CPU minutes
    # the same layout: i-RevNet's 4-16 channels per half are the i-ResNet's 8-32 channel stream
    ("irevnet", "digits"): ClassifierConfig(in_channels=1, image_size=8, blocks=(3, 3), strides=(1, 2),
                                            channels=(4, 16), hidden=32, pool=False),
    ("iresnet", "digits"): ClassifierConfig(architecture="iresnet", in_channels=1, image_size=8, blocks=(3, 3),
                                            strides=(1, 2), channels=(8, 32), hidden=32, pool=False),
    # the papers' CIFAR-10 models (a GPU): i-RevNet (a), injective, 18-18-18, 16-64-256 per half
    ("irevnet", "cifar10-paper"): ClassifierConfig(),
    # i-ResNet's classifier: 3 stages, squeeze downsampling, c = 0.9; (7-7-7 blocks here, 32-128-512 channels)
    ("iresnet", "cifar10-paper"): ClassifierConfig(architecture="iresnet", blocks=(7, 7, 7), channels=(32, 128, 512),
                                                   hidden=None),
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
                raise ValueError(f"stage {index} asks for {wanted} channels but receives {channels}: channels only grow")
            else:
                self.pads.append(nn.Identity())
            self.shapes.append((channels, size, size))
        self.feature_shape = self.shapes[-1]
        c, h, w = self.feature_shape
        self.head = nn.Linear(c if config.pool else c * h * w, config.classes)

    def _check(self, x: torch.Tensor) -> None:
        check_finite(x, "x")
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"this model takes images [B, {expected[0]}, {expected[1]}, {expected[2]}], got {tuple(x.shape)}")

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
            blocks = [AdditiveCoupling(bottleneck_branch(half, hidden, config.batch_norm), channels)
                      for _ in range(n_blocks)]
            if index == 0 and config.attention is not None:
                blocks.append(AttentionCoupling(config.attention, channels, variant=config.attention_variant))
            self.stages.append(nn.Sequential(*blocks))

    def inverse(self, phi: torch.Tensor) -> torch.Tensor:
        """The x with Φ(x) = phi, analytically; [B, C', H', W'] → [B, C, H, W]. Exact up to rounding for phi in Φ's
        range. The injective variant's Φ has more numbers than x: for a phi outside the range (e.g. features plus
        noise) this returns *an* x, but Φ(x) ≠ phi in general (the couplings mix the padded channels into every
        other), and no channel of phi need be reproduced."""
        self._check_features(phi)
        h = phi
        for index in reversed(range(len(self.stages))):
            for block in reversed(self.stages[index]):
                h = block.inverse(h)
            h = self._unstem(h, index)
        return self._finish_inverse(h)


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

    def inverse(self, phi: torch.Tensor, return_info: bool = False, **solver) -> torch.Tensor | tuple[torch.Tensor, list[InverseInfo]]:
        """The x with Φ(x) = phi, block by block backwards. ``solver`` options go to
        :meth:`invattn.InvertibleResidual.inverse` (``tol``, ``method``, ``max_iter``, ``on_failure``...); for the
        unconstrained network ``allow_uncertified=True`` is implied (the solver tries and reports). With
        ``return_info=True`` also returns every block's :class:`invattn.InverseInfo`, last block first."""
        self._check_features(phi)
        if self.config.coeff is None:
            solver = {"allow_uncertified": True, **solver}
        infos: list[InverseInfo] = []
        h = phi
        for index in reversed(range(len(self.stages))):
            for block in reversed(self.stages[index]):
                h, info = block.inverse(h, return_info=True, **solver)
                infos.append(info)
            h = self._unstem(h, index)
        x = self._finish_inverse(h)
        return (x, infos) if return_info else x


def _unconstrained_branch(channels: int, width: int, input_nonlinearity: bool) -> nn.Sequential:
    """The i-ResNet branch without spectral normalisation: what an ordinary ResNet block computes."""
    layers = [nn.ELU()] if input_nonlinearity else []
    layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ELU(), nn.Conv2d(width, width, 1), nn.ELU(),
               nn.Conv2d(width, channels, 3, padding=1)]
    return nn.Sequential(*layers)


def build_classifier(config: ClassifierConfig) -> _Classifier:
    """:class:`IRevNet` or :class:`IResNetClassifier`, as ``config.architecture`` says."""
    return IRevNet(config) if config.architecture == "irevnet" else IResNetClassifier(config)


def save_classifier(model: _Classifier, path: str | Path, **record) -> None:
    """Save ``model``'s weights and config, and ``record`` (plain values: accuracy, epochs, …), to ``path``
    atomically (a temporary file renamed over it), for :func:`load_classifier`. Raises ``TypeError`` for a record value
    that is not a bool, int, float, str or None (``weights_only`` loading could not read it back)."""
    for name, value in record.items():
        if value is not None and type(value) not in (bool, int, float, str):
            raise TypeError(f"record values must be plain bool, int, float, str or None; {name} is {type(value).__name__}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    payload = dict(model=model.state_dict(), model_config=model.config.to_dict(), record=record)
    write_atomically(path, lambda handle: torch.save(payload, handle))


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[_Classifier, dict]:
    """(model in eval mode, record) saved by :func:`save_classifier`; loaded with ``weights_only=True`` (no code
    runs), certificates recomputed from the weights. Raises ``FileNotFoundError`` when ``path`` is missing and
    ``ValueError`` when it holds something else."""
    model, state = load_saved_model(path, device, lambda config: build_classifier(ClassifierConfig.from_dict(config)),
                                    missing=f"no classifier at {path}",
                                    foreign=f"{path} is not a classifier saved by save_classifier")
    return model, dict(state.get("record", {}))


@torch.no_grad()
def certified_radius(model: IResNetClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(radius [B], predicted class [B]) for images x [B, C, H, W] (centred to [−0.5, 0.5), as the model was
    trained): no perturbation δ with ‖δ‖₂ < radius changes the predicted class of x + δ.

    With L ≥ Lip(x ↦ logits) certified, each logit difference f_k − f_j is √2·L-Lipschitz (its gradient is
    (e_k − e_j)ᵀJ and ‖e_k − e_j‖ = √2), so the top logit stays on top while ‖δ‖ < margin/(√2·L), margin =
    f_top − f_second (Tsuzuku, Sato & Sugiyama, 2018, Prop. 1). What is certified: the network evaluated in
    float64 in eval mode (a float64 copy of a float32 model, with its own certificates), whose rounding is covered
    by lowering each margin by 10⁻⁹·max|f|, far above float64's error for networks of this depth. Raises
    ``ValueError`` for a model without a certified bound (i-RevNet, the unconstrained ResNet).
    """
    if not isinstance(model, IResNetClassifier) or model.config.coeff is None:
        raise ValueError(f"certified radii need a certified Lipschitz bound; this {type(model).__name__} has none "
                         "(i-RevNet and the unconstrained ResNet are not Lipschitz-constrained)")
    reference = model if model.head.weight.dtype == torch.float64 else copy.deepcopy(model).double()
    was_training = reference.training
    reference.eval()
    try:
        bound = reference.logit_lipschitz_bound()
        logits = reference(x.double())
    finally:
        reference.train(was_training)
    top2 = logits.topk(2, dim=1)
    margin = top2.values[:, 0] - top2.values[:, 1] - 1e-9 * logits.abs().amax(dim=1)
    radius = torch.clamp(margin, min=0) / (math.sqrt(2) * bound)
    rounded = radius.to(x.dtype)
    rounded = torch.where(rounded.double() > radius, torch.nextafter(rounded, torch.zeros_like(rounded)), rounded)
    return rounded, top2.indices[:, 0]  # rounded toward zero: never above the proven float64 radius


def pgd_attack(model: nn.Module, x: torch.Tensor, predicted: torch.Tensor, radius: torch.Tensor,
               steps: int = 40, step_fraction: float = 0.25) -> torch.Tensor:
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
