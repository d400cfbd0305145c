"""Train the i-ResNet density model: ``python -m invattn.train --preset NAME --out DIR [--resume] [--steps N]``,
or :func:`train` from Python (lesson 08); and, through the same loop, the invertible classifiers:
``python -m invattn.train --task classify --model irevnet|iresnet --preset smoke|digits|cifar10-paper --out DIR``
(lesson 09; ``--coeff`` sets the i-ResNet blocks' Lipschitz coefficient, ``--coeff none`` the unconstrained
ResNet). Classification logs the batch loss and accuracy, and the held-out accuracy after every epoch.

* presets: ``smoke`` (seconds on a CPU), ``digits`` (scikit-learn's real 8×8 digits, CPU minutes),
  ``cifar10-paper`` (the paper's configuration; a GPU); the data set can be changed (``--dataset``,
  ``--data-root``), a missing one is reported with how to get it;
* the density model's log-determinant estimator: ``--logdet series|roulette``, ``--n-terms N``,
  ``--[no-]neumann-gradient`` (lesson 07 compares them; the Neumann gradient is the default);
* a progress bar; metrics to ``DIR/metrics.jsonl``; ``DIR/curves.png``; samples ``DIR/samples_epochN.png``;
* checkpoints written atomically (temporary file, fsync, rename) every ``--checkpoint-every`` steps and at the
  end, holding model, optimiser, scheduler, every RNG state (as tensors) and the position in the data: ``--resume``
  continues exactly, so a run killed at any moment and resumed ends with the weights of an uninterrupted run
  (``--resume --lr X`` continues with another learning rate). Checkpoints are read with ``weights_only=True``: a
  file carrying pickled code is refused before anything in it runs. :func:`load_trained` opens what a run wrote
  (``DIR`` or ``DIR/checkpoint.pt``), density model or classifier, in eval mode;
* a diverging run stops with :class:`TrainingDiverged` (exit status 2 on the command line) naming the step at which
  the loss, the activations or the gradients became non-finite and the last checkpoint, which is never one whose
  weights give a non-finite loss;
* ``--amp`` (bfloat16 autocast, CUDA only; the certified bounds and the spectral-norm scale are computed in
  float64 outside autocast, but the convolutions then run on bfloat16-rounded weights, which the certificates do
  not cover: evaluate, invert and report bounds without it). There is no ``--compile``: the objective
  differentiates through vector–Jacobian products taken with ``create_graph=True``, a double backward that
  ``torch.compile`` does not trace (it failed on the whole objective and on the branch alone);
* multi-GPU (or multi-process CPU) with ``torchrun --nproc_per_node=K -m invattn.train ...``:
  DistributedDataParallel, each rank a disjoint shard of every batch; buffers (ActNorm state, batch-norm running
  statistics) are broadcast from rank 0 at each step and before each checkpoint, and the spectral normalisation is a
  function of the (identical) weights alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ._files import read_weights, write_atomically
from ._validation import NonFiniteError, check_choice, check_positive_float, check_positive_int, resolve_device
from .classifiers import ARCHITECTURES, ClassifierConfig, build_classifier, classifier_preset
from .data import DATASETS, LABELLED, dequantize, digits, load_images, load_labelled
from .lesson import progress
from .models import PRESETS, FlowConfig, ResidualFlow

__all__ = [
    "TrainConfig",
    "TRAINING",
    "CLASSIFY_TRAINING",
    "TASKS",
    "TrainingDiverged",
    "train",
    "load_checkpoint",
    "load_trained",
    "save_checkpoint",
    "main",
]

TASKS = ("density", "classify")

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the model is a :class:`FlowConfig`)."""

    dataset: str = "cifar10"
    data_root: str = "data"
    n_train: int | None = None  # None: the whole training set
    batch_size: int = 64
    epochs: int = 200
    steps: int | None = None  # stop after this many steps in total (overrides epochs)
    lr: float = 3e-3
    optimizer: str = "adamax"  # "adamax", "adam" or "sgd" (momentum 0.9)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = (
        "constant"  # "constant", or "cosine": lr·½(1 + cos(π·step/steps)), 0 at the end (times the warm-up ramp)
    )
    grad_clip: float | None = None
    checkpoint_every: int = 500
    samples_per_epoch: int = 16
    seed: int = 1234


TRAINING: dict[str, TrainConfig] = {
    "smoke": TrainConfig(
        dataset="digits", n_train=256, batch_size=16, epochs=1, steps=20, checkpoint_every=10, samples_per_epoch=4
    ),
    "digits": TrainConfig(dataset="digits", batch_size=64, epochs=10, checkpoint_every=200, samples_per_epoch=16),
    # the paper: Adamax, lr 3e-3, batch 64, 200 epochs (its warm-up quirk ended at 2×lr; a clean 1-epoch ramp here)
    "cifar10-paper": TrainConfig(dataset="cifar10", batch_size=64, epochs=200, warmup_steps=782, checkpoint_every=1000),
}

