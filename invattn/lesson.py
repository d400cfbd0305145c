"""What every lesson's set-up cell calls: seeds, deterministic settings, the device, the figures folder
(:mod:`invattn.plots`), progress bars (:mod:`invattn.progress`), and parameter checks that stop a notebook with a
message saying what is allowed."""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import plots
from ._validation import check_choice, check_coeff, check_positive_float, check_positive_int, resolve_device
from .progress import PLAIN_PROGRESS_VARIABLE, progress

__all__ = [
    "CPU_THREADS",
    "REPRODUCIBLE_ENV",
    "HEADLESS_ENV",
    "Setup",
    "setup",
    "report_run_time",
    "resolve_device",
    "progress",
    "check_choice",
    "check_coeff",
    "check_positive_int",
    "check_positive_float",
    "check_parameters",
    "coeff",
    "integer",
    "positive",
    "choice",
    "each",
    "flag",
    "text",
]


CPU_THREADS = 1
"""The intra-op threads torch uses in a lesson (:func:`setup`). One: a float sum is then split the same way on every
machine, so training gives the same numbers to the last bit whatever the core count, and a lesson beside other busy
processes slows down in proportion instead of waiting on its own threads. The lessons' models are small: more threads
gain little (``python -m invattn.bench`` measures)."""

REPRODUCIBLE_ENV = {"OMP_NUM_THREADS": str(CPU_THREADS), "MKL_NUM_THREADS": str(CPU_THREADS)}
if platform.machine().lower() in ("x86_64", "amd64"):
    # the same vector instructions on every x86 machine: torch's own kernels, oneDNN's convolutions and MKL's
    # matrix products each pick the widest a CPU has (AVX-512 here, AVX2 there), which sums in another order;
    # other processors have neither the names nor the libraries (torch would warn about them)
    REPRODUCIBLE_ENV.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MKL_CBWR="AVX2")
"""What a lesson's kernel process must be started with for its numbers to be the same on every x86 machine with AVX2
(on other processors: the thread count only)
(read by the libraries when they load, so set before ``import torch``): the course's Jupyter kernel carries it
(``python -m invattn.kernel``, which ``make setup`` runs), and ``python -m invattn.run_notebooks`` and the tests set it
for the kernels they start. Other processors (Apple silicon, other ISAs) compute in another order: their numbers
agree with the stored ones to rounding, not to the last bit."""


HEADLESS_ENV = {**REPRODUCIBLE_ENV, PLAIN_PROGRESS_VARIABLE: "1"}
""":data:`REPRODUCIBLE_ENV` and text progress bars (:func:`progress`): the environment of the kernels that run a lesson
with no one watching (``python -m invattn.run_notebooks``, nbval in the tests, ``python -m invattn.compat``)."""


@dataclass(frozen=True)
class Setup:
    """What :func:`setup` decided (frozen).

    Arguments:
        device: the device to compute on.
        figures: the folder figures are saved to (:func:`invattn.plots.figures_dir`).
        seed: the seed of ``random``, numpy and torch.
        threads: torch's intra-op CPU threads.
        cpu_capability: the vector instructions torch's CPU kernels use (``"AVX2"``, ``"AVX512"``, ...).
    """

    device: torch.device
    figures: Path
    seed: int
    threads: int
    cpu_capability: str


