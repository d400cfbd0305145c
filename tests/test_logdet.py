import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import invattn as ia
from invattn.logdet import residual_logdet


def small_block(dim=6, coeff=0.8, seed=0):
    torch.manual_seed(seed)
    g = nn.Sequential(
        ia.spectral_norm(nn.Linear(dim, dim), coeff=coeff), nn.ELU(), ia.spectral_norm(nn.Linear(dim, dim), coeff=0.99)
    )
    return ia.InvertibleResidual(g).double().eval()


def conv_block(size=4):
    torch.manual_seed(1)
    g = nn.Sequential(
        ia.spectral_norm(nn.Conv2d(2, 4, 3, padding=1), coeff=0.9, input_size=(size, size)),
        ia.LipSwish(),
        ia.spectral_norm(nn.Conv2d(4, 2, 3, padding=1), coeff=0.9, input_size=(size, size)),
    )
    return ia.InvertibleResidual(g).double().eval()


@pytest.mark.compat
def test_exact_matches_dense_slogdet():
    block = conv_block()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    for b in range(2):
        jac = torch.autograd.functional.jacobian(lambda z: block(z.view(1, 2, 4, 4)).flatten(), x[b].flatten())
        assert float(ia.logdet(block, x, "exact")[b].detach()) == pytest.approx(
            float(torch.linalg.slogdet(jac).logabsdet), abs=1e-12
        )


@pytest.mark.compat
def test_series_converges_within_truncation_bound():
    block = small_block()
    x = torch.randn(4, 6, dtype=torch.float64) * 2
    exact = ia.logdet(block, x, "exact").detach()
    lipschitz = block.branch_lipschitz_bound()
    previous = math.inf
    for n in [1, 2, 4, 8, 16, 32]:
        series = ia.logdet(block, x, "series", n_terms=n, probe="basis").detach()  # exact traces: bias only
        error = float((series - exact).abs().max())
        assert error <= ia.series_truncation_bound(lipschitz, n, 6)
        assert error <= previous + 1e-15 or error < 1e-12
        previous = error
    assert previous < 1e-6


def test_hutchinson_series_is_unbiased_for_its_truncation():
    block = small_block()
    x = torch.randn(2, 6, dtype=torch.float64)
    target = ia.logdet(block, x, "series", n_terms=5, probe="basis")
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([ia.logdet(block, x, "series", n_terms=5, generator=generator) for _ in range(2000)])
    standard_error = draws.std(0) / math.sqrt(len(draws))
    assert torch.all((draws.mean(0) - target).abs() < 4 * standard_error)


@pytest.mark.parametrize("distribution", ["geometric", "poisson"])
def test_roulette_estimator_is_unbiased(distribution):
    block = small_block(coeff=0.9)
    x = torch.randn(2, 6, dtype=torch.float64)
    exact = ia.logdet(block, x, "exact")
    generator = torch.Generator().manual_seed(1)
    draws = torch.stack(
        [ia.logdet(block, x, "roulette", distribution=distribution, generator=generator) for _ in range(3000)]
    )
    standard_error = draws.std(0) / math.sqrt(len(draws))
    assert torch.all((draws.mean(0) - exact).abs() < 4 * standard_error)


def _exact_gradient(block, x, direction):
    return _gradient(block, x, direction, estimator="exact")


def _gradient(block, x, direction, **options):
    """The gradient of Σ_b logdet_b w.r.t. all parameters, projected on a fixed random direction."""
    block.zero_grad(set_to_none=True)
    ia.logdet(block, x, **options).sum().backward()
    # a parameter the log-det does not depend on (the last bias) gets no gradient: it counts as zero
    return sum((p.grad * d).sum() for p, d in zip(block.parameters(), direction) if p.grad is not None).detach()


@pytest.mark.compat
@pytest.mark.parametrize("neumann", [False, True])
def test_series_gradient_matches_exact_gradient_with_exact_traces(neumann):
    block = small_block()
    x = torch.randn(3, 6, dtype=torch.float64)
    direction = [torch.randn_like(p) for p in block.parameters()]
    exact = _exact_gradient(block, x, direction)
    approx = _gradient(block, x, direction, estimator="series", n_terms=60, probe="basis", neumann_gradient=neumann)
    assert float(approx) == pytest.approx(float(exact), rel=1e-6)


