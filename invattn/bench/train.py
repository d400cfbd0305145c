"""Training throughput of the i-ResNet density model, with and without attention, and a bits/dim run.

Throughput: the ``cifar10-paper`` preset (48 blocks of width 512, its series terms, 1 probe) on synthetic
CIFAR-shaped batches, so no data set is needed to time a step. On a GPU: batch 64, peak memory from
``torch.cuda.max_memory_allocated``, optionally bfloat16. On a CPU the same model at a small batch (ratios are
what carry over). Two shares come from ablations in the same run: the certified spectral normalisation's,
1 − t/t_full with t the step under the classic power-iteration normalisation instead (5 warm-started iterations
per call, :class:`invattn.bench.certify.PowerIterationNormalisation`; what certification costs beyond it), and
the log-determinant's, with t the step that computes only the forward pass (no log-det).
The original code trained at about 33 images/s on one RTX 3090 (200 epochs × 50,000 images in 3.5 days).

Training settings side by side (:func:`settings_side_by_side`): the paper's estimator (5 series terms,
back-propagated), the Neumann gradient with 5, 2 and 1 terms and the roulette, timed alternately on the same
layouts, with each one's peak memory and the held-out bits/dim of the digits preset trained with it.

Bits/dim: the ``digits`` preset trained on 1500 of scikit-learn's 8×8 digits and evaluated on the other 297.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace

import torch

from ..ablation import held_out_bits_per_dim
from ..attention import KINDS
from ..data import dequantize
from ..memory import TensorMemory
from ..models import PRESETS, FlowConfig, ResidualFlow, with_attention
from ..train import train
from .certify import PowerIterationNormalisation

PAPER_IMAGES_PER_SECOND = 50_000 * 200 / (3.5 * 24 * 3600)  # ≈ 33


def forward_only_loss(model: ResidualFlow, x: torch.Tensor) -> torch.Tensor:
    """The same network without the log-determinant: prior log-density of f(x) only."""
    return -model.prior_log_prob(model.latents(x)).mean()


def time_steps(model, optimizer, batch, n_steps, device, amp, loss_fn) -> float:
    """Seconds per optimiser step (after one warm-up step)."""

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n_steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n_steps


def throughput(quick: bool, device: torch.device, amp: bool) -> list[dict]:
    gpu = device.type == "cuda"
    batch_size = 64 if gpu else (2 if quick else 4)
    n_steps = 10 if gpu else 1
    base = PRESETS["cifar10-paper"]
    if quick and not gpu:
        base = replace(base, blocks=(2, 2, 2), width=64)
    print(
        f"\n-- throughput: {'cifar10-paper' if not quick or gpu else 'reduced cifar10-paper (2-2-2, width 64)'}, "
        f"batch {batch_size}, device {device}{', bfloat16' if amp else ''}; log-det: {base.n_terms} series terms"
        f"{' with the Neumann gradient' if base.neumann_gradient else ', back-propagated'} (the original code: 5, "
        "back-propagated) --"
    )
    header = (
        f"{'attention':>17} | {'images/s':>8} {'s/step':>7} {'peak GiB':>8} | {'certify share':>13} "
        f"{'log-det share':>13} {'attention share':>15} | {'200 epochs':>10}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    baseline = None
    # every certified kind and the generative repository's concat: what each costs per step (speed only: CIFAR-shaped
    # synthetic batches; the bits/dim comparison is the digits ablation, python -m invattn.ablation)
    for kind in (None, *KINDS, "generative-concat"):
        torch.manual_seed(0)
        config = with_attention(base, "concat" if kind == "generative-concat" else kind)
        if kind == "generative-concat":
            config = replace(config, attention_variant="generative")
        model = ResidualFlow(config).to(device)
        optimizer = torch.optim.Adamax(model.parameters(), lr=3e-3)
        batch = dequantize(torch.rand(batch_size, 3, 32, 32)).to(device)
        with torch.no_grad():
            model.bits_per_dim(batch)  # ActNorm initialisation
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        full = time_steps(model, optimizer, batch, n_steps, device, amp, lambda b: model.bits_per_dim(b).mean())
        memory = torch.cuda.max_memory_allocated() / 2**30 if gpu else math.nan
        with PowerIterationNormalisation(model):
            classic_sn = time_steps(
                model, optimizer, batch, n_steps, device, amp, lambda b: model.bits_per_dim(b).mean()
            )
        without_logdet = time_steps(
            model, optimizer, batch, n_steps, device, amp, lambda b: forward_only_loss(model, b)
        )
        rate = batch_size / full
        if kind is None:
            baseline = full
        row = dict(
            attention=kind or "none",
            images_per_second=rate,
            seconds_per_step=full,
            peak_gib=memory,
            certify_share=max(0.0, 1 - classic_sn / full),
            logdet_share=max(0.0, 1 - without_logdet / full),
            attention_share=max(0.0, 1 - baseline / full) if kind else 0.0,
        )
        rows.append(row)
        hours = 200 * 50_000 / rate / 3600
        shown = f"{memory:>8.2f}" if gpu else f"{'—':>8}"  # CPU: no allocator statistics
        print(
            f"{row['attention']:>17} | {rate:>8.1f} {full:>7.3f} {shown} | {row['certify_share']:>13.0%} "
            f"{row['logdet_share']:>13.0%} {row['attention_share']:>15.0%} | {hours:>9.1f}h",
            flush=True,
        )
    print(
        f"original code: ≈{PAPER_IMAGES_PER_SECOND:.0f} images/s on one RTX 3090 (3.5 days for 200 epochs); "
        f"target on one H100: ≥ 330 images/s (200 epochs in < 9 h)"
    )
    return rows


SETTINGS = {
    "paper: 5 terms, back-propagated": dict(n_terms=5, neumann_gradient=False),
    "Neumann gradient, 5 terms": dict(n_terms=5, neumann_gradient=True),
    "Neumann gradient, 2 terms (CIFAR presets)": dict(n_terms=2, neumann_gradient=True),
    "Neumann gradient, 1 term": dict(n_terms=1, neumann_gradient=True),
    "roulette (2 exact) + Neumann": dict(logdet="roulette", n_terms=2, neumann_gradient=True),
}
REFERENCE = "paper: 5 terms, back-propagated"  # the i-ResNet estimator, the rows' speed-up is against it
_NAME_WIDTH = max(map(len, SETTINGS))


def _layouts(quick: bool, gpu: bool) -> list[tuple[str, FlowConfig, int]]:
    """(column name, model, batch) of the settings table: the paper's model on a GPU; on a CPU its layout reduced
    to 2 steps per scale and width 128 (64 with ``quick``), without attention at batch 8 and 64 and with concat."""
    paper = PRESETS["cifar10-paper"]
    if gpu:
        return [("none, 64", with_attention(paper, None), 64), ("concat, 64", paper, 64)]
    reduced = replace(paper, blocks=(2, 2, 2), width=64 if quick else 128)
    batches = (4, 16) if quick else (8, 64)
    none = with_attention(reduced, None)
    return [
        (f"none, {batches[0]}", none, batches[0]),
        (f"none, {batches[1]}", none, batches[1]),
        (f"concat, {batches[1]}", reduced, batches[1]),
    ]


def _seconds_per_step(layouts, rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of every setting on every layout: per layout, the settings alternated A B C … per round and
    the smallest of the rounds kept (a noisy machine slows every setting alike)."""
    times = {name: [] for name in SETTINGS}
    for _, config, batch_size in layouts:
        shape = (batch_size, config.in_channels, config.image_size, config.image_size)
        batch = dequantize(torch.rand(shape, generator=torch.Generator().manual_seed(0))).to(device)
        runs = {}
        for name, options in SETTINGS.items():
            torch.manual_seed(0)
            model = ResidualFlow(replace(config, **options)).to(device)
            with torch.no_grad():
                model.bits_per_dim(batch)  # ActNorm initialisation
            runs[name] = (model, torch.optim.Adamax(model.parameters(), lr=3e-3), [])
        for _ in range(rounds):
            for model, optimizer, spent in runs.values():
                loss = lambda b, model=model: model.bits_per_dim(b).mean()  # noqa: E731
                spent.append(time_steps(model, optimizer, batch, 1, device, False, loss))
        for name, (_, _, spent) in runs.items():
            times[name].append(min(spent))
    return times


