"""Tolerances every dtype can reach: defaults per dtype, refusal of a tol below the rounding floor before any work,
and the stop of a solve that stalls at the floor, long before max_iter (issue 23, item 4)."""

import copy

import pytest
import torch
from torch import nn

import invattn as ia
from invattn.models import FlowConfig, ResidualFlow
from invattn.norms import unit_roundoff
from invattn.solvers import default_tol, smallest_tol, solve_fixed_point

LOW_PRECISION = [torch.float16, torch.bfloat16]


def conv_block(coeff=0.9, seed=0):
    torch.manual_seed(seed)
    g = nn.Sequential(
        ia.spectral_norm(nn.Conv2d(3, 8, 3, padding=1), coeff=coeff, input_size=(8, 8)),
        nn.ELU(),
        ia.spectral_norm(nn.Conv2d(8, 3, 3, padding=1), coeff=coeff, input_size=(8, 8)),
    )
    return ia.InvertibleResidual(g).eval()


class Counting(nn.Module):
    """g, counting its evaluations."""

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        self.g, self.calls = g, 0

    def forward(self, x):
        self.calls += 1
        return self.g(x)


def test_float32_and_float64_defaults_are_unchanged():
    assert default_tol(torch.float64) == 1e-10 and default_tol(torch.float32) == 1e-5
    block = conv_block().float()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        _, info = block.inverse(block(x), return_info=True)
    assert info.tol == 1e-5 and info.converged


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_default_is_sixteen_unit_roundoffs(dtype):
    assert default_tol(dtype) == 16 * unit_roundoff(dtype)
    assert smallest_tol(dtype) == 4 * unit_roundoff(dtype) < default_tol(dtype)


@pytest.mark.compat
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("method", ["anderson", "fixed_point"])
def test_default_inverse_converges_in_low_precision_within_its_certified_bound(dtype, method):
    block = conv_block(0.9).to(dtype)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = block(x.to(dtype))
        x_hat, info = block.inverse(y, method=method, return_info=True)
    # before the fix: tol 1e-5 here, InversionError after 1000 evaluations
    assert info.converged and info.tol == default_tol(dtype) and info.function_evals < 50
    assert x_hat.dtype == dtype and info.residuals[-1] <= info.tol
    # the certified bound (contraction plus measured rounding) holds for the exact preimage of the rounded y
    with torch.no_grad():
        exact = block.double().inverse(y.double(), tol=1e-13)
    per_sample = (x_hat.double() - exact).flatten(1).norm(dim=1) / y.double().flatten(1).norm(dim=1)
    assert bool((per_sample <= info.sample_error_bounds).all())


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_default_sample_converges_in_low_precision(dtype):
    torch.manual_seed(0)
    config = FlowConfig(
        in_channels=1, image_size=8, blocks=(1, 1), strides=(1, 2), width=16, attention=("concat", None)
    )
    flow = copy.deepcopy(ResidualFlow(config).eval()).to(dtype)
    samples = flow.sample(4, generator=torch.Generator().manual_seed(0))  # raised InversionError before the fix
    assert samples.shape == (4, 1, 8, 8) and samples.dtype == dtype and bool(torch.isfinite(samples).all())
    # every block was solved to the dtype's default: f(samples) re-encodes to z within a few times that tolerance
    zs = flow.prior_sample(4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        again = flow.latents(samples)
    error = max(
        float(((a.double() - z.double()).flatten(1).norm(dim=1) / z.double().flatten(1).norm(dim=1)).max())
        for a, z in zip(again, zs)
    )
    # three residual blocks (two steps and the attention), each solved to tol, whose residuals re-encoding adds up, each
    # amplified by at most Lip(F) < 2 per block after it: below (1 + 2 + 4)·tol (measured: 1.7u in float16, 0.9u in
    # bfloat16, against 8·tol = 128u)
    assert error <= 8 * default_tol(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *LOW_PRECISION])
def test_an_unreachable_tol_is_refused_before_any_evaluation(dtype):
    block = conv_block()
    block.g = Counting(block.g).eval()  # a layer from outside invattn: inverted in eval mode
    block = block.to(dtype)
    y = torch.randn(2, 3, 8, 8, dtype=dtype)
    below = smallest_tol(dtype) / 2  # 2 unit roundoffs
    message = rf"cannot be reached in {dtype}: its unit roundoff is u = .*Ask for tol >= " + (
        "" if dtype == torch.float64 else ".*or compute in float64"
    )  # float64 is the finest: no such advice
    for on_failure in ("raise", "warn"):
        with pytest.raises(ValueError, match=message):
            block.inverse(y, tol=below, on_failure=on_failure)
    assert block.g.calls == 0
    # the deliberate fixed-iteration mode (lesson 04, the widgets) still takes any tol and runs every iteration
    x, info = block.inverse(y, tol=1e-300, max_iter=3, on_failure="return", return_info=True)
    assert info.function_evals == 3 and not info.converged and x.dtype == dtype


def test_the_old_float32_request_of_1e_minus_7_is_refused():
    with pytest.raises(ValueError, match=r"tol=1e-07 cannot be reached in torch.float32.*Ask for tol >= 2.38e-07"):
        solve_fixed_point(lambda x: 0.5 * x, torch.ones(1, 3), torch.ones(1), tol=1e-7)


@pytest.mark.compat
def test_a_solve_that_stalls_at_the_rounding_floor_stops_long_before_max_iter():
    """An exact two-cycle between float32 points 10u apart (relative to the scale ‖a‖): the residual is 10u at every
    step, above the accepted tol of 5u, and falls no further on any processor (the difference of two floats this close
    is exact)."""
    u = unit_roundoff(torch.float32)
    a = torch.ones(1, 64)
    b = a.clone()
    b[0, 0] += 80 * u  # 40 float32 steps above 1: representable, and ‖b − a‖ = 80u = 10u·‖a‖
    scale = a.double().norm(dim=1)
    cycle = lambda x: b if torch.equal(x, a) else a  # noqa: E731  (plain iteration: Anderson would mix the two)
    stalled = (
        r"stalled at the rounding floor of torch.float32: its best relative residual 5.96e-07 ≈ 10.0u \(u = 5.96e-08\)"
    )
    with pytest.raises(ia.InversionError, match=stalled) as caught:
        solve_fixed_point(cycle, a, scale, method="fixed_point", tol=5 * u)
    assert caught.value.info.function_evals == 51 and not caught.value.info.converged  # max_iter is 1000
    with pytest.warns(ia.InversionWarning, match=stalled):
        _, info = solve_fixed_point(cycle, a, scale, method="fixed_point", tol=5 * u, on_failure="warn")
    assert info.function_evals == 51
    # on_failure="return" is the fixed-iteration mode: no stall check, every iteration runs
    _, info = solve_fixed_point(cycle, a, scale, method="fixed_point", tol=5 * u, max_iter=200, on_failure="return")
    assert info.function_evals == 200 and not info.converged
