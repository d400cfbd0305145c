"""What attention buys, measured: the density model with no attention and with each attention kind, on 8×8 digits
(N = 16 attention positions) or on 32×32 photograph patches (N = 256, CIFAR-10's size).

``python -m invattn.ablation --out checkpoints/digits`` trains the ``digits`` preset (scikit-learn's real 8×8
digits; the first ``n_train`` for training, the rest held out) once per configuration and seed, with the same
steps, data order and initialisation seed for every configuration, and writes

* ``results.json``: per run the held-out bits/dim, the training curve, the attention block's certified bound and
  its measured Lipschitz constant, the wall time; rewritten atomically after every run, and a run already in it
  is not trained again, so an interrupted ablation continues where it stopped;
* ``<label>-seed<s>.pt``: the trained model (weights and :class:`invattn.models.FlowConfig`, no optimiser state),
  for the seeds named by ``--keep``; :func:`load_model` rebuilds it;
* ``ablation.png``: held-out bits/dim per configuration (every seed and the mean) and the training curves.

``python -m invattn.ablation --data patches --out FOLDER`` does the same with the ``patches`` preset (the paper's
CIFAR-10 layout with 2 steps per scale and width 128) on :func:`invattn.data.photograph_patches`: 32×32 patches of
photographs that installed packages ship, the 4160 training patches (7 photographs) for training, 3 epochs at batch
32 by default, and held-out patches of 2 other photographs for the held-out bits/dim.

Configurations (labels): ``none``; each certified kind of :data:`invattn.KINDS`; ``generative-concat`` and
``generative-dot``, the generative repository's uncertified formulation (``variant="generative"`` of
:func:`invattn.make_attention`), whose global normaliser makes each output O(1/N).

Held-out bits/dim: the series estimator, on held-out images dequantised with a fixed seed and with fixed probe draws,
the same numbers for every configuration: digits, the 297 held-out digits with 20 terms and 4 Hutchinson probes
(:data:`EVALUATION`); patches, the first 512 held-out patches with 10 terms and 2 probes (:data:`PATCHES_EVALUATION`).
:func:`summary` also pairs every configuration with ``none`` seed by seed (same seed: same initial draws before the
attention block, same data order) and gives the mean and spread of the differences.
"""

from .cli import main
from .experiment import (
    CONFIGURATIONS,
    DATA,
    DEFAULT_EPOCHS,
    DEFAULT_N_TRAIN,
    DEFAULTS,
    EVALUATION,
    PATCHES_EVALUATION,
    RESULTS,
    attention_lipschitz,
    data_of,
    held_out_bits_per_dim,
    held_out_images,
    load_model,
    model_config,
    run_is_reliable,
    saved_record,
)
from .report import format_summary, plot_ablation, summary
from .runner import run

__all__ = [
    "CONFIGURATIONS",
    "DATA",
    "DEFAULTS",
    "DEFAULT_EPOCHS",
    "DEFAULT_N_TRAIN",
    "EVALUATION",
    "PATCHES_EVALUATION",
    "RESULTS",
    "attention_lipschitz",
    "data_of",
    "held_out_bits_per_dim",
    "held_out_images",
    "load_model",
    "model_config",
    "saved_record",
    "run",
    "run_is_reliable",
    "summary",
    "format_summary",
    "plot_ablation",
    "main",
]
