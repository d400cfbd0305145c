"""The command line: ``python -m invattn.train`` (``--help`` lists every option)."""

from __future__ import annotations

import argparse

import torch.distributed as dist

from ..classifiers import ARCHITECTURES
from ..data import DATASETS, LABELLED
from .checkpoints import TrainingDiverged
from .loop import train
from .runs import TASKS

__all__ = ["DESCRIPTION", "main", "parser"]

DESCRIPTION = (
    "Train the i-ResNet density model: ``python -m invattn.train --preset NAME --out DIR [--resume] [--steps N]``, "
    "or :func:`train` from Python (lesson 08); and, through the same loop, the invertible classifiers: "
    "``python -m invattn.train --task classify --model irevnet|iresnet --preset smoke|digits|cifar10-paper --out "
    "DIR`` (lesson 09; ``--coeff`` sets the i-ResNet blocks' Lipschitz coefficient, ``--coeff none`` the "
    "unconstrained ResNet). Classification logs the batch loss and accuracy, and the held-out accuracy after every "
    "epoch."
)


def _listed(flags: tuple[str, ...]) -> str:
    """'--a, --b and --c' of argparse destinations."""
    names = ["--" + flag.replace("_", "-") for flag in flags]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _checked(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``parser.error`` for flags that do not fit together: no preset, a classifier without a model, another task's
    flags, ``--coeff`` without the i-ResNet."""
    if args.preset is None and not args.resume:
        parser.error("--preset is required (smoke, digits, patches or cifar10-paper), except with --resume")
    if args.task == "classify" and args.model is None and not args.resume:
        parser.error("--task classify needs --model irevnet or --model iresnet")
    for name, task in TASKS.items():
        if name != args.task and any(getattr(args, flag) is not None for flag in task.flags):
            parser.error(f"{_listed(task.flags)} are for --task {name}")
    if args.coeff is not None and args.model != "iresnet":
        parser.error("--coeff is the i-ResNet classifier's Lipschitz coefficient: use it with --model iresnet")


def _overrides(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[dict, dict]:
    """(model overrides, training overrides) that the command line asks for; ``parser.error`` for a combination
    that does not fit (a classifier's flag for the density model, settings with --resume but --steps and --lr…)."""
    _checked(args, parser)
    estimator = dict(logdet=args.logdet, n_terms=args.n_terms, neumann_gradient=args.neumann_gradient)
    estimator = {k: v for k, v in estimator.items() if v is not None}
    training = dict(
        epochs=args.epochs,
        dataset=args.dataset,
        data_root=args.data_root,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
    )
    training = {k: v for k, v in training.items() if v is not None}
    if args.resume and (training or estimator or args.model or args.attention is not None or args.coeff is not None):
        parser.error(
            "--resume continues the saved run with its own settings (model included); only --steps and --lr "
            "may be changed"
        )
    model = dict(estimator)
    if args.attention is not None:
        kind = None if args.attention == "none" else args.attention
        model["attention"] = TASKS[args.task].attention_override(kind, args.preset)
    if args.coeff is not None:
        try:
            model["coeff"] = None if args.coeff.lower() == "none" else float(args.coeff)
        except ValueError:
            parser.error(f"--coeff takes a number in (0, 1) or 'none', got {args.coeff!r}")
    if args.epochs is not None and args.steps is None:
        training["steps"] = None  # --epochs replaces a preset's step count
    if args.lr is not None:
        training["lr"] = args.lr
    return model, training


def parser() -> argparse.ArgumentParser:
    """The parser of ``python -m invattn.train``.

    Returns:
        an ``argparse.ArgumentParser`` with every option (``--help`` lists them); the checks of which options go
        together run after parsing, in :func:`main`.
    """
    parser = argparse.ArgumentParser(prog="python -m invattn.train", description=DESCRIPTION)
    add = parser.add_argument
    add(
        "--task",
        default="density",
        choices=tuple(TASKS),
        help="density: the generative model (default); classify: an invertible classifier",
    )
    add("--model", choices=ARCHITECTURES, help="the classifier for --task classify")
    presets = sorted({preset for task in TASKS.values() for preset in task.presets})
    add("--preset", choices=presets, help="the configuration to train (a resumed run keeps its own)")
    add("--out", required=True, help="folder for the checkpoint, metrics, curves and samples")
    add("--resume", action="store_true", help="continue exactly from OUT/checkpoint.pt")
    add("--steps", type=int, help="total number of steps (default: the preset's epochs)")
    add("--epochs", type=int)
    add("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    add("--dataset", choices=tuple(dict.fromkeys(("digits",) + DATASETS + LABELLED)))
    add("--data-root")
    add("--batch-size", type=int)
    add(
        "--lr",
        type=float,
        help="learning rate (default: the preset's); with --resume it replaces the saved run's, "
        "e.g. to continue with a smaller one after a divergence",
    )
    add("--checkpoint-every", type=int)
    add("--attention", help="attention kind in the first scale (density) or stage (classify), or 'none'")
    add(
        "--coeff",
        help="classify, iresnet: the blocks' Lipschitz coefficient in (0, 1), or 'none' for the unconstrained ResNet",
    )
    add(
        "--logdet",
        choices=("series", "roulette"),
        help="density: the log-determinant estimator, truncated series "
        "(i-ResNet) or unbiased Russian roulette (Residual Flows)",
    )
    add("--n-terms", type=int, help="density: series terms, or the roulette's always-computed terms")
    add(
        "--neumann-gradient",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="density: the "
        "Neumann-series gradient of the log-determinant (flat memory in the terms; the presets' default), or "
        "--no-neumann-gradient to back-propagate through the series",
    )
    add("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    add("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m invattn.train`` with ``argv`` (None: the process's arguments).

    Arguments:
        argv: the command line's options.
    Raises:
        SystemExit: 2 with the reason for flags that do not fit, settings or data that do not work, or a diverging
            run (:class:`TrainingDiverged`); 0 after ``--help``.
    """
    arguments = parser()
    args = arguments.parse_args(argv)
    model, training = _overrides(args, arguments)
    try:
        result = train(
            args.preset,
            args.out,
            resume=args.resume,
            steps=args.steps,
            device=args.device,
            amp=args.amp,
            model_overrides=model,
            training_overrides=training,
            progress_bar=not args.no_progress,
            task=args.task,
            architecture=args.model,
        )
    except (ValueError, FileNotFoundError, TrainingDiverged) as error:
        arguments.exit(2, f"python -m invattn.train: error: {error}\n")
    if result["rank"] == 0 and result["history"]:
        last = result["history"][-1]
        if "bits_per_dim" in last:
            print(f"step {last['step']}: {last['bits_per_dim']:.4f} bits/dim; checkpoint {result['checkpoint']}")
        else:
            print(
                f"step {last['step']}: loss {last['loss']:.4f}; held-out accuracy {result['test_accuracy']:.4f}; "
                f"checkpoint {result['checkpoint']}"
            )
    if dist.is_initialized():
        # every rank reaches the end before any tears the group down: a rank that exits while another still
        # talks to it can abort in gloo's background threads ("terminate called without an active exception")
        dist.barrier()
        dist.destroy_process_group()
