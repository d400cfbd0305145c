"""Running the ablation: each configuration and seed trained once, the results written atomically after each run."""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from .._files import write_atomically
from .._validation import check_choice, check_positive_int
from ..models import PRESET_TRAINING, ResidualFlow
from ..train import TrainingDiverged, save_checkpoint, train
from .experiment import (
    CONFIGURATIONS,
    DATA,
    DEFAULTS,
    EVALUATION,
    PATCHES_EVALUATION,
    RESULTS,
    attention_lipschitz,
    held_out_bits_per_dim,
    model_config,
)
from .report import plot_ablation

__all__ = ["run"]


def _read_results(path: Path) -> dict:
    """``results.json`` written by :func:`run`, checked enough that a damaged file is named, not a KeyError."""
    try:
        results = json.loads(path.read_text())
        keys = ("label", "seed", "test_bits_per_dim", "train_curve", "attention_bound", "attention_measured")
        if not isinstance(results["settings"], dict) or not all(all(k in r for k in keys) for r in results["runs"]):
            raise KeyError("a run without its fields")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not an ablation's results file ({type(error).__name__}: {error}); "
            "move it away or use another --out"
        ) from None
    return results


def _write_json(path: Path, payload: dict) -> None:
    write_atomically(path, lambda handle: handle.write(json.dumps(payload, indent=1)), binary=False)


def _check_run(labels, seeds, epochs: int, n_train: int, keep: str, data: str) -> tuple[list[str], list[int]]:
    """The configurations and seeds :func:`run` trains (defaults filled in), after checking every argument."""
    labels = list(CONFIGURATIONS) if labels is None else list(labels)
    for label in labels:
        check_choice(label, "configuration", tuple(CONFIGURATIONS))
    if len(set(labels)) != len(labels):
        raise ValueError(f"configurations must be distinct, got {labels}")
    seeds = [1, 2, 3] if seeds is None else list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"a seed is an integer in [0, 2³²), got {seed!r}")
    check_positive_int(epochs, "epochs")
    check_positive_int(n_train, "n_train", minimum=64)
    check_choice(keep, "keep", ("first", "all", "none"))
    most = DEFAULTS[data]["n_train"]
    if n_train > most:
        held_out = "digits 1500– are held out" if data == "digits" else "the held-out patches are other photographs'"
        raise ValueError(f"n_train={n_train}: at most {most} ({held_out})")
    return labels, seeds


def _settings(data: str, epochs: int, n_train: int) -> dict:
    """The settings an ablation's ``results.json`` records (and a resumed ablation must share)."""
    if data == "digits":
        return dict(preset="digits", epochs=epochs, n_train=n_train, evaluation=EVALUATION)
    batch_size = PRESET_TRAINING[data]["batch_size"]
    return dict(
        data=data,
        preset=data,
        epochs=epochs,
        n_train=n_train,
        batch_size=batch_size,
        evaluation=dict(PATCHES_EVALUATION),
    )


def _open_results(path: Path, settings: dict) -> dict:
    """The results already in ``path`` (checked to have ``settings``), or an empty record of them."""
    results = _read_results(path) if path.is_file() else dict(settings=settings, runs=[])
    if results["settings"] != settings:
        raise ValueError(
            f"{path} holds an ablation with other settings ({results['settings']}); "
            f"use another --out or the same settings ({settings})"
        )
    return results


def _diverged_record(label: str, seed: int, data: str, folder: Path, error: TrainingDiverged, seconds: float) -> dict:
    """The record of a run whose training stopped with non-finite numbers: its curve up to there, then nan."""
    config = model_config(label, data)
    kind, variant = config.attention[0], config.attention_variant
    lines = (folder / "metrics.jsonl").read_text().splitlines() if (folder / "metrics.jsonl").is_file() else []
    return dict(
        label=label,
        seed=seed,
        test_bits_per_dim=math.nan,  # no trained weights to score: run_is_reliable flags it
        train_curve=[round(json.loads(line)["bits_per_dim"], 4) for line in lines] + [math.nan],
        # the certified cap holds for any weights; an uncertified variant has none; nothing is measured
        attention_bound=math.nan if kind is None else (config.attention_coeff if variant == "certified" else math.inf),
        attention_measured=math.nan,
        seconds=round(seconds, 1),
        diverged_at_step=error.step,
    )


