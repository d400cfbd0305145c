"""Execute the lessons headless, in order: ``python -m invattn.run_notebooks [--only NN] [-p NAME VALUE ...]``.

With default parameters each executed notebook is saved in place, outputs included (what the reader
sees, and what nbval compares). With ``-p`` overrides the result goes to ``notebooks/runs/`` instead,
so a custom run (a GPU, a real data set) never overwrites the stored reference outputs.

The kernels run with :data:`invattn.lesson.REPRODUCIBLE_ENV` (one CPU thread, the same vector instructions on every
x86 machine). A re-run of an unchanged lesson leaves its file untouched: papermill's timestamps are dropped, widget
model ids are renamed to ids that depend only on the notebook (:func:`stable_widget_ids`), progress lines carry no
rate or elapsed time, and a run whose outputs equal the stored ones except for timings (a number with a unit of
time, or a ratio of timings, within a factor 2 of the stored one: the tolerance of a lesson's "about T s to run") keeps
the stored file
(:func:`same_but_timings`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nbformat
import yaml

from ._notebooks import WIDGET_STATE, WIDGET_VIEW, lesson_notebooks
from .lesson import HEADLESS_ENV

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def find_notebooks(folder: Path, only: str | None) -> list[Path]:
    """The lessons ``NN_name.ipynb`` and their appendices ``NNa_name.ipynb`` in order; ``only`` keeps those whose name
    starts with it (``SystemExit`` naming the lessons when none does)."""
    try:
        return lesson_notebooks(folder, only or None)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def _scalar(text: str):
    """One value as papermill's own ``-p`` reads it: ``True``, ``False`` and ``None`` are themselves, then an int,
    then a float (``1e-3`` → 0.001, ``inf``), else the text as it is (``cuda``, ``none``, ``true``)."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def _typed(node):
    """A structure of texts (YAML read without any implicit typing) with each text read by :func:`_scalar`."""
    if isinstance(node, list):
        return [_typed(item) for item in node]
    if isinstance(node, dict):
        return {_scalar(key): _typed(value) for key, value in node.items()}
    return _scalar(node)


def parse_value(text: str):
    """One ``-p NAME VALUE`` value, read as papermill's own ``-p`` reads it (``True``/``False``/``None``, then an
    int, then a float: ``1e-3`` → 0.001, ``0.001``, ``12``; anything else stays text: ``cuda``, ``none``,
    ``true``), plus, for the lessons' list parameters, a YAML list or mapping (``[0.5, 0.9]``, ``{a: 1e-3}``) whose
    every item is read by the same rule (``[1e-3, none]`` → [0.001, 'none']). Raises ``ValueError`` for a list or
    mapping that is not valid YAML."""
    if text.lstrip()[:1] in ("[", "{"):
        try:
            return _typed(yaml.load(text, Loader=yaml.BaseLoader))
        except yaml.YAMLError as error:
            raise ValueError(f"{text!r} looks like a list or mapping but is not valid YAML ({error})") from None
    return _scalar(text)


def parse_parameters(pairs: list[list[str]]) -> dict:
    """``-p NAME VALUE`` pairs → {name: value}, each value read by :func:`parse_value`."""
    return {name: parse_value(value) for name, value in pairs}


def check_known(notebook: Path, parameters: dict) -> None:
    """Refuse parameters the notebook's ``parameters`` cell does not define (papermill only warns)."""
    import papermill

    known = papermill.inspect_notebook(str(notebook))
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        allowed = ", ".join(f"{name} (default {info['default']})" for name, info in known.items())
        raise SystemExit(f"{notebook.name}: unknown parameter(s) {', '.join(unknown)}; this lesson takes: {allowed}")


