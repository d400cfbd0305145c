"""Which PyTorch the library runs on: ``python -m invattn.compat`` (``make compat``) installs torch/torchvision pairs
into fresh virtual environments and runs the compatibility tests and one lesson in each.

By default three checks run, one after the other:

* the oldest supported pair, :data:`OLDEST_PAIR` (pyproject's lower bounds ``torch>=…``, ``torchvision>=…``);
* the newest pair, the one ``pip install torch torchvision`` picks today (a dry run of pip's resolver);
* Colab-like: an environment holding only Jupyter (ipykernel, papermill, nbformat) and torch with torchvision from the
  registry, where the lesson's first cell (tagged ``install``) must install ``invattn`` and leave torch as it was.

A pair's check: ``pip install torch==T torchvision==V`` in a fresh environment, then the package with
``-e .[course,test]`` under a constraint pinning the pair (pip refuses rather than changing torch; the installed
versions are read back afterwards), then the unit tests marked ``compat`` (``pytest -m compat``: norms, Lipschitz
bounds, solvers, log-determinants, blocks, attention, training's save and load) and one lesson under papermill into
``FOLDER/<check>.<lesson>.ipynb`` with its figures in a temporary folder: the stored notebooks and ``figures/`` are
never written. Every environment lives in ``FOLDER/<check>`` (default ``.compat/``), each step's output in
``FOLDER/<check>.log``. An environment whose check passed is removed (each holds several GB of CUDA libraries); a
failed one is kept to look into.

Each check downloads torch with its CUDA libraries (3-6 GB installed): with an empty pip cache on a fast connection
about 1.5 to 4.5 minutes for the pair and 1 to 2 for the package's other requirements, then about a minute of tests
and one of the lesson on one CPU thread; the three default checks take about a quarter of an hour.

``--plan`` prints what would run and installs nothing. Exit status 0 when every check passed, 1 otherwise (the table
names what failed and why).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ._notebooks import lesson_notebooks
from .lesson import HEADLESS_ENV

__all__ = [
    "OLDEST_PAIR",
    "Pair",
    "Check",
    "Result",
    "CheckFailed",
    "newest_pair",
    "planned_checks",
    "run_check",
    "main",
]

ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT_S = 60.0
"""How often a long step (an install, the tests, the lesson) prints that it is still running."""
VERSION = re.compile(r"\d+(\.\d+)*([a-z]+\d+)?(\+[\w.]+)?")


class Pair(NamedTuple):
    """A torch version and the torchvision version installed beside it."""

    torch: str
    torchvision: str

    @property
    def name(self) -> str:
        return f"torch-{self.torch}_torchvision-{self.torchvision}"


OLDEST_PAIR = Pair("2.8.0", "0.23.0")
"""The oldest pair the library supports: pyproject's lower bounds (tests/test_compat.py checks that they agree).
Below it: torch 2.6 and 2.7 run the library, but their float32 kernels round attention more coarsely and one inverse's
certified error bound exceeds the cap a test sets (3.006e-5 > 3e-5 in ``test_inverse_on_real_images_float32``);
torch 2.5 lacks ``nn.utils.get_total_norm`` (training), 2.4 ``torch.serialization.safe_globals`` (loading), and torch
below 2.3 was built against NumPy 1 (``numpy<2``)."""


class CheckFailed(RuntimeError):
    """A step of a check failed: the message names the step, the check, and ends with the step's last output lines."""


@dataclass
class Check:
    """One environment to build and try: ``pair`` installed exactly, or (``colab_like``) Jupyter and the registry's
    torch only. ``pair`` None means the newest, resolved when the check starts."""

    label: str
    pair: Pair | None = None
    colab_like: bool = False

    @property
    def name(self) -> str:
        return "colab-like" if self.colab_like else self.pair.name


@dataclass
class Result:
    """What one check found: the versions installed, the install time, the tests, the lesson, and the error if any."""

    label: str
    torch: str = "?"
    torchvision: str = "?"
    numpy: str = "?"
    install_s: float | None = None
    passed: int | None = None
    failed: int | None = None
    lesson_ok: bool | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _say(text: str) -> None:
    print(text, flush=True)


