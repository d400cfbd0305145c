"""What attention buys, measured: the digits density model with no attention and with each attention kind.

``python -m invattn.ablation --out checkpoints/digits`` trains the ``digits`` preset (scikit-learn's real 8×8
digits; the first ``n_train`` for training, the rest held out) once per configuration and seed, with the same
steps, data order and initialisation seed for every configuration, and writes

* ``results.json``: per run the held-out bits/dim, the training curve, the attention block's certified bound and
  its measured Lipschitz constant, the wall time; rewritten atomically after every run, and a run already in it
  is not trained again, so an interrupted ablation continues where it stopped;
* ``<label>-seed<s>.pt``: the trained model (weights and :class:`invattn.models.FlowConfig`, no optimiser state),
  for the seeds named by ``--keep``; :func:`load_model` rebuilds it;
* ``ablation.png``: held-out bits/dim per configuration (every seed and the mean) and the training curves.

Configurations (labels): ``none``; each certified kind of :data:`invattn.KINDS`; ``generative-concat`` and
``generative-dot``, the generative repository's uncertified formulation (``variant="generative"`` of
:func:`invattn.make_attention`), whose global normaliser makes each output O(1/N).

Held-out bits/dim: the series estimator with 20 terms and 4 Hutchinson probes (a fixed seed), on the held-out
digits dequantised with a fixed seed: the same numbers for every configuration.
"""

from .cli import main
from .experiment import (
    CONFIGURATIONS,
    DEFAULT_EPOCHS,
    DEFAULT_N_TRAIN,
    EVALUATION,
    RESULTS,
    attention_lipschitz,
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
    "DEFAULT_EPOCHS",
    "DEFAULT_N_TRAIN",
    "EVALUATION",
    "RESULTS",
    "attention_lipschitz",
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
