"""The ablation's report: the summary per configuration and the figure (held-out bits/dim, training curves)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch

from .experiment import CONFIGURATIONS, run_is_reliable

__all__ = ["summary", "format_summary", "plot_ablation"]


def _paired(runs: list[dict], baseline: list[dict]) -> tuple[float, float, int]:
    """(mean, sample std, count) over the seeds both lists ran of bits/dim(run, s) − bits/dim(baseline, s)."""
    reference = {r["seed"]: r["test_bits_per_dim"] for r in baseline}
    differences = [r["test_bits_per_dim"] - reference[r["seed"]] for r in runs if r["seed"] in reference]
    if not differences or not all(math.isfinite(d) for d in differences):
        return math.nan, math.nan, len(differences)
    spread = statistics.stdev(differences) if len(differences) > 1 else math.nan
    return statistics.mean(differences), spread, len(differences)


def _largest(values) -> float:
    """The largest of the non-nan values (inf counts), nan if every one is nan (a diverged run measures nothing)."""
    known = [v for v in values if not math.isnan(v)]
    return max(known) if known else math.nan


def summary(results: dict) -> list[dict]:
    """Per configuration: mean and sample standard deviation of held-out bits/dim over seeds, mean − mean(none), and
    the paired difference with no attention seed by seed.

    Every seed counts: a configuration with a non-finite held-out number has no mean (nan), and unreliable runs
    (:func:`run_is_reliable`) are counted, not left out. The paired difference takes, for each seed s that both the
    configuration and ``none`` ran, d_s = bits/dim(configuration, seed s) − bits/dim(none, seed s): the same seed
    trains both on the same images in the same order, so what the seeds share cancels and the spread of d_s is the
    noise of the comparison itself (often smaller than either configuration's own spread).

    Arguments:
        results: what :func:`run` returns (or ``results.json``): its ``runs`` are read.
    Returns:
        one dict per configuration present, in :data:`CONFIGURATIONS` order, with ``label``, ``n`` (seeds),
        ``unreliable`` (how many runs) and ``reasons``, ``mean`` and ``std`` of held-out bits/dim, ``low`` and
        ``high`` (the seeds' range), ``vs_none`` (mean − the ``none`` mean; negative: better; nan without ``none``),
        ``bound`` and ``measured`` (the largest attention bound and measured Lipschitz constant over the seeds that
        have one; nan when none has),
        ``paired`` and ``paired_std`` (the mean and sample standard deviation over seeds of d_s; nan without ``none``,
        for a non-finite d_s, and the std for fewer than 2 pairs), ``paired_n`` (the number of seeds paired).
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
    >>> [(r["label"], round(r["paired"], 2), round(r["paired_std"], 3), r["paired_n"]) for r in summary(results)]
    [('none', 0.0, 0.0, 2), ('concat', -0.15, 0.071, 2)]
    """
    by_label: dict[str, list[dict]] = {}
    for record in results["runs"]:
        by_label.setdefault(record["label"], []).append(record)
    baseline = math.nan
    if "none" in by_label and all(math.isfinite(r["test_bits_per_dim"]) for r in by_label["none"]):
        baseline = statistics.mean(r["test_bits_per_dim"] for r in by_label["none"])
    rows = []
    for label in [name for name in CONFIGURATIONS if name in by_label]:
        paired, paired_std, paired_n = _paired(by_label[label], by_label.get("none", []))
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
                bound=_largest(r["attention_bound"] for r in by_label[label]),
                measured=_largest(r["attention_measured"] for r in by_label[label]),
                paired=paired,
                paired_std=paired_std,
                paired_n=paired_n,
            )
        )
    return rows


def _bits(value: float, sign: str = "") -> str:
    """A bits/dim figure for the table: 4 decimals, or 3 significant digits in exponent form from 10⁴ on (a diverged
    series can reach 10²⁶), so the columns stay readable."""
    return f"{value:{sign}.4f}" if not math.isfinite(value) or abs(value) < 1e4 else f"{value:{sign}.2e}"


def format_summary(results: dict) -> str:
    """The :func:`summary` as a text table, one line per configuration, unreliable seeds flagged.

    Arguments:
        results: what :func:`run` returns (or ``results.json``).
    Returns:
        the table: configuration, seeds, held-out bits/dim mean ± std (min–max), vs none (mean − mean of none), the
        paired difference with none seed by seed (mean ± std of d_s, :func:`summary`), the attention's certified
        Lipschitz bound (``inf`` for an uncertified variant, ``—`` without attention) and its measured constant.
    Raises:
        KeyError: when a run record lacks one of its fields.
    """
    lines = [
        f"{'attention':>18} | seeds | held-out bits/dim: mean ± std  (min–max)  | vs none | per-seed Δ ± std | "
        "Lip bound | measured Lip"
    ]
    lines.append("-" * len(lines[0]))
    for row in summary(results):
        spread = f"{_bits(row['mean'])} ± {_bits(row['std'])}  ({_bits(row['low'])}–{_bits(row['high'])})"
        bound = "—" if math.isnan(row["bound"]) else ("inf" if math.isinf(row["bound"]) else f"{row['bound']:.3f}")
        measured = "—" if math.isnan(row["measured"]) else f"{row['measured']:.2e}"
        flagged = f"  ({row['unreliable']} of {row['n']} seeds unreliable)" if row["unreliable"] else ""
        paired_std = "—" if math.isnan(row["paired_std"]) else _bits(row["paired_std"])
        paired = f"{_bits(row['paired'], '+')} ± {paired_std}"
        lines.append(
            f"{row['label']:>18} | {row['n']:>5} | {spread:>41} | {_bits(row['vs_none'], '+'):>7} | {paired:>16} | "
            f"{bound:>9} | {measured:>12}{flagged}"
        )
    return "\n".join(lines)


def _plot_held_out(ax, results: dict, rows: list[dict], colours: dict[str, str]) -> None:
    """The left panel: held-out bits/dim per configuration, each seed a dot, the mean a diamond ± the seeds' std."""
    # points with error bars, not bars: the axis does not start at 0, so a bar's length would exaggerate differences
    limits = _reliable_range(results)
    for i, row in enumerate(rows):
        values = [r["test_bits_per_dim"] for r in results["runs"] if r["label"] == row["label"]]
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            ax.plot([i + 0.12] * len(finite), finite, "o", color=colours[row["label"]], ms=3.5, alpha=0.6)
        if finite and math.isfinite(row["mean"]) and (limits is None or limits[0] <= row["mean"] <= limits[1]):
            std = row["std"] if math.isfinite(row["std"]) else None
            ax.errorbar(i - 0.12, row["mean"], yerr=std, fmt="D", color=colours[row["label"]], ms=5, capsize=3, lw=1.2)
        if row["unreliable"]:  # above the configuration's highest value, clear of the neighbours' labels
            ax.annotate(
                f"{row['unreliable']} of {row['n']}\nunreliable",
                (i, max(finite, default=row["mean"]) if limits is None else limits[1] - 0.25 * (limits[1] - limits[0])),
                xytext=(0, 5),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                color="C3",
            )
    if any(row["unreliable"] for row in rows) and limits is None:
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom, top + 0.12 * (top - bottom))  # room for the labels above the highest points
    if limits is not None:
        ax.set_ylim(*limits)
        _mark_off_scale(ax, results, rows, limits)
    if rows and rows[0]["label"] == "none":
        ax.axhline(rows[0]["mean"], color="0.3", lw=0.8, ls="--", label="no attention (mean)")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=35, ha="right", fontsize=8)
    ax.set(
        ylabel="held-out bits/dim (lower is better)\n◆ mean ± std over seeds, ● each seed",
        title=f"{results['settings'].get('data', 'digits')}, {results['settings']['epochs']} epochs, "
        f"{max((r['n'] for r in rows), default=0)} seeds",
    )


