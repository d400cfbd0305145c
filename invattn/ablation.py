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

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ._files import load_saved_model, read_weights, write_atomically
from ._validation import check_choice, check_model, check_positive_int
from .attention import KINDS
from .data import DIGITS_HELD_OUT_FROM, dequantize, digits_density_split
from .lipschitz import estimate_lipschitz
from .models import PRESETS, FlowConfig, ResidualFlow
from .train import save_checkpoint, train

__all__ = [
    "CONFIGURATIONS",
    "DEFAULT_EPOCHS",
    "held_out_bits_per_dim",
    "load_model",
    "saved_record",
    "run",
    "run_is_reliable",
    "summary",
    "format_summary",
    "plot_ablation",
    "main",
]

# label → (attention kind in the first scale, variant)
CONFIGURATIONS: dict[str, tuple[str | None, str]] = {
    "none": (None, "certified"),
    **{kind: (kind, "certified") for kind in KINDS},
    "generative-concat": ("concat", "generative"),
    "generative-dot": ("dot", "generative"),
}
DEFAULT_EPOCHS = 20
DEFAULT_N_TRAIN = DIGITS_HELD_OUT_FROM  # every digit before the held-out ones
EVALUATION = dict(estimator="series", n_terms=20, n_probes=4)
RESULTS = "results.json"


def model_config(label: str) -> FlowConfig:
    """The digits preset with the attention of configuration ``label`` (a key of :data:`CONFIGURATIONS`)."""
    kind, variant = CONFIGURATIONS[check_choice(label, "configuration", tuple(CONFIGURATIONS))]
    base = PRESETS["digits"]
    return replace(base, attention=(kind,) + (None,) * (len(base.blocks) - 1), attention_variant=variant)


def held_out_images() -> torch.Tensor:
    """The 297 held-out digits of :func:`invattn.data.digits_density_split` (never trained on), [297, 1, 8, 8] in
    [−½, ½), dequantised with seed 0."""
    images = digits_density_split()[1]
    return dequantize((images * 255).round() / 255, torch.Generator().manual_seed(0))


@torch.no_grad()
def held_out_bits_per_dim(model: ResidualFlow) -> float:
    """Mean bits/dim of the 297 held-out digits under ``model``: the series log-det, 20 terms, 4 probes, probe seed 0.

    Computed in eval mode; the model's mode and the caller's random state are restored. A finite number is only
    meaningful when every block is a contraction: for an uncertified attention block whose Lipschitz constant exceeds
    1 the series need not converge and the number can be anything (see :func:`run_is_reliable`).

    Arguments:
        model: a digits density model (:class:`invattn.models.ResidualFlow` on [B, 1, 8, 8]), on any device.
    Returns:
        the mean held-out bits/dim (lower is better), a float.
    Raises:
        TypeError: for anything but a ResidualFlow (a model wrapped in DataParallel included: pass ``.module``).
    """
    check_model(model, "model", ResidualFlow)
    device = next(model.parameters()).device
    x = held_out_images().to(device)
    was_training = model.training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        try:
            return float(model.eval().bits_per_dim(x, **EVALUATION).mean())
        finally:
            model.train(was_training)


def attention_lipschitz(model: ResidualFlow) -> tuple[float, float]:
    """(certified bound, measured Lipschitz constant) of the first attention branch on held-out features;
    (nan, nan) without attention. The bound is ``inf`` for an uncertified variant. ``TypeError`` as
    :func:`held_out_bits_per_dim`."""
    check_model(model, "model", ResidualFlow)
    blocks = model.attention_blocks()
    if not blocks:
        return math.nan, math.nan
    features = model.attention_inputs(held_out_images()[:8].to(next(model.parameters()).device))[0]
    g = blocks[0].g
    return float(blocks[0].branch_lipschitz_bound()), float(estimate_lipschitz(g, features.detach(), n_iterations=30))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ResidualFlow:
    """The trained model saved by the ablation at ``path``, in eval mode (certificates recomputed from its weights).

    Loaded with ``weights_only=True`` (tensors and plain values only: no code runs).

    Arguments:
        path: a ``<label>-seed<s>.pt`` file written by :func:`run`.
        device: where to load it (``"cpu"``, ``"cuda"``, ...).
    Returns:
        the :class:`invattn.models.ResidualFlow`, in eval mode, on ``device``.
    Raises:
        FileNotFoundError: when ``path`` does not exist (the message gives the command that writes it).
        ValueError: when it is not a model saved by the ablation (pickled objects, missing keys, a classifier).
    """
    path = Path(path)
    return load_saved_model(
        path,
        device,
        lambda config: ResidualFlow(FlowConfig.from_dict(config)),
        missing=f"no trained model at {path}; write it with: python -m invattn.ablation --out {path.parent}",
        foreign=f"{path} is not a model saved by python -m invattn.ablation",
        task="density",
    )[0]


