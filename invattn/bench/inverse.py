"""Fixed-point iteration vs Anderson acceleration for inverting x + g(x).

Both solvers stop on the same certified criterion: a residual small enough that the relative error
‖x̂ − x‖/‖x‖ ≤ 1e-6 is guaranteed (error ≤ residual/(1 − L)); float64 throughout. Reported: evaluations
of g, wall time (medians of alternated solves), and their ratios, at Lip(g) = 0.5, 0.9, 0.99, on a dense map, a
convolution, and an i-ResNet conv block; then the whole trained digits model of ``checkpoints/digits-200`` (fixed point,
Anderson with its default rate gate, and Anderson mixing from the start). Run with one thread for stable ratios:
``OMP_NUM_THREADS=1 python -m invattn.bench inverse``.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ..ablation import held_out_images, load_model
from ..blocks import InvertibleResidual
from ..lipschitz import estimate_lipschitz, spectral_norm
from ..norms import relative_error

TARGET_ERROR = 1e-6


def dense_block(lipschitz: float, dim: int) -> InvertibleResidual:
    """g(x) = Wx + b with W symmetric and ‖W‖₂ = L: the hard case for fixed-point iteration, whose error
    shrinks by the spectral radius of W per step, here equal to L (a random non-symmetric W has a radius
    about half its norm and would flatter plain iteration)."""
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        # eigenvalues spread evenly over [-1, 1], then scaled to ‖W‖₂ = L by the spectral norm
        basis = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64)).Q
        layer.weight.copy_(basis @ torch.diag(torch.linspace(-1, 1, dim, dtype=torch.float64)) @ basis.t())
    return InvertibleResidual(spectral_norm(layer, coeff=lipschitz)).double().eval()


def self_adjoint_conv_block(lipschitz: float, channels: int, size: int) -> InvertibleResidual:
    """g = one 3×3 convolution whose kernel makes the operator self-adjoint (K[:, :, i, j] = K[:, :, -i, -j]ᵀ),
    normalised to ‖g‖ = L: a convolutional map whose contraction factor really is L. spectral_norm only *caps*
    the norm, so the raw kernel is scaled up first (at init its norm is about 0.86, below 0.9 and 0.99)."""
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    with torch.no_grad():
        kernel = conv.weight
        conv.weight.copy_(50 * (kernel + kernel.flip(2, 3).transpose(0, 1)))
    return InvertibleResidual(spectral_norm(conv, coeff=lipschitz, input_size=(size, size))).double().eval()


def conv_block(lipschitz: float, channels: int, width: int, size: int) -> InvertibleResidual:
    """i-ResNet's g = ELU → SN-conv3×3 → ELU → SN-conv1×1 → ELU → SN-conv3×3, each layer at L^(1/3)."""
    c = lipschitz ** (1 / 3)
    g = nn.Sequential(
        nn.ELU(),
        spectral_norm(nn.Conv2d(channels, width, 3, padding=1), coeff=c, input_size=(size, size)),
        nn.ELU(),
        spectral_norm(nn.Conv2d(width, width, 1), coeff=c),
        nn.ELU(),
        spectral_norm(nn.Conv2d(width, channels, 3, padding=1), coeff=c, input_size=(size, size)),
    )
    return InvertibleResidual(g).double().eval()


def solve(block: InvertibleResidual, x: torch.Tensor, method: str, lipschitz: float, number: int = 1) -> dict:
    """Inversion of block(x) to the certified target, ``number`` times in a row; evaluations, wall time per
    inversion and the achieved error."""
    y = block(x).detach()
    per_sample = lambda t: t.reshape(t.shape[0], -1).norm(dim=1)  # noqa: E731
    # residual/‖y‖ ≤ tol ⇒ ‖x̂ − x‖ ≤ tol·‖y‖/(1 − L) ≤ 1e-6·‖x‖
    tol = TARGET_ERROR * (1 - lipschitz) * float((per_sample(x) / per_sample(y)).min())
    start = time.perf_counter()
    for _ in range(number):
        x_hat, info = block.inverse(y, method=method, tol=tol, max_iter=100_000, return_info=True)
    seconds = (time.perf_counter() - start) / number
    error = float((per_sample(x_hat - x) / per_sample(x)).max())
    return dict(evals=info.function_evals, seconds=seconds, error=error)


