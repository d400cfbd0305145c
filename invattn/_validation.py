"""Checks shared by every floor of the library: clear errors instead of silent wrong answers."""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager

import torch


def _as_number(value, name: str, what: str) -> float:
    """float(value), refusing text and booleans (float("0.5") and float(True) would pass silently)."""
    if isinstance(value, (str, bytes, bool)):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {what}, got {value!r}") from None


def check_coeff(coeff: float, name: str = "coeff") -> float:
    """Return ``coeff`` as a float if it lies in (0, 1), the range that keeps x + g(x) invertible.

    Arguments:
        coeff: a Lipschitz coefficient (any real number type; not a bool).
        name: the argument's name, for the message.
    Returns:
        ``coeff`` as a float in (0, 1).
    Raises:
        TypeError: not a real number.
        ValueError: outside (0, 1) or NaN (Lip(g) < 1 is what Banach's fixed-point theorem needs).
    """
    value = _as_number(coeff, name, "a number in (0, 1)")
    if not (0.0 < value < 1.0) or math.isnan(value):
        raise ValueError(
            f"{name} must be in (0, 1) for the block to be invertible "
            f"(Lip(g) < 1 is what Banach's fixed-point theorem needs), got {coeff!r}"
        )
    return value


def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether every entry is finite. For float32/float64 tensors by their minimum and maximum (one reduction, no
    boolean tensor: cheaper than ``isfinite().all()``, see ``python -m invattn.bench``); NaN propagates through both
    and ±inf is one of them, so the answer is the same. Every other dtype takes the plain check."""
    if tensor.is_quantized or tensor.dtype not in (torch.float32, torch.float64):
        return bool(torch.isfinite(tensor).all())  # other dtypes (half, float8, complex, integers): the plain check
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor.detach())
    return bool(torch.isfinite(torch.stack((low, high))).all())


class NonFiniteError(ValueError):
    """A tensor held NaN or infinity where a finite value is needed (raised by :func:`check_finite`)."""


def check_finite(tensor: torch.Tensor, name: str = "input") -> torch.Tensor:
    """Raise :class:`NonFiniteError` (a ``ValueError``) if ``tensor`` holds NaN or infinity; return it unchanged
    otherwise.

    Inside ``torch.func.vmap`` a value can't steer control flow, so a batched tensor is passed through unchecked.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if unwrap_functorch(tensor)[1]:
        return tensor
    if not _all_finite(tensor):
        bad = int((~torch.isfinite(tensor)).sum())
        raise NonFiniteError(f"{name} has {bad} non-finite value(s) (NaN or inf); refusing to compute with it")
    return tensor


