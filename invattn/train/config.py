"""How to train (:class:`TrainConfig`), its checks, and the optimiser and learning-rate schedule it describes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .._validation import check_choice, check_positive_float, check_positive_int

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "check_run_settings",
    "check_saved_settings",
    "lr_factor",
    "make_optimiser",
]

OPTIMIZERS = ("adamax", "adam", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the model is described by its task's config: a ``FlowConfig`` or a ``ClassifierConfig``).

    ``n_train``: training images used (None: all). ``steps``: stop after this many steps in total (overrides
    ``epochs``). ``optimizer``: "adamax", "adam" or "sgd" (momentum 0.9). ``lr_schedule``: "constant", or "cosine":
    lr·½(1 + cos(π·step/steps)), 0 at the end; both times a linear warm-up over ``warmup_steps``. ``grad_clip``: the
    gradients' largest ℓ₂ norm (None: no clipping). ``checkpoint_every``: steps between checkpoints.
    ``samples_per_epoch``: samples drawn at each epoch's end (density only).
    """

    dataset: str = "cifar10"
    data_root: str = "data"
    n_train: int | None = None
    batch_size: int = 64
    epochs: int = 200
    steps: int | None = None
    lr: float = 3e-3
    optimizer: str = "adamax"
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    grad_clip: float | None = None
    checkpoint_every: int = 500
    samples_per_epoch: int = 16
    seed: int = 1234


def check_saved_settings(config: TrainConfig) -> TrainConfig:
    """``config`` if its numbers can drive a run (positive lr, batch size, epochs, checkpoint interval and steps,
    seed ≥ 0); ``ValueError`` otherwise."""
    check_positive_float(config.lr, "lr")
    for name in ("batch_size", "epochs", "checkpoint_every"):
        check_positive_int(getattr(config, name), name)
    check_positive_int(config.seed, "seed", minimum=0)
    if config.steps is not None:
        check_positive_int(config.steps, "steps")
    return config


def check_run_settings(config: TrainConfig, datasets: tuple[str, ...], world: int) -> TrainConfig:
    """``config`` if a run of ``world`` processes can train with it.

    Arguments:
        config: the run's settings.
        datasets: the data sets its task reads.
        world: the number of processes (``torchrun``), which must divide the batch.
    Returns:
        ``config``.
    Raises:
        ValueError: naming the first setting that does not fit.
    """
    check_choice(config.dataset, "dataset", datasets)
    check_positive_float(config.lr, "lr")
    for name in ("batch_size", "epochs", "checkpoint_every"):
        check_positive_int(getattr(config, name), name)
    check_choice(config.optimizer, "optimizer", OPTIMIZERS)
    check_choice(config.lr_schedule, "lr_schedule", SCHEDULES)
    if config.weight_decay < 0:
        raise ValueError(f"weight_decay must be ≥ 0, got {config.weight_decay}")
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world} processes")
    return config


def lr_factor(step: int, warmup: int, schedule: str, total_steps: int) -> float:
    """The learning rate's factor at a step: a linear warm-up, then constant or a cosine decay.

    factor = min(1, (step + 1)/warmup) · (1, or ½(1 + cos(π·step/total_steps)) for "cosine", 0 at the last step).

    Arguments:
        step: the step, from 0.
        warmup: warm-up steps (0: none).
        schedule: "constant" or "cosine".
        total_steps: the run's steps.
    Returns:
        the factor in [0, 1].

    >>> [lr_factor(s, warmup=2, schedule="constant", total_steps=4) for s in range(3)]
    [0.5, 1.0, 1.0]
    """
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if schedule == "cosine":
        return ramp * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return ramp


def make_optimiser(
    model: nn.Module, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser and scheduler of ``config``: warm-up, then its ``lr_schedule`` over ``total_steps``.

    Arguments:
        model: whose parameters are trained.
        config: optimiser, lr, weight decay, warm-up and schedule.
        total_steps: the run's steps (the cosine's period).
    Returns:
        (optimiser, scheduler), the scheduler multiplying the lr by :func:`lr_factor`.
    """
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    else:
        optimizer_class = torch.optim.Adamax if config.optimizer == "adamax" else torch.optim.Adam
        optimizer = optimizer_class(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(config.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, config.lr_schedule, total_steps)
    )
    return optimizer, scheduler
