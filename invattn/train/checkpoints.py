"""A run's checkpoints: written atomically with every random state, read back with ``weights_only=True`` and
checked, restored exactly; and the error a diverging run stops with (:class:`TrainingDiverged`)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .._files import read_weights, write_atomically

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_KEYS",
    "Checkpoints",
    "TrainingDiverged",
    "checkpoint_path",
    "finite_weights",
    "read_checkpoint",
    "restore",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT = "checkpoint.pt"

_KINDS = dict(  # what a training checkpoint holds, and the type of each
    model=dict,
    optimizer=dict,
    scheduler=dict,
    step=int,
    history=list,
    rng=dict,
    model_config=dict,
    train_config=dict,
)
CHECKPOINT_KEYS = tuple(_KINDS)


def rng_state() -> dict:
    """Every random state the loop draws from (torch, NumPy, Python, CUDA), as tensors and plain numbers, which
    ``weights_only`` loading reads.

    Returns:
        ``{"torch": uint8 tensor, "numpy": {name, keys (int64 tensor), position, has_gauss, cached_gaussian},
        "python": {version, words, gauss_next}}`` and, when CUDA is available, ``"cuda"``: every device's state.
    """
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


def set_rng_state(state: dict) -> None:
    """Put back the random states of :func:`rng_state` (or NumPy's and Python's own tuples).

    Arguments:
        state: the dict of :func:`rng_state`, or one whose ``"numpy"`` and ``"python"`` entries are the tuples of
            ``np.random.get_state()`` and ``random.getstate()``; a ``"cuda"`` entry is restored when CUDA is
            available.
    """
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
    else:  # NumPy's and Python's own state tuples
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, flushed to disk, then
    renamed over the old one, so an interruption leaves either the old or the new checkpoint, never half.

    Arguments:
        path: the checkpoint file.
        payload: what :func:`torch.save` writes (tensors and plain values, so ``weights_only`` loading reads it).
    """
    write_atomically(path, lambda handle: torch.save(payload, handle))


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file of a path: ``path`` itself, or ``path/checkpoint.pt`` when ``path`` is a run folder.

    Arguments:
        path: a checkpoint file or a run folder (need not exist).
    Returns:
        the file's ``Path``.
    """
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def read_checkpoint(path: Path, tasks: tuple[str, ...], map_location: str | torch.device = "cpu") -> dict:
    """A training checkpoint's dict, its entries checked for presence and kind (not yet its settings).

    Arguments:
        path: the checkpoint file.
        tasks: the task names a checkpoint may hold.
        map_location: where its tensors go.
    Returns:
        the dict :func:`invattn.train.train` saved.
    Raises:
        FileNotFoundError: when there is no file (with the command that writes one).
        ValueError: for refused objects, a damaged file, missing or mistyped entries, a negative step or an unknown
            task.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train first (python -m invattn.train --preset ... --out {path.parent})"
        )
    state = read_weights(path, map_location=map_location)
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path} is not a checkpoint written by invattn.train: it lacks {', '.join(missing)}")
    wrong = [
        f"{key} is a {type(state[key]).__name__}"
        for key, kind in _KINDS.items()
        if not isinstance(state[key], kind) or isinstance(state[key], bool)
    ]
    if not wrong and not all(isinstance(h, dict) and isinstance(h.get("step"), int) for h in state["history"]):
        wrong.append("its history holds entries that are not logged steps")
    if wrong or state["step"] < 0 or state.get("task", "density") not in tasks:
        raise ValueError(
            f"{path} is a damaged training checkpoint: {', '.join(wrong) or 'its step or task is invalid'}"
        )
    return state


def finite_weights(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``model`` is finite (no NaN, no ±inf).

    Arguments:
        model: any module.
    Returns:
        True when all are finite (integer buffers are not looked at).
    """
    return all(bool(torch.isfinite(t).all()) for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())


def _check_resumed(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Raise ``ValueError`` unless what a checkpoint restored can train: finite weights and optimiser state, every
    state tensor of a parameter shaped like it (or a scalar), numeric learning rates."""
    if not finite_weights(model):
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


def restore(state: dict, model: nn.Module, optimizer, scheduler, new_lr: float | None, path: Path) -> None:
    """Load a checkpoint's model, optimiser, scheduler and random states.

    Arguments:
        state: the checkpoint's dict.
        model, optimizer, scheduler: built for its run, overwritten in place.
        new_lr: replaces the saved learning rate on the same schedule (None: keep it).
        path: the file, named in errors.
    Raises:
        ValueError: naming a damaged file, when the saved state does not fit the run or cannot train.
    """
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        _check_resumed(model, optimizer)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        raise ValueError(
            f"{path} is a damaged training checkpoint: its saved state does not fit its "
            f"run ({type(error).__name__}: {' '.join(str(error).split())[:300]})"
        ) from None
    if new_lr is not None:  # a resumed run with a new learning rate (e.g. after a divergence): same schedule
        scheduler.base_lrs = [new_lr for _ in scheduler.base_lrs]
        for group in optimizer.param_groups:
            factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
            group["initial_lr"], group["lr"] = new_lr, new_lr * factor


class TrainingDiverged(RuntimeError):
    """Training stopped because the loss, the activations or the gradients became non-finite at ``step``; no
    checkpoint was written after the last one that held finite weights (``last_checkpoint_step``, 0 if none)."""

    def __init__(self, message: str, step: int, last_checkpoint_step: int) -> None:
        super().__init__(message)
        self.step, self.last_checkpoint_step = step, last_checkpoint_step


def _check_in_step(model: nn.Module) -> None:
    """Raise if the ranks' weights or buffers differ (they must stay bit-identical)."""
    local = torch.stack([t.detach().double().sum() for t in [*model.parameters(), *model.buffers()]])
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
        raise RuntimeError("distributed ranks are out of step: their weights or buffers differ")


class Checkpoints:
    """A run's checkpoints: :meth:`write` saves the run's state atomically (rank 0; under ``torchrun`` the ranks'
    buffers are handed over and checked to be in step first), :meth:`diverged` builds the error that says what was
    kept.

    Arguments:
        out: the run's folder; checkpoints go to ``out/checkpoint.pt``.
        step: the step of the last checkpoint (0 before the first); kept up to date in ``step``.
        batches_per_epoch: the run's steps per epoch (to name the epoch of a divergence).
        rank_world: (this process's rank, the number of processes).
        stateful: names → what has a ``state_dict`` (model, optimizer, scheduler).
        settings: what else every checkpoint holds (``model_config``, ``train_config`` with its ``lr``, ``preset``,
            ``task``).
    Raises:
        KeyError: when ``settings`` has no ``train_config`` with an ``lr``.
    """

    def __init__(
        self, out: Path, step: int, batches_per_epoch: int, rank_world: tuple[int, int], stateful: dict, settings: dict
    ) -> None:
        self.path, self.out, self.step, self.batches_per_epoch = out / CHECKPOINT, out, step, batches_per_epoch
        (self.rank, self.world), self.stateful, self.settings = rank_world, stateful, settings
        self.lr = settings["train_config"]["lr"]

    def diverged(self, at: int, what: str) -> TrainingDiverged:
        """The :class:`TrainingDiverged` of step ``at``, saying what went wrong (``what``) and what was kept."""
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
        """Save the run at ``step`` with its ``history`` and every random state."""
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
                    rng=rng_state(),
                    **self.settings,
                ),
            )
        self.step = step
