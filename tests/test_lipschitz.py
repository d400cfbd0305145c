import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import invattn as ia
from invattn.lipschitz import SpectralNorm

# The certified normalisation divides by an upper bound: a matrix's is its exact norm (to the float64 margin),
# so the normalised norm is coeff up to the rounding margin; a convolution's is the DFT bound, so ≤ coeff.
MATRIX_RTOL = 1e-6


@pytest.mark.compat
@pytest.mark.parametrize("coeff", [0.3, 0.9, 0.99])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_linear_norm_is_coeff_after_normalisation(coeff, mode):
    layer = ia.spectral_norm(nn.Linear(20, 30), coeff=coeff).double().train(mode == "train")
    assert ia.operator_norm(layer) <= coeff
    assert ia.operator_norm(layer) == pytest.approx(coeff, rel=MATRIX_RTOL)  # the matrix bound is exact
    assert ia.operator_norm(layer) <= ia.lipschitz_bound(layer) <= coeff


def test_small_weights_are_left_alone_up_to_the_rounding_margin():
    layer = nn.Linear(8, 8).double()
    with torch.no_grad():
        layer.weight.mul_(0.1 / ia.operator_norm(layer))
    before = layer.weight.detach().clone()
    ia.spectral_norm(layer, coeff=0.9).eval()
    assert torch.allclose(layer.weight, before, rtol=1e-15, atol=0)  # σ = 0.1 < c: only the 1 − 2u margin


@pytest.mark.compat
@pytest.mark.parametrize("stride,padding,size", [(1, 1, (8, 8)), (2, 1, (8, 6)), (1, 0, (7, 7))])
def test_conv_operator_norm_is_the_convolutions_not_the_reshaped_kernel(stride, padding, size):
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding).double()
    reshaped = float(torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2))
    exact = ia.operator_norm(conv, input_size=size)
    assert not math.isclose(exact, reshaped, rel_tol=1e-3)
    ia.spectral_norm(conv, coeff=0.8, input_size=size)
    assert ia.operator_norm(conv) <= ia.lipschitz_bound(conv) <= 0.8
    # the DFT bound is above the exact norm, but not far: the layer keeps most of its allowed gain
    assert ia.operator_norm(conv) >= 0.5 * 0.8


def test_conv_refuses_another_input_size():
    conv = ia.spectral_norm(nn.Conv2d(2, 2, 3, padding=1), coeff=0.9, input_size=(6, 6))
    conv(torch.randn(1, 2, 6, 6))
    with pytest.raises(ValueError, match="built for inputs of size"):
        conv(torch.randn(1, 2, 7, 7))


def test_kxk_conv_needs_input_size():
    with pytest.raises(ValueError, match="input_size"):
        ia.spectral_norm(nn.Conv2d(2, 2, 3, padding=1))


def test_pointwise_conv_uses_exact_matrix_norm():
    conv = ia.spectral_norm(nn.Conv2d(6, 4, 1), coeff=0.7).double()
    assert ia.operator_norm(conv, input_size=(5, 5)) == pytest.approx(0.7, rel=MATRIX_RTOL)
    assert ia.operator_norm(conv, input_size=(5, 5)) <= ia.lipschitz_bound(conv) <= 0.7


@pytest.mark.parametrize("coeff", [0.0, 1.0, 1.2, -0.5, float("nan")])
def test_coeff_outside_open_unit_interval_is_refused(coeff):
    with pytest.raises(ValueError, match=r"coeff must be in \(0, 1\)"):
        ia.spectral_norm(nn.Linear(3, 3), coeff=coeff)


def test_power_iteration_approaches_the_norm_from_below():
    layer = nn.Linear(16, 16).double()
    exact = ia.operator_norm(layer)
    estimates = [ia.power_iteration_norm(layer, n) for n in (1, 5, 50)]
    assert all(e <= exact * (1 + 1e-12) for e in estimates)
    assert estimates[0] <= estimates[-1]
    assert estimates[-1] == pytest.approx(exact, rel=1e-3)


@pytest.mark.compat
def test_the_function_is_the_same_in_training_and_eval_mode():
    layer = ia.spectral_norm(nn.Conv2d(3, 4, 3, padding=1), coeff=0.5, input_size=(6, 6))
    trained = layer.weight.detach().clone()
    for _ in range(3):
        assert torch.equal(layer.weight, trained)  # no state moves between accesses
    layer.eval()
    assert torch.equal(layer.weight, trained)