def run(quick: bool = False, repeats: int = 5) -> list[dict]:
    """Print the table; ``repeats`` alternated solves per method and map (median wall time; 1 when ``quick``)."""
    repeats = 1 if quick else repeats
    torch.manual_seed(0)
    dim, batch = (64, 8) if quick else (512, 64)
    channels, width, size, conv_batch = (4, 16, 8, 4) if quick else (12, 64, 16, 16)
    rows = []
    print(f"target: relative error ≤ {TARGET_ERROR:g} (float64), certified by the stopping rule")
    print(
        f"dense: symmetric {dim}-d linear map, batch {batch};  sa-conv: self-adjoint 3×3 conv on "
        f"{channels}×{size}×{size}, batch {conv_batch};  iresnet: i-ResNet conv block (width {width}) at init, "
        "layers at L^(1/3) each"
    )
    print(
        "'measured' is estimate_lipschitz(g): the contraction the solvers actually face; "
        f"wall times are medians of {repeats} alternated measurements, each ≥ 0.2 s (short solves repeated)"
    )
    header = (
        f"{'map':>7} {'Lip':>5} {'measured':>8} | {'FP evals':>8} {'AA evals':>8} {'AA/FP':>6} | "
        f"{'FP s':>7} {'AA s':>7} {'AA/FP':>6} | {'FP err':>7} {'AA err':>7}"
    )
    print(header)
    print("-" * len(header))
    for kind in ("dense", "sa-conv", "iresnet"):
        for lipschitz in (0.5, 0.9, 0.99):
            if kind == "dense":
                block = dense_block(lipschitz, dim)
                x = torch.randn(batch, dim, dtype=torch.float64)
            elif kind == "sa-conv":
                block = self_adjoint_conv_block(lipschitz, channels, size)
                x = torch.randn(conv_batch, channels, size, size, dtype=torch.float64)
            else:
                block = conv_block(lipschitz, channels, width, size)
                x = torch.randn(conv_batch, channels, size, size, dtype=torch.float64)
            measured = estimate_lipschitz(block.g, x[:2], n_iterations=30, pair_steps=0)
            # alternated F A A F F A …, the median time of each (the evaluations and errors do not vary); a solve
            # shorter than 0.2 s is repeated within one measurement, so timer and scheduler noise average out
            first = solve(block, x, "fixed_point", lipschitz)["seconds"]
            number = 1 if quick else max(1, math.ceil(0.2 / max(first, 1e-6)))
            runs = {"fixed_point": [], "anderson": []}
            for repeat in range(repeats):
                for method in list(runs)[:: 1 if repeat % 2 == 0 else -1]:
                    runs[method].append(solve(block, x, method, lipschitz, number))
            fp, aa = (dict(runs[m][0], seconds=statistics.median(r["seconds"] for r in runs[m])) for m in runs)
            row = dict(map=kind, lipschitz=lipschitz, measured=measured, fixed_point=fp, anderson=aa)
            rows.append(row)
            print(
                f"{kind:>7} {lipschitz:>5} {measured:>8.3f} | {fp['evals']:>8} {aa['evals']:>8} "
                f"{aa['evals'] / fp['evals']:>6.3f} | {fp['seconds']:>7.3f} {aa['seconds']:>7.3f} "
                f"{aa['seconds'] / fp['seconds']:>6.3f} | {fp['error']:>7.1e} {aa['error']:>7.1e}",
                flush=True,
            )
    rows += trained_model(repeats)
    return rows


TRAINED = Path(__file__).resolve().parents[2] / "checkpoints" / "digits-200" / "concat-seed1.pt"


def trained_model(repeats: int) -> list[dict]:
    """Whole-model inversion of the shipped digits model trained for 200 epochs (concat attention, seed 1; residual
    blocks certified at 0.729, attention at 0.9) on the 64 first held-out digits, float64 to a relative residual of
    1e-10 per block:
    evaluations of g summed over the nine blocks, and wall time, for fixed point, Anderson (the default gate) and
    Anderson with ``rate_gate=0``; alternated, medians of ``repeats``."""
    if not TRAINED.is_file():
        print(
            f"\ntrained digits model: {TRAINED} not found (a source checkout has it; "
            "python -m invattn.ablation --out checkpoints/digits-200 --configs concat --seeds 1 --epochs 200 writes it)"
        )
        return []
    model = load_model(TRAINED).double()
    evaluations = [0]
    for module in model.modules():
        if isinstance(module, InvertibleResidual):
            module.g.register_forward_hook(lambda *_: evaluations.__setitem__(0, evaluations[0] + 1))
    x = held_out_images()[:64].double()
    with torch.no_grad():
        z = model.latents(x)
    settings = {
        "fixed point": dict(method="fixed_point"),
        "Anderson": dict(method="anderson"),
        "Anderson, rate_gate=0": dict(method="anderson", rate_gate=0.0),
    }
    seconds = {name: [] for name in settings}
    counts, errors = {}, {}
    for repeat in range(repeats):
        for name in list(settings)[:: 1 if repeat % 2 == 0 else -1]:
            evaluations[0] = 0
            start = time.perf_counter()
            with torch.no_grad():
                x_hat = model.inverse(z, tol=1e-10, **settings[name])
            seconds[name].append(time.perf_counter() - start)
            counts[name] = evaluations[0]
            errors[name] = float(relative_error(x_hat, x).max())
    print(
        f"\ntrained digits model ({TRAINED.parent.name}/{TRAINED.name}, 9 blocks), 64 held-out digits, float64, tol "
        "1e-10 per block; "
        f"medians of {repeats} alternated runs"
    )
    reference = statistics.median(seconds["fixed point"])
    rows = []
    for name in settings:
        median = statistics.median(seconds[name])
        rows.append(dict(map="trained digits", method=name, evals=counts[name], seconds=median, error=errors[name]))
        print(
            f"{name:>22}: {counts[name]:>4} evaluations ({counts[name] / counts['fixed point']:.2f} of fixed point's), "
            f"{median:.3f} s ({median / reference:.2f}×), relative error {errors[name]:.1e}",
            flush=True,
        )
    return rows
