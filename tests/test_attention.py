"""Every attention kind: certified bound ≥ measured Lipschitz constant (random, large and trained inputs),
inversion on real images, gradients of the memory-lean core, memory, and the paper formulation's failures."""

import math

import pytest
import torch
from torch.nn.utils import parametrize

import invattn as ia
from invattn.attention import KINDS, PAPER_KINDS, core, l2_attention_constant, lambert_w0
from invattn.attention.core import AttentionCoreFunction, check_input, row_normalise, uniform_init
from invattn.data import dequantize, full_scale_photograph, photograph_crops
from invattn.memory import SavedTensorBytes, TensorMemory
from invattn.norms import certified_matrix_norm, per_sample_norm, relative_error

CHANNELS = 12  # an RGB image after one 2×2 squeeze, as in the paper


def measured(g, x):
    return ia.estimate_lipschitz(g, x, n_iterations=30, pair_steps=60)


def image_batch(count=4, size=32, seed=0):
    """Real photograph crops, dequantised to [−0.5, 0.5) and squeezed to [count, 12, size/2, size/2]."""
    images = dequantize(photograph_crops(count, size, seed=seed), torch.Generator().manual_seed(seed))
    return ia.Squeeze()(images)


@pytest.fixture(scope="module")
def trained():
    """One module per kind after 200 Adam steps (lr 3e-3) regressing x + g(x) onto a fixed noise target:
    the paper's validation loss, which pushes g far from its initialisation."""
    torch.manual_seed(1)
    x = image_batch(16, 16, seed=3)
    target = torch.randn_like(x)
    modules, raw_before = {}, {}
    for kind in KINDS:
        g = ia.make_attention(kind, CHANNELS)
        raw_before[kind] = g.raw_lipschitz_bound(x[0, 0].numel())
        optimizer = torch.optim.Adam(g.parameters(), lr=3e-3)
        for _ in range(200):
            loss = (x + g(x) - target).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        modules[kind] = g
    return modules, raw_before, x


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [1.0, 50.0])
@pytest.mark.parametrize("weight_scale", [1.0, 10.0])
def test_bound_holds_for_random_and_large_inputs(kind, scale, weight_scale):
    g = ia.make_attention(kind, CHANNELS, coeff=0.9).double()
    with torch.no_grad():  # large weights push every projection and score to its limit
        for p in g.parameters():
            p.mul_(weight_scale)
    x = (torch.rand(3, CHANNELS, 8, 8, dtype=torch.float64) - 0.5) * scale
    bound = g.lipschitz_bound(n_positions=64)
    lip = measured(g, x)
    assert 0 < lip <= bound <= 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_bound_holds_after_training(kind, trained):
    modules, raw_before, x = trained
    g = modules[kind].double()
    n = x[0, 0].numel()
    assert g.raw_lipschitz_bound(n) != pytest.approx(raw_before[kind], rel=1e-3)  # computed from the weights
    bound = g.lipschitz_bound(n_positions=n)
    for inputs in (x[:4].double(), 30 * x[:4].double()):
        lip = measured(g, inputs)
        assert 0 < lip <= bound <= 0.9


@pytest.mark.compat
@pytest.mark.parametrize("kind", KINDS)
def test_inverse_on_real_images_float32(kind, trained):
    x = image_batch(4, 32, seed=7)
    for g in (ia.make_attention(kind, CHANNELS), trained[0][kind].float()):
        block = ia.InvertibleResidual(g).eval()
        y = block(x)
        assert (y - x).abs().max() > 1e-3  # the attention does something
        # a relative residual ≤ 1e-6 bounds the error (relative to ‖y‖) by (L·1e-6 + e)/(1 − L) for L ≤ 0.9, e the
        # float32 rounding allowance 8u(1 + (‖x_k‖ + ‖G(x_k)‖)/‖y‖) (about 1.4e-6 here) plus g's measured rounding
        x_hat, info = block.inverse(y, tol=1e-6, return_info=True)
        assert info.converged and info.error_bound <= 3e-5
        against_y = per_sample_norm(x_hat - x) / per_sample_norm(y)
        assert float(against_y.max()) <= info.error_bound
        assert float(relative_error(x_hat, x).max()) < 1e-5


