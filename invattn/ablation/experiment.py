"""The ablation's configurations, held-out data and saved models: what its runs and its report share."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from .._files import load_saved_model, read_weights
from .._validation import check_choice, check_model
from ..attention import KINDS
from ..data import DIGITS_HELD_OUT_FROM, dequantize, digits_density_split, photograph_patches
from ..lipschitz import estimate_lipschitz
from ..models import PRESETS, FlowConfig, ResidualFlow

__all__ = [
    "CONFIGURATIONS",
    "DATA",
    "DEFAULTS",
    "DEFAULT_EPOCHS",
    "DEFAULT_N_TRAIN",
    "EVALUATION",
    "PATCHES_EVALUATION",
    "RESULTS",
    "data_of",
    "model_config",
    "held_out_images",
    "held_out_bits_per_dim",
    "attention_lipschitz",
    "load_model",
    "saved_record",
    "run_is_reliable",
]

CONFIGURATIONS: dict[str, tuple[str | None, str]] = {
    "none": (None, "certified"),
    **{kind: (kind, "certified") for kind in KINDS},
    "generative-concat": ("concat", "generative"),
    "generative-dot": ("dot", "generative"),
}
# The data sets the ablation runs on; each is also the name of its model preset (invattn.models.PRESETS)
DATA = ("digits", "patches")
DEFAULT_EPOCHS = 20
DEFAULT_N_TRAIN = DIGITS_HELD_OUT_FROM  # every digit before the held-out ones
# Per data set: the default epochs and training images (patches: all 4160 training patches, at the patches preset's
# batch of 32 130 steps per epoch)
DEFAULTS: dict[str, dict[str, int]] = {
    "digits": dict(epochs=DEFAULT_EPOCHS, n_train=DEFAULT_N_TRAIN),
    "patches": dict(epochs=3, n_train=4160),
}
EVALUATION = dict(estimator="series", n_terms=20, n_probes=4)
# The patches' held-out evaluation: the first 512 held-out patches (a fixed mix of both held-out photographs),
# scored in batches of 128 with fewer series terms and probes than the digits' (a 32×32 model costs more per image)
PATCHES_EVALUATION = dict(estimator="series", n_terms=10, n_probes=2, held_out=512, batch=128)
RESULTS = "results.json"


def data_of(config: FlowConfig) -> str:
    """The ablation data set a model's shape fits: ``"digits"`` for [1, 8, 8] images, ``"patches"`` for [3, 32, 32].

    Arguments:
        config: the model's :class:`invattn.models.FlowConfig` (``model.config``).
    Returns:
        ``"digits"`` or ``"patches"``.
    Raises:
        TypeError: for anything but a FlowConfig.
        ValueError: for a model of any other image shape.

    The test is the image shape only: a ``cifar10-paper`` model ([3, 32, 32]) is ``"patches"``-shaped, so
    :func:`held_out_bits_per_dim` scores it on the held-out patches.
    """
    if not isinstance(config, FlowConfig):
        raise TypeError(f"config must be a FlowConfig (model.config), got {type(config).__name__}")
    shape = (config.in_channels, config.image_size)
    for data in DATA:
        if (PRESETS[data].in_channels, PRESETS[data].image_size) == shape:
            return data
    raise ValueError(
        f"a model of [{config.in_channels}, {config.image_size}, {config.image_size}] images is not an ablation's "
        "(digits: [1, 8, 8], patches: [3, 32, 32])"
    )


def model_config(label: str, data: str = "digits") -> FlowConfig:
    """The data set's preset with the attention of one configuration in its first scale.

    Arguments:
        label: a key of :data:`CONFIGURATIONS` (``"none"``, a certified kind, ``"generative-concat"``, …).
        data: ``"digits"`` or ``"patches"`` (:data:`DATA`), which is also the preset's name.
    Returns:
        the :class:`invattn.models.FlowConfig` of ``PRESETS[data]`` with that attention kind and variant in its
        first scale (after the first squeeze: N = 16 positions for digits, 256 for patches), none in the others.
    Raises:
        ValueError: an unknown label or data set (the message lists the choices).
    """
    kind, variant = CONFIGURATIONS[check_choice(label, "configuration", tuple(CONFIGURATIONS))]
    base = PRESETS[check_choice(data, "data", DATA)]
    return replace(base, attention=(kind,) + (None,) * (len(base.blocks) - 1), attention_variant=variant)


def held_out_images(data: str = "digits") -> torch.Tensor:
    """The held-out images every configuration is scored on, dequantised the same way each time.

    Arguments:
        data: ``"digits"`` or ``"patches"``.
    Returns:
        digits: the 297 held-out digits of :func:`invattn.data.digits_density_split` (never trained on),
        [297, 1, 8, 8]; patches: the first 512 held-out patches of :func:`invattn.data.photograph_patches` (from
        photographs never trained on), [512, 3, 32, 32]; in [−½, ½), dequantised with seed 0.
    Raises:
        ValueError: an unknown data set.
    """
    if check_choice(data, "data", DATA) == "patches":
        images = photograph_patches("test")[: PATCHES_EVALUATION["held_out"]]
    else:
        images = digits_density_split()[1]
    return dequantize((images * 255).round() / 255, torch.Generator().manual_seed(0))


@torch.no_grad()
def held_out_bits_per_dim(model: ResidualFlow, data: str | None = None) -> float:
    """Mean bits/dim of the held-out images (:func:`held_out_images`) under ``model``, the series log-det, probe seed 0.

    Digits: the 297 held-out digits in one batch, 20 series terms, 4 probes (:data:`EVALUATION`). Patches: 512
    held-out patches in batches of 128, 10 terms, 2 probes (:data:`PATCHES_EVALUATION`). Computed in eval mode; the
    model's mode and the caller's random state are restored. A finite number is only meaningful when every block is
    a contraction: for an uncertified attention block whose Lipschitz constant exceeds 1 the series need not converge
    and the number can be anything (see :func:`run_is_reliable`).

    Arguments:
        model: a density model of the data set (:class:`invattn.models.ResidualFlow` on [B, 1, 8, 8] or
            [B, 3, 32, 32]), on any device.
        data: ``"digits"`` or ``"patches"`` (None: the one the model's shape fits, :func:`data_of`).
    Returns:
        the mean held-out bits/dim (lower is better), a float.
    Raises:
        TypeError: for anything but a ResidualFlow (a model wrapped in DataParallel included: pass ``.module``).
        ValueError: an unknown data set, or (``data=None``) a model of neither shape.
    """
    check_model(model, "model", ResidualFlow)
    data = data_of(model.config) if data is None else data
    device = next(model.parameters()).device
    x = held_out_images(data).to(device)
    was_training = model.training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        try:
            model.eval()
            if data == "digits":
                return float(model.bits_per_dim(x, **EVALUATION).mean())
            options = {k: v for k, v in PATCHES_EVALUATION.items() if k not in ("held_out", "batch")}
            values = [model.bits_per_dim(batch, **options) for batch in x.split(PATCHES_EVALUATION["batch"])]
            return float(torch.cat(values).mean())
        finally:
            model.train(was_training)


def attention_lipschitz(model: ResidualFlow, data: str | None = None) -> tuple[float, float]:
    """The first attention branch's certified bound and its measured Lipschitz constant on held-out features.

    Arguments:
        model: a trained :class:`invattn.models.ResidualFlow`.
        data: ``"digits"`` or ``"patches"`` (None: the one the model's shape fits, :func:`data_of`).
    Returns:
        (certified Lip(g), measured Lip(g)) (:func:`invattn.estimate_lipschitz` on the features of 8 held-out images,
        a lower bound); (nan, nan) without attention; the bound is ``inf`` for an uncertified variant.
    Raises:
        TypeError: ``model`` is not a ResidualFlow (as :func:`held_out_bits_per_dim`).
        ValueError: as :func:`held_out_bits_per_dim`.
    """
    check_model(model, "model", ResidualFlow)
    blocks = model.attention_blocks()
    if not blocks:
        return math.nan, math.nan
    data = data_of(model.config) if data is None else data
    features = model.attention_inputs(held_out_images(data)[:8].to(next(model.parameters()).device))[0]
    g = blocks[0].g
    return float(blocks[0].branch_lipschitz_bound()), float(estimate_lipschitz(g, features.detach(), n_iterations=30))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ResidualFlow:
    """The trained model saved by the ablation at ``path``, in eval mode (certificates recomputed from its weights).

    Loaded with ``weights_only=True`` (tensors and plain values only: no code runs).

    Arguments:
        path: a ``<label>-seed<s>.pt`` file written by :func:`run`.
        device: where to load it (``"cpu"``, ``"cuda"``, ...).
    Returns:
        the :class:`invattn.models.ResidualFlow`, in eval mode, on ``device``.
    Raises:
        FileNotFoundError: when ``path`` does not exist (the message gives the command that writes it).
        ValueError: when it is not a model saved by the ablation (pickled objects, missing keys, a classifier).
    """
    path = Path(path)
    return load_saved_model(
        path,
        device,
        lambda config: ResidualFlow(FlowConfig.from_dict(config)),
        missing=f"no trained model at {path}; write it with: python -m invattn.ablation --out {path.parent}",
        foreign=f"{path} is not a model saved by python -m invattn.ablation",
        task="density",
    )[0]


def saved_record(path: str | Path) -> dict:
    """The run record saved beside a model by :func:`run` (label, seed, held-out bits/dim, training curve, …).

    Arguments:
        path: a ``<label>-seed<s>.pt`` file written by :func:`run`.
    Returns:
        a copy of its record: a dict with ``label``, ``seed``, ``test_bits_per_dim``, ``train_curve``,
        ``attention_bound``, ``attention_measured`` and ``seconds``.
    Raises:
        FileNotFoundError: when ``path`` does not exist (the message gives the command that writes it).
        ValueError: when it is not a model saved by the ablation or holds no run record.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained model at {path}; write it with: python -m invattn.ablation --out {path.parent}"
        )
    try:
        state = read_weights(path)
    except ValueError as error:
        raise ValueError(f"{path} is not a model saved by python -m invattn.ablation: {error}") from None
    if not isinstance(state.get("record"), dict):
        raise ValueError(f"{path} is not a model saved by python -m invattn.ablation: it holds no run record")
    return dict(state["record"])


def run_is_reliable(record: dict) -> tuple[bool, str]:
    """Whether a run's held-out bits/dim can be trusted, and why not.

    It cannot when the number is not finite, when the training loss left the possible range (bits/dim of 8-bit data
    is ≥ 0; a negative or non-finite value means the log-det series diverged during training), or when the trained
    attention's measured Lipschitz constant is ≥ 1 (then x + a(x) need not be invertible and its log-det series need
    not converge).

    Arguments:
        record: a run record (:func:`saved_record`, or an entry of ``results["runs"]``).
    Returns:
        (reliable, the reason it is not: "" when reliable).
    Raises:
        KeyError: when the record lacks ``train_curve``, ``test_bits_per_dim`` or ``attention_measured``.
    """
    curve = record["train_curve"]
    if not math.isfinite(record["test_bits_per_dim"]):
        return False, "held-out bits/dim not finite"
    if not all(math.isfinite(v) and v >= 0 for v in curve):
        return False, f"training bits/dim left [0, ∞) (down to {min(curve):.3g}): the log-det series diverged"
    if not (record["attention_measured"] < 1 or math.isnan(record["attention_measured"])):
        return False, f"trained attention's measured Lipschitz constant {record['attention_measured']:.3g} ≥ 1"
    return True, ""
