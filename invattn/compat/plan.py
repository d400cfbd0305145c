"""What ``python -m invattn.compat`` would check: the torch/torchvision pairs, the checks, their plan and their
results' table (nothing here installs or runs anything)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .._notebooks import lesson_notebooks

__all__ = [
    "ROOT",
    "VERSION",
    "Pair",
    "OLDEST_PAIR",
    "CheckFailed",
    "Check",
    "Result",
    "release",
    "parse_pair",
    "find_lesson",
    "planned_checks",
    "describe",
    "table",
]

ROOT = Path(__file__).resolve().parent.parent.parent
"""The checkout: the package installed into each environment and the tests run."""

VERSION = re.compile(r"\d+(\.\d+)*([a-z]+\d+)?(\+[\w.]+)?")


class Pair(NamedTuple):
    """A torch version and the torchvision version installed beside it; ``name`` names its environment.

    Arguments:
        torch: the torch version, e.g. ``"2.8.0"``.
        torchvision: the torchvision version, e.g. ``"0.23.0"``.
    """

    torch: str
    torchvision: str

    @property
    def name(self) -> str:
        return f"torch-{self.torch}_torchvision-{self.torchvision}"


OLDEST_PAIR = Pair("2.8.0", "0.23.0")
"""The oldest pair the library supports: pyproject's lower bounds (tests/test_compat.py checks that they agree).
Below it: torch 2.6 and 2.7 run the library, but their float32 kernels round attention more coarsely and one inverse's
certified error bound exceeds the cap ``test_inverse_on_real_images_float32`` sets; torch 2.5 lacks
``nn.utils.get_total_norm`` (training), 2.4 ``torch.serialization.safe_globals`` (loading), and torch below 2.3 was
built against NumPy 1 (``numpy<2``)."""


class CheckFailed(RuntimeError):
    """A step of a check failed: the message names the step, the check, and ends with the step's last output lines."""


@dataclass
class Check:
    """One environment to build and try: ``pair`` installed exactly, or (``colab_like``) Jupyter and the registry's
    torch only; ``name`` names its environment's folder.

    Arguments:
        label: the check's name in the table (``"oldest"``, ``"newest"``, ``"given"``, ``"colab-like"``).
        pair: the torch/torchvision versions to install; None means the newest, resolved when the check starts.
        colab_like: install Jupyter and the registry's torch only, and let the lesson's install cell add invattn.
    """

    label: str
    pair: Pair | None = None
    colab_like: bool = False

    @property
    def name(self) -> str:
        return "colab-like" if self.colab_like else self.pair.name


@dataclass
class Result:
    """What one check found: the versions installed, the install time, the tests, the lesson, and the error if any.

    ``ok`` is true when there is no error. A field that was not reached keeps its default (``"?"`` or None).

    Arguments:
        label: the check's label.
        torch: the torch version installed.
        torchvision: the torchvision version installed.
        numpy: the numpy version installed.
        install_s: the install's seconds.
        passed: how many compatibility tests passed.
        failed: how many failed or errored.
        lesson_ok: whether the lesson ran.
        seconds: the check's total seconds.
        error: the failed step's message (None: every step passed).
    """

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


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version, to compare versions.

    Arguments:
        version: a version such as ``"2.10.0+cu128"``.
    Returns:
        its first three numbers, zero-padded.

    >>> release("2.10.0+cu128"), release("2.8")
    ((2, 10, 0), (2, 8, 0))
    """
    parts = [int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def parse_pair(text: list[str]) -> Pair:
    """Read a ``--pair``: a torch version and a torchvision version.

    Arguments:
        text: the two versions, ``[torch, torchvision]``.
    Returns:
        the :class:`Pair`.
    Raises:
        argparse.ArgumentTypeError: for a malformed version, or one below :data:`OLDEST_PAIR` (pyproject's lower
            bounds, which pip would refuse only after downloading it).
    """
    for version in text:
        if not VERSION.fullmatch(version):
            raise argparse.ArgumentTypeError(f"{version!r} is not a version number such as 2.5.0")
    pair = Pair(*text)
    for name in ("torch", "torchvision"):
        if release(getattr(pair, name)) < release(getattr(OLDEST_PAIR, name)):
            raise argparse.ArgumentTypeError(
                f"{name} {getattr(pair, name)} is below the package's lower bound {getattr(OLDEST_PAIR, name)} "
                "(pyproject.toml); lower the bound there first to try it"
            )
    return pair


def find_lesson(prefix: str, root: Path = ROOT) -> Path:
    """The first lesson ``notebooks/NN_name.ipynb`` whose file name starts with ``prefix``.

    Arguments:
        prefix: the start of the file name, e.g. ``"01"``.
        root: the checkout whose ``notebooks/`` is searched.
    Returns:
        the lesson's path.
    Raises:
        ValueError: naming the lessons there when none matches.
    """
    return lesson_notebooks(root / "notebooks", prefix)[0]


def planned_checks(pairs: list[Pair], colab_like: bool) -> list[Check]:
    """The checks the options ask for: the ``pairs`` given and the Colab-like one, or with neither, all three
    defaults (oldest, newest, Colab-like).

    Arguments:
        pairs: the ``--pair`` options given, each checked as ``"given"``.
        colab_like: whether ``--colab-like`` was given.
    Returns:
        the :class:`Check` list, in the order they run.
    """
    if not pairs and not colab_like:
        return [Check("oldest", OLDEST_PAIR), Check("newest"), Check("colab-like", colab_like=True)]
    return [Check("given", pair) for pair in pairs] + ([Check("colab-like", colab_like=True)] if colab_like else [])


def describe(check: Check, folder: Path, lesson: Path, root: Path = ROOT) -> str:
    """What ``check`` will do, step by step (``--plan``); nothing is installed or run.

    Arguments:
        check: the check.
        folder: the folder its environment and log go to.
        lesson: the lesson it runs.
        root: the checkout it installs and tests.
    Returns:
        the plan, one line per step.
    """
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
    """The results as a table, one row per check, then each failure's message.

    Arguments:
        results: one :class:`Result` per check.
    Returns:
        the table's text (``—`` for what a check did not reach).
    """
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
