"""Train the i-ResNet density model: ``python -m invattn.train --preset NAME --out DIR [--resume] [--steps N]``,
or :func:`train` from Python (lesson 08); and, through the same loop, the invertible classifiers:
``python -m invattn.train --task classify --model irevnet|iresnet --preset smoke|digits|cifar10-paper --out DIR``
(lesson 09; ``--coeff`` sets the i-ResNet blocks' Lipschitz coefficient, ``--coeff none`` the unconstrained
ResNet). Classification logs the batch loss and accuracy, and the held-out accuracy after every epoch.

* presets: ``smoke`` (seconds on a CPU), ``digits`` (scikit-learn's real 8×8 digits, CPU minutes), ``patches``
  (the paper's layout reduced, on 32×32 offline photograph patches: :func:`invattn.data.photograph_patches`; CPU
  hours), ``cifar10-paper`` (the paper's configuration; a GPU); the data set can be changed (``--dataset``,
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
  ``torch.compile`` does not trace;
* multi-GPU (or multi-process CPU) with ``torchrun --nproc_per_node=K -m invattn.train ...``:
  DistributedDataParallel, each rank a disjoint shard of every batch; buffers (ActNorm state, batch-norm running
  statistics) are broadcast from rank 0 at each step and before each checkpoint, and the spectral normalisation is a
  function of the (identical) weights alone.

The package: :mod:`.loop` (:func:`train`, the loop every task shares), :mod:`.task` (the contract a task fulfils),
:mod:`.density` and :mod:`.classify` (the two tasks, the density task with its presets :data:`TRAINING`),
:mod:`.config` (:class:`TrainConfig`, optimiser and schedule), :mod:`.checkpoints`, :mod:`.runs` (the tasks by name,
a run's settings, :func:`load_checkpoint`, :func:`load_trained`) and :mod:`.cli` (the command line).
"""

from __future__ import annotations

from .checkpoints import CHECKPOINT, TrainingDiverged, checkpoint_path, rng_state, save_checkpoint, set_rng_state
from .classify import CLASSIFY_TRAINING, ClassifierObjective, ClassifyTask, accuracy
from .cli import main
from .config import TrainConfig, lr_factor, make_optimiser
from .density import TRAINING, DensityObjective, DensityTask, training_images
from .loop import fit, train
from .runs import TASKS, Run, load_checkpoint, load_trained
from .task import Task, epoch_order

__all__ = [
    "CHECKPOINT",
    "CLASSIFY_TRAINING",
    "TASKS",
    "TRAINING",
    "ClassifierObjective",
    "ClassifyTask",
    "DensityObjective",
    "DensityTask",
    "Run",
    "Task",
    "TrainConfig",
    "TrainingDiverged",
    "accuracy",
    "checkpoint_path",
    "epoch_order",
    "fit",
    "load_checkpoint",
    "load_trained",
    "lr_factor",
    "main",
    "make_optimiser",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "train",
    "training_images",
]