def setup(seed: int = 0, device: str = "cpu", threads: int = CPU_THREADS) -> Setup:
    """Make a lesson reproducible: seed, deterministic kernels, ``threads`` CPU threads, the device, the plot style.

    Seeds ``random``, numpy and torch with ``seed``; pins torch to ``threads`` intra-op threads (:data:`CPU_THREADS`)
    and deterministic algorithms; resolves ``device`` (:func:`resolve_device`: ``"auto"`` takes CUDA, else the CPU,
    since MPS lacks the float64 the certified bounds are computed in); applies :func:`invattn.plots.use_lesson_style`.
    Prints one line saying what it chose and starts the clock :func:`report_run_time` reads.

    Arguments:
        seed: the seed, an integer ≥ 0.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        threads: torch's intra-op CPU threads, ≥ 1.
    Returns:
        a :class:`Setup`: the device, the figures folder (:func:`invattn.plots.figures_dir`), the seed, the threads
        and torch's CPU kernel capability.
    Raises:
        ValueError: for a negative seed, fewer than one thread, ``"mps"`` or a device this machine lacks.
        TypeError: for a non-integer seed or thread count, or a device that is not a string.
    """
    check_positive_int(seed, "seed", minimum=0)
    check_positive_int(threads, "threads")
    resolved = resolve_device(device)
    if resolved.type == "mps":  # the certified bounds need float64, which MPS lacks
        if device != "auto":
            raise ValueError(
                "device='mps': the lessons' certified layers compute their bounds in float64, which "
                "Apple's MPS backend lacks; use device='cpu' (the default)"
            )
        resolved = torch.device("cpu")
        print("device='auto' found MPS, but the certified bounds need float64, which MPS lacks: the CPU it is")
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if resolved.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    plots.use_lesson_style()
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    print(
        f"seed {seed}, device {resolved}; torch on {threads} CPU thread{'s' if threads > 1 else ''} "
        f"({capability} kernels): the same numbers on any such machine"
    )
    global _started
    _started = time.perf_counter()
    return Setup(device=resolved, figures=plots.figures_dir(), seed=seed, threads=threads, cpu_capability=capability)


_started: float | None = None


def report_run_time() -> float:
    """Print how long the lesson ran since :func:`setup`, e.g. ``This run took 38 s.``: a lesson's last cell calls it.

    Seconds below 90 s, else minutes: the figure a lesson's opening "about … to run" is checked against by
    :mod:`invattn.course`.

    Returns:
        the seconds since :func:`setup`.
    Raises:
        RuntimeError: if :func:`setup` was not called first.
    """
    if _started is None:
        raise RuntimeError("report_run_time() measures from lesson.setup(); call lesson.setup() first")
    seconds = time.perf_counter() - _started
    shown = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
    print(f"This run took {shown}.")
    return seconds


# ---------------------------------------------------------------------------------------------------------------
# Parameter checks behind one call: each lesson's set-up cell names its parameters and their rules once, and every
# bad value is reported together, with what is allowed, before anything runs.

Rule = Callable[[Any, str], Any]  # (value, name) -> value; raises ValueError or TypeError with a readable message


def coeff() -> Rule:
    """A rule for a Lipschitz coefficient in (0, 1), the range that keeps x + g(x) invertible.

    Returns:
        a rule ``(value, name) -> value`` for :func:`check_parameters`;
        it raises ValueError outside (0, 1) and TypeError for a non-number.
    """
    return lambda value, name: check_coeff(value, name)


def integer(minimum: int = 1, maximum: int | None = None, even: bool = False, why: str = "") -> Rule:
    """A rule for an integer ≥ ``minimum`` (and ≤ ``maximum``, even if ``even``).

    Arguments:
        minimum: the smallest allowed value (default 1).
        maximum: the largest allowed value (None: no limit).
        even: whether odd values are refused.
        why: text added to the messages of the maximum and even checks (a reason, e.g. starting with a space).
    Returns:
        a rule ``(value, name) -> value`` for :func:`check_parameters`;
        it raises TypeError for a non-integer, ValueError for a value out of range or odd when ``even``.
    """

    def rule(value, name):
        value = check_positive_int(value, name, minimum=minimum)
        if maximum is not None and value > maximum:
            raise ValueError(f"{name} must be at most {maximum}{why}, got {value}")
        if even and value % 2:
            raise ValueError(f"{name} must be even{why}, got {value}")
        return value

    return rule


