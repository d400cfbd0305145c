"""The tasks by name (:data:`TASKS`), a run's settings (a preset with overrides, or a saved run), and what a run
wrote read back: its checkpoint (:func:`load_checkpoint`) and its model (:func:`load_trained`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .._validation import check_positive_float, check_positive_int, resolve_device
from .checkpoints import checkpoint_path, read_checkpoint
from .classify import ClassifyTask
from .config import TrainConfig, check_run_settings, check_saved_settings
from .density import DensityTask
from .task import Task

__all__ = ["TASKS", "Run", "load_checkpoint", "load_trained", "run_configs", "run_settings"]


@dataclass
class Run:
    """A run in progress: its task and settings, data, model and optimiser, and where it stands (what
    :func:`~invattn.train.loop.fit` advances).

    Arguments:
        task: the :class:`~invattn.train.task.Task` trained.
        preset: the preset's name (saved in checkpoints, shown on the progress bar).
        model_config: the model's config (a ``FlowConfig`` or ``ClassifierConfig``; its ``to_dict`` is saved).
        config: the :class:`TrainConfig`.
        data: (training images [N, C, H, W] in [0, 1], their labels [N] or None, the held-out set or None).
        model: the model, on ``device``.
        optimizer, scheduler: built by :func:`~invattn.train.config.make_optimiser`.
        batches_per_epoch: steps per epoch, N // batch_size (≥ 1).
        total_steps: the step the run stops at.
        step: the steps done so far (0 for a fresh run).
        history: one record (dict) per step done: ``step``, ``epoch``, the task's metrics, ``lr``, ``seconds``.
        device: where the model trains.
        out: the run's folder.
        rank, world: this process's rank and the number of processes (``torchrun``; 0 and 1 otherwise).
    """

    task: Task
    preset: str
    model_config: object
    config: TrainConfig
    data: tuple
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    batches_per_epoch: int
    total_steps: int
    step: int
    history: list[dict]
    device: torch.device
    out: Path
    rank: int = 0
    world: int = 1


TASKS: dict[str, Task] = {task.name: task for task in (DensityTask(), ClassifyTask())}


def run_configs(state: dict, path: Path) -> tuple[object, TrainConfig]:
    """(model config, :class:`TrainConfig`) of a checkpoint's dict.

    Arguments:
        state: the checkpoint's dict (``task``, default "density"; ``model_config``; ``train_config``).
        path: the file, named in errors.
    Returns:
        (the task's model config, the :class:`TrainConfig` checked by
        :func:`~invattn.train.config.check_saved_settings`).
    Raises:
        ValueError: naming the file, when they do not build a run.
    """
    try:
        model_config = TASKS[state.get("task", "density")].config_from_dict(state["model_config"])
        train_config = check_saved_settings(TrainConfig(**state["train_config"]))
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise ValueError(
            f"{path} is a damaged training checkpoint: its settings do not build a run "
            f"({type(error).__name__}: {error})"
        ) from None
    return model_config, train_config


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The dict of a checkpoint written by :func:`~invattn.train.train`.

    Read with ``torch.load(..., weights_only=True)``: tensors and plain values only, so a file carrying pickled
    code is refused before anything in it runs.

    Arguments:
        path: the file, or a run folder holding ``checkpoint.pt``.
        map_location: where its tensors go.
    Returns:
        the dict: model, optimizer, scheduler, step, history, rng, model_config, train_config, preset, task.
    Raises:
        FileNotFoundError: when there is no checkpoint (with the command that writes one).
        ValueError: when the file is not a training checkpoint (refused objects, a damaged file, missing entries,
            settings that do not build a run).
    """
    path = checkpoint_path(path)
    state = read_checkpoint(path, tuple(TASKS), map_location=map_location)
    run_configs(state, path)  # the settings must build a run
    return state


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model a training run wrote, in eval mode, and what the run recorded.

    The model is a :class:`~invattn.models.ResidualFlow` (task "density") or the classifier of a ``--task classify``
    run, its certificates recomputed from the weights. Loaded with ``weights_only=True`` (no code runs).

    Arguments:
        path: the run folder ``DIR`` of ``python -m invattn.train --out DIR``, or its ``checkpoint.pt``.
        device: where to put the model.
    Returns:
        (model, record), the record holding ``task``, ``preset``, ``step``, ``model_config``, ``train_config`` and
        ``history`` (the logged metrics).
    Raises:
        FileNotFoundError: as :func:`load_checkpoint`.
        ValueError: as :func:`load_checkpoint`, for weights that do not fit the model, and for a device this machine
            lacks.
    """
    device = resolve_device(device)
    state = load_checkpoint(path, map_location=device)
    task, (model_config, _) = state.get("task", "density"), run_configs(state, checkpoint_path(path))
    model = TASKS[task].build(model_config)
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


def _saved_settings(path: Path, architecture: str | None, model_overrides: dict, training_overrides: dict):
    """(saved state, task name, model config, training config) of the run saved at ``path``, with only its
    learning rate replaced (when ``training_overrides`` has ``lr``); ``ValueError`` for any other override."""
    ignored = sorted(set(model_overrides) | (set(training_overrides) - {"lr"}))
    if ignored:
        raise ValueError(
            f"resume=True continues the saved run with its own settings; only steps and lr can be "
            f"changed, got overrides of {', '.join(ignored)}"
        )
    if "lr" in training_overrides:
        check_positive_float(training_overrides["lr"], "lr")
    state = load_checkpoint(path)
    saved_task = state.get("task", "density")
    saved_architecture = state["model_config"].get("architecture")
    if architecture is not None and architecture != saved_architecture:
        raise ValueError(
            f"{path} holds a {saved_architecture or saved_task} run; resume continues it as saved (asked for "
            f"{architecture!r})"
        )
    model_config, train_config = run_configs(state, path)
    if "lr" in training_overrides:
        train_config = replace(train_config, lr=float(training_overrides["lr"]))
    return state, saved_task, model_config, train_config


def run_settings(
    task: str,
    preset: str,
    architecture: str | None,
    resume_from: Path | None,
    model_overrides: dict,
    training_overrides: dict,
    steps: int | None,
    world: int,
) -> tuple[Task, str, dict | None, object, TrainConfig]:
    """A run's settings: a preset with its overrides, or (``resume_from`` given) the saved run.

    Arguments:
        task: "density" or "classify" (a saved run keeps its own).
        preset: the preset's name (a saved run keeps its own).
        architecture: the classifier ("irevnet", "iresnet"); a saved run must match it.
        resume_from: the checkpoint to continue, or None for a fresh run.
        model_overrides, training_overrides: fields replaced in the model config and :class:`TrainConfig`
            (resuming: only ``lr``).
        steps: the run's total steps (None: the preset's).
        world: the number of processes, which must divide the batch.
    Returns:
        (task, preset, saved state or None, model config, training config), every setting checked.
    Raises:
        ValueError: for an unknown preset, a setting that does not fit, or overrides a resumed run would ignore.
        FileNotFoundError: when ``resume_from`` is missing.
    """
    state = None
    if resume_from is not None:
        state, task, model_config, train_config = _saved_settings(
            resume_from, architecture, model_overrides, training_overrides
        )
        preset = state.get("preset", preset)
    else:
        model_config, train_config = TASKS[task].settings(preset, architecture, model_overrides, training_overrides)
    if steps is not None:
        train_config = replace(train_config, steps=check_positive_int(steps, "steps"))
    check_run_settings(train_config, TASKS[task].datasets, world)
    return TASKS[task], preset, state, model_config, train_config
