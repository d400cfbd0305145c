"""Every attention kind: time and memory of forward, backward and inverse from N = 256 up to the paper's
full-scale CelebA size (12×109×89, N = 9701); concat against a naive implementation that materialises
the [B, 2C/k, N, N] concatenation (as the original code does); and how tight each certified bound is.

Memory is counted exactly with :class:`invattn.memory.TensorMemory` (bytes of the tensors the computation
allocates, live at the worst moment), the same on a CPU and a GPU. Times are wall-clock on this machine;
compare them within a row, where they were taken side by side.
"""

from __future__ import annotations

import time

import torch

from ..attention import KINDS, PAPER_KINDS, VARIANTS, KernelAttention, make_attention
from ..attention.core import project_to_ball, row_normalise
from ..attention.tightness import scale_with_positions
from ..blocks import InvertibleResidual, Squeeze
from ..data import dequantize, full_scale_photograph, photograph_crops
from ..lipschitz import estimate_lipschitz
from ..memory import TensorMemory
from ..norms import relative_error

MIB = 2**20
CHANNELS = 12


def naive_concat(g: KernelAttention, x: torch.Tensor) -> torch.Tensor:
    """The same function as ``g`` (kind "concat"), computed the original way: q and k repeated along the
    other position axis, concatenated into [B, 2d, N, N], reduced by the 1×1 "concat" convolution."""
    flat = x.flatten(2)
    n = flat.shape[-1]
    queries = project_to_ball(g.query_weight @ flat + g.query_bias[:, None], g.radius)
    keys = project_to_ball(g.key_weight @ flat + g.key_bias[:, None], g.radius)
    pairs = torch.cat([queries[:, :, :, None].repeat(1, 1, 1, n), keys[:, :, None, :].repeat(1, 1, n, 1)], dim=1)
    scores = torch.einsum("c,bcji->bji", torch.cat([g.query_score, g.key_score]), pairs)
    weights = row_normalise(scores, "elu1")
    values = project_to_ball(g.value_weight @ flat + g.value_bias[:, None], g.value_radius)
    attended = torch.bmm(values, weights.transpose(1, 2))
    out = g.gain(n) * (g.out_weight @ attended) + g.out_bias[:, None]
    return out.view_as(x)


def peak_bytes(fn, *args) -> int:
    """Peak bytes of the tensors fn(*args) allocates (counted op by op, so measured apart from timing)."""
    with TensorMemory() as memory:
        fn(*args)
    return memory.peak_bytes


def seconds(fn, *args, repeats: int = 3) -> float:
    """Best of ``repeats`` wall-clock runs (after the first, which warms caches up)."""
    fn(*args)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def forward_no_grad(g, x):
    with torch.no_grad():
        return g(x)


def forward_grad(g, x):
    return g(x).square().sum()


def forward_backward(g, x):
    forward_grad(g, x).backward()


def inputs(size: tuple[int, int], batch: int) -> torch.Tensor:
    if size == (109, 89):
        images = full_scale_photograph().expand(batch, -1, -1, -1)
    else:
        images = photograph_crops(batch, 2 * size[0], seed=1)
    return Squeeze()(dequantize(images, torch.Generator().manual_seed(0)))


