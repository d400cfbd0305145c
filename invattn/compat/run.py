"""How ``python -m invattn.compat`` runs a check: fresh virtual environments, pip, the compatibility tests and a
lesson under papermill, each step's output in a log."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from ..lesson import HEADLESS_ENV
from .plan import OLDEST_PAIR, ROOT, Check, CheckFailed, Pair, Result, release

__all__ = ["HEARTBEAT_S", "say", "clean_env", "newest_pair", "run_check"]

HEARTBEAT_S = 60.0
"""How often a long step (an install, the tests, the lesson) prints that it is still running."""


def say(text: str) -> None:
    """Print a line of progress at once (flushed, so a long check's log shows it while it runs).

    Arguments:
        text: the line.
    """
    print(text, flush=True)


def clean_env(venv: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a step: this one without anything that would leak another Python (``VIRTUAL_ENV``,
    ``PYTHONPATH``, ``PYTHONHOME``, ``JUPYTER_PATH``), with ``venv``'s scripts first on ``PATH`` and its Jupyter
    kernels found first.

    Arguments:
        venv: the virtual environment the step runs in (None: only the leaks removed).
        **extra: more variables, set last.
    Returns:
        the environment, a new dict (``os.environ`` is unchanged).
    """
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
                    say(f"    ... still {what} ({time.monotonic() - start:.0f} s)")
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
    pip configuration decide), read from a dry run's report: nothing is installed.

    Arguments:
        python: the Python whose pip resolves (default: this one).
    Returns:
        the newest :class:`Pair`.
    Raises:
        CheckFailed: when pip's dry run fails (its last output lines in the message).
    """
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
    result = subprocess.run(command, capture_output=True, text=True, env=clean_env())
    if result.returncode != 0:
        raise CheckFailed(
            "resolving the newest torch/torchvision pair failed (pip install --dry-run torch "
            "torchvision):\n" + "\n".join(result.stderr.strip().splitlines()[-15:])
        )
    report = json.loads(result.stdout)
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}
    return Pair(versions["torch"], versions["torchvision"])


def _lesson_env(venv: Path, figures: Path) -> dict[str, str]:
    return clean_env(venv, **HEADLESS_ENV, INVATTN_FIGURES=str(figures), MPLBACKEND="Agg")


def _run_lesson(python: Path, venv: Path, lesson: Path, output: Path, log: Path) -> None:
    """Execute ``lesson`` with papermill in ``venv`` (its own kernel, started in the lesson's folder, as Jupyter
    does), the result written to ``output`` and its figures to a temporary folder."""
    _run(
        [python, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
        log,
        "installing the environment's Jupyter kernel",
        clean_env(venv),
    )
    with tempfile.TemporaryDirectory(prefix="invattn-compat-figures-") as figures:
        say(f"  running lesson {lesson.name} under papermill ...")
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
    say(f"  lesson {lesson.name} ran in {seconds:.0f} s")


def _run_tests(python: Path, venv: Path, root: Path, log: Path) -> tuple[int, list[str]]:
    """(how many passed, "test: first line of its error" for each that failed or errored) of ``pytest -m compat``
    in ``venv``; raises when none ran."""
    say("  running the compatibility tests (pytest -m compat) ...")
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
    say(f"  tests: {passed} passed, {len(failures)} failed in {time.monotonic() - start:.0f} s")
    return passed, failures


def _fresh_venv(path: Path, log: Path) -> Path:
    """A new virtual environment at ``path`` (anything there before is removed); returns its Python."""
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", path], log, f"creating the environment {path}", clean_env())
    return path / "bin" / "python"


def _check_pair(check: Check, result: Result, folder: Path, lesson: Path, root: Path) -> None:
    pair, venv, log = check.pair, folder / check.name, folder / f"{check.name}.log"
    python = _fresh_venv(venv, log)
    env = clean_env(venv)
    say(f"  installing torch {pair.torch} and torchvision {pair.torchvision} (with CUDA libraries: a few GB) ...")
    result.install_s = _pip_install(
        python,
        [f"torch=={pair.torch}", f"torchvision=={pair.torchvision}"],
        log,
        f"installing torch {pair.torch} with torchvision {pair.torchvision}",
        env,
    )
    pins = venv / "pair-constraints.txt"
    pins.write_text(f"torch=={pair.torch}\ntorchvision=={pair.torchvision}\n")
    say(f"  installed in {result.install_s:.0f} s; installing invattn[course,test], keeping that pair ...")
    try:
        seconds = _pip_install(
            python,
            ["--constraint", pins, "--editable", f"{root}[course,test]"],
            log,
            f"installing invattn[course,test] beside torch {pair.torch}",
            env,
        )
    except CheckFailed as error:
        if release(pair.torch) < release(OLDEST_PAIR.torch):
            raise CheckFailed(
                f"{error}\n(torch {pair.torch} is below pyproject's lower bound "
                f"torch>={OLDEST_PAIR.torch}: lower that bound to try it)"
            ) from None
        raise
    result.install_s += seconds
    say(f"  invattn[course,test] installed in {seconds:.0f} s")
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
    env = clean_env(venv)
    say("  installing Jupyter (ipykernel, papermill, nbformat) and the registry's torch and torchvision ...")
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
    say(f"  installed in {result.install_s:.0f} s (torch {result.torch}); the lesson's install cell adds invattn")
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
    """Build ``check``'s environment in ``folder`` and try it; never raises for a failed step (the result says).

    A check without a pair first resolves the newest one (:func:`newest_pair`) and records it in ``check.pair``. A
    passed check's environment is removed (several GB); a failed one is kept to look into.

    Arguments:
        check: the :class:`Check` to run.
        folder: the folder of its environment and log.
        lesson: the lesson it runs with papermill.
        root: the checkout it installs and tests.
    Returns:
        its :class:`Result`, with ``error`` set when a step failed.
    """
    result = Result(check.label)
    start = time.monotonic()
    try:
        if check.pair is None and not check.colab_like:
            say("  resolving the newest pair (pip install --dry-run torch torchvision) ...")
            check.pair = newest_pair()
            say(f"  newest: torch {check.pair.torch} with torchvision {check.pair.torchvision}")
        if check.pair is not None:
            result.torch, result.torchvision = check.pair
        (_check_colab_like if check.colab_like else _check_pair)(check, result, folder, lesson, root)
        shutil.rmtree(folder / check.name, ignore_errors=True)  # several GB; a failed one is kept to look into
    except CheckFailed as error:
        result.error = str(error)
    result.seconds = time.monotonic() - start
    return result