def strip_run_metadata(nb) -> None:
    """Drop papermill's timestamps and durations (in place), and join a cell's consecutive outputs to the same
    stream (the kernel cuts printed text into pieces where its output buffer happened to be flushed), so an unchanged
    lesson re-saves unchanged."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        joined = []
        for output in cell.get("outputs", []):
            previous = joined[-1] if joined else None
            if (
                output.get("output_type") == "stream"
                and previous is not None
                and previous.get("output_type") == "stream"
                and previous.get("name") == output.get("name")
            ):
                previous["text"] = "".join(previous["text"]) + "".join(output["text"])
            else:
                joined.append(output)
        if cell.cell_type == "code":
            cell.outputs = joined


_MODEL_REFERENCE = re.compile(r"IPY_MODEL_([0-9a-zA-Z_-]+)")


def stable_widget_ids(nb, name: str) -> None:
    """Rename every widget model id of ``nb`` (in place) to one derived from ``name`` and the model's position: the
    models shown by the outputs in cell order, then those they refer to, depth first (fields in sorted order), then
    any others in the order of their content. Jupyter makes fresh random ids each run; these are the same each run
    of the same lesson, so the stored widget state (which GitHub's viewer draws) does not change on a re-run."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    views = [
        output["data"][WIDGET_VIEW]
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if WIDGET_VIEW in output.get("data", {})
    ]
    order: list[str] = []

    def visit(model_id: str) -> None:
        if model_id in order or model_id not in state:
            return
        order.append(model_id)
        for reference in _MODEL_REFERENCE.findall(json.dumps(state[model_id], sort_keys=True)):
            visit(reference)

    for view in views:
        visit(view.get("model_id", ""))
    masked = {
        key: _MODEL_REFERENCE.sub("IPY_MODEL_", json.dumps(model, sort_keys=True)) for key, model in state.items()
    }
    order += sorted((key for key in state if key not in order), key=lambda key: masked[key])
    renamed = {old: uuid.uuid5(uuid.NAMESPACE_URL, f"invattn/{name}/{i}").hex for i, old in enumerate(order)}
    if not renamed:
        return
    text = json.dumps(state)
    text = _MODEL_REFERENCE.sub(lambda m: "IPY_MODEL_" + renamed.get(m.group(1), m.group(1)), text)
    new_state = json.loads(text)
    nb.metadata["widgets"][WIDGET_STATE]["state"] = {renamed[key]: new_state[key] for key in order}
    for view in views:
        view["model_id"] = renamed.get(view.get("model_id"), view.get("model_id"))


# a duration: a plain decimal (not part of 1,500, 1.0e-05 or x4) and a unit of time that ends there (not "s.e.",
# "s=2" or "min(a, b)"); or a speed-up, "13× faster"
_TIME = re.compile(r"(?<![\w.,+\-])(\d+(?:\.\d+)?)(\s*(?:ms|µs|s|min)(?![\w(=]|\.\w)|× (?:faster|slower)\b)")
_SECONDS = {"ms": 1e-3, "µs": 1e-6, "s": 1.0, "min": 60.0}
TIMING_FACTOR = 2.0
"""How far a timing may move before a re-run rewrites the stored lesson (the factor ``python -m invattn.course``
allows between a lesson's "about T s to run" and its stored run)."""


def same_but_timings(new, stored, factor: float = TIMING_FACTOR) -> bool:
    """Whether notebook ``new`` equals ``stored`` except for timings in its outputs' text: each number followed by a
    unit of time (``12 ms``, ``3.5 s``, ``1.2 min``: compared in seconds, so ``95 s`` matches ``1.6 min``) or a ratio
    of two (``13× faster``) within ``factor`` of the stored one, however many spaces pad it (a table's column widens
    with its widest timing); everything else (sources, images, every other number) byte for byte."""

    def split(nb):
        nb, times = nbformat.from_dict(json.loads(json.dumps(nb))), []  # a deep copy

        def mask(text):
            for value, unit in _TIME.findall(text):  # durations in seconds, so 95 s and 1.6 min compare
                times.append(float(value) * _SECONDS.get(unit.strip(), 1.0))
            masked = _TIME.sub(lambda m: "<ratio>" if "×" in m.group(2) else "<time>", text)
            return re.sub(r" +<(time|ratio)>", r" <\1>", masked)  # a table's column padded to a wider timing

        for cell in nb.cells:
            for output in cell.get("outputs", []):
                if "text" in output:
                    output["text"] = mask("".join(output["text"]))
                for kind in ("text/plain", "text/html", "text/markdown"):
                    if kind in output.get("data", {}):
                        output["data"][kind] = mask("".join(output["data"][kind]))
        return json.dumps(nb, sort_keys=True), times

    new_text, new_times = split(new)
    stored_text, stored_times = split(stored)
    return new_text == stored_text and all(
        (a == b == 0) or (min(a, b) > 0 and max(a, b) / min(a, b) <= factor) for a, b in zip(new_times, stored_times)
    )