def settings_side_by_side(quick: bool, device: torch.device) -> list[dict]:
    """Print the project's training settings against each other (:data:`SETTINGS`): seconds per step on each layout
    of :func:`_layouts` and the speed-up against the paper's estimator (:data:`REFERENCE`); the peak tensor memory of
    one step on the first layout (``torch.cuda.max_memory_allocated`` on a GPU, :class:`invattn.memory.TensorMemory`
    on a CPU); the held-out bits/dim of the digits preset trained with the same setting on the same images.

    Arguments:
        quick: smaller layouts, 2 rounds, 1 epoch of digits (a smoke run).
        device: where to run.
    Returns:
        one dict per setting: ``setting``, ``seconds_per_step`` and ``speedup`` (each a dict from layout name to
        seconds / ratio against :data:`REFERENCE`), ``peak_mib``, ``bits_per_dim``, ``train_seconds``, ``epochs``.
    """
    gpu = device.type == "cuda"
    layouts = _layouts(quick, gpu)
    rounds = 2 if quick else 3
    epochs = 1 if quick else 10
    print(
        f"\n-- training settings side by side: s/step (speed-up against the paper's estimator), {device}, one process, "
        f"alternated, best of {rounds}; layout {layouts[0][1].blocks} × width {layouts[0][1].width}; peak memory "
        f"at {layouts[0][0]}; bits/dim: the digits preset with the same setting, {epochs} epoch(s) of 1500 images, "
        "on the 297 held-out digits --"
    )
    times = _seconds_per_step(layouts, rounds, device)
    header = (
        f"{'setting':>{_NAME_WIDTH}} | "
        + " ".join(f"{name:>19}" for name, _, _ in layouts)
        + f" | {'peak MiB':>8} | {'bits/dim':>8} {'train s':>7}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for name, options in SETTINGS.items():
        _, config, batch_size = layouts[0]
        shape = (batch_size, config.in_channels, config.image_size, config.image_size)
        batch = dequantize(torch.rand(*shape, generator=torch.Generator().manual_seed(0))).to(device)
        torch.manual_seed(0)
        model = ResidualFlow(replace(config, **options)).to(device)
        with torch.no_grad():
            model.bits_per_dim(batch)
        peak = _peak_step_bytes(model, torch.optim.Adamax(model.parameters(), lr=3e-3), batch, device) / 2**20
        bpd, seconds, _ = _digits_with(options, epochs, device)
        speedups = [reference / own for reference, own in zip(times[REFERENCE], times[name])]
        rows.append(
            dict(
                setting=name,
                seconds_per_step=dict(zip((c for c, _, _ in layouts), times[name])),
                speedup=dict(zip((c for c, _, _ in layouts), speedups)),
                peak_mib=peak,
                bits_per_dim=bpd,
                train_seconds=seconds,
                epochs=epochs,
            )
        )
        cells = " ".join(f"{t:>10.3f} ({x:>5.2f}×)" for t, x in zip(times[name], speedups))
        print(f"{name:>{_NAME_WIDTH}} | {cells} | {peak:>8.1f} | {bpd:>8.4f} {seconds:>7.0f}", flush=True)
    return rows


def _peak_step_bytes(model, optimizer, batch, device) -> float:
    """Peak tensor memory of one training step (bytes)."""
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        model.bits_per_dim(batch).mean().backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with TensorMemory() as memory:
        model.bits_per_dim(batch).mean().backward()
    return memory.peak_bytes


def _digits_with(options: dict, epochs: int, device: torch.device) -> tuple[float, float, list[dict]]:
    """(held-out bits/dim, seconds, training history) of the digits preset trained with model ``options`` for
    ``epochs`` of 1500 images; held out as in the ablation (:func:`invattn.ablation.held_out_bits_per_dim`)."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = train(
            "digits",
            folder,
            device=str(device),
            progress_bar=False,
            model_overrides=options,
            training_overrides=dict(n_train=1500, epochs=epochs, samples_per_epoch=0, seed=1),
        )
        seconds = time.perf_counter() - start
    return held_out_bits_per_dim(result["model"]), seconds, result["history"]


def digits_bits_per_dim(quick: bool, device: torch.device) -> dict:
    epochs = 2 if quick else 10
    print(f"\n-- bits/dim on scikit-learn's digits: train 1500 images, {epochs} epochs; test on the other 297 --")
    bpd, seconds, history = _digits_with({}, epochs, device)
    train_bpd = sum(h["bits_per_dim"] for h in history[-10:]) / 10
    print(f"train (last 10 steps) {train_bpd:.3f} bits/dim, test {bpd:.3f} bits/dim; {seconds:.0f} s on {device}")
    return dict(train_bits_per_dim=train_bpd, test_bits_per_dim=bpd, seconds=seconds, epochs=epochs)


def run(quick: bool = False) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = dict(throughput=throughput(quick, device, amp=False), settings=settings_side_by_side(quick, device))
    if device.type == "cuda":
        results["throughput_bf16"] = throughput(quick, device, amp=True)
    results["digits"] = digits_bits_per_dim(quick, device)
    return results
