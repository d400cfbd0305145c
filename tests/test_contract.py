"""The block contract (:class:`invattn.blocks.InvertibleBlock`), checked the same way for every block type.

For each block, on tiny float64 inputs: output shape and dtype, the inverse round trip (relative error ≤ 1e-9, far
above float64's rounding of ~1e-16 and far below any real mistake), the log-determinant against slogdet of the exact
Jacobian, gradients reaching every parameter, train and eval mode computing the same function once ActNorm is
initialised, and a state_dict round trip through ``torch.load(..., weights_only=True)``.
"""

import io

import pytest
import torch
from torch import nn

import invattn as ia
from invattn.branches import conv_branch
from invattn.models import PRESETS, FlowStep, ResidualFlow
from invattn.norms import per_sample_norm

ROUND_TRIP = 1e-9  # relative error of inverse(forward(x)) in float64
LOGDET = 1e-9  # absolute error of a log-det against slogdet of the Jacobian
SOLVER = ia.SolverOptions(tol=1e-12)


def _initialised(block: nn.Module, x: torch.Tensor) -> nn.Module:
    """``block`` in float64 with every ActNorm set from ``x`` (a first training batch) and moved off the identity."""
    block = block.double().train()
    with torch.no_grad():
        block(x)
    return block.eval()


def _linear_branch():
    return nn.Sequential(ia.spectral_norm(nn.Linear(4, 6), 0.9), ia.LipSwish(), ia.spectral_norm(nn.Linear(6, 4), 0.9))


# name: (build(), input shape, output shape, has a log-det)
CASES = {
    "ActNorm": (lambda: ia.ActNorm(2), (2, 2, 2, 2), (2, 2, 2, 2), True),
    "Squeeze": (lambda: ia.Squeeze(), (2, 1, 4, 4), (2, 4, 2, 2), True),
    "InvertibleResidual-conv": (
        lambda: ia.InvertibleResidual(conv_branch(2, 4, 3, 0.8)),
        (2, 2, 3, 3),
        (2, 2, 3, 3),
        True,
    ),
    "InvertibleResidual-linear": (lambda: ia.InvertibleResidual(_linear_branch()), (3, 4), (3, 4), True),
    "AdditiveCoupling": (
        lambda: ia.AdditiveCoupling(nn.Conv2d(1, 1, 3, padding=1), 2),
        (2, 2, 3, 3),
        (2, 2, 3, 3),
        True,
    ),
    "AffineCoupling": (lambda: ia.AffineCoupling(nn.Conv2d(1, 2, 3, padding=1), 2), (2, 2, 3, 3), (2, 2, 3, 3), True),
    "InjectivePad": (lambda: ia.InjectivePad(2, 3), (2, 2, 3), (2, 3, 3), False),
    "AttentionCoupling": (lambda: ia.AttentionCoupling("concat", 4), (2, 4, 2, 2), (2, 4, 2, 2), True),
    "FlowStep": (
        lambda: FlowStep(ia.InvertibleResidual(conv_branch(2, 4, 2, 0.8)), 2, actnorm=True),
        (2, 2, 2, 2),
        (2, 2, 2, 2),
        True,
    ),
    "InvertibleSequential": (
        lambda: ia.InvertibleSequential(
            ia.ActNorm(1), ia.Squeeze(), ia.InvertibleResidual(conv_branch(4, 4, 2, 0.8, input_nonlinearity=False))
        ),
        (2, 1, 4, 4),
        (2, 4, 2, 2),
        True,
    ),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request):
    build, shape, out_shape, has_logdet = CASES[request.param]
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    block = _initialised(build(), x)
    return build, block, x, out_shape, has_logdet