def unwrap_functorch(tensor: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(the tensor under torch.func's wrappers, whether one of them is a vmap batch): same values, plain tensor."""
    functorch = torch._C._functorch
    batched = False
    while functorch.is_functorch_wrapped_tensor(tensor):
        batched = batched or functorch.is_batchedtensor(tensor)
        tensor = functorch.get_unwrapped(tensor)
    return tensor, batched


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``; raise a clear error otherwise.

    Arguments:
        value: an integer (Python or NumPy; a bool is refused).
        name: the argument's name, for the message.
        minimum: the smallest value allowed.
    Returns:
        ``value`` as an int.
    Raises:
        TypeError: not an integer.
        ValueError: below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy integers are integers too
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_positive_float(value: float, name: str) -> float:
    """Return ``value`` as a float if it is finite and > 0.

    Arguments:
        value: any real number type (not a bool).
        name: the argument's name, for the message.
    Returns:
        ``value`` as a float.
    Raises:
        TypeError: not a real number.
        ValueError: zero, negative, infinite or NaN.
    """
    number = _as_number(value, name, "a positive number")
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def check_choice(value: str, name: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``; otherwise say what is allowed.

    Arguments:
        value: the choice given.
        name: the argument's name, for the message.
        allowed: the valid choices.
    Returns:
        ``value``, unchanged.
    Raises:
        ValueError: ``value`` is not in ``allowed`` (the message lists them).
    """
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
    return value


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` (Apple silicon), ``"auto"`` or a ``torch.device`` →
    ``torch.device``.

    ``"auto"`` picks CUDA when present, then MPS, then the CPU. Asking for CUDA or MPS on a machine without it is an
    error, not a silent fall-back to the CPU. MPS has no float64, in which every certified bound is computed: there
    a certified layer raises torch's ``TypeError`` about float64 at its first bound (coupling blocks run).

    Arguments:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"`` or a ``torch.device``.
    Returns:
        the ``torch.device``.
    Raises:
        TypeError: anything but a string or a ``torch.device``.
        ValueError: an unknown device, or one this machine does not have.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', 'cuda', 'mps' or 'auto', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device in ("mps", "mps:0"):
        if not _mps_available():
            raise ValueError(
                f"device={device!r} was asked for, but this machine has no MPS (Apple-silicon GPU) backend; "
                "use device='cpu' (the default) or device='auto'"
            )
        return torch.device("mps")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for, but this machine has no CUDA GPU; "
                "use device='cpu' (the default) or device='auto'"
            )
        try:
            resolved = torch.device(device)
        except RuntimeError:
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'; got {device!r}") from None
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} GPU(s) are visible")
        return resolved
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'; got {device!r}")


def check_model(model, name: str = "model", kind: type | tuple[type, ...] | None = None):
    """Return ``model`` if it is an ``nn.Module`` (of ``kind``, when given), refusing a model wrapped in
    ``DataParallel`` / ``DistributedDataParallel`` with the fix (pass ``.module``): the wrapper only splits batches
    across devices and hides the attributes (config, inverse, certificates) that invattn's functions read."""
    from torch import nn

    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise TypeError(
            f"{name} is wrapped in {type(model).__name__}; pass the model itself, {name}.module (the wrapper only "
            "splits batches across devices for training; it has no inverse, config or certificates)"
        )
    wanted = kind if kind is not None else nn.Module
    if not isinstance(model, wanted):
        names = " or ".join(k.__name__ for k in (wanted if isinstance(wanted, tuple) else (wanted,)))
        raise TypeError(f"{name} must be a {names}, got {type(model).__name__}")
    return model


def check_images(x, name: str, model_dtype: torch.dtype | None = None, model_device: torch.device | None = None):
    """Refuse what is not a floating-point tensor on the model's device, naming the fix, before any layer fails
    with a message about something else (an integer image, a NumPy array, a CPU batch for a GPU model)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__} (convert it with torch.as_tensor)")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (e.g. pixel values / 255 as float32), got {x.dtype}")
    if x.dim() > 0 and x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}): there is nothing to compute")
    if model_device is not None and x.device != model_device:
        raise ValueError(
            f"{name} is on {x.device} but the model's weights are on {model_device}: move one of them "
            f"({name}.to({str(model_device)!r}) or model.to({str(x.device)!r}))"
        )
    if model_dtype is not None and x.dtype != model_dtype:
        raise TypeError(
            f"{name} is {x.dtype} but the model computes in {model_dtype}: convert one of them "
            f"({name}.to({model_dtype}) or model.to({x.dtype}))"
        )
    return x


def check_inverse_mode(module, who: str) -> None:
    """Refuse to invert through ``module`` while a known layer of it computes differently from call to call: batch
    normalisation in training mode (normalises with the statistics of whichever batch it is given, and updates its
    running statistics) or without running statistics, instance normalisation that tracks running statistics in
    training mode (updates them), dropout, RReLU and attention dropout in training mode (random). An inverse
    re-evaluates F on the outputs, so such a layer would make it silently wrong (a sub-batch inverts to another F) and
    change the model's state; in eval mode each is a fixed function and the inverse is exact. A layer defined outside
    torch and invattn is refused in training mode too: nothing can tell from outside whether it computes from batch
    statistics, counters or its own random generator (after ``model.eval()`` it is taken as one function). Raises
    ``RuntimeError`` naming the layer and the fix."""
    from torch import nn

    for name, part in module.named_modules():
        where = f"{type(part).__name__} {name!r}" if name else type(part).__name__
        if isinstance(part, nn.modules.batchnorm._BatchNorm) and part.running_mean is None:
            raise RuntimeError(
                f"{who} refused: its branch holds {where}, built with track_running_stats=False: it normalises with "
                "the "
                "statistics of whichever batch it is given, in eval mode too, so the inverse would evaluate another "
                "function than the forward pass did on any other batch. Rebuild it with track_running_stats=True and "
                "invert in eval mode (model.eval())"
            )
        why = None
        if part.training and isinstance(part, nn.modules.batchnorm._BatchNorm):
            why = (
                "normalises with the statistics of the batch it is given and updates its running statistics; the "
                "inverse would evaluate it on another batch than the forward pass did (a silently wrong result for "
                "any sub-batch) and change the model"
            )
        elif part.training and isinstance(part, nn.modules.instancenorm._InstanceNorm) and part.track_running_stats:
            why = "would update its running statistics during the inverse"
        elif part.training and (
            isinstance(part, (nn.modules.dropout._DropoutNd, nn.RReLU))
            or (isinstance(part, nn.MultiheadAttention) and part.dropout > 0)
        ):
            why = "draws random numbers, so F in the inverse differs from F in the forward pass"
        origin = type(part).__module__
        if why is None and part.training and not origin.startswith(("torch.", "invattn.")):
            why = (
                f"is defined outside torch and invattn ({origin}), so invattn cannot tell whether it computes the "
                "same function on every call (batch statistics, a counter, its own random generator would make the "
                "inverse silently wrong)"
            )
        if why is not None:
            raise RuntimeError(
                f"{who} refused: its branch holds {where} in training mode, which {why}. Call "
                "model.eval() first (and compute the forward pass in eval mode too)"
            )


@contextmanager
def unchanged_by_inverse(module, who: str):
    """Run an inverse through ``module`` (a block's F or g): :func:`check_inverse_mode` first (known layers that differ
    in training mode, and any layer from outside torch and invattn, are refused while in training mode); then, while
    any part of ``module`` is in training mode, a second line of defence: its parameters and buffers, torch's CPU and
    CUDA generators and any ``torch.Generator`` a part holds are recorded, and if the inverse changed one (a layer
    that updates statistics or draws random numbers), all are put back and ``RuntimeError`` says what changed and how
    to fix it (``model.eval()``)."""
    check_inverse_mode(module, who)
    if not any(part.training for part in module.modules()):
        yield
        return
    buffers = [
        (name, tensor, tensor.detach().clone())
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]
    ]
    generators = [
        (f"{name}.{key}" if name else key, value, value.get_state())
        for name, part in module.named_modules()
        for key, value in vars(part).items()
        if isinstance(value, torch.Generator)
    ]
    cpu_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    failure = None
    try:
        yield
    except Exception as error:  # e.g. a solve that did not converge because g is random: the real cause is below
        failure = error
    changed = [name for name, buffer, before in buffers if not torch.equal(buffer, before)]
    drew = not torch.equal(cpu_state, torch.random.get_rng_state()) or (
        cuda_states is not None
        and any(not torch.equal(a, b) for a, b in zip(cuda_states, torch.cuda.get_rng_state_all()))
    )
    drew = drew or any(not torch.equal(generator.get_state(), before) for _, generator, before in generators)
    if changed or drew:
        with torch.no_grad():
            for _, buffer, before in buffers:
                buffer.copy_(before)
        torch.random.set_rng_state(cpu_state)
        for _, generator, before in generators:
            generator.set_state(before)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        what = (
            (f"changed {', '.join(changed)}" if changed else "")
            + (" and " if changed and drew else "")
            + ("drew random numbers" if drew else "")
        )
        raise RuntimeError(
            f"{who} refused: in training mode its branch {what} during the inverse, so it computes differently from "
            "call to call and the inverse would be silently wrong (the buffers and random state are restored). Call "
            "model.eval() first (and compute the forward pass in eval mode too)"
        ) from failure
    if failure is not None:
        raise failure
