"""Files the library writes and reads back: atomically written (an interruption leaves the old file or the new one,
never half of one), and saved models read with ``weights_only`` (tensors and plain values: no code runs)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def write_atomically(path: str | Path, write: Callable, binary: bool = True) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``.
    On any error (an interruption included) the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_saved_model(path: str | Path, device: str | torch.device, build: Callable[[dict], nn.Module],
                     missing: str, foreign: str) -> tuple[nn.Module, dict]:
    """(model in eval mode, the whole saved dict) from a file holding ``model`` (a state dict) and ``model_config``
    (what ``build`` turns into the module). Raises ``FileNotFoundError(missing)`` when ``path`` is not a file and
    ``ValueError(foreign + the cause)`` when it holds anything else (unpickling, missing keys, another model)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model = build(state["model_config"]).to(device)
        model.load_state_dict(state["model"])
    except Exception as error:
        raise ValueError(f"{foreign} ({type(error).__name__}: {error})") from None
    return model.eval(), state
