"""``python -m invattn.ablation``: the ablation's command line."""

from __future__ import annotations

import argparse

from .experiment import CONFIGURATIONS, DATA, DEFAULTS
from .report import format_summary
from .runner import run

__all__ = ["DESCRIPTION", "main"]

DESCRIPTION = (
    "What attention buys, measured: the density model of 8×8 digits or of 32×32 photograph patches with no attention "
    "and with each attention kind."
)


def main(argv: list[str] | None = None) -> None:
    """``python -m invattn.ablation --out FOLDER``: run the ablation (:func:`run`) and print :func:`format_summary`.

    Arguments:
        argv: the command-line arguments (None: ``sys.argv[1:]``): ``--out`` (required), ``--data``, ``--configs``,
            ``--seeds``, ``--epochs``, ``--n-train``, ``--keep`` and ``--no-progress``, as :func:`run`'s arguments.
    Raises:
        SystemExit: (argparse) for a bad argument, with :func:`run`'s message.
    """
    parser = argparse.ArgumentParser(prog="python -m invattn.ablation", description=DESCRIPTION)
    parser.add_argument("--out", required=True, help="folder for results.json, the trained models and ablation.png")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGURATIONS), help="configurations (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="training seeds (default 1 2 3)")
    parser.add_argument(
        "--data",
        choices=DATA,
        default="digits",
        help="digits: 8×8 digits (N = 16 attention positions); patches: 32×32 photograph patches (N = 256, as on "
        "CIFAR-10), training and held-out patches from different photographs (default: digits)",
    )
    digits, patches = DEFAULTS["digits"], DEFAULTS["patches"]
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"epochs per run (default {digits['epochs']} for digits, {patches['epochs']} for patches)",
    )
    parser.add_argument(
        "--n-train",
        type=int,
        help=f"training images, the first N (default and most: {digits['n_train']} digits, the other 297 held out; "
        f"{patches['n_train']} patches)",
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
            args.out,
            args.configs,
            args.seeds,
            args.epochs,
            args.n_train,
            args.keep,
            progress_bar=not args.no_progress,
            data=args.data,
        )
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    print(format_summary(results))
