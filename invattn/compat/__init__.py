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

Each check downloads torch with its CUDA libraries (several GB installed): with an empty pip cache, expect minutes per
check.

``--plan`` prints what would run and installs nothing. Exit status 0 when every check passed, 1 otherwise (the table
names what failed and why).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .plan import (
    OLDEST_PAIR,
    ROOT,
    Check,
    CheckFailed,
    Pair,
    Result,
    describe,
    find_lesson,
    parse_pair,
    planned_checks,
    release,
    table,
)
from .run import newest_pair, run_check, say

__all__ = [
    "OLDEST_PAIR",
    "Pair",
    "Check",
    "Result",
    "CheckFailed",
    "release",
    "newest_pair",
    "planned_checks",
    "describe",
    "table",
    "run_check",
    "parse_args",
    "main",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read ``python -m invattn.compat``'s options (``--help`` lists them).

    Arguments:
        argv: the command line's arguments (default ``sys.argv[1:]``).
    Returns:
        the options: ``pair`` (a list of :class:`Pair`), ``colab_like``, ``folder`` (absolute), ``lesson`` (the
        lesson's path), ``plan``.
    Raises:
        SystemExit: status 2 with the reason, for a malformed version, a pair below :data:`OLDEST_PAIR`, no lesson
            with the prefix, or a ``--folder`` that is a file.
    """
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
        args.pair = [parse_pair(pair) for pair in args.pair]
        args.lesson = find_lesson(args.lesson)
    except (argparse.ArgumentTypeError, ValueError) as error:
        parser.error(str(error))
    args.folder = args.folder.resolve()
    if args.folder.exists() and not args.folder.is_dir():
        parser.error(f"--folder {args.folder} is a file, not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    """``python -m invattn.compat``: run the checks the options ask for (or with ``--plan`` print them) and a table.

    Arguments:
        argv: the command line's arguments (default ``sys.argv[1:]``).
    Returns:
        the exit status: 0 when every check passed (or ``--plan``), 1 otherwise, 130 when interrupted.
    """
    args = parse_args(argv)
    checks = planned_checks(args.pair, args.colab_like)
    if args.plan:
        say("\n\n".join(describe(check, args.folder, args.lesson) for check in checks))
        return 0
    args.folder.mkdir(parents=True, exist_ok=True)
    results, start = [], time.monotonic()
    try:
        for number, check in enumerate(checks, 1):
            pair = f" (torch {check.pair.torch}, torchvision {check.pair.torchvision})" if check.pair else ""
            say(f"[{number}/{len(checks)}] {check.label}{pair}")
            results.append(run_check(check, args.folder, args.lesson))
            say(
                f"[{number}/{len(checks)}] {check.label}: {'ok' if results[-1].ok else 'FAILED'} "
                f"in {results[-1].seconds:.0f} s"
            )
    except KeyboardInterrupt:
        say(f"\ninterrupted; the unfinished check's environment and log are left in {args.folder}")
        return 130
    say(
        f"\n{table(results)}\n\n{len(checks)} check(s) in {time.monotonic() - start:.0f} s; environments and logs "
        f"in {args.folder}"
    )
    return 0 if all(r.ok for r in results) else 1