def test_full_scale_forward_and_inverse():
    """The paper's full-scale CelebA size: 218×178 RGB, squeezed to 12×109×89 (N = 9701)."""
    x = ia.Squeeze()(dequantize(full_scale_photograph(), torch.Generator().manual_seed(0)))
    assert x.shape == (1, 12, 109, 89)
    block = ia.InvertibleResidual(ia.make_attention("concat", CHANNELS)).eval()
    with TensorMemory() as memory, torch.no_grad():
        y = block(x)
    n = 109 * 89
    assert memory.peak_bytes < 1.5 * n * n * 4  # one N×N float32 map, never N×N×2C/k
    x_hat = block.inverse(y, tol=1e-6)
    assert float((x_hat - x).norm() / x.norm()) < 1e-5


@pytest.mark.compat
@pytest.mark.parametrize("kind", KINDS)
def test_attention_map_is_a_distribution_per_output_position(kind):
    g = ia.make_attention(kind, CHANNELS)
    x = image_batch(2, 16)
    p = g.attention_map(x)
    assert p.shape == (2, 64, 64)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(-1), torch.ones(2, 64), atol=1e-5)


@pytest.mark.compat
@pytest.mark.parametrize("kind", KINDS)
def test_module_gradients(kind):
    g = ia.make_attention(kind, 4, reduction=2).double()
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g, (x,))
    # second derivatives (the log-det's vector–Jacobian products are differentiated in training), where
    # queries, keys and values all depend on the same x
    assert torch.autograd.gradgradcheck(g, (x,))


@pytest.fixture(params=["kept", "recomputed"])
def map_storage(request, monkeypatch):
    """Both backward paths of the core: small maps kept from forward, large ones recomputed in backward."""
    if request.param == "recomputed":
        monkeypatch.setattr(core, "LEAN_BACKWARD_ENTRIES", 0)
    return request.param


@pytest.mark.parametrize("mode", ["sum", "dot"])
@pytest.mark.parametrize("kernel,offset", [("exp", 0.0), ("exp", 300.0), ("elu1", 0.0), ("elu1", -300.0)])
def test_lean_core_gradients_and_second_derivatives(mode, kernel, offset, map_storage):
    """Exact first and second derivatives, also where every score of a row is far from 0 (the row shift)."""
    shape = (2, 5) if mode == "sum" else (2, 3, 5)
    values = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    left = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    right = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    if mode == "sum":
        fn = lambda v, a, b: AttentionCoreFunction.apply(mode, kernel, v, a + offset, b)  # noqa: E731
    else:  # one extra coordinate carries the offset into every score
        pad = lambda t, value: torch.cat([t, torch.full_like(t[:, :1], value)], dim=1)  # noqa: E731
        fn = lambda v, a, b: AttentionCoreFunction.apply(mode, kernel, v, pad(a, offset), pad(b, 1.0))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (values, left, right))
    assert torch.autograd.gradgradcheck(fn, (values, left, right))


@pytest.mark.compat
@pytest.mark.parametrize("kind", KINDS)
def test_lean_backward_equals_plain_autograd(kind, map_storage):
    """The custom backward (autograd) and the plain ops (seen by torch.func) give the same gradient, with the map
    kept from forward and recomputed, and for a backward run twice (retain_graph) on a kept ELU map."""
    g = ia.make_attention(kind, CHANNELS).double()
    x = image_batch(2, 16).double().requires_grad_(True)
    cotangent = torch.randn_like(x)
    out = g(x)
    (first,) = torch.autograd.grad(out, x, cotangent, retain_graph=True)
    (lean,) = torch.autograd.grad(out, x, cotangent)
    assert torch.equal(first, lean)
    _, vjp = torch.func.vjp(g, x.detach())
    (plain,) = vjp(cotangent)
    assert torch.allclose(lean, plain, rtol=1e-10, atol=1e-12)