def timing_table(sizes, batches) -> list[dict]:
    print("\n-- forward / backward / inverse per kind (float32; inverse: Anderson to relative residual 1e-6) --")
    header = (
        f"{'kind':>17} {'N':>5} {'B':>2} | {'fwd s':>6} {'bwd s':>6} {'inv s':>6} {'evals':>5} {'inv err':>7} | "
        f"{'fwd MiB':>8} {'f+b MiB':>8} {'inv MiB':>8} {'MiB/N²':>6}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for size, batch in zip(sizes, batches):
        x = inputs(size, batch)
        n = size[0] * size[1]
        for kind in KINDS:
            torch.manual_seed(0)
            g = make_attention(kind, CHANNELS)
            repeats = 3 if n <= 1024 else 1
            fwd_s = seconds(forward_no_grad, g, x, repeats=repeats)
            fb_s = seconds(forward_backward, g, x.clone().requires_grad_(True), repeats=repeats)
            grad_fwd_s = seconds(forward_grad, g, x.clone().requires_grad_(True), repeats=repeats)
            fwd_b = peak_bytes(forward_no_grad, g, x)
            fb_b = peak_bytes(forward_backward, g, x.clone().requires_grad_(True))
            block = InvertibleResidual(g).eval()
            y = forward_no_grad(block, x)
            start = time.perf_counter()
            x_hat, info = block.inverse(y, tol=1e-6, return_info=True)
            inv_s = time.perf_counter() - start
            inv_b = peak_bytes(lambda: block.inverse(y, tol=1e-6))
            error = float(relative_error(x_hat, x).max())
            backward_s = max(fb_s - grad_fwd_s, 0.0)
            row = dict(
                kind=kind,
                n=n,
                batch=batch,
                forward_s=fwd_s,
                backward_s=backward_s,
                inverse_s=inv_s,
                evals=info.function_evals,
                error=error,
                forward_mib=fwd_b / MIB,
                train_mib=fb_b / MIB,
                inverse_mib=inv_b / MIB,
            )
            rows.append(row)
            per_map = fwd_b / (batch * n * n * 4)
            print(
                f"{kind:>17} {n:>5} {batch:>2} | {fwd_s:>6.3f} {backward_s:>6.3f} {inv_s:>6.2f} "
                f"{info.function_evals:>5} {error:>7.1e} | {fwd_b / MIB:>8.1f} {fb_b / MIB:>8.1f} "
                f"{inv_b / MIB:>8.1f} {per_map:>6.2f}",
                flush=True,
            )
    print(
        "fwd: forward without autograd; bwd: backward alone; f+b MiB: peak of forward + backward; "
        "MiB/N²: forward peak in float32 N×N maps per image"
    )
    return rows


def naive_table(sizes, batches) -> list[dict]:
    print(
        f"\n-- concat: broadcast a_j + b_i vs the naive [B, 2C/k, N, N] concatenation (C = {CHANNELS}, k = 4, "
        "so 2C/k = 6) --"
    )
    header = (
        f"{'N':>5} {'B':>2} | {'naive fwd':>9} {'ours fwd':>8} {'ratio':>6} | {'naive f+b':>9} {'ours f+b':>8} "
        f"{'ratio':>6} | {'time fwd':>8} {'time f+b':>8}"
    )
    print(header + "   (MiB; time = naive/ours)")
    print("-" * len(header))
    rows = []
    for size, batch in zip(sizes, batches):
        x = inputs(size, batch)
        torch.manual_seed(0)
        g = make_attention("concat", CHANNELS)
        with torch.no_grad():
            assert torch.allclose(naive_concat(g, x), g(x), atol=1e-5), (
                "the naive concat must compute the same function"
            )
        naive = lambda t: naive_concat(g, t)  # noqa: E731
        repeats = 3 if size[0] * size[1] <= 1024 else 1
        trainable = lambda: x.clone().requires_grad_(True)  # noqa: E731
        naive_f = (seconds(forward_no_grad, naive, x, repeats=repeats), peak_bytes(forward_no_grad, naive, x))
        ours_f = (seconds(forward_no_grad, g, x, repeats=repeats), peak_bytes(forward_no_grad, g, x))
        naive_t = (
            seconds(forward_backward, naive, trainable(), repeats=repeats),
            peak_bytes(forward_backward, naive, trainable()),
        )
        ours_t = (
            seconds(forward_backward, g, trainable(), repeats=repeats),
            peak_bytes(forward_backward, g, trainable()),
        )
        rows.append(
            dict(
                n=size[0] * size[1],
                batch=batch,
                naive_forward=naive_f,
                ours_forward=ours_f,
                naive_train=naive_t,
                ours_train=ours_t,
            )
        )
        print(
            f"{size[0] * size[1]:>5} {batch:>2} | {naive_f[1] / MIB:>9.1f} {ours_f[1] / MIB:>8.1f} "
            f"{naive_f[1] / ours_f[1]:>6.2f} | {naive_t[1] / MIB:>9.1f} {ours_t[1] / MIB:>8.1f} "
            f"{naive_t[1] / ours_t[1]:>6.2f} | {naive_f[0] / ours_f[0]:>8.2f} {naive_t[0] / ours_t[0]:>8.2f}",
            flush=True,
        )
    return rows


def tightness_table(steps: int) -> list[dict]:
    print(
        f"\n-- tightness: certified bound / measured Lipschitz constant (N = 256, float64, real images; "
        f"'trained' = {steps} Adam steps onto a fixed noise target) --"
    )
    header = (
        f"{'kind':>17} | {'raw bound':>9} {'bound':>6} {'measured':>8} {'gap':>6} | "
        f"{'raw bound':>9} {'bound':>6} {'measured':>8} {'gap':>6}"
    )
    print(f"{'':>17} | {'at initialisation':^33} | {'trained':^33}")
    print(header)
    print("-" * len(header))
    x = inputs((16, 16), 16)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    probe = x[:4].double()
    rows = []
    for kind in KINDS:
        torch.manual_seed(0)
        g = make_attention(kind, CHANNELS)
        cells = []
        for stage in ("init", "trained"):
            if stage == "trained":
                optimizer = torch.optim.Adam(g.parameters(), lr=3e-3)
                for _ in range(steps):
                    loss = (x + g(x) - target).square().mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            g64 = g.double()
            bound = g64.lipschitz_bound(256)
            measured = max(
                estimate_lipschitz(g64, probe, n_iterations=40, pair_steps=100),
                estimate_lipschitz(g64, 30 * probe, n_iterations=40, pair_steps=100),
            )
            cells.append((g64.raw_lipschitz_bound(256), bound, measured))
            g = g64.float()
        rows.append(dict(kind=kind, init=cells[0], trained=cells[1]))
        print(
            f"{kind:>17} | "
            + " | ".join(f"{raw:>9.3f} {bound:>6.3f} {meas:>8.4f} {bound / meas:>6.2f}" for raw, bound, meas in cells),
            flush=True,
        )
    print("paper formulation (variant='paper'): certified bound = inf; measured ‖J_g‖ on the same images:")
    for kind in PAPER_KINDS:
        torch.manual_seed(0)
        g = make_attention(kind, CHANNELS, variant="paper").double().eval()
        measured = estimate_lipschitz(g, probe, n_iterations=40, pair_steps=0)
        local = g.local_lipschitz_bound(float(probe.norm(dim=1).max()))
        rows.append(dict(kind=f"paper-{kind}", measured=measured, local_bound=local))
        print(f"{kind:>17} | measured {measured:>10.4g}   bound on the data's ball ‖x_i‖ ≤ R: {local:.4g}", flush=True)
    return rows


def variants_table(sides: tuple[int, ...]) -> list[dict]:
    """The three formulations of concat and dot side by side as N grows: the certified bound, the measured Lipschitz
    constant and the output ratio ‖g(x) − g(0)‖/‖x‖ (:func:`invattn.attention.tightness.scale_with_positions`), at
    initialisation, float64. The generative repository's global normaliser shrinks both like 1/N."""
    print(
        "\nformulations side by side (random init, x ∈ [−½, ½)): measured Lip(g) / output ratio ‖g(x) − g(0)‖/‖x‖ "
        "at N positions; bound = the certified Lipschitz bound"
    )
    print(f"{'kind':>7} {'variant':>11} {'bound':>6} | " + " | ".join(f"N = {s * s:<5} Lip   ratio" for s in sides))
    rows = []
    for kind in ("concat", "dot"):
        for variant in VARIANTS:
            torch.manual_seed(0)
            g = make_attention(kind, CHANNELS, variant=variant).double().eval()
            scaling = scale_with_positions(g, CHANNELS, sides)
            bound = g.lipschitz_bound()
            rows.append(dict(kind=kind, variant=variant, bound=bound, scaling=scaling))
            print(
                f"{kind:>7} {variant:>11} {bound:>6.3g} | "
                + " | ".join(f"{r['measured']:>10.3g} {r['output_ratio']:>7.2g}" for r in scaling),
                flush=True,
            )
    return rows


def run(quick: bool = False) -> dict:
    if quick:
        sizes, batches, steps = [(16, 16), (32, 32)], [8, 2], 20
    else:
        sizes, batches, steps = [(16, 16), (32, 32), (64, 64), (109, 89)], [8, 4, 1, 1], 200
    print(f"threads: {torch.get_num_threads()}; sizes N = {', '.join(str(h * w) for h, w in sizes)}")
    return dict(
        timing=timing_table(sizes, batches),
        naive=naive_table(sizes, batches),
        tightness=tightness_table(steps),
        variants=variants_table((4, 8) if quick else (4, 8, 16, 32)),
    )