def _jacobian_logdet(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    values = []
    for sample in x:
        jacobian = torch.autograd.functional.jacobian(lambda z: block(z.unsqueeze(0)).flatten(), sample)
        values.append(torch.linalg.slogdet(jacobian.reshape(sample.numel(), -1)).logabsdet)
    return torch.stack(values)


def test_every_block_keeps_the_contract(case):
    _, block, x, out_shape, has_logdet = case
    assert isinstance(block, ia.InvertibleBlock)
    y = block(x)
    assert y.shape == out_shape and y.dtype == x.dtype == torch.float64
    x_hat = block.inverse(y, SOLVER)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    assert float((x_hat - x).detach().norm() / x.norm()) <= ROUND_TRIP
    # the same inverse with the reports of the fixed-point solves it ran: one per residual block, none for the rest
    x_info, infos = block.inverse_with_info(y, SOLVER)
    solves = sum(isinstance(m, ia.InvertibleResidual) for m in block.modules())
    assert torch.equal(x_info, x_hat) and len(infos) == solves
    assert all(isinstance(info, ia.InverseInfo) and info.converged for info in infos)
    if not has_logdet:  # InjectivePad maps into a larger space: it refuses, and so does forward_and_logdet
        for call in (block.logdet, block.forward_and_logdet, lambda x: ia.logdet(block, x)):
            with pytest.raises(ValueError, match="no log-determinant"):
                call(x)
        return
    options = ia.LogdetOptions(estimator="exact")
    y_again, value = block.forward_and_logdet(x, options)
    assert torch.equal(y_again, y) and value.shape == (x.shape[0],) and value.dtype == x.dtype
    assert torch.equal(block.logdet(x, options), value) and torch.equal(ia.logdet(block, x, "exact"), value)
    assert torch.allclose(value, _jacobian_logdet(block, x), atol=LOGDET, rtol=0)


def test_gradients_reach_every_parameter_and_the_input(case):
    _, block, x, _, has_logdet = case
    block.zero_grad()
    x = x.clone().requires_grad_(True)
    if has_logdet:
        y, value = block.forward_and_logdet(x, ia.LogdetOptions(estimator="exact"))
    else:
        y, value = block(x), x.new_zeros(x.shape[0])
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)  # no symmetric zero
    ((y * weights).sum() + value.sum()).backward()
    assert x.grad is not None and bool((x.grad != 0).any())
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()) and bool((parameter.grad != 0).any()), name


def test_train_and_eval_compute_the_same_function(case):
    _, block, x, _, _ = case
    evaluated = block.eval()(x)
    trained = block.train()(x)  # ActNorm is initialised: nothing depends on the mode any more
    block.eval()
    assert torch.equal(trained, evaluated)


