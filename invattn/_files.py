"""Files the library writes and reads back: atomically written (an interruption leaves the old file or the new one,
never half of one), and saved models read with ``weights_only`` (tensors and plain values: no code runs)."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._validation import resolve_device

try:  # NumPy 2 moved its core to numpy._core; NumPy 1.26 has only numpy.core
    from numpy._core import multiarray as _numpy_multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _numpy_multiarray


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


# What a checkpoint written by invattn.train before December 2026 held besides tensors: NumPy's random state, a uint32
# array. ``weights_only`` loading admits exactly these four NumPy names for it (array reconstruction, ndarray, dtype,
# the uint32 dtype class): no function of this list runs code from the file. New checkpoints store that state as
# tensors.
_NUMPY_STATE_GLOBALS = [_numpy_multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class UnsafeFileError(ValueError):
    """A file the library was asked to load holds more than tensors and plain values (pickled objects whose
    loading could run code, or a damaged file): refused, nothing in it ran."""


def _why_refused(error: Exception) -> str:
    """What torch.load's refusal means, in one clause: the Python object the file names, or the damage. Torch's own
    message is not repeated: it suggests loading the file unsafely, which would run that object."""
    text = str(error)
    named = re.search(r"GLOBAL\s+([\w.]+)", text, flags=re.IGNORECASE)
    if named:
        return (
            f"it holds a pickled reference to the Python object {named.group(1)}, which loading would call or "
            "build: not a file of tensors and plain values written by invattn"
        )
    if isinstance(error, pickle.UnpicklingError) or "WeightsUnpickler" in text:
        return "it holds pickled objects other than tensors and plain values (not a file written by invattn)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return f"it is not a readable PyTorch file (damaged or of another kind: {type(error).__name__}: {first[:200]})"


def read_weights(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The dict saved at ``path``, read with ``torch.load(..., weights_only=True)``: tensors, numbers, strings,
    lists, tuples and dicts only, so no code in the file can run (the allow-list admits NumPy's random state, which a
    training checkpoint may hold, nothing else). Raises ``FileNotFoundError`` when ``path`` is not a file and
    :class:`UnsafeFileError` (a ``ValueError``) when the file holds anything else or is damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    try:
        with torch.serialization.safe_globals(_NUMPY_STATE_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise UnsafeFileError(f"{path} was refused: {_why_refused(error)}; nothing in it was run") from None
    if not isinstance(state, dict):
        raise UnsafeFileError(f"{path} holds a {type(state).__name__}, not the dict of a saved invattn model")
    return state


def saved_task(state: dict) -> str:
    """What a saved dict holds: "classify" (a classifier: its config names an ``architecture``) or "density"."""
    config = state.get("model_config")
    if state.get("task") == "classify" or (isinstance(config, dict) and "architecture" in config):
        return "classify"
    return "density"


def load_saved_model(
    path: str | Path,
    device: str | torch.device,
    build: Callable[[dict], nn.Module],
    missing: str,
    foreign: str,
    task: str | None = None,
) -> tuple[nn.Module, dict]:
    """(model in eval mode, the whole saved dict) from a file holding ``model`` (a state dict) and ``model_config``
    (what ``build`` turns into the module), read by :func:`read_weights` onto ``device`` (checked first: asking
    for CUDA without a GPU says so). Raises ``FileNotFoundError(missing)`` when ``path`` is not a file and
    ``ValueError(foreign + the cause)`` when it holds anything else (pickled objects, missing keys, another model).
    With ``task`` ("density" or "classify"), a file of the other task is refused with the loader that reads it.
    ``path`` may also be a training run's folder (its ``checkpoint.pt`` is read)."""
    path = Path(path)
    if path.is_dir() and (path / "checkpoint.pt").is_file():
        path = path / "checkpoint.pt"
    device = resolve_device(device)
    if not path.is_file():
        raise FileNotFoundError(missing)
    try:
        state = read_weights(path, map_location=device)
    except UnsafeFileError as error:
        raise UnsafeFileError(f"{foreign}: {error}") from None
    if task is not None and "model_config" in state and saved_task(state) != task:
        other = {
            "density": "a density model (ResidualFlow): load it with invattn.train.load_trained",
            "classify": "a classifier: load it with invattn.classifiers.load_classifier or invattn.train.load_trained",
        }
        raise ValueError(f"{foreign}: it holds {other[saved_task(state)]}")
    try:
        model = build(state["model_config"]).to(device)
        model.load_state_dict(state["model"])
    except Exception as error:
        raise ValueError(f"{foreign} ({type(error).__name__}: {error})") from None
    return model.eval(), state