def _train_run(
    label: str, seed: int, n_train: int, epochs: int, progress_bar: bool, data: str
) -> tuple[ResidualFlow | None, dict, float]:
    """Train one configuration with one seed: the model in eval mode (None when training diverged), its run record
    and the wall seconds taken."""
    config = model_config(label, data)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        try:
            trained = train(
                data,
                folder,
                progress_bar=progress_bar,
                model_overrides=dict(attention=config.attention, attention_variant=config.attention_variant),
                training_overrides=dict(n_train=n_train, epochs=epochs, samples_per_epoch=0, seed=seed),
            )
        except TrainingDiverged as error:  # an uncertified attention can overflow: the ablation goes on
            seconds = time.perf_counter() - start
            return None, _diverged_record(label, seed, data, Path(folder), error, seconds), seconds
        seconds = time.perf_counter() - start
    model = trained["model"].eval()
    bound, measured = attention_lipschitz(model, data)
    record = dict(
        label=label,
        seed=seed,
        test_bits_per_dim=held_out_bits_per_dim(model, data),
        train_curve=[round(h["bits_per_dim"], 4) for h in trained["history"]],
        attention_bound=bound,
        attention_measured=measured,
        seconds=round(seconds, 1),
    )
    return model, record, seconds


def run(
    out: str | Path,
    labels: list[str] | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    n_train: int | None = None,
    keep: str = "first",
    progress_bar: bool = True,
    plot: bool = True,
    data: str = "digits",
) -> dict:
    """Train every configuration in ``labels`` for every seed in ``seeds`` into ``out`` (the module's ablation).

    Every configuration trains the ``data`` preset (:func:`model_config`) on the same images in the same order per
    seed. A run already in ``out/results.json`` is not trained again (so its model is saved only if it was then). A
    run whose training stops with non-finite numbers (:class:`invattn.train.TrainingDiverged`, which an uncertified
    attention can cause) is recorded with its curve up to there, a nan held-out bits/dim and ``diverged_at_step``, no
    model saved, and the ablation goes on.

    Arguments:
        out: the folder for ``results.json``, the kept models and ``ablation.png`` (created if missing).
        labels: configurations, keys of :data:`CONFIGURATIONS` (None: all).
        seeds: training seeds, distinct integers in [0, 2³²) (None: 1, 2, 3).
        epochs: epochs per run (None: :data:`DEFAULTS`, 20 for digits, 3 for patches).
        n_train: training images, the first N: digits 64..1500 (the other 297 are held out:
            :func:`invattn.data.digits_density_split`), patches 64..4160 (the held-out patches are other
            photographs': :func:`invattn.data.photograph_patches`); None: all of them.
        keep: which trained models to save: ``"first"`` (the first seed's), ``"all"`` or ``"none"``.
        progress_bar: show training progress bars.
        plot: write ``ablation.png`` (:func:`plot_ablation`).
        data: ``"digits"`` (8×8 digits, N = 16 attention positions) or ``"patches"`` (32×32 photograph patches,
            N = 256, as on CIFAR-10).
    Returns:
        the results, as in ``out/results.json``: ``{"settings": {...}, "runs": [run record, ...]}``.
    Raises:
        ValueError: for an unknown data set, an unknown or repeated label, a seed list that is empty, repeats or
            holds something other than integers in [0, 2³²), ``epochs`` < 1, ``n_train`` outside its range, an
            unknown ``keep``, or a ``results.json`` in ``out`` with other settings or damaged.
        TypeError: for a non-integer ``epochs`` or ``n_train``.
    """
    check_choice(data, "data", DATA)
    epochs = DEFAULTS[data]["epochs"] if epochs is None else epochs
    n_train = DEFAULTS[data]["n_train"] if n_train is None else n_train
    labels, seeds = _check_run(labels, seeds, epochs, n_train, keep, data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    results = _open_results(path, _settings(data, epochs, n_train))
    done = {(r["label"], r["seed"]) for r in results["runs"]}
    for seed in seeds:
        for label in labels:
            if (label, seed) in done:
                continue
            model, record, seconds = _train_run(label, seed, n_train, epochs, progress_bar, data)
            if model is not None and (keep == "all" or (keep == "first" and seed == seeds[0])):
                save_checkpoint(
                    out / f"{label}-seed{seed}.pt",
                    dict(model=model.state_dict(), model_config=model_config(label, data).to_dict(), record=record),
                )
            results["runs"].append(record)
            _write_json(path, results)
            outcome = (
                f"training diverged at step {record['diverged_at_step']}"
                if model is None
                else f"held-out {record['test_bits_per_dim']:.4f} bits/dim"
            )
            print(f"{label:>18} seed {seed}: {outcome}, {seconds:.0f} s", flush=True)
    if plot:
        plot_ablation(results, out / "ablation.png")
    return results