def _clean_env(venv: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a step: this one without anything that would leak another Python (``VIRTUAL_ENV``,
    ``PYTHONPATH``), with ``venv``'s scripts first on ``PATH`` and its Jupyter kernels found first."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "JUPYTER_PATH")}
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
        env["JUPYTER_PATH"] = str(venv / "share" / "jupyter")  # before the user's own kernels
    env.update(extra)
    return env


def _run(command: list, log: Path, what: str, env: dict[str, str], cwd: Path | None = None) -> float:
    """Run ``command``, its output appended to ``log``; a line every :data:`HEARTBEAT_S` while it runs. Returns its
    seconds; raises :class:`CheckFailed` with the last lines of its output when it fails."""
    command = [str(part) for part in command]
    with open(log, "a") as handle:
        handle.write(f"\n$ {shlex.join(command)}\n")
        handle.flush()
        start_offset = handle.tell()
        start = time.monotonic()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            while True:
                try:
                    status = process.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    _say(f"    ... still {what} ({time.monotonic() - start:.0f} s)")
        except BaseException:  # Ctrl-C: stop the step, then let the interruption through
            process.kill()
            process.wait()
            raise
    seconds = time.monotonic() - start
    if status != 0:
        with open(log, errors="replace") as handle:
            handle.seek(start_offset)
            tail = handle.read().splitlines()[-25:]
        raise CheckFailed(
            f"{what} failed (exit status {status}); the last lines of its output ({log}):\n"
            + "\n".join(f"    {line}" for line in tail)
        )
    return seconds


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version, to compare: "2.10.0+cu128" → (2, 10, 0), "2.8" → (2, 8, 0)."""
    parts = [int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def _pip_install(python: Path, arguments: list, log: Path, what: str, env: dict[str, str]) -> float:
    return _run([python, "-m", "pip", "install", "--disable-pip-version-check", *arguments], log, what, env)


def _installed(python: Path, env: dict[str, str]) -> dict[str, str]:
    """The versions of torch, torchvision and numpy that ``python`` imports (a local tag such as ``+cu121`` dropped);
    None for a package it cannot import."""
    script = (
        "import importlib, json\nversions = {}\nfor name in ('torch', 'torchvision', 'numpy'):\n"
        "    try: versions[name] = importlib.import_module(name).__version__.split('+')[0]\n"
        "    except ImportError: versions[name] = None\nprint(json.dumps(versions))"
    )
    result = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
    )
    if result.returncode != 0:
        raise CheckFailed("importing torch failed in the new environment:\n" + result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def newest_pair(python: str | Path = sys.executable) -> Pair:
    """The pair ``pip install torch torchvision`` installs today, as pip resolves it (the registry and this machine's
    pip configuration decide), read from a dry run's report: nothing is installed."""
    command = [
        str(python),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        "-",
        "torch",
        "torchvision",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=_clean_env())
    if result.returncode != 0:
        raise CheckFailed(
            "resolving the newest torch/torchvision pair failed (pip install --dry-run torch "
            "torchvision):\n" + "\n".join(result.stderr.strip().splitlines()[-15:])
        )
    report = json.loads(result.stdout)
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}
    return Pair(versions["torch"], versions["torchvision"])


def find_lesson(prefix: str, root: Path = ROOT) -> Path:
    """The first lesson ``notebooks/NN_name.ipynb`` whose file name starts with ``prefix``."""
    return lesson_notebooks(root / "notebooks", prefix)[0]


def _lesson_env(venv: Path, figures: Path) -> dict[str, str]:
    return _clean_env(venv, **HEADLESS_ENV, INVATTN_FIGURES=str(figures), MPLBACKEND="Agg")


