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

Modules: :mod:`.config` (the configuration and the presets of a run, model and training), :mod:`.base` (what both
share, the inverse's report), :mod:`.irevnet`, :mod:`.iresnet`, :mod:`.saving` (build, save, load),
:mod:`.robustness` (certified radius, attack) and :mod:`.rounding` (the certified radius's rounding model).

>>> import torch
>>> from invattn.classifiers import build_classifier, classifier_preset
>>> model = build_classifier(classifier_preset("irevnet", "smoke")).eval()
>>> x = torch.rand(2, 1, 8, 8) - 0.5
>>> model(x).shape, model.features(x).shape
(torch.Size([2, 10]), torch.Size([2, 16, 4, 4]))
>>> bool((model.inverse(model.features(x)) - x).abs().max() < 1e-5)
True
"""

from __future__ import annotations

from .base import Classifier, ClassifierInverseInfo, OutsideRangeWarning
from .config import ARCHITECTURES, CLASSIFIER_PRESETS, ClassifierConfig, ClassifierPreset, classifier_preset
from .iresnet import IResNetClassifier
from .irevnet import IRevNet
from .robustness import certified_radius, pgd_attack
from .rounding import evaluation_error_bound
from .saving import build_classifier, load_classifier, save_classifier

__all__ = [
    "ARCHITECTURES",
    "CLASSIFIER_PRESETS",
    "Classifier",
    "ClassifierConfig",
    "ClassifierInverseInfo",
    "ClassifierPreset",
    "IRevNet",
    "IResNetClassifier",
    "OutsideRangeWarning",
    "build_classifier",
    "certified_radius",
    "classifier_preset",
    "evaluation_error_bound",
    "load_classifier",
    "pgd_attack",
    "save_classifier",
]
