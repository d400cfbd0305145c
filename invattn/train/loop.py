"""The training loop, the same for every task (:class:`~invattn.train.task.Task`): the data order, one
optimisation step, the records, checkpoints, resuming, and ``torchrun`` (DistributedDataParallel)."""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .._validation import NonFiniteError, check_choice, resolve_device
from ..progress import progress
from .checkpoints import CHECKPOINT, Checkpoints, finite_weights, restore
from .config import TrainConfig, make_optimiser
from .runs import TASKS, Run, run_settings
from .task import Task, epoch_order

__all__ = ["fit", "train"]


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
    """Train a preset's model into a folder, or continue the run saved there.

    ``task="density"``: the :class:`~invattn.models.ResidualFlow` of ``PRESETS[preset]`` trained with
    ``TRAINING[preset]``. ``task="classify"``: the classifier ``architecture`` of
    ``invattn.classifiers.CLASSIFIER_PRESETS[preset]``. Writes ``out/checkpoint.pt`` (atomically, every
    ``checkpoint_every`` steps and at the end), ``out/metrics.jsonl``, ``out/curves.png`` and, for a density model,
    ``out/samples_epochN.png``. Under ``torchrun`` each rank trains on a disjoint shard of every batch.

    Arguments:
        preset: "smoke", "digits", "patches" or "cifar10-paper" (a classifier: its own presets).
        out: the run's folder (created).
        resume: continue from ``out/checkpoint.pt`` exactly where it stopped (task and configs read from it).
        steps: the run's total steps (None: the preset's).
        device: "cpu", "cuda", "cuda:N" or "auto".
        amp: bfloat16 autocast (CUDA only).
        model_overrides: fields of the model's config replaced (:class:`~invattn.models.FlowConfig` or
            :class:`~invattn.classifiers.ClassifierConfig`), e.g. ``{"attention": ("dot", None)}``, ``{"coeff": None}``.
        training_overrides: fields of :class:`TrainConfig` replaced, e.g. ``{"epochs": 3}``; resuming, only ``lr``.
        progress_bar: show a progress bar (rank 0).
        task: "density" or "classify".
        architecture: the classifier, "irevnet" or "iresnet" (``task="classify"``).
    Returns:
        ``{"model", "history", "checkpoint", "rank", "world"}`` and, for a classifier on rank 0, ``"test_accuracy"``
        of the final weights.
    Raises:
        ValueError: for settings that do not fit (unknown preset, bad values, ``amp`` off CUDA, overrides a resumed
            run would ignore), a damaged checkpoint, or damaged data.
        FileNotFoundError: when resuming without a checkpoint, or for a missing data set.
        TrainingDiverged: when the loss, the activations or the gradients become non-finite.
    """
    check_choice(task, "task", tuple(TASKS))
    out = Path(out)
    rank, world = _distributed()
    resolved = _training_device(device, amp, world)
    path = out / CHECKPOINT
    chosen, preset, state, model_config, config = run_settings(
        task,
        preset,
        architecture,
        path if resume else None,
        model_overrides or {},
        training_overrides or {},
        steps,
        world,
    )
    new_lr = config.lr if resume and training_overrides and "lr" in training_overrides else None
    out.mkdir(parents=True, exist_ok=True)
    run = _start_run(chosen, preset, model_config, config, state, new_lr, resolved, out, (rank, world))
    fit(run, amp=amp, progress_bar=progress_bar)
    result = dict(model=run.model, history=run.history, checkpoint=path, rank=rank, world=world)
    return {**result, **(run.task.finish(run.model, run.data[2]) if rank == 0 else {})}