def saved_record(path: str | Path) -> dict:
    """The run record saved beside a model by :func:`run` (label, seed, held-out bits/dim, training curve, …).

    Arguments:
        path: a ``<label>-seed<s>.pt`` file written by :func:`run`.
    Returns:
        a copy of its record: a dict with ``label``, ``seed``, ``test_bits_per_dim``, ``train_curve``,
        ``attention_bound``, ``attention_measured`` and ``seconds``.
    Raises:
        FileNotFoundError: when ``path`` does not exist (the message gives the command that writes it).
        ValueError: when it is not a model saved by the ablation or holds no run record.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained model at {path}; write it with: python -m invattn.ablation --out {path.parent}"
        )
    try:
        state = read_weights(path)
    except ValueError as error:
        raise ValueError(f"{path} is not a model saved by python -m invattn.ablation: {error}") from None
    if not isinstance(state.get("record"), dict):
        raise ValueError(f"{path} is not a model saved by python -m invattn.ablation: it holds no run record")
    return dict(state["record"])


def run_is_reliable(record: dict) -> tuple[bool, str]:
    """Whether a run's held-out bits/dim can be trusted, and why not.

    It cannot when the number is not finite, when the training loss left the possible range (bits/dim of 8-bit data
    is ≥ 0; a negative or non-finite value means the log-det series diverged during training), or when the trained
    attention's measured Lipschitz constant is ≥ 1 (then x + a(x) need not be invertible and its log-det series need
    not converge).

    Arguments:
        record: a run record (:func:`saved_record`, or an entry of ``results["runs"]``).
    Returns:
        (reliable, the reason it is not: "" when reliable).
    Raises:
        KeyError: when the record lacks ``train_curve``, ``test_bits_per_dim`` or ``attention_measured``.
    """
    curve = record["train_curve"]
    if not math.isfinite(record["test_bits_per_dim"]):
        return False, "held-out bits/dim not finite"
    if not all(math.isfinite(v) and v >= 0 for v in curve):
        return False, f"training bits/dim left [0, ∞) (down to {min(curve):.3g}): the log-det series diverged"
    if not (record["attention_measured"] < 1 or math.isnan(record["attention_measured"])):
        return False, f"trained attention's measured Lipschitz constant {record['attention_measured']:.3g} ≥ 1"
    return True, ""


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


def _check_run(labels, seeds, epochs: int, n_train: int, keep: str) -> tuple[list[str], list[int]]:
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
    if n_train > DIGITS_HELD_OUT_FROM:
        raise ValueError(
            f"n_train={n_train}: at most {DIGITS_HELD_OUT_FROM} (digits {DIGITS_HELD_OUT_FROM}– are held out)"
        )
    return labels, seeds


def _open_results(path: Path, settings: dict) -> dict:
    """The results already in ``path`` (checked to have ``settings``), or an empty record of them."""
    results = _read_results(path) if path.is_file() else dict(settings=settings, runs=[])
    if results["settings"] != settings:
        raise ValueError(
            f"{path} holds an ablation with other settings ({results['settings']}); "
            f"use another --out or the same settings ({settings})"
        )
    return results


def _train_run(
    label: str, seed: int, n_train: int, epochs: int, progress_bar: bool
) -> tuple[ResidualFlow, dict, float]:
    """Train one configuration with one seed: the model in eval mode, its run record and the wall seconds taken."""
    config = model_config(label)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        trained = train(
            "digits",
            folder,
            progress_bar=progress_bar,
            model_overrides=dict(attention=config.attention, attention_variant=config.attention_variant),
            training_overrides=dict(n_train=n_train, epochs=epochs, samples_per_epoch=0, seed=seed),
        )
        seconds = time.perf_counter() - start
    model = trained["model"].eval()
    bound, measured = attention_lipschitz(model)
    record = dict(
        label=label,
        seed=seed,
        test_bits_per_dim=held_out_bits_per_dim(model),
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
    epochs: int = DEFAULT_EPOCHS,
    n_train: int = DEFAULT_N_TRAIN,
    keep: str = "first",
    progress_bar: bool = True,
    plot: bool = True,
) -> dict:
    """Train every configuration in ``labels`` for every seed in ``seeds`` into ``out`` (the module's ablation).

    A run already in ``out/results.json`` is not trained again (so its model is saved only if it was then).

    Arguments:
        out: the folder for ``results.json``, the kept models and ``ablation.png`` (created if missing).
        labels: configurations, keys of :data:`CONFIGURATIONS` (None: all).
        seeds: training seeds, distinct integers in [0, 2³²) (None: 1, 2, 3).
        epochs: epochs per run.
        n_train: training digits, the first N, 64..1500 (the other 297 are held out:
            :func:`invattn.data.digits_density_split`).
        keep: which trained models to save: ``"first"`` (the first seed's), ``"all"`` or ``"none"``.
        progress_bar: show training progress bars.
        plot: write ``ablation.png`` (:func:`plot_ablation`).
    Returns:
        the results, as in ``out/results.json``: ``{"settings": {...}, "runs": [run record, ...]}``.
    Raises:
        ValueError: for an unknown or repeated label, a seed list that is empty, repeats or holds something other
            than integers in [0, 2³²), ``epochs`` < 1, ``n_train`` outside 64..1500, an unknown ``keep``, or a
            ``results.json`` in ``out`` with other settings or damaged.
        TypeError: for a non-integer ``epochs`` or ``n_train``.
    """
    labels, seeds = _check_run(labels, seeds, epochs, n_train, keep)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    results = _open_results(path, dict(preset="digits", epochs=epochs, n_train=n_train, evaluation=EVALUATION))
    done = {(r["label"], r["seed"]) for r in results["runs"]}
    for seed in seeds:
        for label in labels:
            if (label, seed) in done:
                continue
            model, record, seconds = _train_run(label, seed, n_train, epochs, progress_bar)
            if keep == "all" or (keep == "first" and seed == seeds[0]):
                save_checkpoint(
                    out / f"{label}-seed{seed}.pt",
                    dict(model=model.state_dict(), model_config=model_config(label).to_dict(), record=record),
                )
            results["runs"].append(record)
            _write_json(path, results)
            print(
                f"{label:>18} seed {seed}: held-out {record['test_bits_per_dim']:.4f} bits/dim, {seconds:.0f} s",
                flush=True,
            )
    if plot:
        plot_ablation(results, out / "ablation.png")
    return results


def summary(results: dict) -> list[dict]:
    """Per configuration: mean and sample standard deviation of held-out bits/dim over seeds, and mean − mean(none).

    Every seed counts: a configuration with a non-finite held-out number has no mean (nan), and unreliable runs
    (:func:`run_is_reliable`) are counted, not left out.

    Arguments:
        results: what :func:`run` returns (or ``results.json``): its ``runs`` are read.
    Returns:
        one dict per configuration present, in :data:`CONFIGURATIONS` order, with ``label``, ``n`` (seeds),
        ``unreliable`` (how many runs) and ``reasons``, ``mean`` and ``std`` of held-out bits/dim, ``low`` and
        ``high`` (the seeds' range), ``vs_none`` (mean − the ``none`` mean; negative: better; nan without ``none``),
        ``bound`` and ``measured`` (the largest attention bound and measured Lipschitz constant over seeds).
    Raises:
        KeyError: when a run record lacks one of its fields.

    >>> nan = float("nan")
    >>> def record(label, seed, bpd, bound, measured):
    ...     return dict(label=label, seed=seed, test_bits_per_dim=bpd, train_curve=[3.0, 2.5],
    ...                 attention_bound=bound, attention_measured=measured)
    >>> results = {"runs": [record("none", 1, 2.0, nan, nan), record("none", 2, 2.2, nan, nan),
    ...                     record("concat", 1, 1.9, 0.9, 0.4), record("concat", 2, 2.0, 0.9, 0.5)]}
    >>> [(r["label"], r["n"], round(r["mean"], 2), round(r["vs_none"], 2), r["bound"]) for r in summary(results)]
    [('none', 2, 2.1, 0.0, nan), ('concat', 2, 1.95, -0.15, 0.9)]
    """
    by_label: dict[str, list[dict]] = {}
    for record in results["runs"]:
        by_label.setdefault(record["label"], []).append(record)
    baseline = math.nan
    if "none" in by_label and all(math.isfinite(r["test_bits_per_dim"]) for r in by_label["none"]):
        baseline = statistics.mean(r["test_bits_per_dim"] for r in by_label["none"])
    rows = []
    for label in [name for name in CONFIGURATIONS if name in by_label]:
        values = [r["test_bits_per_dim"] for r in by_label[label]]
        # every seed counts: a run that diverged is not left out (that would flatter its configuration); it is
        # counted in ``unreliable``, and a configuration with any such run has no trustworthy mean
        unreliable = [run_is_reliable(r)[1] for r in by_label[label] if not run_is_reliable(r)[0]]
        finite = all(math.isfinite(v) for v in values)
        mean = statistics.mean(values) if finite else math.nan
        rows.append(
            dict(
                label=label,
                n=len(values),
                unreliable=len(unreliable),
                reasons=unreliable,
                mean=mean,
                std=statistics.stdev(values) if finite and len(values) > 1 else math.nan,
                low=min(values),
                high=max(values),
                vs_none=mean - baseline,
                bound=max(r["attention_bound"] for r in by_label[label]),
                measured=max(r["attention_measured"] for r in by_label[label]),
            )
        )
    return rows


def format_summary(results: dict) -> str:
    """The :func:`summary` as a text table, one line per configuration, unreliable seeds flagged.

    Arguments:
        results: what :func:`run` returns (or ``results.json``).
    Returns:
        the table: configuration, seeds, held-out bits/dim mean ± std (min–max), vs none, the attention's
        certified Lipschitz bound (``inf`` for an uncertified variant, ``—`` without attention) and its measured
        constant.
    Raises:
        KeyError: when a run record lacks one of its fields.
    """
    lines = [
        f"{'attention':>18} | seeds | held-out bits/dim: mean ± std  (min–max)  | vs none | Lip bound | measured Lip"
    ]
    lines.append("-" * len(lines[0]))
    for row in summary(results):
        spread = f"{row['mean']:.4f} ± {row['std']:.4f}  ({row['low']:.4f}–{row['high']:.4f})"
        bound = "—" if math.isnan(row["bound"]) else ("inf" if math.isinf(row["bound"]) else f"{row['bound']:.3f}")
        measured = "—" if math.isnan(row["measured"]) else f"{row['measured']:.2e}"
        flagged = f"  ({row['unreliable']} of {row['n']} seeds unreliable)" if row["unreliable"] else ""
        lines.append(
            f"{row['label']:>18} | {row['n']:>5} | {spread:>41} | {row['vs_none']:+.4f} | {bound:>9} | "
            f"{measured:>12}{flagged}"
        )
    return "\n".join(lines)


def _plot_held_out(ax, results: dict, rows: list[dict], colours: dict[str, str]) -> None:
    """The left panel: held-out bits/dim per configuration, each seed a dot, the mean a diamond ± the seeds' std."""
    # points with error bars, not bars: the axis does not start at 0, so a bar's length would exaggerate differences
    for i, row in enumerate(rows):
        values = [r["test_bits_per_dim"] for r in results["runs"] if r["label"] == row["label"]]
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            ax.plot([i + 0.12] * len(finite), finite, "o", color=colours[row["label"]], ms=3.5, alpha=0.6)
        if finite and math.isfinite(row["mean"]):
            std = row["std"] if math.isfinite(row["std"]) else None
            ax.errorbar(i - 0.12, row["mean"], yerr=std, fmt="D", color=colours[row["label"]], ms=5, capsize=3, lw=1.2)
        if row["unreliable"]:  # above the configuration's highest value, clear of the neighbours' labels
            ax.annotate(
                f"{row['unreliable']} of {row['n']}\nunreliable",
                (i, max(finite, default=row["mean"])),
                xytext=(0, 5),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                color="C3",
            )
    if any(row["unreliable"] for row in rows):
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom, top + 0.12 * (top - bottom))  # room for the labels above the highest points
    if rows and rows[0]["label"] == "none":
        ax.axhline(rows[0]["mean"], color="0.3", lw=0.8, ls="--", label="no attention (mean)")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=35, ha="right", fontsize=8)
    ax.set(
        ylabel="held-out bits/dim (lower is better)\n◆ mean ± std over seeds, ● each seed",
        title=f"digits, {results['settings']['epochs']} epochs, {max((r['n'] for r in rows), default=0)} seeds",
    )


def _smoothed_curves(results: dict, rows: list[dict]) -> dict[str, tuple[int, torch.Tensor]]:
    """Per configuration: (window, its training curve averaged over seeds and smoothed over a one-epoch window)."""
    smoothed = {}
    for row in rows:
        runs = [r["train_curve"] for r in results["runs"] if r["label"] == row["label"]]
        length = min(len(curve) for curve in runs)  # equal for one ablation's settings; cut if a file says otherwise
        steps_per_epoch = max(1, length // results["settings"]["epochs"])
        curves = torch.tensor([curve[:length] for curve in runs], dtype=torch.float64)
        mean = curves.mean(0)  # a seed whose training bits/dim went non-finite makes the curve stop there
        window = max(1, min(steps_per_epoch, len(mean)))
        smoothed[row["label"]] = (window, torch.nn.functional.avg_pool1d(mean[None, None], window, stride=1)[0, 0])
    return smoothed


def _curve_label(label: str, curve: torch.Tensor, low: float | None, high: float | None) -> str:
    """The legend entry of a curve, saying when it leaves the certified configurations' range or is not finite."""
    finite = curve[torch.isfinite(curve)]
    if high is None:
        return label
    if not len(finite):
        return label + " (not finite)"
    span = high - low
    if float(finite.max()) > high + span or float(finite.min()) < low - span or len(finite) < len(curve):
        return label + f" (off scale: {float(finite.min()):.2g} to {float(finite.max()):.2g})"
    return label


def _plot_training_curves(ax, results: dict, rows: list[dict], colours: dict[str, str]) -> None:
    """The right panel: each configuration's seed-mean training curve; uncertified ones dashed, scaled to the rest."""
    smoothed = _smoothed_curves(results, rows)
    # the y-range of the certified configurations (and none): a diverging uncertified curve is marked, not drawn to
    # scale
    inside = [
        v
        for label, (_, curve) in smoothed.items()
        if CONFIGURATIONS[label][1] == "certified"
        for v in curve.tolist()
        if math.isfinite(v)
    ]
    low, high = (min(inside), max(inside)) if inside else (None, None)
    for row in rows:
        window, curve = smoothed[row["label"]]
        ax.plot(
            range(window, window + len(curve)),
            curve.numpy(),
            lw=1.2,
            color=colours[row["label"]],
            label=_curve_label(row["label"], curve, low, high),
            ls="--" if CONFIGURATIONS[row["label"]][1] != "certified" else "-",
        )
    if low is not None:
        ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set(xlabel="step", ylabel="training bits/dim (seed mean, 1-epoch window)", title="training curves")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_ablation(results: dict, path: str | Path | None = None, figure=None):
    """Two panels: held-out bits/dim per configuration and the training curves.

    Left: each seed a dot, the mean a diamond with the seeds' standard deviation as error bars (lower is better).
    Right: the training curves (mean over seeds, smoothed over an epoch); uncertified ones dashed, and one that
    leaves the certified configurations' range is marked in its legend entry rather than drawn to scale.

    Arguments:
        results: what :func:`run` returns (or ``results.json``), with its ``settings``.
        path: where to save the figure (None: not saved).
        figure: a matplotlib Figure to draw into (e.g. from ``plt.figure`` in a notebook; None: a new bare Figure).
    Returns:
        the matplotlib Figure.
    """
    from matplotlib.figure import Figure

    rows = summary(results)
    fig = Figure(figsize=(13.5, 4.2)) if figure is None else figure
    left, right = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=(1.1, 1)))
    colours = {row["label"]: f"C{i}" for i, row in enumerate(rows)}
    _plot_held_out(left, results, rows, colours)
    _plot_training_curves(right, results, rows, colours)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def main(argv: list[str] | None = None) -> None:
    """``python -m invattn.ablation --out FOLDER``: run the ablation (:func:`run`) and print :func:`format_summary`.

    Arguments:
        argv: the command-line arguments (None: ``sys.argv[1:]``): ``--out`` (required), ``--configs``, ``--seeds``,
            ``--epochs``, ``--n-train``, ``--keep`` and ``--no-progress``, as :func:`run`'s arguments.
    Raises:
        SystemExit: (argparse) for a bad argument, with :func:`run`'s message.
    """
    parser = argparse.ArgumentParser(prog="python -m invattn.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for results.json, the trained models and ablation.png")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGURATIONS), help="configurations (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="training seeds (default 1 2 3)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs per run (default {DEFAULT_EPOCHS})")
    parser.add_argument(
        "--n-train",
        type=int,
        default=DEFAULT_N_TRAIN,
        help=f"training digits, the first N (default and most {DEFAULT_N_TRAIN}; the other 297 are held out)",
    )
    parser.add_argument(
        "--keep",
        choices=("first", "all", "none"),
        default="first",
        help="which seeds' trained models to save (default: the first)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        results = run(
            args.out, args.configs, args.seeds, args.epochs, args.n_train, args.keep, progress_bar=not args.no_progress
        )
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    print(format_summary(results))


if __name__ == "__main__":
    main()
