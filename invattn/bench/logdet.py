"""Memory of the log-determinant's backward pass: the power series vs the Neumann-series gradient.

The power series keeps the graph of every vector–Jacobian product (memory grows with the number of
terms); the Neumann gradient evaluates the terms without a graph and differentiates one product
(memory flat). Memory is the bytes autograd saves for backward, counted exactly with
:class:`invattn.memory.SavedTensorBytes` (the same on any device); time is one forward + backward.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..blocks import InvertibleResidual, logdet
from ..lipschitz import LipSwish, spectral_norm
from ..memory import SavedTensorBytes


def saved_bytes_and_seconds(
    block: InvertibleResidual, x: torch.Tensor, n_terms: int, neumann: bool
) -> tuple[int, float]:
    start = time.perf_counter()
    with SavedTensorBytes() as saved:
        value = logdet(
            block, x, "series", n_terms=n_terms, neumann_gradient=neumann, generator=torch.Generator().manual_seed(0)
        )
    value.sum().backward()
    return saved.bytes, time.perf_counter() - start


def run(quick: bool = False) -> list[dict]:
    torch.manual_seed(0)
    channels, width, size, batch = (4, 16, 8, 4) if quick else (12, 128, 16, 32)
    g = nn.Sequential(
        spectral_norm(nn.Conv2d(channels, width, 3, padding=1), coeff=0.9, input_size=(size, size)),
        LipSwish(),
        spectral_norm(nn.Conv2d(width, width, 1), coeff=0.9),
        LipSwish(),
        spectral_norm(nn.Conv2d(width, channels, 3, padding=1), coeff=0.9, input_size=(size, size)),
    )
    block = InvertibleResidual(g)
    x = torch.randn(batch, channels, size, size)
    print(
        f"i-ResNet conv block {channels}×{size}×{size}, width {width}, batch {batch}, float32; "
        "memory = bytes saved for backward"
    )
    header = (
        f"{'terms':>5} | {'series MiB':>10} {'Neumann MiB':>11} {'ratio':>6} | {'series s':>8} {'Neumann s':>9} "
        f"{'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for n_terms in (2, 5, 10, 20):
        series_bytes, series_s = saved_bytes_and_seconds(block, x, n_terms, neumann=False)
        neumann_bytes, neumann_s = saved_bytes_and_seconds(block, x, n_terms, neumann=True)
        rows.append(dict(terms=n_terms, series=series_bytes, neumann=neumann_bytes))
        print(
            f"{n_terms:>5} | {series_bytes / 2**20:>10.1f} {neumann_bytes / 2**20:>11.1f} "
            f"{series_bytes / neumann_bytes:>6.2f} | {series_s:>8.3f} {neumann_s:>9.3f} {neumann_s / series_s:>6.2f}",
            flush=True,
        )
    return rows