def _run_lesson(python: Path, venv: Path, lesson: Path, output: Path, log: Path) -> None:
    """Execute ``lesson`` with papermill in ``venv`` (its own kernel, started in the lesson's folder, as Jupyter
    does), the result written to ``output`` and its figures to a temporary folder."""
    _run(
        [python, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
        log,
        "installing the environment's Jupyter kernel",
        _clean_env(venv),
    )
    with tempfile.TemporaryDirectory(prefix="invattn-compat-figures-") as figures:
        _say(f"  running lesson {lesson.name} under papermill ...")
        seconds = _run(
            [
                python,
                "-m",
                "papermill",
                lesson,
                output,
                "--cwd",
                lesson.parent,
                "--kernel",
                "python3",
                "--no-progress-bar",
            ],
            log,
            f"running lesson {lesson.name}",
            _lesson_env(venv, Path(figures)),
            cwd=Path(figures),
        )
    _say(f"  lesson {lesson.name} ran in {seconds:.0f} s")


def _run_tests(python: Path, venv: Path, root: Path, log: Path) -> tuple[int, list[str]]:
    """(how many passed, "test: first line of its error" for each that failed or errored) of ``pytest -m compat``
    in ``venv``; raises when none ran."""
    _say("  running the compatibility tests (pytest -m compat) ...")
    with tempfile.TemporaryDirectory(prefix="invattn-compat-tests-") as scratch:
        report = Path(scratch) / "junit.xml"
        env = _lesson_env(venv, Path(scratch) / "figures")
        start = time.monotonic()
        try:
            _run(
                [python, "-m", "pytest", "tests", "-m", "compat", "-q", f"--junitxml={report}"],
                log,
                "running the compatibility tests",
                env,
                cwd=root,
            )
        except CheckFailed:
            if not report.is_file():  # pytest itself failed: its own message says why
                raise
        cases = list(ElementTree.parse(report).getroot().iter("testcase"))
    failures = []
    for case in cases:
        for outcome in case:
            if outcome.tag in ("failure", "error"):
                message = (outcome.get("message") or outcome.tag).strip().splitlines() or [outcome.tag]
                failures.append(f"{case.get('classname')}::{case.get('name')}: {message[0][:300]}")
    passed = sum(1 for case in cases if not any(o.tag in ("failure", "error", "skipped") for o in case))
    if not cases:
        raise CheckFailed("no test is marked compat: pytest -m compat ran nothing")
    _say(f"  tests: {passed} passed, {len(failures)} failed in {time.monotonic() - start:.0f} s")
    return passed, failures


def _fresh_venv(path: Path, log: Path) -> Path:
    """A new virtual environment at ``path`` (anything there before is removed); returns its Python."""
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", path], log, f"creating the environment {path}", _clean_env())
    return path / "bin" / "python"


def _check_pair(check: Check, result: Result, folder: Path, lesson: Path, root: Path) -> None:
    pair, venv, log = check.pair, folder / check.name, folder / f"{check.name}.log"
    python = _fresh_venv(venv, log)
    env = _clean_env(venv)
    _say(f"  installing torch {pair.torch} and torchvision {pair.torchvision} (with CUDA libraries: a few GB) ...")
    result.install_s = _pip_install(
        python,
        [f"torch=={pair.torch}", f"torchvision=={pair.torchvision}"],
        log,
        f"installing torch {pair.torch} with torchvision {pair.torchvision}",
        env,
    )
    pins = venv / "pair-constraints.txt"
    pins.write_text(f"torch=={pair.torch}\ntorchvision=={pair.torchvision}\n")
    _say(f"  installed in {result.install_s:.0f} s; installing invattn[course,test], keeping that pair ...")
    try:
        seconds = _pip_install(
            python,
            ["--constraint", pins, "--editable", f"{root}[course,test]"],
            log,
            f"installing invattn[course,test] beside torch {pair.torch}",
            env,
        )
    except CheckFailed as error:
        if _release(pair.torch) < _release(OLDEST_PAIR.torch):
            raise CheckFailed(
                f"{error}\n(torch {pair.torch} is below pyproject's lower bound "
                f"torch>={OLDEST_PAIR.torch}: lower that bound to try it)"
            ) from None
        raise
    result.install_s += seconds
    _say(f"  invattn[course,test] installed in {seconds:.0f} s")
    installed = _installed(python, env)
    result.torch, result.torchvision, result.numpy = installed["torch"], installed["torchvision"], installed["numpy"]
    if (result.torch, result.torchvision) != tuple(pair):
        raise CheckFailed(
            f"pip changed the pair: asked for torch {pair.torch} with torchvision {pair.torchvision}, "
            f"found torch {result.torch} with torchvision {result.torchvision} after installing invattn"
        )
    result.passed, failures = _run_tests(python, venv, root, log)
    result.failed = len(failures)
    result.lesson_ok = False
    _run_lesson(python, venv, lesson, folder / f"{check.name}.{lesson.stem}.ipynb", log)
    result.lesson_ok = True
    if failures:
        raise CheckFailed(
            f"{len(failures)} compatibility test(s) failed (their output: {log}):\n"
            + "\n".join(f"    {failure}" for failure in failures)
        )


def _finds_invattn(python: Path, env: dict[str, str]) -> bool:
    """Whether ``python`` can import ``invattn`` (asked from a neutral folder, not from the checkout)."""
    probe = "import importlib.util; print(importlib.util.find_spec('invattn') is not None)"
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
    )
    return result.stdout.strip() == "True"