def test_state_dict_round_trip(case):
    build, block, x, _, _ = case
    buffer = io.BytesIO()
    torch.save(block.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # another initialisation, overwritten by the load
    fresh = build().double()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.eval()
    assert list(fresh.state_dict()) == list(block.state_dict())
    assert torch.equal(fresh(x), block(x))


ROUND_TRIP_FLOAT32 = 1e-4  # float32: the solver's default tol 1e-5, amplified by at most 1/(1 − 0.9) = 10


def test_float32_keeps_the_contract(case):
    build, block64, x64, out_shape, has_logdet = case
    block, x = block64.float(), x64.float()
    try:
        y = block(x)
        assert y.dtype == torch.float32 and y.shape == out_shape
        x_hat = block.inverse(y)
        assert x_hat.dtype == torch.float32
        assert float((x_hat - x).detach().norm() / x.norm()) <= ROUND_TRIP_FLOAT32
        if has_logdet:
            assert block.logdet(x, ia.LogdetOptions(estimator="exact")).dtype == torch.float32
    finally:
        block64.double()


def test_bad_input_is_refused_with_its_cause(case):
    _, block, x, out_shape, has_logdet = case
    broken = x.clone()
    broken.view(-1)[0] = float("nan")
    calls = [block, lambda t: block.inverse(block(x).clone().fill_(float("nan")))]
    calls += [block.logdet] if has_logdet else []
    for call in calls:
        with pytest.raises(ValueError, match="non-finite|NaN"):
            call(broken)
    with pytest.raises(TypeError, match="tolerance"):  # an unknown solver keyword, on every block
        block.inverse(block(x), tolerance=1e-8)
    assert torch.equal(block.inverse(block(x), tol=1e-12), block.inverse(block(x), ia.SolverOptions(tol=1e-12)))


def test_a_fresh_actnorm_logdet_is_of_the_map_forward_applies():
    """ActNorm sets its scale from the first training batch: the log-det of that first call, whether it comes from
    forward_and_logdet, a chain or a flow step, is the log-det of the map the same call applies."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64) * 3 + 1
    for fresh in (
        lambda: ia.ActNorm(2),
        lambda: ia.InvertibleSequential(ia.ActNorm(2), ia.InvertibleResidual(conv_branch(2, 4, 2, 0.8))),
        lambda: FlowStep(ia.InvertibleResidual(conv_branch(2, 4, 2, 0.8)), 2, actnorm=True),
    ):
        block = fresh().double().train()
        y, value = block.forward_and_logdet(x, ia.LogdetOptions(estimator="exact"))
        block.eval()
        assert torch.equal(y, block(x))
        assert torch.allclose(value, _jacobian_logdet(block, x), atol=LOGDET, rtol=0)


def test_certified_inverse_error_bounds_hold():
    """inverse_and_error_bound: the bound carried backwards covers the error of a float32 inverse against the
    float64 one, for the blocks that certify it; the others refuse."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    chain = _initialised(ia.InvertibleSequential(ia.ActNorm(2), ia.InvertibleResidual(conv_branch(2, 4, 3, 0.8))), x)
    y = chain(x).detach()
    exact = chain.inverse(y, ia.SolverOptions(tol=1e-13))
    chain32 = chain.float()
    x32, bound = chain32.inverse_and_error_bound(y.float(), torch.zeros(3, dtype=torch.float64))
    measured = per_sample_norm(x32.double() - exact)
    assert bound.shape == (3,) and bool((measured <= bound).all()), (measured, bound)
    with pytest.raises(TypeError, match="no certified inverse error bound"):
        ia.Squeeze().inverse_and_error_bound(torch.zeros(1, 4, 1, 1), torch.zeros(1))


def test_the_density_model_inverts_and_its_logdet_is_the_jacobians():
    """ResidualFlow maps x to latent pieces (zs, logdet), not one tensor, so it is not itself an InvertibleBlock;
    its parts are, and the whole keeps the same promises."""
    torch.manual_seed(0)
    model = ResidualFlow(PRESETS["smoke"]).double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64) - 0.5
    model(x)  # ActNorm initialisation
    model.eval()
    zs, logdet = model(x, ia.LogdetOptions(estimator="exact"))
    assert torch.equal(model(x, estimator="exact")[1], logdet)
    jacobian = [
        torch.autograd.functional.jacobian(lambda z: torch.cat([p.flatten() for p in model.latents(z[None])]), s)
        for s in x
    ]
    exact = torch.stack([torch.linalg.slogdet(j.reshape(64, 64)).logabsdet for j in jacobian])
    assert torch.allclose(logdet, exact, atol=LOGDET, rtol=0)
    x_hat = model.inverse(zs, SOLVER)
    assert float((x_hat - x).detach().norm() / x.norm()) <= ROUND_TRIP
    assert torch.equal(model.inverse(zs, tol=1e-12), x_hat)
    assert torch.equal(model.reconstruct(x, SOLVER)[0], x_hat)
    assert all(isinstance(step, ia.InvertibleBlock) for scale in model.scales for step in scale["steps"])
    # the config's estimator as one value, and the same options by value or by keyword at every entry point
    assert model.logdet_options() == ia.LogdetOptions(estimator="series", n_terms=3, neumann_gradient=True)
    exact = ia.LogdetOptions(estimator="exact")
    assert torch.equal(model.log_prob(x, exact), model.log_prob(x, estimator="exact"))
    assert torch.equal(model.bits_per_dim(x, exact), model.bits_per_dim(x, estimator="exact"))
    drawn = model.sample(2, generator=torch.Generator().manual_seed(0), options=SOLVER)
    assert torch.equal(drawn, model.sample(2, generator=torch.Generator().manual_seed(0), tol=1e-12))


def test_the_density_model_inverts_an_uncertified_attention_by_trying():
    torch.manual_seed(0)
    config = PRESETS["smoke"].__class__(**{**PRESETS["smoke"].to_dict(), "attention_variant": "paper"})
    config = config.__class__.from_dict(config.to_dict())
    model = ResidualFlow(config).double().eval()
    zs = model.prior_sample(2, generator=torch.Generator().manual_seed(0))
    x = model.inverse(zs, max_iter=2000)  # allow_uncertified=True is the model's choice for the paper variant
    assert torch.allclose(
        torch.cat([z.flatten(1) for z in model.latents(x)], 1), torch.cat([z.flatten(1) for z in zs], 1)
    )
    with pytest.raises(ValueError, match="not below 1"):
        model.inverse(zs, allow_uncertified=False)  # the caller's explicit word wins


def test_isometries_report_a_lipschitz_bound_of_one():
    """Squeeze permutes entries and InjectivePad appends zeros: both keep every distance, which the quotient of
    random pairs confirms to rounding."""
    torch.manual_seed(0)
    x, x2 = torch.randn(2, 4, 2, 4, 4, dtype=torch.float64)
    for block in (ia.Squeeze(), ia.InjectivePad(2, 6)):
        assert block.lipschitz_bound() == ia.lipschitz_bound(nn.Sequential(block)) == 1.0
        quotient = per_sample_norm(block(x) - block(x2)) / per_sample_norm(x - x2)
        assert torch.allclose(quotient, torch.ones_like(quotient), rtol=1e-12, atol=0)
