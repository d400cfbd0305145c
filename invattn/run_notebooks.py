"""Execute the lessons headless, in order: ``python -m invattn.run_notebooks [--only NN] [-p NAME VALUE ...]``.

With default parameters each executed notebook is saved in place, outputs included (what the reader
sees, and what nbval compares). With ``-p`` overrides the result goes to ``notebooks/runs/`` instead,
so a custom run (a GPU, a real data set) never overwrites the stored reference outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def find_notebooks(folder: Path, only: str | None) -> list[Path]:
    """The lessons ``NN_name.ipynb`` and their appendices ``NNa_name.ipynb`` in order; ``only`` keeps those whose name starts with it."""
    lessons = sorted(p for p in folder.glob("[0-9][0-9]*_*.ipynb"))
    if only:
        chosen = [p for p in lessons if p.name.startswith(only)]
        if not chosen:
            names = ", ".join(p.stem for p in lessons) or "none"
            raise SystemExit(f"no lesson matches NB={only!r}; the lessons are: {names}")
        return chosen
    return lessons


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


def strip_run_metadata(path: Path) -> None:
    """Drop papermill's timestamps and durations so an unchanged lesson re-saves unchanged."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def run(notebook: Path, parameters: dict, output: Path) -> float:
    import papermill

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        executed = Path(scratch) / notebook.name
        try:
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=parameters, kernel_name="python3",
                cwd=str(notebook.parent), progress_bar=False,
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
        strip_run_metadata(executed)
        output.parent.mkdir(parents=True, exist_ok=True)
        os.replace(executed, output)  # atomic: a stored notebook is never left half-written
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run only the lessons whose file name starts with this (e.g. 04)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a lesson parameter, read as papermill's -p reads it: 1e-3 and 0.001 are numbers, True, "
                        "False and None are themselves, anything else is text (cuda, none); [0.5, 0.9] is a list "
                        "whose items are read the same way")
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
    os.environ["INVATTN_PLAIN_PROGRESS"] = "1"  # the kernels inherit it: text progress bars
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
        seconds = run(notebook, parameters, output)
        total += seconds
        print(f"[{number}/{len(lessons)}] {notebook.name} done in {seconds:.1f} s -> {output.relative_to(args.folder.parent)}", flush=True)
    print(f"all {len(lessons)} lesson(s) ran in {total:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
