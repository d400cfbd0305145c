"""Building a classifier from its config, saving it and loading it back (``weights_only`` loading: no code runs)."""

from __future__ import annotations

from pathlib import Path

import torch

from .._files import load_saved_model, write_atomically
from .._validation import check_model
from .base import Classifier
from .config import ClassifierConfig
from .iresnet import IResNetClassifier
from .irevnet import IRevNet

__all__ = ["build_classifier", "load_classifier", "save_classifier"]


def build_classifier(config: ClassifierConfig) -> Classifier:
    """The classifier ``config`` describes.

    Arguments:
        config: its :class:`ClassifierConfig` (``config.architecture`` picks the class).
    Returns:
        a new :class:`IRevNet` or :class:`IResNetClassifier` (random weights, training mode).

    >>> from invattn.classifiers import classifier_preset
    >>> model = build_classifier(classifier_preset("iresnet", "smoke")).eval()
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    return IRevNet(config) if config.architecture == "irevnet" else IResNetClassifier(config)


def save_classifier(model: Classifier, path: str | Path, **record) -> None:
    """Save a classifier's weights and config, and a record of plain values, for :func:`load_classifier`.

    Written atomically (a temporary file renamed over ``path``); missing folders are created.

    Arguments:
        model: an :class:`IRevNet` or :class:`IResNetClassifier`.
        path: the file to write.
        record: plain values to keep with it (accuracy, epochs, …).
    Raises:
        TypeError: for a model of another kind, or a record value that is not a bool, int, float, str or None
            (``weights_only`` loading could not read it back).
    """
    check_model(model, "model", Classifier)
    for name, value in record.items():
        if value is not None and type(value) not in (bool, int, float, str):
            raise TypeError(
                f"record values must be plain bool, int, float, str or None; {name} is {type(value).__name__}"
            )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    payload = dict(model=model.state_dict(), model_config=model.config.to_dict(), record=record)
    write_atomically(path, lambda handle: torch.save(payload, handle))


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """A saved classifier, in eval mode, and its record.

    Reads a file of :func:`save_classifier`, or what ``python -m invattn.train --task classify --out DIR`` wrote
    (``DIR`` or ``DIR/checkpoint.pt``). Loaded with ``weights_only=True`` (no code runs); the certificates are
    recomputed from the weights.

    Arguments:
        path: the file or run folder.
        device: where to put the model ("cpu", "cuda", "auto", …).
    Returns:
        (model, record); from a training run the record holds its task, preset, step and last held-out accuracy.
    Raises:
        FileNotFoundError: when ``path`` is missing.
        ValueError: when it holds something else (a density model, pickled objects, a damaged file), or ``device``
            is absent.
    """
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
