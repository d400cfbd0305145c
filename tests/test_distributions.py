"""invattn.distributions: certified blocks as torch.distributions transforms, the density model as a distribution.

Reference values are the exact change of variables log p_X(x) = log p_Z(f(x)) + log|det J_f(x)|, with J_f from
torch.func.jacrev and slogdet, in float64."""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.distributions import (
    AffineTransform,
    ComposeTransform,
    Independent,
    Normal,
    TanhTransform,
    TransformedDistribution,
    constraints,
)

from invattn import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    AttentionCoupling,
    InjectivePad,
    InversionError,
    InvertibleResidual,
    InvertibleSequential,
    LipSwish,
    Squeeze,
    logdet,
    series_truncation_bound,
    spectral_norm,
)
from invattn.blocks import InvertibleBlock
from invattn.distributions import BlockTransform, ResidualFlowDistribution
from invattn.logdet import LogdetOptions
from invattn.models import PRESETS, FlowStep, ResidualFlow
from invattn.solvers import SolverOptions
from invattn.toy2d import log_density, make_flow

F64 = torch.float64


# -- blocks and references --------------------------------------------------------------------------------------------


def _conv_branch(channels: int, size: int, coeff: float = 0.8) -> nn.Sequential:
    return nn.Sequential(
        spectral_norm(nn.Conv2d(channels, 4, 3, padding=1), coeff, input_size=(size, size)),
        LipSwish(),
        spectral_norm(nn.Conv2d(4, channels, 3, padding=1), coeff, input_size=(size, size)),
    )


def _actnorm(channels: int) -> ActNorm:
    block = ActNorm(channels)
    with torch.no_grad():
        block.log_scale.copy_(0.3 * torch.randn(channels))
        block.bias.copy_(torch.randn(channels))
    return block


def _block(name: str) -> tuple[nn.Module, tuple[int, ...], str | None]:
    """(block in float64 and eval mode, its event shape, the logdet option that makes it exact)."""
    torch.manual_seed(0)
    if name == "affine_coupling":
        block, event, estimator = AffineCoupling(nn.Conv2d(2, 4, 3, padding=1), 4), (4, 3, 3), None
    elif name == "additive_coupling":
        block, event, estimator = AdditiveCoupling(nn.Conv2d(2, 2, 3, padding=1), 4), (4, 3, 3), None
    elif name == "actnorm":
        block, event, estimator = _actnorm(3), (3, 2, 2), None
    elif name == "residual":
        block, event, estimator = InvertibleResidual(_conv_branch(2, 3)), (2, 3, 3), "exact"
    elif name == "flow_step":
        step = FlowStep(InvertibleResidual(_conv_branch(2, 3)), 2, actnorm=True)
        with torch.no_grad():
            step.actnorm.log_scale.fill_(0.2)
        block, event, estimator = step, (2, 3, 3), "exact"
    elif name == "squeeze_attention":
        parts = [Squeeze(), _actnorm(4), AttentionCoupling("concat", 4), InvertibleResidual(_conv_branch(4, 2))]
        block, event, estimator = InvertibleSequential(*parts), (1, 4, 4), "exact"
    else:  # the 2-D flow of lesson 06
        block, event, estimator = make_flow(n_blocks=3, width=16), (2,), "exact"
    return block.double().eval(), event, estimator


def _jacobian_logdet(f, x: torch.Tensor) -> torch.Tensor:
    """log|det ∂f(x_b)/∂x_b| per sample by jacrev + slogdet (f maps [1, *event] to [1, *event'])."""
    values = []
    for point in x:
        jacobian = torch.func.jacrev(lambda v: f(v.view(1, *x.shape[1:])).reshape(-1))(point.reshape(-1))
        sign, value = torch.linalg.slogdet(jacobian)
        assert sign != 0
        values.append(value)
    return torch.stack(values)


def _standard_normal(shape: tuple[int, ...]) -> Independent:
    return Independent(Normal(torch.zeros(shape, dtype=F64), torch.ones(shape, dtype=F64)), len(shape))


BLOCKS = ["affine_coupling", "additive_coupling", "actnorm", "residual", "flow_step", "squeeze_attention", "flow2d"]


# -- the transform in TransformedDistribution -------------------------------------------------------------------------


