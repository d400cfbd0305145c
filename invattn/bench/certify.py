"""What the certified spectral normalisation costs and how tight it is, on the ``cifar10-paper`` model.

1. Build + ``.eval()`` + first forward of the model, in CPU and wall seconds. Building
   already computes every layer's certificate (registering the parametrization evaluates it once).
2. Per distinct layer shape: the exact operator norm of the raw (unnormalised) layer, √λ_max of its Gram matrix
   on the smaller side, in float64; power-iteration estimates after 1, 5 and 20 iterations (lower bounds, as a
   ratio to exact); the certified bound σ_up of :func:`invattn.norms.certify_operator_norm` and the tightness
   exact/σ_up (≤ 1: the certified layer's norm is c·tightness), each with its time.
3. A training step with the certified normalisation (the library as is) against the same step with the classic
   power-iteration normalisation W / max(1, σ̂/c), 5 warm-started iterations per call
   (:class:`PowerIterationNormalisation`), timed alternately in one process, and the share of the certified step
   spent in ``certify_operator_norm``: at the preset's batch of 64 (the share that matters in training) and at
   batch 2 (the worst case: the certificates cost the same per step, the images' work is 32× smaller).

Everything runs on one CPU thread (``torch.set_num_threads(1)``), so CPU seconds and wall seconds agree and the
timings do not depend on how many cores the machine has.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .. import lipschitz
from ..lipschitz import SpectralNorm, power_iteration_norm, spectral_norm
from ..models import PRESETS, FlowConfig, ResidualFlow
from ..norms import certify_operator_norm


class PowerIterationNormalisation:
    """While entered, every :class:`SpectralNorm` of ``model`` computes the classic normalisation instead of the
    certified one: W / max(1, σ̂/c), σ̂ = uᵀA(W)v after ``n_iterations`` power-iteration steps per call, warm-started
    from the previous call's vectors (kept across entries), σ̂ differentiable in W (Miyato et al., 2018; i-ResNet).
    σ̂ ≤ ‖A(W)‖, so the layers it yields can exceed c: a baseline for timing, not a constraint."""

    def __init__(self, model: nn.Module, n_iterations: int = 5) -> None:
        self.n_iterations = n_iterations
        self.maps: dict[SpectralNorm, tuple] = {}  # parametrization → (A(x, W), Aᵀ(y, W), input shape [1, ...])
        self.vectors: dict[SpectralNorm, tuple[torch.Tensor, torch.Tensor]] = {}  # parametrization → (u, v)
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)) and parametrize.is_parametrized(module, "weight"):
                for p in module.parametrizations.weight:
                    if isinstance(p, SpectralNorm):
                        self.maps[p] = _linear_maps(module, p.input_size)
        self._original = None

    def __enter__(self) -> PowerIterationNormalisation:
        self._original = SpectralNorm.forward
        maps, vectors, n_iterations = self.maps, self.vectors, self.n_iterations

        def forward(sn: SpectralNorm, weight: torch.Tensor) -> torch.Tensor:
            apply, adjoint, shape = maps[sn]
            with torch.autocast(device_type=weight.device.type, enabled=False):
                with torch.no_grad():
                    w = weight.detach()
                    if sn in vectors:
                        u, v = vectors[sn]
                    else:
                        generator = torch.Generator().manual_seed(0)
                        v = _unit(torch.randn(shape, generator=generator, dtype=w.dtype).to(w.device))
                        u = _unit(apply(v, w))
                    for _ in range(n_iterations):
                        v = _unit(adjoint(u, w))
                        u = _unit(apply(v, w))
                    vectors[sn] = (u, v)
                sigma = (u * apply(v, weight)).sum()
                return weight / torch.clamp(sigma / sn.coeff, min=1.0)

        SpectralNorm.forward = forward
        return self

    def __exit__(self, *exc) -> None:
        SpectralNorm.forward = self._original


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm().clamp_min(1e-30)


def _linear_maps(module: nn.Module, input_size: tuple[int, int] | None):
    """(A(x, W), Aᵀ(y, W), the shape of a single input) for a Linear, or a zero-padded Conv2d at input_size."""
    if isinstance(module, nn.Linear):
        return (lambda x, w: F.linear(x, w)), (lambda y, w: F.linear(y, w.t())), (1, module.in_features)
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise ValueError("this bench's power-iteration normalisation handles zero padding given as integers")
    kwargs = dict(stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups)
    shape = (1, module.in_channels, *(input_size or (1, 1)))  # a pointwise conv's norm is its matrix's
    return (
        lambda x, w: F.conv2d(x, w, None, **kwargs),
        lambda y, w: torch.nn.grad.conv2d_input((y.shape[0], *shape[1:]), w, y, **kwargs),
        shape,
    )


@torch.no_grad()
def exact_norm(conv: nn.Conv2d, input_size: tuple[int, int], chunk: int = 128) -> float:
    """‖A‖₂ of ``conv`` (bias excluded) on inputs of ``input_size``: √λ_max of the Gram matrix on the smaller
    side (AᵀA or AAᵀ), built column by column from the conv and its adjoint on basis images, in float64."""
    apply, adjoint, in_shape = _linear_maps(conv, input_size)
    weight = conv.weight.detach().double()
    out_shape = apply(torch.zeros(in_shape, dtype=torch.float64), weight).shape
    if math.prod(in_shape) <= math.prod(out_shape):
        first, second, shape = apply, adjoint, in_shape
    else:
        first, second, shape = adjoint, apply, out_shape
    dim = math.prod(shape)
    gram = torch.empty(dim, dim, dtype=torch.float64)
    for start in range(0, dim, chunk):
        rows = min(chunk, dim - start)
        basis = torch.zeros(rows, dim, dtype=torch.float64)
        basis[torch.arange(rows), torch.arange(start, start + rows)] = 1
        gram[start : start + rows] = second(first(basis.reshape(rows, *shape[1:]), weight), weight).reshape(rows, -1)
    return math.sqrt(float(torch.linalg.eigvalsh(0.5 * (gram + gram.T))[-1]))


def timed(fn, repeats: int = 1):
    """(fn(), the fastest of ``repeats`` runs in ms)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best * 1000