def run(notebook: Path, parameters: dict, output: Path) -> tuple[float, bool]:
    """Execute ``notebook`` with ``parameters`` into ``output``; returns (seconds, whether ``output`` was written:
    False when the run equals the stored ``output`` but for timings). Raises ``SystemExit`` naming the failed cell
    (the partly executed notebook goes to ``runs/FAILED_<name>``)."""
    import papermill

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        executed = Path(scratch) / notebook.name
        try:
            papermill.execute_notebook(
                str(notebook),
                str(executed),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(notebook.parent),
                progress_bar=False,
            )
        except papermill.PapermillExecutionError as error:
            failed = notebook.parent / "runs" / f"FAILED_{notebook.name}"
            failed.parent.mkdir(exist_ok=True)
            if executed.exists():
                os.replace(executed, failed)
            raise SystemExit(
                f"\n{notebook.name} failed in cell {error.exec_count}:\n{error.ename}: {error.evalue}\n"
                f"(the partly executed notebook is in {failed})"
            ) from None
        stale = notebook.parent / "runs" / f"FAILED_{notebook.name}"
        stale.unlink(missing_ok=True)
        result = nbformat.read(executed, as_version=4)
        strip_run_metadata(result)
        stable_widget_ids(result, notebook.name)
        if output.exists() and same_but_timings(result, nbformat.read(output, as_version=4)):
            return time.perf_counter() - start, False  # the stored file stays, byte for byte
        nbformat.write(result, executed)
        output.parent.mkdir(parents=True, exist_ok=True)
        os.replace(executed, output)  # atomic: a stored notebook is never left half-written
    return time.perf_counter() - start, True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run only the lessons whose file name starts with this (e.g. 04)")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a lesson parameter, read as papermill's -p reads it: 1e-3 and 0.001 are numbers, True, "
        "False and None are themselves, anything else is text (cuda, none); [0.5, 0.9] is a list "
        "whose items are read the same way",
    )
    parser.add_argument("--folder", type=Path, default=NOTEBOOKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        parameters = parse_parameters(args.parameter)
    except ValueError as error:
        parser.error(str(error))
    lessons = find_notebooks(args.folder, args.only)
    if not lessons:
        raise SystemExit(f"no lessons found in {args.folder}")
    for notebook in lessons:
        check_known(notebook, parameters)
    os.environ.update(HEADLESS_ENV)  # the kernels inherit it: text progress bars, the same numbers on every machine
    if parameters:  # a run with custom parameters must not overwrite the stored lessons' figures
        os.environ["INVATTN_FIGURES"] = str(args.folder / "runs" / "figures")
    total = 0.0
    for number, notebook in enumerate(lessons, 1):
        if parameters:
            tag = "-".join(f"{k}={v}" for k, v in parameters.items()).replace("/", "_")
            output = notebook.parent / "runs" / f"{notebook.stem}--{tag}.ipynb"
        else:
            output = notebook
        print(f"[{number}/{len(lessons)}] {notebook.name} ...", flush=True)
        seconds, written = run(notebook, parameters, output)
        total += seconds
        where = f"-> {output.relative_to(args.folder.parent)}" if written else "(unchanged: the stored file is kept)"
        print(f"[{number}/{len(lessons)}] {notebook.name} done in {seconds:.1f} s {where}", flush=True)
    print(f"all {len(lessons)} lesson(s) ran in {total:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