@pytest.mark.parametrize("name", BLOCKS)
def test_log_prob_is_the_exact_change_of_variables(name):
    block, event, estimator = _block(name)
    t = BlockTransform(block, event_dim=len(event), logdet=estimator)
    latent = t.forward_shape(event)
    assert t.inverse_shape(latent) == torch.Size(event)
    density = TransformedDistribution(_standard_normal(tuple(latent)), [t.inv])
    assert density.event_shape == torch.Size(event)
    x = torch.randn(2, 3, *event, dtype=F64)
    log_prob = density.log_prob(x)
    assert log_prob.shape == (2, 3)
    flat = x.reshape(6, *event)
    z = block(flat)
    expected = _standard_normal(tuple(latent)).log_prob(z) + _jacobian_logdet(block, flat)
    torch.testing.assert_close(log_prob.reshape(6), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, t(x)).reshape(6), _jacobian_logdet(block, flat))


def test_the_2d_flow_agrees_with_toy2d_log_density():
    flow, _, _ = _block("flow2d")
    density = TransformedDistribution(_standard_normal((2,)), [BlockTransform(flow, event_dim=1, logdet="exact").inv])
    x = torch.randn(7, 2, dtype=F64)
    torch.testing.assert_close(density.log_prob(x), log_density(flow, x), rtol=1e-12, atol=1e-12)
    one = density.log_prob(x[0])  # an event without batch dimensions
    assert one.shape == () and torch.allclose(one, log_density(flow, x[:1])[0])


