"""What every lesson's set-up cell calls: seeds, deterministic settings, the device, the figures folder,
progress bars, and parameter checks that stop a notebook with a message saying what is allowed."""

from __future__ import annotations

import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._validation import check_choice, check_coeff, check_positive_float, check_positive_int

__all__ = [
    "Setup",
    "setup",
    "resolve_device",
    "figures_dir",
    "progress",
    "check_choice",
    "check_coeff",
    "check_positive_int",
    "check_positive_float",
]


@dataclass(frozen=True)
class Setup:
    """What :func:`setup` decided: the device to compute on and the folder figures are saved to."""

    device: torch.device
    figures: Path
    seed: int


def resolve_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when present) → ``torch.device``.

    Asking for CUDA on a machine without a GPU is an error, not a silent fall-back to the CPU.
    """
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', 'cuda' or 'auto', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for, but this machine has no CUDA GPU; "
                "use device='cpu' (the default) or device='auto'"
            )
        resolved = torch.device(device)
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} GPU(s) are visible")
        return resolved
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {device!r}")


def figures_dir() -> Path:
    """The project's ``figures/`` folder (``$INVATTN_FIGURES`` overrides it), created if missing."""
    override = os.environ.get("INVATTN_FIGURES")
    if override:
        path = Path(override)
    else:
        checkout = Path(__file__).resolve().parent.parent
        path = checkout / "figures" if (checkout / "notebooks").is_dir() else Path.cwd() / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup(seed: int = 0, device: str = "cpu") -> Setup:
    """Seed torch, numpy and random; make CPU kernels deterministic; resolve ``device``; style plots."""
    check_positive_int(seed, "seed", minimum=0)
    resolved = resolve_device(device)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if resolved.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    from .plots import use_lesson_style

    use_lesson_style()
    return Setup(device=resolved, figures=figures_dir(), seed=seed)


def progress(iterable=None, **kwargs):
    """A tqdm progress bar: a widget in JupyterLab, plain text when run headless (``make run``/``make test``
    set ``INVATTN_PLAIN_PROGRESS=1``): then it prints one line, its final state, when it closes, so a stored
    output holds one readable line per bar, not one per update."""
    if os.environ.get("INVATTN_PLAIN_PROGRESS"):
        from tqdm.std import tqdm

        class FinalLineOnly(tqdm):
            def close(self) -> None:
                self.delay = 0  # displayed at last: tqdm skips bars that never showed
                super().close()

        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", math.inf)
        kwargs.setdefault("delay", math.inf)  # no first line
        kwargs.setdefault("ncols", 80)
        return FinalLineOnly(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