def _reliable_range(results: dict) -> tuple[float, float] | None:
    """The held-out panel's y-range when a number lies more than 20 times the certified runs' range beyond it (a
    diverged series can reach ±10²⁶ bits/dim): the reliable runs' range of no attention and the certified kinds (a
    finite bound), with room for the labels; None when every number fits the panel as it is."""
    reliable = [
        r["test_bits_per_dim"]
        for r in results["runs"]
        if not math.isinf(r["attention_bound"]) and run_is_reliable(r)[0] and math.isfinite(r["test_bits_per_dim"])
    ]
    if not reliable:
        return None
    low, high = min(reliable), max(reliable)
    span = max(high - low, 1e-3)
    values = [r["test_bits_per_dim"] for r in results["runs"] if math.isfinite(r["test_bits_per_dim"])]
    if all(low - 20 * span <= v <= high + 20 * span for v in values):
        return None
    return low - 0.3 * span, high + 0.8 * span


def _mark_off_scale(ax, results: dict, rows: list[dict], limits: tuple[float, float]) -> None:
    """A triangle at the panel's edge for each configuration with seeds' numbers beyond ``limits``, labelled with
    those numbers (its mean and spread, off the panel too, are not drawn)."""
    low, high = limits
    for i, row in enumerate(rows):
        values = [r["test_bits_per_dim"] for r in results["runs"] if r["label"] == row["label"]]
        for edge, marker, va, beyond in (
            (high, "^", "top", [v for v in values if v > high]),
            (low, "v", "bottom", [v for v in values if v < low]),
        ):
            if beyond:
                ax.plot(i + 0.12, edge, marker, color="0.3", ms=6, clip_on=False)
                text = "\n".join(f"{v:.3g}" for v in sorted(beyond, reverse=edge == high))
                ax.annotate(
                    text, (i + 0.12, edge), xytext=(-4, 0), textcoords="offset points", fontsize=6, va=va, ha="right"
                )


def _smoothed_curves(results: dict, rows: list[dict]) -> dict[str, tuple[int, torch.Tensor]]:
    """Per configuration: (window, its training curve averaged over seeds and smoothed over a one-epoch window)."""
    smoothed = {}
    for row in rows:
        runs = [r["train_curve"] for r in results["runs"] if r["label"] == row["label"]]
        # equal for one ablation's settings, but a run whose training diverged stops early: nan after its end
        length = max(len(curve) for curve in runs)
        steps_per_epoch = max(1, length // results["settings"]["epochs"])
        curves = torch.tensor([curve + [math.nan] * (length - len(curve)) for curve in runs], dtype=torch.float64)
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

    Left: each seed a dot, the mean a diamond with the seeds' standard deviation as error bars (lower is better);
    when a number lies far beyond the certified runs (a diverged series: up to ±10²⁶), the panel keeps their range
    and marks the numbers beyond it at its edge, with their values. Right: the training curves (mean over seeds,
    smoothed over an epoch); uncertified ones dashed, and one that leaves the certified configurations' range is
    marked in its legend entry rather than drawn to scale.

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