# The classifiers (--task classify): Adam on the digits; the i-RevNet paper's SGD (momentum 0.9, weight decay
# 5·10⁻⁴, lr 0.1, batch 128) for CIFAR-10, without its step schedule and data augmentation.
CLASSIFY_TRAINING: dict[str, TrainConfig] = {
    "smoke": TrainConfig(
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
    # cosine decay: the last epochs settle the weights, so the final accuracy does not hang on the last few steps
    # (at a constant lr it moved between 94 % and 99 % with the rounding of the sums)
    "digits": TrainConfig(
        dataset="digits",
        batch_size=64,
        epochs=12,
        lr=2e-3,
        optimizer="adam",
        checkpoint_every=100,
        samples_per_epoch=0,
        lr_schedule="cosine",
    ),
    "cifar10-paper": TrainConfig(
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
}


# -- data ---------------------------------------------------------------------------------------
def training_images(config: TrainConfig, model: FlowConfig) -> torch.Tensor:
    """All training images, [N, C, H, W] in [0, 1], sized for the model."""
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


def epoch_order(n: int, epoch: int, seed: int) -> torch.Tensor:
    """The permutation of the training set in ``epoch``: a function of (seed, epoch) only, so a resumed run
    sees exactly the batches the interrupted one would have."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


# -- checkpoints --------------------------------------------------------------------------------
def _rng_state() -> dict:
    """Every random state the loop draws from, as tensors and plain numbers (``weights_only`` loading reads them)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, words, gauss_next = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(
            name=name,
            keys=torch.from_numpy(keys.astype(np.int64)),
            position=int(position),
            has_gauss=int(has_gauss),
            cached_gaussian=float(cached),
        ),
        python=dict(version=version, words=list(words), gauss_next=gauss_next),
    )
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state, python_state = state["numpy"], state["python"]
    if isinstance(numpy_state, dict):
        np.random.set_state(
            (
                numpy_state["name"],
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["position"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        random.setstate((python_state["version"], tuple(python_state["words"]), python_state["gauss_next"]))
    else:  # a checkpoint written before the states were stored as tensors: NumPy's and Python's own tuples
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, flushed to disk, then
    renamed over the old one, so an interruption leaves either the old or the new checkpoint, never half."""
    write_atomically(path, lambda handle: torch.save(payload, handle))


_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "step", "history", "rng", "model_config", "train_config")


def checkpoint_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/checkpoint.pt`` when ``path`` is a run folder."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The dict of a checkpoint written by :func:`train` (a file, or a run folder holding ``checkpoint.pt``).

    Read with ``torch.load(..., weights_only=True)``: tensors and plain values only, so a file carrying pickled
    code is refused before anything in it runs. Raises ``FileNotFoundError`` (with the command that writes one) when
    there is no checkpoint and ``ValueError`` when the file is not a training checkpoint (refused objects, a damaged
    file, missing entries)."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train first (python -m invattn.train --preset ... --out {path.parent})"
        )
    state = read_weights(path, map_location=map_location)
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path} is not a checkpoint written by invattn.train: it lacks {', '.join(missing)}")
    kinds = dict(
        model=dict,
        optimizer=dict,
        scheduler=dict,
        step=int,
        history=list,
        rng=dict,
        model_config=dict,
        train_config=dict,
    )
    wrong = [
        f"{key} is a {type(state[key]).__name__}"
        for key, kind in kinds.items()
        if not isinstance(state[key], kind) or isinstance(state[key], bool)
    ]
    if not wrong and not all(isinstance(h, dict) and isinstance(h.get("step"), int) for h in state["history"]):
        wrong.append("its history holds entries that are not logged steps")
    if wrong or state["step"] < 0 or state.get("task", "density") not in TASKS:
        raise ValueError(
            f"{path} is a damaged training checkpoint: {', '.join(wrong) or 'its step or task is invalid'}"
        )
    _configs(state, path)  # the settings must build a run
    return state


def _check_resumed(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Raise ``ValueError`` unless what a checkpoint restored can train: finite weights and optimiser state, every
    state tensor of a parameter shaped like it (or a scalar), numeric learning rates."""
    if not _finite_weights(model):
        raise ValueError("its weights hold NaN or infinite values")
    for group in optimizer.param_groups:
        if isinstance(group.get("lr"), bool) or not isinstance(group.get("lr"), (int, float)):
            raise ValueError(f"its optimiser's learning rate is {group.get('lr')!r}")
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if not isinstance(value, torch.Tensor) or value.dim() == 0:
                    continue
                if value.shape != parameter.shape:
                    raise ValueError(
                        f"its optimiser's {name} of shape {tuple(value.shape)} does not fit a parameter "
                        f"of shape {tuple(parameter.shape)}"
                    )
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    raise ValueError(f"its optimiser's {name} holds NaN or infinite values")


def _configs(state: dict, path: Path) -> tuple[FlowConfig | ClassifierConfig, TrainConfig]:
    """(model config, training config) of a checkpoint's dict; ``ValueError`` naming the file when they do not build."""
    try:
        values = state["model_config"]
        model_config = (
            FlowConfig.from_dict(values)
            if state.get("task", "density") == "density"
            else ClassifierConfig.from_dict(values)
        )
        train_config = TrainConfig(**state["train_config"])
        check_positive_float(train_config.lr, "lr")
        for name in ("batch_size", "epochs", "checkpoint_every"):
            check_positive_int(getattr(train_config, name), name)
        check_positive_int(train_config.seed, "seed", minimum=0)
        if train_config.steps is not None:
            check_positive_int(train_config.steps, "steps")
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise ValueError(
            f"{path} is a damaged training checkpoint: its settings do not build a run "
            f"({type(error).__name__}: {error})"
        ) from None
    return model_config, train_config


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, what the run recorded) from what :func:`train` / ``python -m invattn.train --out DIR``
    wrote: ``path`` is the run folder ``DIR`` or its ``checkpoint.pt``.

    The model is a :class:`~invattn.models.ResidualFlow` (``task`` "density") or the
    :class:`~invattn.classifiers.IRevNet` / :class:`~invattn.classifiers.IResNetClassifier` of a ``--task
    classify`` run, on ``device``, its certificates recomputed from the weights. The record holds ``task``,
    ``preset``, ``step``, ``model_config``, ``train_config`` and ``history`` (the logged metrics). Loaded with
    ``weights_only=True`` (no code runs). Raises ``FileNotFoundError`` / ``ValueError`` as :func:`load_checkpoint`,
    and ``ValueError`` for a device this machine lacks.
    """
    device = resolve_device(device)
    state = load_checkpoint(path, map_location=device)
    task, (model_config, _) = state.get("task", "density"), _configs(state, checkpoint_path(path))
    model = ResidualFlow(model_config) if task == "density" else build_classifier(model_config)
    try:
        model.to(device).load_state_dict(state["model"])
    except (RuntimeError, KeyError) as error:
        raise ValueError(
            f"{checkpoint_path(path)} is a damaged training checkpoint: its weights do not fit its "
            f"model ({' '.join(str(error).split())[:300]})"
        ) from None
    record = dict(
        task=task,
        preset=state.get("preset"),
        step=state["step"],
        model_config=state["model_config"],
        train_config=state["train_config"],
        history=state["history"],
    )
    return model.eval(), record


# -- training -----------------------------------------------------------------------------------
class TrainingDiverged(RuntimeError):
    """Training stopped because the loss, the activations or the gradients became non-finite at ``step``; no
    checkpoint was written after the last one that held finite weights (``last_checkpoint_step``, 0 if none)."""

    def __init__(self, message: str, step: int, last_checkpoint_step: int) -> None:
        super().__init__(message)
        self.step, self.last_checkpoint_step = step, last_checkpoint_step


class Objective(nn.Module):
    """Mean bits/dim of a batch of [0, 1] images (dequantised here): what DistributedDataParallel wraps."""

    def __init__(self, model: ResidualFlow) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        loss = self.model.bits_per_dim(dequantize(images)).mean()
        return loss, dict(bits_per_dim=loss.detach())


class ClassifierObjective(nn.Module):
    """Mean cross-entropy of the logits of [0, 1] images centred to [−0.5, 0.5), and the batch accuracy."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits = self.model(images - 0.5)
        loss = nn.functional.cross_entropy(logits, labels)
        return loss, dict(loss=loss.detach(), accuracy=(logits.argmax(1) == labels).float().mean().detach())


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of ``images`` ([0, 1], as the training loop feeds them) classified as ``labels``, in eval mode."""
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


def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_in_step(model: nn.Module) -> None:
    """Raise if the ranks' weights or buffers differ (they must stay bit-identical)."""
    local = torch.stack([t.detach().double().sum() for t in [*model.parameters(), *model.buffers()]])
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
        raise RuntimeError("distributed ranks are out of step: their weights or buffers differ")


def _plot_curves(history: list[dict], path: Path) -> None:
    # A bare Figure (no pyplot, no backend switch): training inside a notebook must not change how its plots show.
    from matplotlib.figure import Figure

    steps = [h["step"] for h in history]
    if "bits_per_dim" in history[0]:
        fig = Figure(figsize=(6, 3.4))
        ax = fig.subplots()
        ax.plot(steps, [h["bits_per_dim"] for h in history], lw=1, label="training batch")
        ax.set(xlabel="step", ylabel="bits/dim", title="training curve")
        ax.grid(alpha=0.3)
    else:
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


def _save_samples(model: ResidualFlow, n: int, path: Path, seed: int) -> None:
    """A grid of ``n`` samples at temperature 0.8 to ``path``; when the model cannot be inverted from its prior's
    draws (a diverging run's weights overflow), a warning says so and no file is written: training goes on. The
    random state is put back afterwards: sampling does not change the training's random stream."""
    import matplotlib.image
    from torchvision.utils import make_grid

    state_before = _rng_state()
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
        _set_rng_state(state_before)
    grid = make_grid((samples.float().cpu() + 0.5).clamp(0, 1), nrow=int(math.ceil(math.sqrt(n))), padding=1)
    matplotlib.image.imsave(path, grid.permute(1, 2, 0).numpy(), metadata={"Software": None})


def _data(task: str, config: TrainConfig, model_config) -> tuple[torch.Tensor, torch.Tensor | None, tuple | None]:
    """(training images, their labels or None, (test images, test labels) or None) for ``task``."""
    if task == "density":
        return training_images(config, model_config), None, None
    check_choice(config.dataset, "dataset", LABELLED)
    size = model_config.image_size
    images, labels = load_labelled(config.dataset, config.data_root, "train", count=config.n_train, size=size)
    test = load_labelled(config.dataset, config.data_root, "test", size=size)
    if images.shape[1] != model_config.in_channels:
        raise ValueError(
            f"{config.dataset} has {images.shape[1]} channels but the model takes {model_config.in_channels}"
        )
    return images, labels, test


def _run_settings(
    task: str,
    preset: str,
    architecture: str | None,
    checkpoint_path: Path | None,
    model_overrides: dict | None,
    training_overrides: dict | None,
    steps: int | None,
    world: int,
):
    """(task, preset, saved state or None, model config, training config) of a run: a preset with its overrides, or
    (``checkpoint_path`` given) the saved run, of which only ``lr`` and ``steps`` may change; every setting checked."""
    state = None
    if checkpoint_path is not None:
        ignored = sorted(set(model_overrides or {}) | (set(training_overrides or {}) - {"lr"}))
        if ignored:
            raise ValueError(
                f"resume=True continues the saved run with its own settings; only steps and lr can be "
                f"changed, got overrides of {', '.join(ignored)}"
            )
        if training_overrides and "lr" in training_overrides:
            check_positive_float(training_overrides["lr"], "lr")
        state = load_checkpoint(checkpoint_path)
        saved_task = state.get("task", "density")
        saved_architecture = state["model_config"].get("architecture")
        if architecture is not None and architecture != saved_architecture:
            raise ValueError(
                f"{checkpoint_path} holds a {saved_architecture or saved_task} run; resume continues it "
                f"as saved (asked for {architecture!r})"
            )
        task, preset = saved_task, state.get("preset", preset)
        model_config, train_config = _configs(state, checkpoint_path)
        if training_overrides and "lr" in training_overrides:
            train_config = replace(train_config, lr=float(training_overrides["lr"]))
    elif task == "density":
        check_choice(preset, "preset", tuple(PRESETS))
        model_config = replace(PRESETS[preset], **(model_overrides or {}))
        train_config = replace(TRAINING[preset], **(training_overrides or {}))
    else:
        if architecture is None:
            raise ValueError(f"task='classify' needs a model: architecture one of {ARCHITECTURES}")
        model_config = replace(classifier_preset(architecture, preset), **(model_overrides or {}))
        train_config = replace(CLASSIFY_TRAINING[preset], **(training_overrides or {}))
    if steps is not None:
        train_config = replace(train_config, steps=check_positive_int(steps, "steps"))
    check_choice(train_config.dataset, "dataset", ("digits",) + DATASETS if task == "density" else LABELLED)
    check_positive_float(train_config.lr, "lr")
    for name in ("batch_size", "epochs", "checkpoint_every"):
        check_positive_int(getattr(train_config, name), name)
    check_choice(train_config.optimizer, "optimizer", ("adamax", "adam", "sgd"))
    check_choice(train_config.lr_schedule, "lr_schedule", ("constant", "cosine"))
    if train_config.weight_decay < 0:
        raise ValueError(f"weight_decay must be ≥ 0, got {train_config.weight_decay}")
    if train_config.batch_size % world:
        raise ValueError(f"batch_size {train_config.batch_size} must be divisible by the {world} processes")
    return task, preset, state, model_config, train_config


def _lr_factor(step: int, warmup: int, schedule: str, total_steps: int) -> float:
    """The learning rate's factor at ``step`` (from 0): a linear ramp over ``warmup`` steps, then 1 (``"constant"``)
    or ½(1 + cos(π·step/total_steps)) (``"cosine"``, 0 at the last step)."""
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if schedule == "cosine":
        return ramp * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return ramp


def _optimiser(model: nn.Module, train_config: TrainConfig, total_steps: int):
    """(optimiser, scheduler) of ``train_config``: warm-up, then its ``lr_schedule`` over ``total_steps``."""
    if train_config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=train_config.lr, momentum=0.9, weight_decay=train_config.weight_decay
        )
    else:
        optimizer_class = torch.optim.Adamax if train_config.optimizer == "adamax" else torch.optim.Adam
        optimizer = optimizer_class(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    warmup = max(train_config.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, warmup, train_config.lr_schedule, total_steps)
    )
    return optimizer, scheduler


def _restore(state: dict, model: nn.Module, optimizer, scheduler, new_lr: float | None, checkpoint_path: Path) -> None:
    """Load a checkpoint's model, optimiser, scheduler and random states (``ValueError`` naming a damaged file), with
    ``new_lr`` (if given) replacing the saved learning rate on the same schedule."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        _check_resumed(model, optimizer)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        raise ValueError(
            f"{checkpoint_path} is a damaged training checkpoint: its saved state does not fit its "
            f"run ({type(error).__name__}: {' '.join(str(error).split())[:300]})"
        ) from None
    if new_lr is not None:  # a resumed run with a new learning rate (e.g. after a divergence): same schedule
        scheduler.base_lrs = [new_lr for _ in scheduler.base_lrs]
        for group in optimizer.param_groups:
            factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
            group["initial_lr"], group["lr"] = new_lr, new_lr * factor


def _finite_weights(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())


def _loss_is_finite(
    model: nn.Module, task: str, batch: torch.Tensor | None, targets: torch.Tensor | None, device: torch.device
) -> bool:
    """Whether the weights are finite and give a finite loss on ``batch`` (eval mode, no state change, the random
    streams untouched): a checkpoint is only written when they do. Finite outputs are not enough: latents of 1e32
    are finite, but their prior log-density overflows and a resumed run would diverge at once, whatever its learning
    rate."""
    if not _finite_weights(model):
        return False
    if batch is None:
        return True
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if task == "density":
                loss = model.bits_per_dim(dequantize(batch))
            else:
                loss = nn.functional.cross_entropy(model(batch - 0.5), targets)
        return bool(torch.isfinite(loss).all())
    except NonFiniteError:
        return False
    finally:
        model.train(was_training)


def _training_device(device: str, amp: bool, world: int) -> torch.device:
    """The device this process trains on: ``device`` resolved, and under ``torchrun`` with CUDA this rank's GPU
    (``LOCAL_RANK``). ``ValueError`` for ``amp`` (bfloat16 autocast) off CUDA."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and world > 1:
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(resolved)
    if amp and resolved.type != "cuda":
        raise ValueError("amp=True (bfloat16 autocast) is for CUDA devices; on a CPU train in float32")
    return resolved


def _finite_data(task: str, train_config: TrainConfig, model_config):
    """:func:`_data`, refusing training images that hold NaN or infinite pixels (``ValueError``, counting them)."""
    images, labels, test = _data(task, train_config, model_config)
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise ValueError(
            f"{bad} training image(s) of {train_config.dataset!r} hold NaN or infinite pixels; "
            "the data set is damaged (re-create it, or drop those images)"
        )
    return images, labels, test


def _start_log(path: Path, history: list[dict], rank: int):
    """The metrics log at the run's start, opened for appending (rank 0; None on the other ranks): a fresh run starts
    an empty one; a resumed run rewrites it with the checkpoint's history, since the steps logged after the checkpoint
    are replayed."""
    if rank != 0:
        return None
    with open(path, "w") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in history)
    return open(path, "a")


def _optimisation_step(objective, model, optimizer, scheduler, batch, targets, grad_clip, amp, diverged) -> dict:
    """One step: the loss of ``batch`` (bfloat16 autocast if ``amp``), backward, optional clipping, the optimiser and
    scheduler steps; returns the objective's metrics. Raises ``diverged(what)`` (a :class:`TrainingDiverged`) when
    the activations, the loss or the gradients become non-finite, before the weights change."""
    device = batch.device.type
    try:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            loss, metrics = objective(batch, targets)
    except NonFiniteError as error:  # the data were checked to be finite: the model overflowed
        raise diverged(f"the activations became non-finite ({error})") from None
    if not bool(torch.isfinite(loss)):
        raise diverged(f"the loss became {float(loss.detach())}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    if gradients and not bool(torch.isfinite(nn.utils.get_total_norm(gradients, norm_type=math.inf))):
        raise diverged("the gradients became non-finite")
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    return metrics


class _Checkpoints:
    """A run's checkpoints: :meth:`write` saves the run's state atomically (rank 0; under ``torchrun`` the ranks'
    buffers are handed over and checked to be in step first), :meth:`diverged` builds the error that says what was
    kept. ``step`` is the step of the last checkpoint (0 before the first)."""

    def __init__(
        self,
        path: Path,
        out: Path,
        step: int,
        batches_per_epoch: int,
        rank: int,
        world: int,
        stateful: dict,
        settings: dict,
        lr: float,
    ):
        self.path, self.out, self.step, self.batches_per_epoch = path, out, step, batches_per_epoch
        self.rank, self.world, self.stateful, self.settings, self.lr = rank, world, stateful, settings, lr

    def diverged(self, at: int, what: str) -> TrainingDiverged:
        kept = (
            f"the last checkpoint, {self.path} (step {self.step}), holds finite weights"
            if self.step
            else "no checkpoint was written before it"
        )
        return TrainingDiverged(
            f"training diverged at step {at} (epoch {at // self.batches_per_epoch + 1}): {what}. Nothing after step "
            f"{self.step} was saved; {kept}. Lower the learning rate (lr={self.lr:g} now"
            + (
                f"; python -m invattn.train --out {self.out} --resume --lr SMALLER continues from step {self.step}"
                if self.step
                else ""
            )
            + ") or clip the gradients (grad_clip).",
            at,
            self.step,
        )

    def write(self, step: int, history: list[dict]) -> None:
        model = self.stateful["model"]
        if self.world > 1:
            # DistributedDataParallel hands rank 0's buffers to every rank at each forward; running statistics
            # (batch norm) then drift apart again on each rank's shard, so hand them over now, as the next step would
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)
            _check_in_step(model)
        if self.rank == 0:
            save_checkpoint(
                self.path,
                dict(
                    **{name: part.state_dict() for name, part in self.stateful.items()},
                    step=step,
                    history=history,
                    rng=_rng_state(),
                    **self.settings,
                ),
            )
        self.step = step


def _shown(record: dict, task: str) -> dict:
    """The progress bar's postfix for one logged step."""
    shown = dict(bpd=f"{record['bits_per_dim']:.3f}") if task == "density" else dict(loss=f"{record['loss']:.3f}")
    if "test_accuracy" in record:
        shown["test"] = f"{record['test_accuracy']:.3f}"
    return shown


def _start_run(task, model_config, train_config: TrainConfig, state, new_lr, checkpoint_path, resolved):
    """A run's ((training images, labels, test set), (model, optimiser, scheduler, batches per epoch, total steps,
    step, history)), every random generator seeded first: from the checkpoint ``state`` when resuming, else from
    step 0 (a density model after ActNorm's data-dependent initialisation). ``ValueError`` for damaged data
    (:func:`_finite_data`) or training images fewer than one batch."""
    torch.manual_seed(train_config.seed)
    np.random.seed(train_config.seed)
    random.seed(train_config.seed)
    images, labels, test = _finite_data(task, train_config, model_config)
    model = (ResidualFlow(model_config) if task == "density" else build_classifier(model_config)).to(resolved)
    batches_per_epoch = len(images) // train_config.batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"{len(images)} training images are fewer than one batch of {train_config.batch_size}")
    total_steps = train_config.steps or train_config.epochs * batches_per_epoch
    optimizer, scheduler = _optimiser(model, train_config, total_steps)
    step, history = 0, []
    if state is not None:
        _restore(state, model, optimizer, scheduler, new_lr, checkpoint_path)
        step, history = state["step"], state["history"]
    elif task == "density":
        # ActNorm's data-dependent initialisation, on the first full batch, identical on every rank
        first = images[epoch_order(len(images), 0, train_config.seed)[: train_config.batch_size]].to(resolved)
        with torch.no_grad():
            model.bits_per_dim(dequantize(first))
    return (images, labels, test), (model, optimizer, scheduler, batches_per_epoch, total_steps, step, history)


def _record(step: int, epoch: int, metrics: dict, scheduler, started: float, test_model=None, test=None) -> dict:
    """One line of the metrics log: the step's metrics, learning rate and seconds since ``started``; with
    ``test_model`` its held-out accuracy on ``test`` (at epoch ends only, not at a run's last step, so a resumed run
    logs what an uninterrupted one does)."""
    record = dict(
        step=step,
        epoch=epoch,
        **{k: float(v) for k, v in metrics.items()},
        lr=scheduler.get_last_lr()[0],
        seconds=round(time.perf_counter() - started, 3),
    )
    if test_model is not None:
        record["test_accuracy"] = accuracy(test_model, *test)
    return record


def _show_step(record: dict, task: str, log, bar) -> None:
    """A step's record to the metrics log (rank 0's open file, else None) and the progress bar."""
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()
    bar.update(1)
    bar.set_postfix(_shown(record, task), refresh=False)


def _batch_at(step, images, labels, batches_per_epoch, train_config: TrainConfig, resolved, rank, world):
    """(epoch, (the whole batch, its targets), (this rank's share, its targets)) of ``step``, on ``resolved``; the
    whole batch is the same on every rank (the divergence check evaluates it), targets None for density."""
    epoch, position = divmod(step, batches_per_epoch)
    order = epoch_order(len(images), epoch, train_config.seed)
    indices = order[position * train_config.batch_size : (position + 1) * train_config.batch_size]

    def taken(which):
        return images[which].to(resolved), (labels[which].to(resolved) if labels is not None else None)

    return epoch, taken(indices), taken(indices[rank::world])


def train(
    preset: str = "smoke",
    out: str | Path = "runs/smoke",
    resume: bool = False,
    steps: int | None = None,
    device: str = "cpu",
    amp: bool = False,
    model_overrides: dict | None = None,
    training_overrides: dict | None = None,
    progress_bar: bool = True,
    task: str = "density",
    architecture: str | None = None,
) -> dict:
    """Train ``preset`` into folder ``out``; return ``{"model", "history", "checkpoint", "rank", "world"}``.

    ``task="density"``: the :class:`ResidualFlow` of ``PRESETS[preset]``. ``task="classify"``: the classifier
    ``architecture`` ("irevnet" or "iresnet") of :func:`invattn.classifiers.classifier_preset`, trained with
    ``CLASSIFY_TRAINING[preset]``. ``model_overrides`` / ``training_overrides`` replace fields of the model's
    config (:class:`FlowConfig` or :class:`ClassifierConfig`) / :class:`TrainConfig` (e.g.
    ``{"attention": ("dot", None)}``, ``{"coeff": None}``, ``{"epochs": 3}``). With ``resume=True`` the run
    continues from ``out/checkpoint.pt`` exactly where it stopped (task and configs are read from it).
    """
    check_choice(task, "task", TASKS)
    out = Path(out)
    rank, world = _distributed()
    resolved = _training_device(device, amp, world)
    checkpoint_path = out / CHECKPOINT
    task, preset, state, model_config, train_config = _run_settings(
        task,
        preset,
        architecture,
        checkpoint_path if resume else None,
        model_overrides,
        training_overrides,
        steps,
        world,
    )
    new_lr = train_config.lr if resume and training_overrides and "lr" in training_overrides else None
    out.mkdir(parents=True, exist_ok=True)

    (images, labels, test), (model, optimizer, scheduler, batches_per_epoch, total_steps, step, history) = _start_run(
        task, model_config, train_config, state, new_lr, checkpoint_path, resolved
    )
    objective: nn.Module = Objective(model) if task == "density" else ClassifierObjective(model)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective, forward_sync_buffers=True)

    saved = _Checkpoints(
        checkpoint_path,
        out,
        state["step"] if state is not None else 0,
        batches_per_epoch,
        rank,
        world,
        dict(model=model, optimizer=optimizer, scheduler=scheduler),
        dict(model_config=model_config.to_dict(), train_config=asdict(train_config), preset=preset, task=task),
        train_config.lr,
    )
    latest: dict[str, torch.Tensor | None] = dict(batch=None, targets=None)

    def checkpoint() -> None:
        if not _loss_is_finite(model, task, latest["batch"], latest["targets"], resolved):
            raise saved.diverged(step, "the weights after this step give a non-finite loss on its batch")
        saved.write(step, history)

    model.train()
    label = preset if task == "density" else f"{model_config.architecture} {preset}"
    bar = progress(total=total_steps, initial=step, desc=label, disable=not progress_bar or rank != 0)
    log = _start_log(out / "metrics.jsonl", history, rank)
    started = time.perf_counter()
    try:
        while step < total_steps:
            epoch, (latest["batch"], latest["targets"]), (batch, targets) = _batch_at(
                step, images, labels, batches_per_epoch, train_config, resolved, rank, world
            )
            metrics = _optimisation_step(
                objective,
                model,
                optimizer,
                scheduler,
                batch,
                targets,
                train_config.grad_clip,
                amp,
                lambda what: saved.diverged(step + 1, what),
            )
            step += 1
            record = _record(
                step,
                epoch,
                metrics,
                scheduler,
                started,
                test_model=model if task == "classify" and step % batches_per_epoch == 0 and rank == 0 else None,
                test=test,
            )
            end_of_epoch = step % batches_per_epoch == 0 or step == total_steps
            history.append(record)
            _show_step(record, task, log, bar)
            if step % train_config.checkpoint_every == 0 or step == total_steps:
                checkpoint()
            if rank == 0 and end_of_epoch and task == "density" and train_config.samples_per_epoch:
                _save_samples(model, train_config.samples_per_epoch, out / f"samples_epoch{epoch + 1}.png", epoch)
    except KeyboardInterrupt:
        if saved.step != step:
            checkpoint()  # an interrupted run keeps everything up to its last step
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
    if rank == 0 and history:
        _plot_curves(history, out / "curves.png")
    # a classifier's accuracy: of the final weights, whether or not an epoch just ended
    return dict(
        model=model,
        history=history,
        checkpoint=checkpoint_path,
        rank=rank,
        world=world,
        **({"test_accuracy": accuracy(model, *test)} if task == "classify" and rank == 0 else {}),
    )