def test_concat_memory_is_one_map_not_the_concatenation():
    g = ia.make_attention("concat", CHANNELS)
    x = image_batch(2, 32)
    batch, n = 2, 256
    one_map = batch * n * n * 4
    with TensorMemory() as memory, torch.no_grad():
        g(x)
    assert memory.largest_shape == (batch, n, n)
    assert memory.peak_bytes < 1.5 * one_map
    with TensorMemory() as memory:
        g(x).square().sum().backward()
    assert memory.peak_bytes < 4 * one_map  # small maps are kept for backward; the [B, 2C/k, N, N] tensor is 6 maps
    with TensorMemory() as memory, pytest.MonkeyPatch.context() as patch:
        patch.setattr(core, "LEAN_BACKWARD_ENTRIES", 0)  # what large maps get: recomputed in backward
        g(x).square().sum().backward()
    assert memory.peak_bytes < 3 * one_map


@pytest.mark.parametrize("kind", KINDS)
def test_log_determinant_estimators_agree_with_exact(kind):
    block = ia.InvertibleResidual(ia.make_attention(kind, CHANNELS)).double().eval()
    x = image_batch(2, 8).double()
    exact = ia.logdet(block, x, "exact")
    series = ia.logdet(block, x, "series", n_terms=20, probe="basis")
    assert torch.allclose(series, exact, atol=1e-8)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="kind must be one of"):
        ia.make_attention("softmax", CHANNELS)
    with pytest.raises(ValueError, match=r"coeff must be in \(0, 1\)"):
        ia.make_attention("dot", CHANNELS, coeff=1.0)
    with pytest.raises(ValueError, match="variant='paper'"):
        ia.make_attention("l2", CHANNELS, variant="paper")
    with pytest.raises(TypeError, match="radius"):
        ia.make_attention("lipnorm", CHANNELS, radius=2.0)
    with pytest.raises(ValueError, match="radius"):
        ia.make_attention("dot", CHANNELS, radius=0.0)
    g = ia.make_attention("dot", CHANNELS)
    with pytest.raises(ValueError, match=r"\[B, 12, H, W\]"):
        g(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="non-finite"):
        g(torch.full((1, CHANNELS, 4, 4), math.nan))


def test_shared_core_helpers():
    """The public floor the kinds share: initialisation range, input check, row normalisation and its refusal."""
    torch.manual_seed(0)
    weight = uniform_init((64, 16), 16)
    assert isinstance(weight, torch.nn.Parameter) and weight.shape == (64, 16)
    assert 0.2 < float(weight.detach().abs().max()) <= 0.25  # U(−1/√16, 1/√16)
    with pytest.raises(ValueError, match=r"\[B, 5, H, W\]"):
        check_input(torch.zeros(2, 4, 3, 3), 5)
    with pytest.raises(ValueError, match="non-finite"):
        check_input(torch.full((1, 5, 2, 2), math.inf), 5)
    check_input(torch.zeros(2, 5, 3, 1), 5)
    scores = torch.tensor([[[0.0, math.log(3.0)], [-800.0, -801.0]]], dtype=torch.float64)
    for kernel in ("exp", "elu1"):
        weights, total = row_normalise(scores.clone(), kernel, with_total=True)
        assert torch.allclose(weights.sum(-1), torch.ones(1, 2, dtype=torch.float64))
        assert total.shape == (1, 2, 1) and torch.all(total > 0)
    assert torch.allclose(row_normalise(scores.clone(), "exp")[0, 0], torch.tensor([0.25, 0.75], dtype=torch.float64))
    with pytest.raises(ValueError, match="kernel must be 'exp' or 'elu1', got 'relu'"):
        row_normalise(scores, "relu")