def _check_colab_like(check: Check, result: Result, folder: Path, lesson: Path, root: Path) -> None:
    venv, log = folder / check.name, folder / f"{check.name}.log"
    python = _fresh_venv(venv, log)
    env = _clean_env(venv)
    _say("  installing Jupyter (ipykernel, papermill, nbformat) and the registry's torch and torchvision ...")
    result.install_s = _pip_install(
        python,
        ["ipykernel", "papermill", "nbformat", "torch", "torchvision"],
        log,
        "installing Jupyter with torch and torchvision",
        env,
    )
    before = _installed(python, env)
    result.torch, result.torchvision, result.numpy = before["torch"], before["torchvision"], before["numpy"]
    if _finds_invattn(python, env):
        raise CheckFailed("invattn is importable before the lesson ran: its install cell would not be tried")
    _say(f"  installed in {result.install_s:.0f} s (torch {result.torch}); the lesson's install cell adds invattn")
    result.lesson_ok = False
    _run_lesson(python, venv, lesson, folder / f"{check.name}.{lesson.stem}.ipynb", log)
    result.lesson_ok = True
    after = _installed(python, env)
    if (after["torch"], after["torchvision"]) != (before["torch"], before["torchvision"]):
        raise CheckFailed(
            f"the lesson's install cell changed torch: torch {before['torch']} with torchvision "
            f"{before['torchvision']} before, torch {after['torch']} with torchvision "
            f"{after['torchvision']} after"
        )
    if not _finds_invattn(python, env):
        raise CheckFailed("the lesson ran but invattn is not installed in the environment afterwards")


def run_check(check: Check, folder: Path, lesson: Path, root: Path = ROOT) -> Result:
    """Build ``check``'s environment in ``folder`` and try it; never raises for a failed step (the result says)."""
    result = Result(check.label)
    start = time.monotonic()
    try:
        if check.pair is None and not check.colab_like:
            _say("  resolving the newest pair (pip install --dry-run torch torchvision) ...")
            check.pair = newest_pair()
            _say(f"  newest: torch {check.pair.torch} with torchvision {check.pair.torchvision}")
        if check.pair is not None:
            result.torch, result.torchvision = check.pair
        (_check_colab_like if check.colab_like else _check_pair)(check, result, folder, lesson, root)
        shutil.rmtree(folder / check.name, ignore_errors=True)  # several GB; a failed one is kept to look into
    except CheckFailed as error:
        result.error = str(error)
    result.seconds = time.monotonic() - start
    return result


def planned_checks(pairs: list[Pair], colab_like: bool) -> list[Check]:
    """The checks the options ask for: the ``pairs`` given and the Colab-like one, or with neither, all three
    defaults (oldest, newest, Colab-like)."""
    if not pairs and not colab_like:
        return [Check("oldest", OLDEST_PAIR), Check("newest"), Check("colab-like", colab_like=True)]
    return [Check("given", pair) for pair in pairs] + ([Check("colab-like", colab_like=True)] if colab_like else [])


def describe(check: Check, folder: Path, lesson: Path, root: Path = ROOT) -> str:
    """What ``check`` will do, step by step (``--plan``)."""
    name = check.name if check.pair is not None or check.colab_like else "<newest pair>"
    lines = [f"{check.label}: a fresh environment in {folder / name}, its log in {folder / name}.log"]
    if check.colab_like:
        lines += [
            "  pip install ipykernel papermill nbformat torch torchvision   (nothing else: invattn is missing)",
            f"  papermill {lesson.name}: its install cell installs invattn from {root}",
            "  then: torch and torchvision unchanged, invattn importable",
        ]
        return "\n".join(lines)
    pair = check.pair or Pair("<newest>", "<newest>")
    if check.pair is None:
        lines.append("  the newest pair: what `pip install --dry-run torch torchvision` resolves when the check starts")
    lines += [
        f"  pip install torch=={pair.torch} torchvision=={pair.torchvision}",
        f"  pip install --constraint (torch=={pair.torch}, torchvision=={pair.torchvision}) "
        f"--editable '{root}[course,test]'",
        "  then: torch and torchvision as asked",
        f"  pytest -m compat  (in {root})",
        f"  papermill {lesson.name} -> {folder / name}.{lesson.stem}.ipynb  (figures in a temporary folder)",
    ]
    return "\n".join(lines)