def fit(run: Run, amp: bool = False, progress_bar: bool = True) -> None:
    """Train ``run`` to its last step: one optimisation step per batch, a record per step, checkpoints, the task's
    epoch ends; an interrupted run (``KeyboardInterrupt``) is checkpointed first. See :func:`train`.

    Arguments:
        run: the run, advanced in place (``step``, ``history``, the weights) to ``run.total_steps``.
        amp: bfloat16 autocast for the forward pass (CUDA only; :func:`train` checks it).
        progress_bar: show a progress bar (rank 0).
    Raises:
        TrainingDiverged: when the loss, the activations or the gradients become non-finite, or a checkpoint's
            weights give a non-finite loss on their batch.
        KeyboardInterrupt: re-raised after the interrupted run is checkpointed.
    """
    objective = run.task.objective(run.model)
    if run.world > 1:
        objective = nn.parallel.DistributedDataParallel(objective, forward_sync_buffers=True)
    saved = Checkpoints(
        run.out,
        run.step,
        run.batches_per_epoch,
        (run.rank, run.world),
        dict(model=run.model, optimizer=run.optimizer, scheduler=run.scheduler),
        dict(
            model_config=run.model_config.to_dict(),
            train_config=asdict(run.config),
            preset=run.preset,
            task=run.task.name,
        ),
    )
    latest: dict[str, torch.Tensor | None] = dict(batch=None, targets=None)

    def checkpoint() -> None:
        if not _loss_is_finite(run, latest["batch"], latest["targets"]):
            raise saved.diverged(run.step, "the weights after this step give a non-finite loss on its batch")
        saved.write(run.step, run.history)

    run.model.train()
    label = run.task.label(run.preset, run.model_config)
    bar = progress(total=run.total_steps, initial=run.step, desc=label, disable=not progress_bar or run.rank != 0)
    log = _start_log(run.out / "metrics.jsonl", run.history, run.rank)
    started = time.perf_counter()
    try:
        while run.step < run.total_steps:
            epoch, (latest["batch"], latest["targets"]), (batch, targets) = _batch_at(run)
            metrics = _optimisation_step(
                objective, run, batch, targets, amp, lambda what: saved.diverged(run.step + 1, what)
            )
            run.step += 1
            _end_step(run, epoch, _record(run, epoch, metrics, started), log, bar, checkpoint)
    except KeyboardInterrupt:
        if saved.step != run.step:
            checkpoint()  # an interrupted run keeps everything up to its last step
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
    if run.rank == 0 and run.history:
        run.task.plot_curves(run.history, run.out / "curves.png")


def _distributed() -> tuple[int, int]:
    """(rank, world size): the process group is started under ``torchrun`` (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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


def _finite_data(task: Task, config: TrainConfig, model_config) -> tuple:
    """The task's data, refusing training images that hold NaN or infinite pixels (``ValueError``, counting them)."""
    images, labels, test = task.data(config, model_config)
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise ValueError(
            f"{bad} training image(s) of {config.dataset!r} hold NaN or infinite pixels; "
            "the data set is damaged (re-create it, or drop those images)"
        )
    return images, labels, test


