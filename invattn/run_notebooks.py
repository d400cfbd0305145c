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
    """The lessons ``NN_name.ipynb`` in order; ``only`` keeps those whose name starts with it."""
    lessons = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        chosen = [p for p in lessons if p.name.startswith(only)]
        if not chosen:
            names = ", ".join(p.stem for p in lessons) or "none"
            raise SystemExit(f"no lesson matches NB={only!r}; the lessons are: {names}")
        return chosen
    return lessons


def parse_parameters(pairs: list[list[str]]) -> dict:
    """``-p NAME VALUE`` pairs; values are read as YAML, as papermill's own command line does."""
    return {name: yaml.safe_load(value) for name, value in pairs}


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
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--folder", type=Path, default=NOTEBOOKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    parameters = parse_parameters(args.parameter)
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