def test_neumann_gradient_matches_exact_gradient_on_average():
    block = small_block(coeff=0.9)
    x = torch.randn(2, 6, dtype=torch.float64)
    direction = [torch.randn_like(p) for p in block.parameters()]
    exact = float(_exact_gradient(block, x, direction))
    generator = torch.Generator().manual_seed(2)
    draws = torch.tensor(
        [
            float(_gradient(block, x, direction, estimator="roulette", neumann_gradient=True, generator=generator))
            for _ in range(2000)
        ]
    )
    assert abs(float(draws.mean()) - exact) < 4 * float(draws.std()) / math.sqrt(len(draws))


@pytest.mark.compat
def test_neumann_value_equals_power_series_value():
    block = small_block()
    x = torch.randn(3, 6, dtype=torch.float64)
    a = ia.logdet(block, x, "series", n_terms=7, generator=torch.Generator().manual_seed(5))
    b = ia.logdet(block, x, "series", n_terms=7, neumann_gradient=True, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.compat
def test_gradient_flows_to_the_input():
    block = small_block()
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    ia.logdet(block, x, "exact").sum().backward()
    exact = x.grad.clone()
    x.grad = None
    ia.logdet(block, x, "series", n_terms=60, probe="basis", neumann_gradient=True).sum().backward()
    assert torch.allclose(x.grad, exact, atol=1e-8)


def test_sequence_logdet_sums_its_parts():
    chain = ia.InvertibleSequential(ia.ActNorm(2), conv_block()).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    chain(x)
    chain.eval()
    total = ia.logdet(chain, x, "exact").detach()
    jac = torch.autograd.functional.jacobian(lambda z: chain(z.view(1, 2, 4, 4)).flatten(), x[0].flatten())
    assert float(total[0]) == pytest.approx(float(torch.linalg.slogdet(jac).logabsdet), abs=1e-10)


def test_bad_estimator_options_are_refused():
    block = small_block()
    x = torch.randn(1, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="estimator must be one of"):
        ia.logdet(block, x, "magic")
    with pytest.raises(ValueError, match="n_terms"):
        ia.logdet(block, x, "series", n_terms=0)
    with pytest.raises(ValueError, match="distribution"):
        ia.logdet(block, x, "roulette", distribution="uniform")
    with pytest.raises(ValueError, match="non-finite"):
        ia.logdet(block, torch.full((1, 6), float("inf"), dtype=torch.float64))


def test_logdet_options_are_one_checked_value():
    for bad, match in [
        (dict(probe="sobol"), "probe"),
        (dict(n_probes=0), "n_probes"),
        (dict(n_exact_terms=-1), "n_exact_terms"),
        (dict(p=1.0), "geometric success probability"),
        (dict(lam=0.0), "lam"),
    ]:
        with pytest.raises(ValueError, match=match):
            ia.LogdetOptions(**bad)
    with pytest.raises(TypeError, match="unexpected keyword argument 'terms'"):
        ia.LogdetOptions.of("series", terms=3)
    with pytest.raises(TypeError, match="LogdetOptions or an estimator name"):
        ia.LogdetOptions.of(3)
    assert ia.LogdetOptions.of("roulette", p=0.3) == ia.LogdetOptions(estimator="roulette", p=0.3)
    block = small_block()
    x = torch.randn(2, 6, dtype=torch.float64)
    options = ia.LogdetOptions(n_terms=7, generator=torch.Generator().manual_seed(5))
    by_value = ia.logdet(block, x, options).detach()
    by_keywords = ia.logdet(block, x, "series", n_terms=7, generator=torch.Generator().manual_seed(5)).detach()
    assert torch.equal(by_value, by_keywords)
    gx, value = residual_logdet(block.g, x, ia.LogdetOptions(estimator="exact"))
    assert torch.equal(gx, block.g(x)) and torch.equal(value, ia.logdet(block, x, "exact"))


@pytest.mark.parametrize("activation", ["elu", "lipswish"])
@pytest.mark.parametrize("n_terms", [1, 2, 5])
def test_the_forward_mode_surrogate_equals_the_vector_jacobian_one(activation, n_terms, monkeypatch):
    """A convolutional branch takes its Neumann surrogate from a Jacobian–vector product (no double backward):
    the same log-det and the same gradients (of x, of every parameter, LipSwish's β included) as the
    vector–Jacobian route, in float64 to rounding. With exact zeros reaching the first activation (the ELU's kink)
    g(x) and the log-det still agree; the gradients may not there (the tangent's derivative takes the other side's
    ELU'' at 0: _activation_jvp's docstring)."""
    import sys

    logdet_module = sys.modules["invattn.logdet"]
    from invattn.branches import conv_branch

    torch.manual_seed(0)
    g = conv_branch(4, 16, 6, 0.9, activation, input_nonlinearity=True).double()
    for zeros in (False, True):
        x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
        if zeros:
            x[:, :, :2] = 0.0
        x.requires_grad_(True)
        assert logdet_module.chain_jvp(g, x, torch.randn_like(x)) is not None
        results = []
        with monkeypatch.context() as patch:
            for route in ("forward", "reverse"):
                if route == "reverse":
                    patch.setattr(logdet_module, "chain_jvp", lambda *a: None)
                g.zero_grad()
                x.grad = None
                options = dict(n_terms=n_terms, neumann_gradient=True, generator=torch.Generator().manual_seed(1))
                gx, value = residual_logdet(g, x, "series", **options)
                (value.sum() + gx.square().sum()).backward()
                grads = [x.grad.clone(), *[p.grad.clone() for p in g.parameters()]]
                results.append([gx.detach(), value.detach(), *([] if zeros else grads)])
        for forward, reverse in zip(*results):
            assert torch.allclose(forward, reverse, rtol=1e-12, atol=1e-12 * float(reverse.abs().max()))


@pytest.mark.parametrize("alpha", [1.0, 0.5, 1.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_forward_modes_elu_is_torchs_elu_and_its_derivative(alpha, dtype):
    """The forward-mode ELU (from exp(min(z, 0)), not expm1) against F.elu: each value within a few units in the last
    place of max(α, |ELU(z)|); the tangent ELU'(z)·t against torch.func.jvp's; autograd's derivative of the value
    against F.elu's (α at the kink z = 0 too, so vector–Jacobian products through it agree with the tangent); and the
    tangent's derivative ELU''·t against torch's double backward away from the kink, the other side's value at it."""
    import sys

    activation_jvp = sys.modules["invattn.logdet"]._activation_jvp
    z = torch.cat([torch.linspace(-30, 30, 2001, dtype=dtype), torch.tensor([0.0, -1e-30, 1e-30, -1e-4], dtype=dtype)])
    z = z.reshape(1, 1, -1, 1).requires_grad_(True)
    t = torch.linspace(-2, 3, z.numel(), dtype=dtype).reshape(z.shape)
    eps = torch.finfo(dtype).eps
    h, jt = activation_jvp(nn.ELU(alpha), z, t)
    z0 = z.detach().clone().requires_grad_(True)
    h_ref, jt_ref = torch.func.jvp(lambda u: F.elu(u, alpha), (z0.detach(),), (t,))
    assert ((h - h_ref).abs() <= 4 * eps * torch.clamp(h_ref.abs(), min=alpha)).all()
    assert ((jt - jt_ref).abs() <= 4 * eps * torch.clamp(jt_ref.abs(), min=alpha)).all()
    (dh,) = torch.autograd.grad(h.sum(), z, retain_graph=True)
    (dh_ref,) = torch.autograd.grad(F.elu(z0, alpha).sum(), z0)
    assert ((dh - dh_ref).abs() <= 4 * eps * max(alpha, 1.0)).all()
    assert float(dh[0, 0, 2001, 0]) == float(dh_ref[0, 0, 2001, 0]) == float(torch.tensor(alpha, dtype=dtype))  # z = 0
    (grad,) = torch.autograd.grad(jt.sum(), z)
    (grad_ref,) = torch.autograd.grad(torch.autograd.grad(F.elu(z0, alpha), z0, t, create_graph=True)[0].sum(), z0)
    away = z.detach() != 0
    assert ((grad - grad_ref).abs()[away] <= 4 * eps * torch.clamp(grad_ref.abs(), min=alpha)[away]).all()  # ELU''·t
    # at z = 0 the two one-sided values of ELU'': α·t here, 0 in torch's double backward (the docstring says so)
    assert float(grad_ref[0, 0, 2001, 0]) == 0.0
    assert float(grad[0, 0, 2001, 0]) == float(torch.tensor(alpha, dtype=dtype) * t[0, 0, 2001, 0])


def _elu_pair_reference(z, t, alpha):
    """(ELU(z), ELU'(z)·t) from F.elu and torch.where: autograd's own derivatives (torch's conventions at 0)."""
    return F.elu(z, alpha), t * torch.where(z > 0, 1.0, alpha * torch.exp(z))


def test_the_forward_modes_elu_differentiates_in_both_modes_and_broadcasts():
    """The forward-mode ELU's gradients (both outputs used, or only one) and its forward-mode derivative against
    autograd's through F.elu, with z and t broadcast against each other either way; gradcheck and gradgradcheck
    (reverse and forward mode) in float64 away from the kink; and for α > 1 in float32 a slope of exactly 1 above 0."""
    import sys

    activation_jvp = sys.modules["invattn.logdet"]._activation_jvp
    torch.manual_seed(0)
    for alpha in (1.0, 0.3, 2.5):
        layer = nn.ELU(alpha)
        for z_shape, t_shape in (((2, 3), (2, 3)), ((2, 1), (2, 4)), ((2, 4), (1, 4))):
            z = torch.randn(z_shape, dtype=torch.float64, requires_grad=True)
            t = torch.randn(t_shape, dtype=torch.float64, requires_grad=True)
            ours, reference = activation_jvp(layer, z, t), _elu_pair_reference(z, t, alpha)
            for pick in ((0,), (1,), (0, 1)):
                got = torch.autograd.grad(
                    sum(ours[i].sum() * (i + 1) for i in pick), (z, t), allow_unused=True, retain_graph=True
                )
                want = torch.autograd.grad(
                    sum(reference[i].sum() * (i + 1) for i in pick), (z, t), allow_unused=True, retain_graph=True
                )
                for a, b, x in zip(got, want, (z, t)):  # an unused input: None or zeros
                    a, b = (torch.zeros_like(x) if g is None else g for g in (a, b))
                    assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
            tangents = (torch.randn(z_shape, dtype=torch.float64), torch.randn(t_shape, dtype=torch.float64))
            primals = (z.detach(), t.detach())
            _, ours_dot = torch.func.jvp(lambda a, b: activation_jvp(layer, a, b), primals, tangents)
            _, ref_dot = torch.func.jvp(lambda a, b: _elu_pair_reference(a, b, alpha), primals, tangents)
            for a, b in zip(ours_dot, ref_dot):
                assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
        z = (torch.rand(3, 4, dtype=torch.float64) + 0.1) * torch.tensor([1.0, -1.0]).repeat(2).double()  # not 0
        t = torch.randn(3, 4, dtype=torch.float64)
        inputs = (z.requires_grad_(True), t.requires_grad_(True))
        assert torch.autograd.gradcheck(lambda a, b: activation_jvp(layer, a, b), inputs, check_forward_ad=True)
        assert torch.autograd.gradgradcheck(lambda a, b: activation_jvp(layer, a, b), inputs)
    z = torch.linspace(1e-3, 30, 997).requires_grad_(True)
    for alpha in (2.2969, 2.9067, 1.7):
        h, slope = activation_jvp(nn.ELU(alpha), z, torch.ones_like(z))
        (dh,) = torch.autograd.grad(h.sum(), z)
        assert torch.equal(slope, torch.ones_like(z)) and torch.equal(dh, torch.ones_like(z))


def test_a_branch_the_forward_mode_does_not_know_uses_vector_jacobian_products():
    from invattn.logdet import chain_jvp

    x = torch.randn(2, 3, 4, 4)
    assert chain_jvp(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Tanh()), x, x) is None
    assert chain_jvp(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular")), x, x) is None
    assert chain_jvp(nn.Linear(4, 4), x, x) is None
    y, jv = chain_jvp(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ELU()), x, x)
    assert y.shape == jv.shape == x.shape and y.is_contiguous()


def test_the_forward_mode_keeps_a_certified_convolutions_input_check():
    """A spectral-normalised convolution refuses an input of another size than it was certified for, with gradients
    on (the forward-mode route runs the layer's pre-hook) as without."""
    from invattn.branches import conv_branch

    block = ia.InvertibleResidual(conv_branch(3, 8, 6, 0.9))
    x = torch.randn(2, 3, 9, 9)
    for grad in (False, True):
        with torch.set_grad_enabled(grad), pytest.raises(ValueError, match="built for inputs of size"):
            block.forward_and_logdet(x, "series", n_terms=2, neumann_gradient=True)


def test_subclasses_and_hooks_take_the_vector_jacobian_route(monkeypatch):
    """A Sequential or Conv2d subclass with its own forward, or a forward hook, is not replaced by the plain
    computation: the log-det and the gradients equal the vector–Jacobian route's."""
    import sys

    logdet_module = sys.modules["invattn.logdet"]

    class Halved(nn.Sequential):
        def forward(self, x):
            return 0.5 * super().forward(x)

    class Standardised(nn.Conv2d):
        def forward(self, x):
            w = self.weight
            return self._conv_forward(x, (w - w.mean()) / w.std(), self.bias)

    torch.manual_seed(0)
    hooked = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ELU()).double()
    hooked[0].register_forward_hook(lambda module, args, out: out * 0.5)
    branches = [
        Halved(nn.Conv2d(3, 3, 3, padding=1), nn.ELU()).double(),
        nn.Sequential(Standardised(3, 3, 3, padding=1), nn.ELU()).double(),
        hooked,
    ]
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    for g in branches:
        assert logdet_module.chain_jvp(g, x, x) is None
        values = []
        for route in ("library", "reverse"):
            with monkeypatch.context() as patch:
                if route == "reverse":
                    patch.setattr(logdet_module, "chain_jvp", lambda *a: None)
                xs = x.clone().requires_grad_(True)
                gx, value = residual_logdet(
                    g, xs, "series", n_terms=2, neumann_gradient=True, generator=torch.Generator().manual_seed(0)
                )
                (value.sum() + gx.sum()).backward()
                values.append((value.detach(), xs.grad))
        assert torch.equal(values[0][0], values[1][0]) and torch.equal(values[0][1], values[1][1])


def test_backward_hooks_keep_the_modules_called():
    """The forward-mode route never calls the modules, so a branch with a backward hook (on a layer, on the Sequential
    or global) takes the vector–Jacobian route, and every hook fires as it would on g(x)."""
    import sys

    logdet_module = sys.modules["invattn.logdet"]
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    for where in ("layer", "sequential", "global"):
        g = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ELU(), nn.Conv2d(3, 3, 3, padding=1)).double()
        calls = []
        record = lambda module, grad_in, grad_out: calls.append(type(module).__name__)  # noqa: E731
        if where == "layer":
            handle = g[0].register_full_backward_hook(record)
        elif where == "sequential":
            handle = g.register_full_backward_hook(record)
        else:
            handle = nn.modules.module.register_module_full_backward_hook(record)
        try:
            assert logdet_module.chain_jvp(g, x, x) is None
            xs = x.clone().requires_grad_(True)
            gx, value = residual_logdet(g, xs, "series", n_terms=2, neumann_gradient=True)
            (value.sum() + gx.sum()).backward()
        finally:
            handle.remove()
        assert calls, where


def test_chain_jvp_refuses_a_tangent_unlike_its_input():
    import sys

    chain_jvp = sys.modules["invattn.logdet"].chain_jvp
    g = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ELU(), nn.Conv2d(3, 3, 3, padding=1))
    x = torch.randn(2, 3, 5, 5)
    for v, message in [
        (torch.randn(1, 3, 5, 5), "v must have x's shape"),
        (torch.randn(5, 5), "v must have x's shape"),
        (torch.randn(2, 3, 5, 5, dtype=torch.float64), "dtype"),
    ]:
        with pytest.raises(ValueError, match=message):
            chain_jvp(g, x, v)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        chain_jvp(g, [1, 2], x)
    h, t = chain_jvp(g, x, x)  # a matching tangent still works
    assert h.shape == t.shape == x.shape
