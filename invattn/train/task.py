"""The contract between the training loop and a task (:class:`Task`): the loop owns the data order, the steps, the
checkpoints, resuming and the processes; a task supplies its model, data, loss, evaluation, records and plots (as
d2l's ``Module`` supplies ``training_step`` to its ``Trainer.fit``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["Task", "epoch_order"]


def epoch_order(n: int, epoch: int, seed: int) -> torch.Tensor:
    """The permutation of the training set in ``epoch``: a function of (seed, epoch) only, so a resumed run
    sees exactly the batches the interrupted one would have.

    Arguments:
        n: the number of training images.
        epoch: the epoch, from 0.
        seed: the run's seed.
    Returns:
        int64 [n], a permutation of 0..n−1.
    """
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


class Task:
    """What a task supplies to :func:`invattn.train.train`; subclasses implement every method.

    A task names itself (``name``, saved in checkpoints), the data sets it reads (``datasets``) and its presets
    (``presets``). For a run the loop calls, in this order: :meth:`settings` (or, resuming, :meth:`config_from_dict`
    on the saved model config), :meth:`data`, :meth:`build`, then for a fresh run :meth:`initialise`; every step
    runs :meth:`objective`'s module on a batch (whose loss it minimises and whose metrics it logs); at every epoch's
    end :meth:`evaluate` adds held-out numbers to the step's record (rank 0); before each checkpoint :meth:`loss`
    must be finite on the last batch; after an epoch's last step (and the run's) :meth:`epoch_end` (rank 0); at the
    run's end :meth:`plot_curves` and :meth:`finish`. :meth:`shown` and :meth:`label` feed the progress bar.

    >>> from invattn.train import TASKS
    >>> task = TASKS["classify"]
    >>> task.name, task.presets, task.flags
    ('classify', ('smoke', 'digits', 'cifar10-paper'), ('model', 'coeff'))
    >>> model_config, config = task.settings("smoke", "iresnet", {}, {"lr": 1e-2})
    >>> model_config.architecture, config.lr, config.steps
    ('iresnet', 0.01, 8)
    """

    name: str = ""
    datasets: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # command-line options only this task takes (argparse destinations)

    def settings(self, preset: str, architecture: str | None, model_overrides: dict, training_overrides: dict):
        """(model config, :class:`TrainConfig`) of a fresh run of ``preset`` with the overrides applied;
        ``ValueError`` for an unknown preset or architecture."""
        raise NotImplementedError

    def config_from_dict(self, values: dict):
        """The model config saved in a checkpoint as a dict."""
        raise NotImplementedError

    def data(self, config: TrainConfig, model_config) -> tuple[torch.Tensor, torch.Tensor | None, tuple | None]:
        """(training images [N, C, H, W] in [0, 1], their labels [N] or None, held-out (images, labels) or None)."""
        raise NotImplementedError

    def build(self, model_config) -> nn.Module:
        """A new model of ``model_config`` (random weights, drawn from torch's global generator)."""
        raise NotImplementedError

    def initialise(self, model: nn.Module, images: torch.Tensor, config: TrainConfig, device: torch.device) -> None:
        """A fresh run's data-dependent initialisation (nothing by default)."""

    def objective(self, model: nn.Module) -> nn.Module:
        """The module (wrapped by DistributedDataParallel under ``torchrun``) mapping (images [B, C, H, W] in [0, 1],
        targets or None) to (mean loss, {metric: 0-d tensor})."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """The loss of ``batch`` in eval mode, without gradients (whether a checkpoint may be written)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, test: tuple | None) -> dict:
        """Held-out numbers added to the record of an epoch's last step (rank 0; nothing by default)."""
        return {}

    def epoch_end(self, model: nn.Module, config: TrainConfig, out: Path, epoch: int) -> None:
        """What to write after an epoch (from 0) has ended and been checkpointed, rank 0 (nothing by default)."""

    def finish(self, model: nn.Module, test: tuple | None) -> dict:
        """Entries added to :func:`invattn.train.train`'s result, rank 0 (nothing by default)."""
        return {}

    def shown(self, record: dict) -> dict:
        """The progress bar's postfix for one logged step."""
        raise NotImplementedError

    def label(self, preset: str, model_config) -> str:
        """The progress bar's label."""
        return preset

    def plot_curves(self, history: list[dict], path: Path) -> None:
        """The training curves of ``history`` to ``path`` (png)."""
        raise NotImplementedError

    def attention_override(self, kind: str | None, preset: str):
        """The model config's ``attention`` for the command line's ``--attention`` (``kind`` or None)."""
        raise NotImplementedError