def _cell(value, width: int) -> str:
    return f"{'—' if value is None else value:<{width}}"


def table(results: list[Result]) -> str:
    """The results as a table, one row per check, then each failure's message."""
    header = [
        "check",
        "torch",
        "torchvision",
        "numpy",
        "install s",
        "tests passed/failed",
        "lesson",
        "total s",
        "result",
    ]
    rows = []
    for r in results:
        tests = None if r.passed is None else f"{r.passed}/{r.failed}"
        lesson = None if r.lesson_ok is None else ("ok" if r.lesson_ok else "FAILED")
        install = None if r.install_s is None else f"{r.install_s:.0f}"
        rows.append(
            [
                r.label,
                r.torch,
                r.torchvision,
                r.numpy,
                install,
                tests,
                lesson,
                f"{r.seconds:.0f}",
                "ok" if r.ok else "FAILED",
            ]
        )
    widths = [max(len(str("—" if row[i] is None else row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(_cell(value, width) for value, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    for r in results:
        if r.error:
            lines += ["", f"{r.label} (torch {r.torch}, torchvision {r.torchvision}) failed: {r.error}"]
    return "\n".join(lines)


def _pair(text: list[str]) -> Pair:
    """A ``--pair`` (``ArgumentTypeError`` for a malformed version or one below the package's lower bounds, which pip
    would refuse only after downloading it)."""
    for version in text:
        if not VERSION.fullmatch(version):
            raise argparse.ArgumentTypeError(f"{version!r} is not a version number such as 2.5.0")
    pair = Pair(*text)
    for name in ("torch", "torchvision"):
        if _release(getattr(pair, name)) < _release(getattr(OLDEST_PAIR, name)):
            raise argparse.ArgumentTypeError(
                f"{name} {getattr(pair, name)} is below the package's lower bound {getattr(OLDEST_PAIR, name)} "
                "(pyproject.toml); lower the bound there first to try it"
            )
    return pair


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m invattn.compat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("TORCH", "TORCHVISION"),
        help="check this pair (repeat for several) instead of the oldest and the newest, e.g. --pair 2.6.0 0.21.0",
    )
    parser.add_argument(
        "--colab-like",
        action="store_true",
        help="check an environment holding only Jupyter and the registry's torch, where the lesson's "
        "install cell installs invattn (with --pair: besides those pairs; alone: only this check)",
    )
    parser.add_argument(
        "--folder",
        type=Path,
        default=ROOT / ".compat",
        help="where the environments, logs and executed lessons go (default: .compat/)",
    )
    parser.add_argument("--lesson", default="01", help="the lesson each check runs, by file-name prefix (default: 01)")
    parser.add_argument("--plan", action="store_true", help="print what would run and install nothing")
    args = parser.parse_args(argv)
    try:
        args.pair = [_pair(pair) for pair in args.pair]
        args.lesson = find_lesson(args.lesson)
    except (argparse.ArgumentTypeError, ValueError) as error:
        parser.error(str(error))
    args.folder = args.folder.resolve()
    if args.folder.exists() and not args.folder.is_dir():
        parser.error(f"--folder {args.folder} is a file, not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checks = planned_checks(args.pair, args.colab_like)
    if args.plan:
        _say("\n\n".join(describe(check, args.folder, args.lesson) for check in checks))
        return 0
    args.folder.mkdir(parents=True, exist_ok=True)
    results, start = [], time.monotonic()
    try:
        for number, check in enumerate(checks, 1):
            pair = f" (torch {check.pair.torch}, torchvision {check.pair.torchvision})" if check.pair else ""
            _say(f"[{number}/{len(checks)}] {check.label}{pair}")
            results.append(run_check(check, args.folder, args.lesson))
            _say(
                f"[{number}/{len(checks)}] {check.label}: {'ok' if results[-1].ok else 'FAILED'} "
                f"in {results[-1].seconds:.0f} s"
            )
    except KeyboardInterrupt:
        _say(f"\ninterrupted; the unfinished check's environment and log are left in {args.folder}")
        return 130
    _say(
        f"\n{table(results)}\n\n{len(checks)} check(s) in {time.monotonic() - start:.0f} s; environments and logs "
        f"in {args.folder}"
    )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
