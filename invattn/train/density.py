"""The density task: the i-ResNet density model (:class:`~invattn.models.ResidualFlow`) trained on bits/dim,
with its training presets (:data:`TRAINING`, next to the models' :data:`~invattn.models.PRESETS`), samples drawn
at each epoch's end and its training curve."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from .._validation import NonFiniteError, check_choice
from ..data import DATASETS, dequantize, digits, load_images
from ..models import PRESET_TRAINING, PRESETS, FlowConfig, ResidualFlow
from .checkpoints import rng_state, set_rng_state
from .config import TrainConfig
from .task import Task, epoch_order

__all__ = ["TRAINING", "DensityObjective", "DensityTask", "save_samples", "training_images"]

# the training settings of the density presets (invattn.models.PRESET_TRAINING, next to the models'), as TrainConfig
TRAINING: dict[str, TrainConfig] = {name: TrainConfig(**settings) for name, settings in PRESET_TRAINING.items()}


def training_images(config: TrainConfig, model: FlowConfig) -> torch.Tensor:
    """All training images of a density run, sized for the model.

    Arguments:
        config: the data set, its folder and ``n_train``.
        model: the model's channels and image size.
    Returns:
        [N, C, H, W] in [0, 1], on the 8-bit grid.
    Raises:
        ValueError: when the data set's channels differ from the model's.
        DatasetNotFoundError: for a data set that is not in ``config.data_root`` (with how to get it).
    """
    if config.dataset == "digits":
        images = digits()[0]
        if model.in_channels != 1:
            images = images.expand(-1, model.in_channels, -1, -1)
        if model.image_size != 8:
            images = torch.nn.functional.interpolate(images, size=model.image_size, mode="bilinear", antialias=True)
        images = images[: config.n_train] if config.n_train else images
        # 16 grey levels → the 8-bit grid the dequantisation assumes
        return (images * 255).round() / 255
    images = load_images(config.dataset, config.data_root, "train", count=config.n_train, size=model.image_size)
    if images.shape[1] != model.in_channels:
        raise ValueError(f"{config.dataset} has {images.shape[1]} channels but the model takes {model.in_channels}")
    return images


class DensityObjective(nn.Module):
    """Mean bits/dim of a batch of [0, 1] images (dequantised here): what DistributedDataParallel wraps.

    Arguments:
        model: the density model, whose ``bits_per_dim`` is averaged over the batch.
    """

    def __init__(self, model: ResidualFlow) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """(mean bits/dim, {"bits_per_dim": it, detached}) of images [B, C, H, W] in [0, 1]; ``labels`` unused."""
        loss = self.model.bits_per_dim(dequantize(images)).mean()
        return loss, dict(bits_per_dim=loss.detach())


def save_samples(model: ResidualFlow, n: int, path: Path, seed: int) -> None:
    """A grid of ``n`` samples at temperature 0.8 to ``path`` (png).

    The random state is put back afterwards: sampling does not change the training's random stream. When the model
    cannot be inverted from its prior's draws (a diverging run's weights overflow), a ``RuntimeWarning`` says so and
    no file is written: training goes on.

    Arguments:
        model: the density model (left in training mode).
        n: the number of samples.
        path: the png to write.
        seed: the seed of the prior's draws.
    """
    import matplotlib.image
    from torchvision.utils import make_grid

    state_before = rng_state()
    model.eval()
    try:
        samples = model.sample(
            n, temperature=0.8, generator=torch.Generator().manual_seed(seed), tol=1e-4, max_iter=200, on_failure="warn"
        )
    except NonFiniteError as error:
        warnings.warn(
            f"no samples written to {path.name}: inverting the prior's draws overflowed ({error}); "
            "the model is far from a density of the data (a diverging run? lower the learning rate)",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    finally:
        model.train()
        set_rng_state(state_before)
    grid = make_grid((samples.float().cpu() + 0.5).clamp(0, 1), nrow=int(math.ceil(math.sqrt(n))), padding=1)
    matplotlib.image.imsave(path, grid.permute(1, 2, 0).numpy(), metadata={"Software": None})


class DensityTask(Task):
    """The density model of :data:`invattn.models.PRESETS`, trained with :data:`TRAINING` on bits/dim."""

    name = "density"
    datasets = ("digits",) + DATASETS
    presets = tuple(PRESETS)
    flags = ("logdet", "n_terms", "neumann_gradient")

    def settings(self, preset, architecture, model_overrides, training_overrides):
        check_choice(preset, "preset", tuple(PRESETS))
        return replace(PRESETS[preset], **model_overrides), replace(TRAINING[preset], **training_overrides)

    def config_from_dict(self, values: dict) -> FlowConfig:
        return FlowConfig.from_dict(values)

    def data(self, config, model_config):
        return training_images(config, model_config), None, None

    def build(self, model_config: FlowConfig) -> ResidualFlow:
        return ResidualFlow(model_config)

    def initialise(self, model, images, config, device):
        """ActNorm's data-dependent initialisation, on the first full batch, identical on every rank."""
        first = images[epoch_order(len(images), 0, config.seed)[: config.batch_size]].to(device)
        with torch.no_grad():
            model.bits_per_dim(dequantize(first))

    def objective(self, model):
        return DensityObjective(model)

    def loss(self, model, batch, targets):
        return model.bits_per_dim(dequantize(batch))

    def epoch_end(self, model, config, out, epoch):
        if config.samples_per_epoch:
            save_samples(model, config.samples_per_epoch, out / f"samples_epoch{epoch + 1}.png", epoch)

    def shown(self, record):
        return dict(bpd=f"{record['bits_per_dim']:.3f}")

    def plot_curves(self, history, path):
        # A bare Figure (no pyplot, no backend switch): training inside a notebook must not change how its plots show.
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 3.4))
        ax = fig.subplots()
        ax.plot([h["step"] for h in history], [h["bits_per_dim"] for h in history], lw=1, label="training batch")
        ax.set(xlabel="step", ylabel="bits/dim", title="training curve")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100, metadata={"Software": None})

    def attention_override(self, kind, preset):
        """One kind in the first scale, none in the others."""
        kinds = [None] * len(PRESETS[preset].blocks)
        kinds[0] = kind
        return tuple(kinds)