@pytest.mark.parametrize("kind", ["dot", "l2", "lipnorm"])
def test_every_norm_in_a_bound_is_the_certified_matrix_norm(kind):
    """Each kind's raw bound is its formula over norms.certified_matrix_norm of the weights, to the last bit."""
    torch.manual_seed(1)
    g = ia.make_attention(kind, CHANNELS)
    n = lambda w: certified_matrix_norm(w.detach())  # noqa: E731
    if kind == "l2":  # ‖W_o‖·‖M‖·‖W‖·L_u(N)
        inner = n(g.value_weight) * n(g.query_weight) * l2_attention_constant(9)
    elif kind == "lipnorm":  # ‖W_o‖·e·(‖W_v‖ + ‖W_q‖ + ‖W_k‖/√N + max of the pair sums)
        q, k, v = n(g.query_weight), n(g.key_weight), n(g.value_weight)
        inner = math.e * (v + q + k / 3.0 + torch.stack([q + k, q + v, k + v]).max())
    else:  # dot: ‖W_o‖·√ρ·(‖W_v‖ + r_v·(τr‖W_q‖ + τr‖W_k‖)), √ρ = √(1 + B)·e^{B/2} for ELU + 1
        bound, scale = g.score_bound(), g.temperature * g.radius
        spread = n(g.value_weight) + g.value_radius * (scale * n(g.query_weight) + scale * n(g.key_weight))
        inner = torch.sqrt(1.0 + bound) * torch.exp(0.5 * bound) * spread
    assert g.raw_lipschitz_bound(9) == float(n(g.out_weight) * inner)


def test_l2_constant_and_lambert_w():
    assert lambert_w0(0.0) == 0.0
    assert lambert_w0(math.e) == pytest.approx(1.0, abs=1e-14)
    w = lambert_w0(123.4)
    assert w * math.exp(w) == pytest.approx(123.4, rel=1e-13)
    values = [l2_attention_constant(n) for n in (1, 16, 256, 4096)]
    assert values[0] == pytest.approx(1.0)  # one token: the output is the token itself
    assert values == sorted(values)
    g = ia.make_attention("l2", CHANNELS)
    assert g.lipschitz_bound() == 0.9  # no N given: the gain's guarantee, which holds for every N
    assert g.raw_lipschitz_bound(256) < g.raw_lipschitz_bound(4096)


@pytest.mark.compat
@pytest.mark.parametrize("kind", PAPER_KINDS)
def test_paper_variant_reports_an_honest_bound(kind):
    g = ia.make_attention(kind, CHANNELS, variant="paper").eval()
    assert g.lipschitz_bound() == math.inf
    assert len(g.bound_reason) > 40
    block = ia.InvertibleResidual(g)
    with pytest.raises(ValueError, match="allow_uncertified"):
        block.inverse(torch.zeros(1, CHANNELS, 4, 4))
    if kind in ("concat", "dot"):
        assert g.local_lipschitz_bound(1.0) == math.inf
    else:  # on inputs inside the ball the local bound holds (Jacobians at those inputs: no pair search,
        # which would leave the ball)
        x = image_batch(2, 16).double()
        radius = float(x.norm(dim=1).max())
        assert ia.estimate_lipschitz(g.double(), x, n_iterations=30, pair_steps=0) <= g.local_lipschitz_bound(radius)
        assert g.local_lipschitz_bound(1e6) == math.inf  # e^B beyond float64: inf, not OverflowError


@pytest.mark.parametrize("kind", ["concat", "dot"])
def test_paper_dot_and_concat_are_not_contractive(kind):
    """The original ELU formulation over five initialisations on real images: ‖J_g‖ reaches far above 1, and
    100 fixed-point iterations (the original's count) fail to return the input for most of them, either
    not converging or converging to another preimage (x + g(x) is then not even injective). The certified
    kind, same seeds, inverts every time."""
    x = image_batch(2, 32).double()
    failures, largest = 0, 0.0
    for seed in range(5):
        for variant in ("paper", "certified"):
            torch.manual_seed(seed)
            g = ia.make_attention(kind, CHANNELS, variant=variant).double().eval()
            block = ia.InvertibleResidual(g)
            x_hat, info = block.inverse(
                block(x),
                method="fixed_point",
                max_iter=100,
                allow_uncertified=True,
                on_failure="return",
                return_info=True,
            )
            error = float((x_hat - x).norm() / x.norm())
            if variant == "certified":
                assert info.converged and error < 1e-8
            else:
                largest = max(largest, ia.estimate_lipschitz(g, x, n_iterations=30, pair_steps=0))
                failures += (not info.converged) or error > 1e-3
    assert largest > 100.0
    assert failures >= 3


