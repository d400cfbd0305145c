"""The trained models the lessons and demos use: load them from ``checkpoints/`` or train them.

* :func:`density_model`: lesson 08's digits density model (a :class:`~invattn.models.ResidualFlow`), with
  :func:`held_out_digits`, the digits it never saw.
* :func:`two_roads_models`: lesson 09's three digits classifiers (i-RevNet, the i-ResNet classifier at c = 0.9, and
  the unconstrained ResNet), loaded or trained and saved; :func:`check_road` says whether a model is what its road
  names; :func:`test_digits`, the classifiers' held-out split.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ._validation import check_model, check_positive_int
from .ablation import load_model
from .classifiers import IResNetClassifier, IRevNet, load_classifier, save_classifier
from .data import digits_density_split, load_labelled
from .models import ResidualFlow
from .train import train

__all__ = [
    "DENSITY_MODEL",
    "ROADS",
    "ROAD_MODELS",
    "TWO_ROADS",
    "check_road",
    "density_model",
    "held_out_digits",
    "test_digits",
    "two_roads_models",
]

DENSITY_MODEL = Path("digits-200") / "concat-seed1.pt"  # lesson 08's trained model, inside the checkpoints folder
TWO_ROADS = "two-roads"  # lesson 09's classifiers' folder, inside the checkpoints folder
ROADS = ("i-RevNet", "i-ResNet", "ResNet")
ROAD_MODELS = {  # file name, architecture, model overrides of the "digits" preset (lesson 09's models)
    "i-RevNet": ("irevnet.pt", "irevnet", {}),
    "i-ResNet": ("iresnet-c0.9.pt", "iresnet", {"coeff": 0.9}),
    "ResNet": ("resnet-unconstrained.pt", "iresnet", {"coeff": None}),
}


def density_model(checkpoints: str | Path) -> ResidualFlow:
    """Lesson 08's trained digits density model, on the CPU (:func:`invattn.ablation.load_model`).

    Arguments:
        checkpoints: the folder holding ``digits-200/concat-seed1.pt`` (:data:`DENSITY_MODEL`).
    Returns:
        the :class:`~invattn.models.ResidualFlow` in eval mode.
    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when it holds no density model (see :func:`invattn.ablation.load_model`).
    """
    return load_model(Path(checkpoints) / DENSITY_MODEL)


def held_out_digits() -> torch.Tensor:
    """The digits the density model never saw (it trained on the first ``DIGITS_HELD_OUT_FROM``).

    Returns:
        [297, 1, 8, 8] in [0, 1]: scikit-learn's digits 1500–1796.
    """
    return digits_density_split()[1]


def test_digits() -> torch.Tensor:
    """The digits classifiers' held-out split (:func:`invattn.data.load_labelled`, ``split="test"``).

    Returns:
        the images [N, 1, 8, 8] in [0, 1].
    """
    return load_labelled("digits", split="test")[0]


def check_road(road: str, model) -> None:
    """Check that ``model`` is what ``road`` names: an IRevNet, a constrained or an unconstrained i-ResNet classifier.

    Arguments:
        road: one of :data:`ROADS`.
        model: the classifier.
    Raises:
        ValueError: when it is another kind of model (or wrapped in ``DataParallel``).
    """
    check_model(model, f"models[{road!r}]")
    config = getattr(model, "config", None)
    if road == "i-RevNet":
        fits = isinstance(model, IRevNet)
    else:
        fits = isinstance(model, IResNetClassifier) and ((config.coeff is None) == (road == "ResNet"))
    if not fits:
        wanted = {
            "i-RevNet": "an IRevNet",
            "i-ResNet": "an IResNetClassifier with a coeff",
            "ResNet": "an IResNetClassifier with coeff=None",
        }[road]
        found = type(model).__name__ + (f" (coeff {config.coeff})" if hasattr(config, "coeff") else "")
        raise ValueError(f"the {road} road needs {wanted}, got {found}")


def _train_road(path: Path, architecture: str, overrides: dict, epochs: int, progress_bar: bool) -> None:
    """Train one road's classifier on the offline digits (the "digits" preset) and save it at ``path``."""
    with tempfile.TemporaryDirectory() as run:
        result = train(
            "digits",
            run,
            task="classify",
            architecture=architecture,
            model_overrides=overrides,
            training_overrides=dict(epochs=epochs, checkpoint_every=10_000),
            progress_bar=progress_bar,
        )
    save_classifier(result["model"].eval(), path, test_accuracy=result["test_accuracy"], epochs=epochs)


def two_roads_models(
    folder: str | Path, train_missing: bool = True, epochs: int = 12, progress_bar: bool = True
) -> dict:
    """The three digits classifiers of lesson 09: i-RevNet (injective variant), i-ResNet at c = 0.9, and the ResNet.

    Each is loaded from ``folder`` (:func:`invattn.classifiers.load_classifier`); a missing one is trained on the
    offline digits for ``epochs`` epochs (the "digits" preset, :func:`invattn.train.train`) and saved there.

    Arguments:
        folder: the folder of ``irevnet.pt``, ``iresnet-c0.9.pt`` and ``resnet-unconstrained.pt`` (:data:`ROAD_MODELS`).
        train_missing: train a missing classifier (False: raise instead).
        epochs: training epochs of a missing classifier, ≥ 1.
        progress_bar: show the training's progress bar.
    Returns:
        {road: model in eval mode} for every road of :data:`ROADS`.
    Raises:
        FileNotFoundError: for a missing classifier when ``train_missing=False``.
        ValueError: for a file that is not a classifier, or holds another model than its name says (an i-ResNet in
            ``irevnet.pt``, another c, …), and for ``epochs`` < 1.
    """
    epochs = check_positive_int(epochs, "epochs")
    folder = Path(folder)
    models = {}
    for road, (name, architecture, overrides) in ROAD_MODELS.items():
        path = folder / name
        if not path.is_file():
            if not train_missing:
                raise FileNotFoundError(
                    f"no {road} classifier at {path}: call two_roads_models({str(folder)!r}) to "
                    "train the three (about a minute on a CPU)"
                )
            _train_road(path, architecture, overrides, epochs, progress_bar)
        model = load_classifier(path)[0]
        try:
            check_road(road, model)
            if "coeff" in overrides and model.config.coeff != overrides["coeff"]:
                raise ValueError(f"the {road} road needs coeff {overrides['coeff']}, got {model.config.coeff}")
        except ValueError as error:
            raise ValueError(f"{path}: {error}; delete it and call two_roads_models again to retrain") from None
        models[road] = model
    return models