@contextlib.contextmanager
def counting_certificates():
    """Counts the calls of ``certify_operator_norm`` made by :class:`SpectralNorm` and the seconds they take."""
    totals = dict(calls=0, seconds=0.0)
    original = lipschitz.certify_operator_norm

    def counted(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals["seconds"] += time.perf_counter() - start
            totals["calls"] += 1

    lipschitz.certify_operator_norm = counted
    try:
        yield totals
    finally:
        lipschitz.certify_operator_norm = original


def layer_shapes(config: FlowConfig) -> list[tuple[int, int, int, int]]:
    """The distinct (in, out, kernel, input size) of the model's spectral-normalised convs (models.py's layout)."""
    shapes = []
    channels, size = 4 * config.in_channels, config.image_size // 2
    for index, stride in enumerate(config.strides):
        if stride == 2:
            channels, size = channels * 4, size // 2
        for shape in (
            (channels, config.width, 3, size),
            (config.width, config.width, 1, 1),
            (config.width, channels, 3, size),
        ):
            if shape not in shapes:
                shapes.append(shape)
        if index < len(config.strides) - 1:
            channels //= 2
    return shapes


def build_and_first_forward(config: FlowConfig) -> None:
    print("\n-- build + .eval() + first forward (log_prob under no_grad, batch 2): cifar10-paper --")
    x = (
        torch.rand(
            2, config.in_channels, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0)
        )
        - 0.5
    )
    with counting_certificates() as totals:
        cpu, wall = time.process_time(), time.perf_counter()
        torch.manual_seed(0)
        model = ResidualFlow(config).eval()
        built_cpu, built_wall = time.process_time() - cpu, time.perf_counter() - wall
        with torch.no_grad():
            model.log_prob(x)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"build + eval: {built_cpu:.2f} CPU-s ({built_wall:.2f} s wall); first forward: {cpu - built_cpu:.2f} CPU-s "
        f"({wall - built_wall:.2f} s wall)"
    )
    print(
        f"total: {cpu:.2f} CPU-s, {wall:.2f} s wall (target < 30 CPU-s: {'met' if cpu < 30 else 'MISSED'}); "
        f"of it certify_operator_norm: {totals['calls']} calls, {totals['seconds']:.2f} s"
    )