def positive() -> Rule:
    """A rule for a finite number > 0.

    Returns:
        a rule ``(value, name) -> value`` for :func:`check_parameters`;
        it raises ValueError for zero, a negative or a non-finite number, TypeError for a non-number.
    """
    return lambda value, name: check_positive_float(value, name)


def choice(allowed: Iterable[str]) -> Rule:
    """A rule for one of ``allowed``.

    Arguments:
        allowed: the allowed values (strings).
    Returns:
        a rule ``(value, name) -> value`` for :func:`check_parameters`;
        it raises ValueError, naming what is allowed, for any other value.
    """
    allowed = tuple(allowed)
    return lambda value, name: check_choice(value, name, allowed)


def flag() -> Rule:
    """A rule for True or False (no other value, not even 0 or 1).

    Returns:
        a rule ``(value, name) -> value`` for :func:`check_parameters`;
        it raises TypeError for anything but a bool.
    """

    def rule(value, name):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
        return value

    return rule


def text() -> Rule:
    """A rule for a non-empty string (a path, a folder name).

    Returns:
        a rule ``(value, name) -> value`` for :func:`check_parameters`;
        it raises TypeError for a non-string or an empty string.
    """

    def rule(value, name):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a non-empty string, got {value!r}")
        return value

    return rule


def each(rule: Rule, distinct: bool = False, nonempty: bool = True) -> Rule:
    """A rule for a list (or tuple) whose every item obeys ``rule``; items are named ``name[i]`` in messages.

    Arguments:
        rule: the rule each item must obey.
        distinct: whether repeated items (by ``repr``) are refused.
        nonempty: whether an empty list is refused.
    Returns:
        a rule ``(value, name) -> value`` for :func:`check_parameters`;
        it raises TypeError for a non-list, ValueError for an empty list (when ``nonempty``) or a
        repeat (when ``distinct``), and whatever ``rule`` raises for a bad item.
    """

    def check_all(value, name):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a list, got {value!r}")
        if nonempty and not value:
            raise ValueError(f"{name} must not be empty")
        if distinct and len({repr(item) for item in value}) != len(value):
            raise ValueError(f"{name} must not repeat an entry, got {list(value)!r}")
        for index, item in enumerate(value):
            rule(item, f"{name}[{index}]")
        return value

    return check_all


def check_parameters(
    namespace: dict, constraints: Iterable[tuple[Callable[[], bool], str]] = (), **rules: Rule
) -> None:
    """Check a lesson's parameters all at once and raise one error that lists every bad value and what is allowed.

    Each parameter named in ``rules`` is looked up in ``namespace`` (the notebook's ``globals()``) and checked by its
    rule; then, only when every single parameter passed (so they may assume valid types), the cross-parameter
    ``constraints``.

    Arguments:
        namespace: the notebook's ``globals()``, holding the parameters by name.
        constraints: ``(condition, message)`` pairs; ``condition`` a zero-argument callable, true when allowed.
        **rules: parameter name → rule (:func:`coeff`, :func:`integer`, :func:`positive`, :func:`choice`,
            :func:`each`, :func:`flag`, :func:`text`).
    Raises:
        ValueError: listing every violation, one per line.
        NameError: when a rule names a parameter ``namespace`` does not define.

    >>> check_parameters({"coefficient": 0.9, "steps": 3}, coefficient=coeff(), steps=integer(maximum=5))
    >>> check_parameters({"steps": 0}, steps=integer())
    Traceback (most recent call last):
    ...
    ValueError: 1 lesson parameter problem(s):
      - steps must be an integer >= 1, got 0
    """
    missing = [name for name in rules if name not in namespace]
    if missing:
        raise NameError(f"check_parameters: the notebook defines no parameter(s) {', '.join(missing)}")
    problems = []
    for name, rule in rules.items():
        try:
            rule(namespace[name], name)
        except (TypeError, ValueError) as error:
            problems.append(str(error))
    if not problems:
        problems = [message for condition, message in constraints if not condition()]
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise ValueError(f"{len(problems)} lesson parameter problem(s):\n{listing}")