def test_tensor_memory_counts_live_and_peak():
    with TensorMemory() as memory:
        a = torch.ones(1000)  # 4000 bytes
        b = torch.ones(500)  # 2000 bytes
        del a
        c = b + 1  # a is gone: 4000 live
        assert memory.live_bytes == 4000
    assert memory.peak_bytes == 6000
    assert memory.largest_shape == (1000,)
    del b, c


def test_saved_tensor_bytes_counts_what_backward_keeps():
    x = torch.ones(10, requires_grad=True)
    with SavedTensorBytes() as saved:
        y = (x * x).sum()  # mul saves both of its inputs: 2 × 40 bytes
    assert saved.bytes == 80
    y.backward()


# -- the generative repository's formulation ---------------------------------------------------
@pytest.mark.parametrize("kind", ["concat", "dot"])
def test_generative_variant_is_the_generation_repository_formulation(kind):
    torch.manual_seed(0)
    g = ia.make_attention(kind, CHANNELS, variant="generative").double().eval()
    paper = ia.make_attention(kind, CHANNELS, variant="paper").double().eval()
    x = torch.rand(3, CHANNELS, 6, 6, dtype=torch.float64) - 0.5
    # one normaliser over all N² entries: the whole map sums to 2/3 (the paper's: every row does)
    assert g.attention_map(x).sum(dim=(1, 2)) == pytest.approx([2 / 3] * 3, rel=1e-9)
    assert paper.attention_map(x).sum(dim=2) == pytest.approx(torch.full((3, 36), 2 / 3, dtype=torch.float64), rel=1e-9)
    # plain query and key projections; the value's coefficient is 0.9 for dot too
    assert not parametrize.is_parametrized(g.query) and not parametrize.is_parametrized(g.key)
    assert parametrize.is_parametrized(paper.query)
    assert parametrize.is_parametrized(g.value) and g.value.parametrizations.weight[0].coeff == pytest.approx(0.9)
    if kind == "dot":
        assert paper.value.parametrizations.weight[0].coeff == pytest.approx(0.5)
    else:
        assert g.concat.bias is not None and paper.concat.bias is None
        assert not parametrize.is_parametrized(g.concat)
    assert g.lipschitz_bound() == math.inf and "whole map" in g.bound_reason
    assert "generative" in repr(g)


def test_generative_variant_output_shrinks_like_one_over_n():
    """One normaliser over all N² entries gives each output a total weight of 2/(3N): the branch and its Lipschitz
    constant vanish as N grows, where the certified (row-normalised) map's stay of order one."""
    from invattn.attention.tightness import scale_with_positions

    torch.manual_seed(0)
    generative = scale_with_positions(
        ia.make_attention("concat", CHANNELS, variant="generative").double().eval(), CHANNELS, (4, 8, 16)
    )
    certified = scale_with_positions(ia.make_attention("concat", CHANNELS).double().eval(), CHANNELS, (4, 8, 16))
    assert [r["positions"] for r in generative] == [16, 64, 256]
    for key in ("output_ratio", "measured"):
        # 4× the positions each time: about 4× smaller (between 2 and 8 allows for the weights and the inputs)
        assert all(2 < a[key] / b[key] < 8 for a, b in zip(generative, generative[1:])), (key, generative)
        assert all(0.5 < a[key] / b[key] < 3 for a, b in zip(certified, certified[1:])), (key, certified)


def test_scale_with_positions_refuses_bad_sizes():
    from invattn.attention.tightness import scale_with_positions

    g = ia.make_attention("dot", CHANNELS).double()
    with pytest.raises(ValueError, match="size"):
        scale_with_positions(g, CHANNELS, (4, 0))


@pytest.mark.parametrize("kind", ["gaussian", "embedded_gaussian", "l2"])
def test_generative_variant_has_only_concat_and_dot(kind):
    with pytest.raises(ValueError, match="variant='generative'"):
        ia.make_attention(kind, CHANNELS, variant="generative")