@pytest.mark.parametrize("name", BLOCKS)
def test_inverse_round_trip(name):
    block, event, _ = _block(name)
    t = BlockTransform(block, event_dim=len(event))
    x = torch.randn(4, *event, dtype=F64)
    y = t(x)
    torch.testing.assert_close(t.inv(y), x, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(t.inv.inv(x), y)
    assert t.inv.inv is t and t.bijective and t.inv.bijective


def test_solver_options_reach_the_certified_solver():
    flow, _, _ = _block("flow2d")
    x = torch.randn(5, 2, dtype=F64)
    tight = BlockTransform(flow, event_dim=1, solver_options={"tol": 1e-14, "method": "fixed_point"})
    assert tight.inv(tight(x)).sub(x).abs().max() < 1e-12
    assert tight.solver_options == SolverOptions(tol=1e-14, method="fixed_point")  # one value, built once
    starved = BlockTransform(flow, event_dim=1, solver_options={"max_iter": 1})
    with pytest.raises(InversionError):
        starved.inv(starved(x))
    value = SolverOptions(tol=1e-14, method="fixed_point")
    by_value = BlockTransform(flow, event_dim=1, solver_options=value)
    assert by_value.solver_options is value and by_value == tight
    torch.testing.assert_close(by_value.inv(by_value(x)), tight.inv(tight(x)), rtol=0, atol=0)
    assert BlockTransform(flow, event_dim=1).solver_options == SolverOptions()  # None: the defaults


def test_cache_skips_the_solve():
    flow, _, _ = _block("flow2d")
    t = BlockTransform(flow, event_dim=1, cache_size=1)
    x = torch.randn(3, 2, dtype=F64)
    y = t(x)
    assert t.inv(y) is x  # from the cache: no fixed-point solve
    uncached = BlockTransform(flow, event_dim=1)
    back = uncached.inv(uncached(x))
    assert back is not x and torch.allclose(back, x)
    with pytest.raises(ValueError, match="cache_size must be 0 or 1"):
        BlockTransform(flow, event_dim=1, cache_size=2)


def test_composed_with_torch_transforms_sampling_and_log_prob():
    """z ~ N(0, I) ↦ tanh(flow(a·z + b)): log p(x) = log N(z) − log|det J_G(z)| with G the whole forward map."""
    flow, _, _ = _block("flow2d")
    affine = AffineTransform(torch.tensor([0.3, -0.2], dtype=F64), torch.tensor([0.8, 1.2], dtype=F64), event_dim=1)
    parts = [affine, BlockTransform(flow, event_dim=1, logdet="exact"), TanhTransform()]
    base = _standard_normal((2,))
    density = TransformedDistribution(base, parts)
    torch.manual_seed(1)
    z = base.sample((6,))
    forward = ComposeTransform(parts)
    x = forward(z)
    expected = base.log_prob(z) - _jacobian_logdet(forward, z)
    torch.testing.assert_close(density.log_prob(x), expected, rtol=1e-8, atol=1e-8)  # the inverse solved to 1e-10
    samples = density.sample((50,))
    assert samples.shape == (50, 2) and bool((samples.abs() < 1).all())
    # A cached composition (ComposeTransform calls BlockTransform.with_cache): rsample then log_prob needs no solve.
    cached = TransformedDistribution(base, [ComposeTransform(parts, cache_size=1)])
    drawn = cached.rsample((4,))
    solver, flow.inverse = flow.inverse, None  # any call to the solver would fail
    try:
        value = cached.log_prob(drawn)
    finally:
        flow.inverse = solver
    assert value.shape == (4,) and bool(torch.isfinite(value).all())


def test_samples_follow_the_density():
    """The fraction of samples in a square matches the integral of exp(log_prob) over it (midpoint rule)."""
    flow, _, _ = _block("flow2d")
    t = BlockTransform(flow, event_dim=1, logdet="series", logdet_options={"n_terms": 40, "probe": "basis"})
    density = TransformedDistribution(_standard_normal((2,)), [t.inv])
    torch.manual_seed(2)
    n = 4000
    samples = density.sample((n,))
    inside = float(((samples.abs() < 1).all(dim=1)).double().mean())
    step = 2 / 50
    centres = -1 + step * (torch.arange(50, dtype=F64) + 0.5)
    grid = torch.cartesian_prod(centres, centres)
    with torch.no_grad():
        mass = float(density.log_prob(grid).exp().sum()) * step**2
    standard_error = math.sqrt(mass * (1 - mass) / n)
    assert 0.05 < mass < 0.95
    assert abs(inside - mass) < 4 * standard_error + 2e-3  # 4 standard errors of the sample fraction, plus the grid's


# -- the estimators' bias ---------------------------------------------------------------------------------------------


def _small_residual() -> tuple[InvertibleResidual, torch.Tensor]:
    torch.manual_seed(3)
    g = nn.Sequential(spectral_norm(nn.Linear(4, 8), 0.9), LipSwish(), spectral_norm(nn.Linear(8, 4), 0.9))
    return InvertibleResidual(g).double().eval().requires_grad_(False), torch.randn(1, 4, dtype=F64)


def test_series_is_biased_within_its_truncation_bound():
    block, x = _small_residual()
    exact = BlockTransform(block, event_dim=1, logdet="exact").log_abs_det_jacobian(x, None)
    torch.testing.assert_close(exact, _jacobian_logdet(block, x))
    bound = block.branch_lipschitz_bound()  # Lip(g), not Lip(x + g(x)) = 1 + Lip(g)
    assert block.lipschitz_bound() == 1 + bound
    for n_terms in (1, 2, 20):
        series = BlockTransform(
            block, event_dim=1, logdet="series", logdet_options={"n_terms": n_terms, "probe": "basis"}
        )
        with torch.no_grad():
            error = float((series.log_abs_det_jacobian(x, None) - exact).abs())
        assert error <= series_truncation_bound(bound, n_terms, 4)
        if n_terms == 1:
            assert error > 1e-2  # biased: with exact traces the only error is the truncation
    assert error < 1e-3
    # With random probes the mean is the truncated sum (the basis value), not the exact log-det.
    truncated = BlockTransform(block, event_dim=1, logdet="series", logdet_options={"n_terms": 1, "probe": "basis"})
    probes = BlockTransform(
        block,
        event_dim=1,
        logdet="series",
        logdet_options={"n_terms": 1, "generator": torch.Generator().manual_seed(0)},
    )
    with torch.no_grad():
        target = float(truncated.log_abs_det_jacobian(x, None))
        draws = probes.log_abs_det_jacobian(x.expand(16000, 4), None)
    standard_error = float(draws.std()) / math.sqrt(len(draws))
    assert abs(float(draws.mean()) - target) < 4 * standard_error < abs(target - float(exact))


def test_roulette_is_unbiased_and_the_default_is_the_blocks_estimator():
    block, x = _small_residual()
    exact = float(BlockTransform(block, event_dim=1, logdet="exact").log_abs_det_jacobian(x, None))
    generator = torch.Generator().manual_seed(4)
    roulette = BlockTransform(block, event_dim=1, logdet="roulette", logdet_options={"generator": generator})
    batch = x.expand(64, 4)  # one random number of terms per call, 64 independent probes
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error")  # p is chosen from the certified bound: finite variance, no warning
        means = torch.stack([roulette.log_abs_det_jacobian(batch, None).mean() for _ in range(100)])
    standard_error = float(means.std()) / math.sqrt(len(means))
    assert standard_error < 0.02
    assert abs(float(means.mean()) - exact) < 4 * standard_error  # a 4-standard-error test of E[roulette] = exact
    default = BlockTransform(block, event_dim=1, logdet_options={"generator": torch.Generator().manual_seed(5)})
    series = BlockTransform(
        block, event_dim=1, logdet="series", logdet_options={"generator": torch.Generator().manual_seed(5)}
    )
    assert torch.equal(default.log_abs_det_jacobian(batch, None), series.log_abs_det_jacobian(batch, None))
    assert default.logdet == "series" and default.logdet_options.estimator == "series"
    value = LogdetOptions(estimator="roulette", generator=torch.Generator().manual_seed(6))
    by_value = BlockTransform(block, event_dim=1, logdet_options=value)
    by_dict = BlockTransform(
        block, event_dim=1, logdet_options={"estimator": "roulette", "generator": torch.Generator().manual_seed(6)}
    )
    assert by_value.logdet_options is value and by_value.logdet == "roulette"
    assert torch.equal(by_value.log_abs_det_jacobian(batch, None), by_dict.log_abs_det_jacobian(batch, None))
    first, second = default.log_abs_det_jacobian(batch, None), default.log_abs_det_jacobian(batch, None)
    assert not torch.equal(first, second)  # the Hutchinson probes are random


# -- properties of the transform --------------------------------------------------------------------------------------


def test_constraints_event_dim_sign_and_call_and_ladj():
    block, event, estimator = _block("squeeze_attention")
    t = BlockTransform(block, event_dim=3, logdet=estimator)
    for constraint in (t.domain, t.codomain, t.inv.domain):
        assert constraint.event_dim == 3 and constraint.base_constraint is constraints.real
    assert t.event_dim == 3 and t.inv.event_dim == 3
    assert t.forward_shape((5, 1, 4, 4)) == (5, 4, 2, 2) and t.inv.forward_shape((4, 2, 2)) == (1, 4, 4)
    x = torch.randn(2, *event, dtype=F64)
    y, ladj = t.call_and_ladj(x)  # one forward_and_logdet: the same values as the two separate calls
    assert torch.equal(y, block(x)) and torch.equal(ladj, logdet(block, x, "exact"))
    assert torch.equal(ladj, t.log_abs_det_jacobian(x, y))
    cached = t.with_cache(1)
    y, _ = cached.call_and_ladj(x)
    assert cached.inv(y) is x  # call_and_ladj fills torch's cache as t(x) does
    flow, _, _ = _block("flow2d")
    assert BlockTransform(flow, event_dim=1).sign == 1 and BlockTransform(_actnorm(2), event_dim=1).sign == 1
    assert BlockTransform(_block("flow_step")[0], event_dim=3).sign == 1
    x2 = torch.randn(50, 2, dtype=F64)
    assert bool((torch.func.vmap(torch.func.jacrev(lambda p: flow(p[None])[0]))(x2).det() > 0).all())


def test_sign_refusals():
    with pytest.raises(NotImplementedError, match="permutes entries"):
        BlockTransform(Squeeze(), event_dim=3).sign
    with pytest.raises(NotImplementedError, match="permutes entries"):
        BlockTransform(InvertibleSequential(_actnorm(4), _block("affine_coupling")[0]), event_dim=3).sign
    with pytest.raises(NotImplementedError, match="not certified below 1"):
        BlockTransform(InvertibleResidual(nn.Linear(2, 2)), event_dim=1).sign

    class Custom(InvertibleBlock):
        def inverse(self, y, options=None):
            return y

    with pytest.raises(NotImplementedError, match="sign of det J of Custom is not known"):
        BlockTransform(Custom(), event_dim=1).sign


def test_equality_with_cache_and_repr():
    flow, _, _ = _block("flow2d")
    options = {"n_terms": 3}
    t = BlockTransform(flow, event_dim=1, logdet="series", logdet_options=options)
    same = BlockTransform(flow, event_dim=1, logdet="series", logdet_options=dict(options))
    assert t == same and t.inv == same.inv and not t != same
    assert t == BlockTransform(flow, event_dim=1, logdet_options=LogdetOptions(n_terms=3))  # a value, the same options
    assert t == BlockTransform(flow, event_dim=1, logdet="series", logdet_options=LogdetOptions(n_terms=3))
    solver = BlockTransform(flow, event_dim=1, logdet="series", logdet_options=options, solver_options={"tol": 1e-8})
    assert solver == BlockTransform(flow, event_dim=1, logdet_options=options, solver_options=SolverOptions(tol=1e-8))
    assert t != BlockTransform(flow, event_dim=1, logdet="exact")
    assert t != BlockTransform(flow, event_dim=1, logdet="series", logdet_options={"n_terms": 4})
    assert t != BlockTransform(flow, event_dim=1, logdet="series", logdet_options=options, solver_options={"tol": 1e-8})
    assert t != BlockTransform(make_flow(n_blocks=3, width=16).double(), event_dim=1, logdet="series")
    assert t != BlockTransform(_actnorm(2), event_dim=2) and t != AffineTransform(0.0, 1.0)
    cached = t.with_cache(1)
    assert cached == t and cached._cache_size == 1 and cached.with_cache(1) is cached and t.with_cache(0) is t
    assert t.inv.with_cache(1).inv == t
    closed = BlockTransform(_actnorm(2), event_dim=1, logdet="exact")
    assert closed.with_cache(1) == closed and closed.with_cache(1).logdet == "exact"  # no options refused
    assert repr(t) == "BlockTransform(InvertibleSequential, event_dim=1, logdet='series')"
    with pytest.raises(TypeError, match="unhashable"):
        hash(t)


# -- refusals ---------------------------------------------------------------------------------------------------------


class _NoLogdet(InvertibleBlock):
    def forward(self, x):
        return 2 * x

    def inverse(self, y, options=None):
        return y / 2


class _NotABlock(nn.Module):
    def forward(self, x):
        return 2 * x

    def inverse(self, y):
        return y / 2


def test_refusals_at_construction():
    with pytest.raises(ValueError, match=r"InjectivePad \(2 → 4 channels\).*injective, not bijective"):
        BlockTransform(InjectivePad(2, 4), event_dim=3)
    with pytest.raises(ValueError, match="InvertibleSequential holds InjectivePad"):
        BlockTransform(InvertibleSequential(_actnorm(2), InjectivePad(2, 4)), event_dim=3)
    with pytest.raises(TypeError, match=r"block must be an invattn.blocks.InvertibleBlock .*, got function$"):
        BlockTransform(lambda x: x, event_dim=1)
    with pytest.raises(TypeError, match="InvertibleBlock .*got Linear: derive it from InvertibleBlock"):
        BlockTransform(nn.Linear(2, 2), event_dim=1)
    with pytest.raises(TypeError, match="got _NotABlock: derive it from InvertibleBlock"):
        BlockTransform(_NotABlock(), event_dim=1)  # an inverse method alone is not the contract
    for event_dim in (0, True, "3"):
        with pytest.raises(ValueError, match="event_dim must be an int ≥ 1"):
            BlockTransform(_actnorm(2), event_dim=event_dim)
    with pytest.raises(ValueError, match="logdet must be None or one of exact, series, roulette, got 'hutchinson'"):
        BlockTransform(_actnorm(2), event_dim=1, logdet="hutchinson")
    flow, _, _ = _block("flow2d")
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'n_term' \(log-det options: estimator, n_terms"):
        BlockTransform(flow, event_dim=1, logdet_options={"n_term": 3})
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'tolerance' \(solver options: method, tol"):
        BlockTransform(flow, event_dim=1, solver_options={"tolerance": 1e-8})
    with pytest.raises(ValueError, match="n_terms"):
        BlockTransform(flow, event_dim=1, logdet_options={"n_terms": 0})  # the dataclass validates the values
    with pytest.raises(ValueError, match="method"):
        BlockTransform(flow, event_dim=1, solver_options={"method": "newton"})
    with pytest.raises(TypeError, match="logdet_options must be a LogdetOptions or a dict of its fields, got str"):
        BlockTransform(flow, event_dim=1, logdet_options="series")
    with pytest.raises(TypeError, match="solver_options must be a SolverOptions or a dict of its fields, got Log"):
        BlockTransform(flow, event_dim=1, solver_options=LogdetOptions())
    with pytest.raises(ValueError, match="cannot hold return_info"):
        BlockTransform(flow, event_dim=1, solver_options={"return_info": True})
    with pytest.raises(ValueError, match="logdet='exact' contradicts the estimator 'roulette' of logdet_options"):
        BlockTransform(flow, event_dim=1, logdet="exact", logdet_options={"estimator": "roulette"})
    with pytest.raises(ValueError, match="logdet='exact' contradicts the estimator 'series' of logdet_options"):
        BlockTransform(flow, event_dim=1, logdet="exact", logdet_options=LogdetOptions(n_terms=3))
    for keyword in (
        {"logdet_options": {"n_terms": 3}},
        {"solver_options": {"tol": 1e-8}},
        {"logdet_options": LogdetOptions()},
        {"solver_options": SolverOptions()},
    ):
        with pytest.raises(ValueError, match="ActNorm holds no residual block: .* closed-form"):
            BlockTransform(_actnorm(2), event_dim=1, **keyword)


def test_refusals_when_called():
    t = BlockTransform(_actnorm(3), event_dim=3)
    with pytest.raises(ValueError, match=r"x has shape \(3, 2\): fewer than event_dim = 3"):
        t(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"y has shape \(3,\): fewer than event_dim = 3"):
        t.inv(torch.randn(3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        t([1.0, 2.0])
    with pytest.raises(ValueError, match=r"shape \(2, 2\) has fewer than event_dim = 3"):
        t.forward_shape((2, 2))
    with pytest.raises(ValueError, match=r"Squeeze\(2\) needs events \[C, H, W\] with H and W divisible by 2"):
        BlockTransform(Squeeze(), event_dim=3).forward_shape((1, 3, 4))
    with pytest.raises(ValueError, match=r"Squeeze\(2\).inverse needs events \[C, H, W\] with C divisible by 4"):
        BlockTransform(Squeeze(), event_dim=3).inverse_shape((2, 4, 4))
    custom = BlockTransform(_NoLogdet(), event_dim=1)
    x = torch.randn(3, 2)
    torch.testing.assert_close(custom.inv(custom(x)), x)  # forward and inverse work; the log-det does not exist
    with pytest.raises(TypeError, match="no log-determinant for _NoLogdet"):
        custom.log_abs_det_jacobian(x, custom(x))
    with pytest.raises(TypeError, match="no log-determinant for _NoLogdet"):
        custom.call_and_ladj(x)
    with pytest.raises(TypeError, match="no log-determinant for _NoLogdet"):
        BlockTransform(InvertibleSequential(_actnorm(2), _NoLogdet()), event_dim=1).log_abs_det_jacobian(x, None)


def test_a_flow_step_inside_a_sequence_goes_through_the_contract():
    step = _block("flow_step")[0]
    chain = InvertibleSequential(step, _actnorm(2)).double().eval()
    inside = BlockTransform(chain, event_dim=3, logdet="exact")
    x = torch.randn(2, 2, 3, 3, dtype=F64)
    torch.testing.assert_close(inside.log_abs_det_jacobian(x, None), _jacobian_logdet(chain, x))
    torch.testing.assert_close(inside.inv(inside(x)), x, rtol=1e-8, atol=1e-8)
    assert inside.sign == 1


# -- zuko -------------------------------------------------------------------------------------------------------------


def test_a_certified_block_inside_a_zuko_flow():
    import zuko  # a test dependency (pyproject.toml's test extra): missing, this test fails rather than skips

    flow, _, _ = _block("flow2d")
    base = zuko.flows.UnconditionalDistribution(
        zuko.distributions.DiagNormal, torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64), buffer=True
    )
    transform = zuko.flows.UnconditionalTransform(BlockTransform, flow, event_dim=1, logdet="exact")
    model = zuko.flows.Flow([transform], base)
    assert {id(p) for p in flow.parameters()} <= {id(p) for p in model.parameters()}  # registered as a submodule
    x = torch.randn(5, 2, dtype=F64)
    density = model()
    log_prob = density.log_prob(x)  # zuko's f is data → latent: the block's own direction, no solve
    torch.testing.assert_close(log_prob, log_density(flow, x), rtol=1e-12, atol=1e-12)
    (-log_prob.mean()).backward()
    assert all(p.grad is not None for p in flow.parameters() if p.requires_grad)
    torch.manual_seed(7)
    samples = density.sample((8,))  # flow⁻¹ of base samples by the certified solver
    assert samples.shape == (8, 2)
    torch.testing.assert_close(flow(samples), zuko.flows.Flow([transform], base)().transform(samples))


# -- the density model as a distribution ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResidualFlow(PRESETS["smoke"]).double().eval()


def test_distribution_log_prob_is_the_models(model):
    density = ResidualFlowDistribution(model)
    assert density.event_shape == (1, 8, 8) and density.batch_shape == ()
    assert density.support.event_dim == 3 and not density.has_rsample
    x = 0.3 * torch.randn(2, 3, 1, 8, 8, dtype=F64)
    torch.manual_seed(8)
    value = density.log_prob(x)
    torch.manual_seed(8)
    assert value.shape == (2, 3) and torch.equal(value.reshape(6), model.log_prob(x.reshape(6, 1, 8, 8)))
    assert density.logdet_options == model.logdet_options()  # None: the model's own estimator, as one value
    exact = ResidualFlowDistribution(model, logdet_options={"estimator": "exact"})
    assert exact.logdet_options == LogdetOptions.of(model.logdet_options(), estimator="exact")  # a dict amends it
    torch.testing.assert_close(exact.log_prob(x[0]), model.log_prob(x[0], estimator="exact"))
    value = LogdetOptions("series", n_terms=2, probe="basis")
    by_value = ResidualFlowDistribution(model, logdet_options=value)
    assert by_value.logdet_options is value
    assert torch.equal(by_value.log_prob(x[0]), model.log_prob(x[0], value))
    torch.testing.assert_close(exact.bits_per_dim(x[0]), model.bits_per_dim(x[0], estimator="exact"))
    assert exact.log_prob(x[0, 0]).shape == ()  # one image without batch dimensions
    assert repr(density) == "ResidualFlowDistribution(event_shape=(1, 8, 8))"


def test_distribution_sample(model):
    density = ResidualFlowDistribution(model, solver_options={"tol": 1e-12})
    torch.manual_seed(9)
    x = density.sample((2, 2))
    assert x.shape == (2, 2, 1, 8, 8) and x.dtype == F64
    torch.manual_seed(9)
    torch.testing.assert_close(x.reshape(4, 1, 8, 8), model.sample(4, tol=1e-12))
    assert density.sample().shape == (1, 8, 8) and density.sample((0,)).shape == (0, 1, 8, 8)
    with pytest.raises(InversionError):
        ResidualFlowDistribution(model, solver_options={"max_iter": 1}).sample((1,))
    by_value = ResidualFlowDistribution(model, solver_options=SolverOptions(tol=1e-12))
    assert by_value.solver_options == density.solver_options == SolverOptions(tol=1e-12)
    torch.manual_seed(9)
    assert torch.equal(by_value.sample((2, 2)), x)
    with pytest.raises(NotImplementedError):
        density.rsample()


def test_distribution_validation_and_refusals(model):
    checked = ResidualFlowDistribution(model, validate_args=True)
    with pytest.raises(ValueError, match="shape"):
        checked.log_prob(torch.zeros(2, 1, 4, 4, dtype=F64))
    with pytest.raises(ValueError, match="support"):
        checked.log_prob(torch.full((1, 1, 8, 8), math.nan, dtype=F64))
    unchecked = ResidualFlowDistribution(model, validate_args=False)
    with pytest.raises(ValueError, match=r"this model takes images \[B, 1, 8, 8\]"):
        unchecked.log_prob(torch.zeros(2, 1, 4, 4, dtype=F64))
    with pytest.raises(TypeError, match="model must be an invattn.models.ResidualFlow, got InvertibleSequential"):
        ResidualFlowDistribution(make_flow())
    with pytest.raises(TypeError, match="unexpected keyword argument 'estimatr'"):
        ResidualFlowDistribution(model, logdet_options={"estimatr": "exact"})
    with pytest.raises(ValueError, match="estimator"):
        ResidualFlowDistribution(model, logdet_options={"estimator": "hutchinson"})
    with pytest.raises(TypeError, match="solver_options must be a SolverOptions or a dict of its fields, got float"):
        ResidualFlowDistribution(model, solver_options=1e-8)
    with pytest.raises(ValueError, match="cannot hold return_info"):
        ResidualFlowDistribution(model, solver_options={"return_info": True})
