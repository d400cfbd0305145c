"""i-RevNet vs the i-ResNet classifier vs the plain ResNet of the same layout, side by side in one run.

For each configuration (the ``digits`` presets, 1×8×8; and, unless ``--quick``, a CIFAR-10-sized 3×32×32 model
with 2-2-2 blocks) and each model:

1. training throughput: images per second of a full step (forward, cross-entropy, backward, Adam), on random
   images and labels, the three models timed alternately (A B C A B C) so machine noise hits all alike;
2. inversion of the features Φ(x) of a test batch, in eval mode, after those training steps: wall time and the
   relative error ‖x̂ − x‖/‖x‖ in float32 and float64 (i-RevNet: analytic; i-ResNet: the library's Anderson solver
   to tolerance 1e-5 in float32, 1e-10 in float64; the plain ResNet: the same solver, which may not converge);
3. parameters.

One CPU thread (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import torch
from torch import nn

from ..classifiers import ClassifierConfig, build_classifier, classifier_preset
from ..norms import per_sample_norm


def _models(config: ClassifierConfig) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    # the same layout: i-RevNet's channels are per half, the residual networks' the whole stream
    iresnet = replace(config, architecture="iresnet", channels=tuple(2 * c for c in config.channels))
    return {
        "i-RevNet": build_classifier(replace(config, architecture="irevnet")),
        "i-ResNet c=0.9": build_classifier(replace(iresnet, coeff=0.9)),
        "ResNet (no constraint)": build_classifier(replace(iresnet, coeff=None)),
    }


def _inverse(model: nn.Module, x: torch.Tensor) -> tuple[float, float, str]:
    """(seconds, relative error, note) of inverting Φ(x)."""
    with torch.no_grad():
        phi = model.features(x)
        start = time.perf_counter()
        if hasattr(model, "lipschitz_bound"):  # the residual networks: iterate
            tol = 1e-10 if x.dtype == torch.float64 else 1e-5
            x_hat, report = model.inverse(phi, tol=tol, max_iter=500, on_failure="return", return_info=True)
            note = "converged" if all(i.converged for i in report.blocks) else "NOT converged"
            note += f", {sum(i.function_evals for i in report.blocks)} evaluations of g"
        else:
            x_hat, note = model.inverse(phi), "analytic"
        seconds = time.perf_counter() - start
    error = float(per_sample_norm(x_hat - x).max() / per_sample_norm(x).min())
    return seconds, error, note


def compare(config: ClassifierConfig, label: str, batch_size: int, rounds: int, steps: int) -> None:
    models = _models(config)
    shape = (batch_size, config.in_channels, config.image_size, config.image_size)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=generator) - 0.5
    y = torch.randint(config.classes, (batch_size,), generator=generator)
    optimisers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}

    def step(name: str) -> None:
        loss = nn.functional.cross_entropy(models[name](x), y)
        optimisers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimisers[name].step()

    for name in models:  # warm-up: first certificates, allocator
        step(name)
    seconds = {name: [] for name in models}
    for _ in range(rounds):
        for name in models:
            start = time.perf_counter()
            for _ in range(steps):
                step(name)
            seconds[name].append((time.perf_counter() - start) / steps)
    print(f"\n-- {label}: batch {batch_size}, {rounds} rounds × {steps} training steps per model, alternated --")
    header = (
        f"{'model':>24} | {'params':>9} | {'train img/s':>11} {'vs i-RevNet':>11} | "
        f"{'inverse f32 s':>13} {'error f32':>9} | {'inverse f64 s':>13} {'error f64':>9} | note (float64)"
    )
    print(header)
    print("-" * len(header))
    reference = None
    test = torch.rand((8, *shape[1:]), generator=generator) - 0.5
    for name, model in models.items():
        throughput = batch_size / (sum(seconds[name]) / len(seconds[name]))
        reference = reference or throughput
        model.eval()
        t32, e32, _ = _inverse(model, test)
        t64, e64, note = _inverse(copy.deepcopy(model).double(), test.double())
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{name:>24} | {params:>9,} | {throughput:>11.1f} {throughput / reference:>10.2f}× | "
            f"{t32:>13.4f} {e32:>9.1e} | {t64:>13.4f} {e64:>9.1e} | {note}",
            flush=True,
        )


def run(quick: bool = False) -> None:
    torch.set_num_threads(1)
    print("torch.set_num_threads(1): every timing below is on one CPU thread")
    compare(
        classifier_preset("irevnet", "digits"),
        "digits layout (1×8×8, 3-3 blocks, 16-64 channels)",
        batch_size=64,
        rounds=2 if quick else 3,
        steps=2 if quick else 5,
    )
    if not quick:
        cifar = replace(
            classifier_preset("irevnet", "cifar10-paper"), blocks=(2, 2, 2), channels=(16, 64, 256), hidden=32
        )
        compare(cifar, "CIFAR-10-sized (3×32×32, 2-2-2 blocks, 32-128-512 channels)", batch_size=16, rounds=2, steps=2)


if __name__ == "__main__":
    run()