@pytest.mark.compat
def test_gradients_flow_through_sigma():
    layer = ia.spectral_norm(nn.Linear(5, 5), coeff=0.5)
    layer(torch.randn(3, 5)).sum().backward()
    layer(torch.randn(3, 5)).sum().backward()  # a second access reuses the cached certificate
    assert layer.parametrizations.weight.original.grad is not None


@pytest.mark.compat
def test_estimate_lipschitz_of_linear_map_is_its_norm():
    layer = nn.Linear(10, 10, bias=False).double()
    measured = ia.estimate_lipschitz(layer, torch.randn(4, 10, dtype=torch.float64), n_iterations=200)
    assert measured == pytest.approx(ia.operator_norm(layer), rel=1e-6)


def test_estimate_lipschitz_finds_the_steepest_pair():
    # |sin| has Lipschitz constant 1, reached only near 0; start far away from it.
    fn = lambda x: torch.sin(x)  # noqa: E731
    measured = ia.estimate_lipschitz(fn, torch.full((1, 1), 3.0, dtype=torch.float64))
    assert 0.95 <= measured <= 1.0 + 1e-12


@pytest.mark.compat
def test_lipschitz_bound_composes_and_refuses_unknown_layers():
    g = nn.Sequential(
        ia.spectral_norm(nn.Linear(4, 8), coeff=0.9), nn.ELU(), ia.spectral_norm(nn.Linear(8, 4), coeff=0.5)
    )
    assert ia.lipschitz_bound(g) == pytest.approx(0.45, rel=1e-6)
    with pytest.raises(ValueError, match="no spectral-norm constraint"):
        ia.lipschitz_bound(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="no known Lipschitz bound"):
        ia.lipschitz_bound(nn.Sigmoid())


def test_lipswish_is_one_lipschitz_for_several_beta():
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64).view(-1, 1)
    for beta in [0.1, 1.0, 5.0, 50.0]:
        act = LipSwishDouble(beta)
        measured = ia.estimate_lipschitz(act, x, n_iterations=20, pair_steps=20)
        assert measured <= 1.0 + 1e-9
    assert ia.lipschitz_bound(ia.LipSwish()) == 1.0


def LipSwishDouble(beta):
    return ia.LipSwish(beta).double()


@settings(max_examples=25, deadline=None)
@given(fan_in=st.integers(1, 24), fan_out=st.integers(1, 24), coeff=st.floats(0.05, 0.99), seed=st.integers(0, 10_000))
def test_property_linear_measured_lipschitz_below_coeff(fan_in, fan_out, coeff, seed):
    torch.manual_seed(seed)
    layer = ia.spectral_norm(nn.Linear(fan_in, fan_out), coeff=coeff).double().eval()
    x = torch.randn(3, fan_in, dtype=torch.float64)
    measured = ia.estimate_lipschitz(layer, x, n_iterations=30, pair_steps=10)
    assert measured <= ia.operator_norm(layer) * (1 + 1e-9)
    assert ia.operator_norm(layer) <= ia.lipschitz_bound(layer) <= coeff


@settings(max_examples=15, deadline=None)
@given(
    channels=st.integers(1, 4),
    out_channels=st.integers(1, 4),
    kernel=st.sampled_from([1, 3, 5]),
    size=st.integers(3, 7),
    coeff=st.floats(0.1, 0.99),
    seed=st.integers(0, 10_000),
)
def test_property_conv_measured_lipschitz_below_coeff(channels, out_channels, kernel, size, coeff, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(channels, out_channels, kernel, padding=kernel // 2)
    layer = ia.spectral_norm(conv, coeff=coeff, input_size=(size, size)).double().eval()
    x = torch.randn(2, channels, size, size, dtype=torch.float64)
    measured = ia.estimate_lipschitz(layer, x, n_iterations=30, pair_steps=10)
    exact = ia.operator_norm(layer, input_size=(size, size))
    assert measured <= exact * (1 + 1e-9)
    assert exact <= ia.lipschitz_bound(layer) <= coeff


@pytest.mark.compat
def test_spectral_norm_parametrization_is_a_parametrize_module():
    layer = ia.spectral_norm(nn.Linear(3, 3))
    assert isinstance(layer.parametrizations.weight[0], SpectralNorm)
    with pytest.raises(ValueError, match="already parametrized"):
        ia.spectral_norm(layer)