def _overrides(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[dict, dict]:
    """(model overrides, training overrides) that the command line asks for; ``parser.error`` for a combination
    that does not fit (a classifier's flag for the density model, settings with --resume but --steps and --lr…)."""
    if args.preset is None and not args.resume:
        parser.error("--preset is required (smoke, digits or cifar10-paper), except with --resume")
    if args.task == "classify" and args.model is None and not args.resume:
        parser.error("--task classify needs --model irevnet or --model iresnet")
    if args.task == "density" and (args.model is not None or args.coeff is not None):
        parser.error("--model and --coeff are for --task classify")
    estimator = dict(logdet=args.logdet, n_terms=args.n_terms, neumann_gradient=args.neumann_gradient)
    estimator = {k: v for k, v in estimator.items() if v is not None}
    if args.task != "density" and estimator:
        parser.error("--logdet, --n-terms and --neumann-gradient are for --task density")
    if args.coeff is not None and args.model != "iresnet":
        parser.error("--coeff is the i-ResNet classifier's Lipschitz coefficient: use it with --model iresnet")
    training = {
        k: v
        for k, v in dict(
            epochs=args.epochs,
            dataset=args.dataset,
            data_root=args.data_root,
            batch_size=args.batch_size,
            checkpoint_every=args.checkpoint_every,
        ).items()
        if v is not None
    }
    if args.resume and (training or estimator or args.model or args.attention is not None or args.coeff is not None):
        parser.error(
            "--resume continues the saved run with its own settings (model included); only --steps and --lr "
            "may be changed"
        )
    model = dict(estimator)
    if args.attention is not None:
        kind = None if args.attention == "none" else args.attention
        if args.task == "density":
            kinds = [None] * len(PRESETS[args.preset].blocks)
            kinds[0] = kind
            model["attention"] = tuple(kinds)
        else:
            model["attention"] = kind
    if args.coeff is not None:
        try:
            model["coeff"] = None if args.coeff.lower() == "none" else float(args.coeff)
        except ValueError:
            parser.error(f"--coeff takes a number in (0, 1) or 'none', got {args.coeff!r}")
    if args.epochs is not None and args.steps is None:
        training["steps"] = None  # --epochs replaces a preset's step count
    if args.lr is not None:
        training["lr"] = args.lr
    return model, training


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m invattn.train", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--task",
        default="density",
        choices=TASKS,
        help="density: the generative model (default); classify: an invertible classifier",
    )
    parser.add_argument("--model", choices=ARCHITECTURES, help="the classifier for --task classify")
    parser.add_argument(
        "--preset",
        choices=sorted(set(PRESETS) | set(CLASSIFY_TRAINING)),
        help="the configuration to train (a resumed run keeps its own)",
    )
    parser.add_argument("--out", required=True, help="folder for the checkpoint, metrics, curves and samples")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint.pt")
    parser.add_argument("--steps", type=int, help="total number of steps (default: the preset's epochs)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dataset", choices=tuple(dict.fromkeys(("digits",) + DATASETS + LABELLED)))
    parser.add_argument("--data-root")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument(
        "--lr",
        type=float,
        help="learning rate (default: the preset's); with --resume it replaces the "
        "saved run's, e.g. to continue with a smaller one after a divergence",
    )
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument(
        "--attention", help="attention kind in the first scale (density) or stage (classify), or 'none'"
    )
    parser.add_argument(
        "--coeff",
        help="classify, iresnet: the blocks' Lipschitz coefficient in (0, 1), or 'none' for the unconstrained ResNet",
    )
    parser.add_argument(
        "--logdet",
        choices=("series", "roulette"),
        help="density: the log-determinant estimator, truncated series (i-ResNet) or unbiased "
        "Russian roulette (Residual Flows)",
    )
    parser.add_argument("--n-terms", type=int, help="density: series terms, or the roulette's always-computed terms")
    parser.add_argument(
        "--neumann-gradient",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="density: the Neumann-series gradient of the log-determinant (flat memory in the terms; "
        "the presets' default), or --no-neumann-gradient to back-propagate through the series",
    )
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    model, training = _overrides(args, parser)
    try:
        result = train(
            args.preset,
            args.out,
            resume=args.resume,
            steps=args.steps,
            device=args.device,
            amp=args.amp,
            model_overrides=model,
            training_overrides=training,
            progress_bar=not args.no_progress,
            task=args.task,
            architecture=args.model,
        )
    except (ValueError, FileNotFoundError, TrainingDiverged) as error:
        parser.exit(2, f"python -m invattn.train: error: {error}\n")
    if result["rank"] == 0 and result["history"]:
        last = result["history"][-1]
        if "bits_per_dim" in last:
            print(f"step {last['step']}: {last['bits_per_dim']:.4f} bits/dim; checkpoint {result['checkpoint']}")
        else:
            print(
                f"step {last['step']}: loss {last['loss']:.4f}; held-out accuracy {result['test_accuracy']:.4f}; "
                f"checkpoint {result['checkpoint']}"
            )
    if dist.is_initialized():
        # every rank reaches the end before any tears the group down: a rank that exits while another still
        # talks to it can abort in gloo's background threads ("terminate called without an active exception")
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