def layer_table(config: FlowConfig, quick: bool) -> None:
    iterations = (1, 5, 20)
    print(
        "\n-- every distinct layer of cifar10-paper, raw (unnormalised) weights, default init (seeded), "
        "float32 for power iteration, float64 for exact --"
    )
    if quick:
        print("(--quick: exact norms with a Gram matrix above 1536×1536 skipped)")
    print(
        "PI n: power iteration after n steps from a random start, as a ratio to exact (≤ 1: a lower bound); "
        "σ_up: certified bound; ms with and without the gradient direction (training computes it)"
    )
    header = (
        f"{'layer':>24} | {'exact':>8} {'ms':>7} | "
        + " ".join(f"{f'PI {n}':>6} {'ms':>5}" for n in iterations)
        + f" | {'σ_up':>8} {'ms':>6} {'+dir ms':>7} | {'exact/σ_up':>10}"
    )
    print(header)
    print("-" * len(header))
    for index, (c_in, c_out, k, size) in enumerate(layer_shapes(config)):
        torch.manual_seed(index)
        raw = nn.Conv2d(c_in, c_out, k, padding=k // 2)  # PyTorch's default init
        module = spectral_norm(copy.deepcopy(raw), config.coeff, input_size=(size, size) if k > 1 else None)
        sn = module.parametrizations.weight[0]
        weight = module.parametrizations.weight.original.detach()
        name = f"conv{k}×{k} {c_in}→{c_out}" + (f" @{size}×{size}" if k > 1 else "")
        gram_dim = min(c_in, c_out) * size * size
        if quick and gram_dim > 1536:
            exact, exact_ms = math.nan, math.nan
        else:
            exact, exact_ms = timed(lambda: exact_norm(raw, (size, size)))
        cells = []
        for n in iterations:
            estimate, ms = timed(lambda: power_iteration_norm(raw, n, input_size=(size, size) if k > 1 else None), 3)
            cells.append(f"{estimate / exact:>6.4f} {ms:>5.1f}" if exact == exact else f"{'—':>6} {ms:>5.1f}")
        certificate, cert_ms = timed(lambda: certify_operator_norm(weight, sn.geometry), 3)
        _, dir_ms = timed(lambda: certify_operator_norm(weight, sn.geometry, with_direction=True), 3)
        exact_cells = f"{exact:>8.4f} {exact_ms:>7.0f}" if exact == exact else f"{'skipped':>8} {'—':>7}"
        tightness = f"{exact / certificate.sigma:>10.4f}" if exact == exact else f"{'—':>10}"
        print(
            f"{name:>24} | {exact_cells} | {' '.join(cells)} | {certificate.sigma:>8.4f} {cert_ms:>6.1f} "
            f"{dir_ms:>7.1f} | {tightness}",
            flush=True,
        )


def training_step(config: FlowConfig, label: str, batch_size: int, rounds: int, steps: int) -> None:
    print(
        f"\n-- training step: {label}, batch {batch_size}, Adam lr 1e-3, loss −log p(x) on uniform [−0.5, 0.5); "
        f"{rounds} rounds × {steps} steps per normalisation, alternated --"
    )
    torch.manual_seed(0)
    model = ResidualFlow(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = (
        torch.rand(
            batch_size,
            config.in_channels,
            config.image_size,
            config.image_size,
            generator=torch.Generator().manual_seed(0),
        )
        - 0.5
    )
    baseline = PowerIterationNormalisation(model, n_iterations=5)

    def step() -> None:
        loss = -model.log_prob(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    modes = {"certified (library)": contextlib.nullcontext, "power iteration (5/call)": lambda: baseline}
    for context in modes.values():  # warm-up: ActNorm initialisation, first certificates and vectors
        with context():
            step()
    seconds = {name: [] for name in modes}
    certify = dict(calls=0, seconds=0.0)
    for _ in range(rounds):
        for name, context in modes.items():
            with context(), counting_certificates() as totals:
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                seconds[name].append((time.perf_counter() - start) / steps)
            if name.startswith("certified"):
                certify = {key: certify[key] + totals[key] for key in certify}
    header = (
        f"{'normalisation':>24} | {'s/step per round':>20} | {'mean':>7} | {'certify calls/step':>18} {'s/step':>7} "
        f"{'share':>6}"
    )
    print(header)
    print("-" * len(header))
    means = {name: sum(values) / len(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        per_round = " ".join(f"{v:.3f}" for v in values)
        if name.startswith("certified"):
            calls, spent = certify["calls"] / (rounds * steps), certify["seconds"] / (rounds * steps)
            extra = f"{calls:>18.0f} {spent:>7.3f} {spent / means[name]:>6.0%}"
        else:
            extra = f"{'—':>18} {'—':>7} {'—':>6}"
        print(f"{name:>24} | {per_round:>20} | {means[name]:>7.3f} | {extra}")
    certified, classic = means["certified (library)"], means["power iteration (5/call)"]
    print(
        f"certified / power iteration: {certified / classic:.2f}×; certify share 1 − t_PI/t_cert = "
        f"{max(0.0, 1 - classic / certified):.0%}"
    )


def run(quick: bool = False) -> None:
    torch.set_num_threads(1)
    print("torch.set_num_threads(1): every timing below is on one CPU thread")
    config = PRESETS["cifar10-paper"]
    build_and_first_forward(config)
    layer_table(config, quick)
    if quick:
        training_step(
            replace(config, blocks=(2, 2, 2), width=64),
            "reduced cifar10-paper (2-2-2, width 64)",
            batch_size=2,
            rounds=3,
            steps=3,
        )
    else:
        # the preset's own batch (64): the share that matters in training (the full model's memory, not a CPU's)
        training_step(config, "cifar10-paper at its batch size", batch_size=64, rounds=1, steps=1)
        # batch 2: the worst case, where the per-step certificates weigh most against the images' work
        training_step(config, "cifar10-paper, small batch", batch_size=2, rounds=3, steps=1)