def _start_run(task: Task, preset, model_config, config: TrainConfig, state, new_lr, device, out, rank_world) -> Run:
    """A run at its start, every random generator seeded first: restored from the checkpoint ``state`` when resuming,
    else at step 0 after the task's initialisation. ``ValueError`` for damaged data or fewer images than a batch."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    data = _finite_data(task, config, model_config)
    model = task.build(model_config).to(device)
    batches_per_epoch = len(data[0]) // config.batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"{len(data[0])} training images are fewer than one batch of {config.batch_size}")
    total_steps = config.steps or config.epochs * batches_per_epoch
    optimizer, scheduler = make_optimiser(model, config, total_steps)
    step, history = 0, []
    if state is not None:
        restore(state, model, optimizer, scheduler, new_lr, out / CHECKPOINT)
        step, history = state["step"], state["history"]
    else:
        task.initialise(model, data[0], config, device)
    return Run(
        task,
        preset,
        model_config,
        config,
        data,
        model,
        optimizer,
        scheduler,
        batches_per_epoch,
        total_steps,
        step,
        history,
        device,
        out,
        *rank_world,
    )


def _batch_at(run: Run):
    """(epoch, (the whole batch, its targets), (this rank's share, its targets)) of the run's next step, on its
    device; the whole batch is the same on every rank (the divergence check evaluates it); targets None without
    labels."""
    images, labels, _ = run.data
    epoch, position = divmod(run.step, run.batches_per_epoch)
    order = epoch_order(len(images), epoch, run.config.seed)
    indices = order[position * run.config.batch_size : (position + 1) * run.config.batch_size]

    def taken(which):
        return images[which].to(run.device), (labels[which].to(run.device) if labels is not None else None)

    return epoch, taken(indices), taken(indices[run.rank :: run.world])


def _optimisation_step(objective: nn.Module, run: Run, batch, targets, amp: bool, diverged) -> dict:
    """One step: the loss of ``batch`` (bfloat16 autocast if ``amp``), backward, optional clipping, the optimiser and
    scheduler steps; returns the objective's metrics. Raises ``diverged(what)`` (a ``TrainingDiverged``) when the
    activations, the loss or the gradients become non-finite, before the weights change."""
    try:
        with torch.autocast(device_type=batch.device.type, dtype=torch.bfloat16, enabled=amp):
            loss, metrics = objective(batch, targets)
    except NonFiniteError as error:  # the data were checked to be finite: the model overflowed
        raise diverged(f"the activations became non-finite ({error})") from None
    if not bool(torch.isfinite(loss)):
        raise diverged(f"the loss became {float(loss.detach())}")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gradients = [p.grad for p in run.model.parameters() if p.grad is not None]
    if gradients and not bool(torch.isfinite(nn.utils.get_total_norm(gradients, norm_type=math.inf))):
        raise diverged("the gradients became non-finite")
    if run.config.grad_clip:
        nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    return metrics


def _record(run: Run, epoch: int, metrics: dict, started: float) -> dict:
    """One line of the metrics log: the step's metrics, learning rate and seconds since ``started``; at an epoch's
    end (not at a run's last step, so a resumed run logs what an uninterrupted one does) the task's evaluation."""
    record = dict(
        step=run.step,
        epoch=epoch,
        **{k: float(v) for k, v in metrics.items()},
        lr=run.scheduler.get_last_lr()[0],
        seconds=round(time.perf_counter() - started, 3),
    )
    if run.step % run.batches_per_epoch == 0 and run.rank == 0:
        record.update(run.task.evaluate(run.model, run.data[2]))
    return record


def _end_step(run: Run, epoch: int, record: dict, log, bar, checkpoint) -> None:
    """After a step: its record to the history, the log (rank 0's open file, else None) and the bar; a checkpoint
    when one is due; the task's epoch end (rank 0) after an epoch's or the run's last step."""
    run.history.append(record)
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()
    bar.update(1)
    bar.set_postfix(run.task.shown(record), refresh=False)
    if run.step % run.config.checkpoint_every == 0 or run.step == run.total_steps:
        checkpoint()
    if run.rank == 0 and (run.step % run.batches_per_epoch == 0 or run.step == run.total_steps):
        run.task.epoch_end(run.model, run.config, run.out, epoch)


def _start_log(path: Path, history: list[dict], rank: int):
    """The metrics log at the run's start, opened for appending (rank 0; None on the other ranks): a fresh run starts
    an empty one; a resumed run rewrites it with the checkpoint's history, since the steps logged after the checkpoint
    are replayed."""
    if rank != 0:
        return None
    with open(path, "w") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in history)
    return open(path, "a")


def _loss_is_finite(run: Run, batch: torch.Tensor | None, targets: torch.Tensor | None) -> bool:
    """Whether the weights are finite and give a finite loss on ``batch`` (eval mode, no state change, the random
    streams untouched): a checkpoint is only written when they do. Finite outputs are not enough: latents of 1e32
    are finite, but their prior log-density overflows and a resumed run would diverge at once, whatever its learning
    rate."""
    model = run.model
    if not finite_weights(model):
        return False
    if batch is None:
        return True
    was_training = model.training
    model.eval()
    try:
        devices = [run.device] if run.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            loss = run.task.loss(model, batch, targets)
        return bool(torch.isfinite(loss).all())
    except NonFiniteError:
        return False
    finally:
        model.train(was_training)
