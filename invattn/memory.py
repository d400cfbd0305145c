"""Exact accounting of the tensor memory a computation allocates, on any device (the CPU included).

``torch.cuda.max_memory_allocated`` exists only on a GPU; this counts, op by op, the bytes of every tensor
storage that PyTorch operators create while the context is active (inputs and parameters created before
are not counted), keeping the live total, its peak, and the largest single storage. Storages are tracked
with weak references, so a tensor that is freed stops counting at the next op.

:class:`SavedTensorBytes` counts instead what autograd keeps for backward (the memory a longer graph costs).
"""

from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["TensorMemory", "SavedTensorBytes"]


class TensorMemory(TorchDispatchMode):
    """Context manager: ``with TensorMemory() as memory: ...``, then ``memory.peak_bytes``,
    ``memory.largest_bytes`` (the biggest single tensor storage) and ``memory.largest_shape``.

    Counts what autograd saves for backward and what backward allocates (it runs on this thread for CPU
    tensors). Kernels' internal scratch space is not a tensor and is not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self.largest_bytes = 0
        self.largest_shape: tuple[int, ...] = ()

    def _sweep(self) -> None:
        for key in [key for key, (ref, _) in self._live.items() if ref.expired()]:
            self.live_bytes -= self._live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._sweep()
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self._live:
                continue
            size = storage.nbytes()
            self._live[key] = (StorageWeakRef(storage), size)
            self.live_bytes += size
            if size > self.largest_bytes:
                self.largest_bytes, self.largest_shape = size, tuple(tensor.shape)
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out


class SavedTensorBytes(torch.autograd.graph.saved_tensors_hooks):
    """Context manager: ``with SavedTensorBytes() as saved: ...``, then ``saved.bytes``, the total size of the
    tensors autograd saved for backward while it was active (counted as saved; views are counted in full)."""

    def __init__(self) -> None:
        self.bytes = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            self.bytes += tensor.numel() * tensor.element_size()
            return tensor

        super().__init__(pack, lambda tensor: tensor)

    def __enter__(self) -> SavedTensorBytes:
        super().__enter__()
        return self
