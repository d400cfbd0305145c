"""The classification task: the invertible classifiers of :mod:`invattn.classifiers` (i-RevNet, the i-ResNet
classifier) trained on cross-entropy, with the held-out accuracy after every epoch; their presets, model and
training together, are :data:`invattn.classifiers.CLASSIFIER_PRESETS`."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .._validation import check_choice
from ..classifiers import ARCHITECTURES, CLASSIFIER_PRESETS, ClassifierConfig, build_classifier, classifier_preset
from ..data import LABELLED, load_labelled
from .config import TrainConfig
from .task import Task

__all__ = ["CLASSIFY_TRAINING", "ClassifierObjective", "ClassifyTask", "accuracy"]

# the training settings of CLASSIFIER_PRESETS, as TrainConfig
CLASSIFY_TRAINING: dict[str, TrainConfig] = {
    name: TrainConfig(**preset.training) for name, preset in CLASSIFIER_PRESETS.items()
}


class ClassifierObjective(nn.Module):
    """Mean cross-entropy of the logits of [0, 1] images centred to [−0.5, 0.5), and the batch accuracy: what
    DistributedDataParallel wraps.

    Arguments:
        model: a classifier, x ↦ logits [B, classes] for x centred to [−0.5, 0.5).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(mean cross-entropy, {"loss", "accuracy"} detached) of images [B, C, H, W] in [0, 1] and labels [B]."""
        logits = self.model(images - 0.5)
        loss = nn.functional.cross_entropy(logits, labels)
        return loss, dict(loss=loss.detach(), accuracy=(logits.argmax(1) == labels).float().mean().detach())


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """The fraction of images a classifier gets right, in eval mode (its mode is put back).

    Arguments:
        model: x ↦ logits [B, classes], x centred to [−0.5, 0.5).
        images: [N, C, H, W] in [0, 1] (as the training loop feeds them; centred here), any device.
        labels: [N] int64, on the CPU.
        batch_size: images per forward pass.
    Returns:
        the fraction in [0, 1] (0 for no images).

    >>> from invattn.classifiers import build_classifier, classifier_preset
    >>> model = build_classifier(classifier_preset("irevnet", "smoke"))
    >>> 0 <= accuracy(model, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)) <= 1
    True
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        correct = 0
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size].to(device) - 0.5)
            correct += int((logits.argmax(1).cpu() == labels[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / max(len(images), 1)


class ClassifyTask(Task):
    """A classifier of :data:`invattn.classifiers.CLASSIFIER_PRESETS` (``architecture`` "irevnet" or "iresnet")."""

    name = "classify"
    datasets = LABELLED
    presets = tuple(CLASSIFIER_PRESETS)
    flags = ("model", "coeff")

    def settings(self, preset, architecture, model_overrides, training_overrides):
        if architecture is None:
            raise ValueError(f"task='classify' needs a model: architecture one of {ARCHITECTURES}")
        model_config = replace(classifier_preset(architecture, preset), **model_overrides)
        return model_config, replace(CLASSIFY_TRAINING[preset], **training_overrides)

    def config_from_dict(self, values: dict) -> ClassifierConfig:
        return ClassifierConfig.from_dict(values)

    def data(self, config, model_config):
        check_choice(config.dataset, "dataset", LABELLED)
        size = model_config.image_size
        images, labels = load_labelled(config.dataset, config.data_root, "train", count=config.n_train, size=size)
        test = load_labelled(config.dataset, config.data_root, "test", size=size)
        if images.shape[1] != model_config.in_channels:
            raise ValueError(
                f"{config.dataset} has {images.shape[1]} channels but the model takes {model_config.in_channels}"
            )
        return images, labels, test

    def build(self, model_config: ClassifierConfig) -> nn.Module:
        return build_classifier(model_config)

    def objective(self, model):
        return ClassifierObjective(model)

    def loss(self, model, batch, targets):
        return nn.functional.cross_entropy(model(batch - 0.5), targets)

    def evaluate(self, model, test):
        return dict(test_accuracy=accuracy(model, *test))

    def finish(self, model, test):
        # the accuracy of the final weights, whether or not an epoch just ended
        return dict(test_accuracy=accuracy(model, *test))

    def shown(self, record):
        shown = dict(loss=f"{record['loss']:.3f}")
        if "test_accuracy" in record:
            shown["test"] = f"{record['test_accuracy']:.3f}"
        return shown

    def label(self, preset, model_config):
        return f"{model_config.architecture} {preset}"

    def plot_curves(self, history, path):
        # A bare Figure (no pyplot, no backend switch): training inside a notebook must not change how its plots show.
        from matplotlib.figure import Figure

        steps = [h["step"] for h in history]
        fig = Figure(figsize=(9, 3.4))
        ax, right = fig.subplots(1, 2)
        ax.plot(steps, [h["loss"] for h in history], lw=1)
        ax.set(xlabel="step", ylabel="cross-entropy", title="training loss (batch)", yscale="log")
        right.plot(steps, [h["accuracy"] for h in history], lw=1, alpha=0.5, label="training batch")
        tested = [h for h in history if "test_accuracy" in h]
        right.plot([h["step"] for h in tested], [h["test_accuracy"] for h in tested], "o-", label="held-out set")
        right.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
        right.legend()
        for axis in (ax, right):
            axis.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100, metadata={"Software": None})

    def attention_override(self, kind, preset):
        """One attention block at the end of the first stage (or none)."""
        return kind
