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

    Building one checks nothing: :func:`check_run_settings` checks a fresh run's settings, :func:`check_saved_settings`
    those read from a checkpoint.

    Arguments:
        dataset: the data set's name (the task says which it reads).
        data_root: the folder holding the data sets.
        n_train: training images used (None: all).
        batch_size: images per step (under ``torchrun``, divided among the processes).
        epochs: passes over the training images.
        steps: stop after this many steps in total (overrides ``epochs``; None: ``epochs`` decide).
        lr: the learning rate.
        optimizer: "adamax", "adam" or "sgd" (momentum 0.9).
        weight_decay: the optimiser's weight decay, ≥ 0.
        warmup_steps: steps of the linear warm-up (0: none).
        lr_schedule: "constant", or "cosine": lr·½(1 + cos(π·step/steps)), 0 at the end; both times after the
            warm-up (:func:`lr_factor`).
        grad_clip: the gradients' largest ℓ₂ norm (None: no clipping).
        checkpoint_every: steps between checkpoints.
        samples_per_epoch: samples drawn at each epoch's end (density only).
        seed: seeds torch, NumPy and Python at a run's start (so the weights) and every epoch's data order.

    >>> config = TrainConfig(dataset="digits", batch_size=32, steps=8)
    >>> config.optimizer, config.lr_schedule, config.seed
    ('adamax', 'constant', 1234)
    >>> check_saved_settings(TrainConfig(lr=-1.0))
    Traceback (most recent call last):
    ValueError: lr must be a positive finite number, got -1.0
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
    """``config`` if its numbers can drive a run (what a checkpoint's saved settings must pass).

    Arguments:
        config: the settings read back.
    Returns:
        ``config`` itself.
    Raises:
        ValueError: for a learning rate, batch size, number of epochs, checkpoint interval or steps that is not
            positive, or a seed below 0.
        TypeError: for a count (batch size, epochs, checkpoint interval, steps, seed) that is not an integer, or a
            learning rate that is not a number.
    """
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
