import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import invattn as ia
from invattn.solvers import solve_fixed_point


def dense_block(dim, coeff, depth=1):
    layers = []
    for _ in range(depth):
        layers += [ia.spectral_norm(nn.Linear(dim, dim), coeff=coeff), nn.ELU()]
    return ia.InvertibleResidual(nn.Sequential(*layers)).double().eval()


def conv_block(channels, size, coeff):
    g = nn.Sequential(
        ia.spectral_norm(nn.Conv2d(channels, 8, 3, padding=1), coeff=coeff, input_size=size),
        nn.ELU(),
        ia.spectral_norm(nn.Conv2d(8, channels, 3, padding=1), coeff=coeff, input_size=size),
    )
    return ia.InvertibleResidual(g).double().eval()


@pytest.mark.compat
@pytest.mark.parametrize("method", ["anderson", "fixed_point"])
@pytest.mark.parametrize("coeff", [0.5, 0.9, 0.99])
def test_inverse_recovers_input_float64(method, coeff):
    block = dense_block(12, coeff)
    x = torch.randn(5, 12, dtype=torch.float64) * 3
    x_hat, info = block.inverse(block(x), method=method, return_info=True, max_iter=5000)
    assert info.converged
    assert torch.allclose(x_hat, x, atol=1e-8, rtol=0)
    assert len(info.residuals) == info.iterations == info.function_evals
    relative_error = float((x_hat - x).norm() / x.norm())
    assert relative_error <= info.error_bound  # the certified bound holds
    per_sample = (x_hat - x).norm(dim=1) / block(x).norm(dim=1)  # relative to each sample's ‖y‖, as the bound is
    assert info.sample_error_bounds.shape == (5,) and float(info.sample_error_bounds.max()) == info.error_bound
    assert bool((per_sample <= info.sample_error_bounds).all())


@pytest.mark.compat
def test_conv_block_inverse():
    block = conv_block(3, (6, 6), 0.9)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert torch.allclose(block.inverse(block(x)), x, atol=1e-8, rtol=0)


def test_anderson_needs_fewer_evaluations_near_one():
    block = dense_block(32, 0.99, depth=1)
    # A linear branch (no activation) makes the contraction factor really reach 0.99.
    block.g = nn.Sequential(block.g[0])
    x = torch.randn(4, 32, dtype=torch.float64)
    y = block(x)
    _, fp = block.inverse(y, method="fixed_point", tol=1e-10, max_iter=20_000, return_info=True)
    _, aa = block.inverse(y, method="anderson", tol=1e-10, max_iter=20_000, return_info=True)
    assert aa.function_evals < fp.function_evals


@pytest.mark.compat
def test_not_converging_raises_with_info():
    block = dense_block(8, 0.9)
    y = block(torch.randn(2, 8, dtype=torch.float64))
    with pytest.raises(ia.InversionError, match="did not reach") as caught:
        block.inverse(y, method="fixed_point", tol=1e-14, max_iter=3)
    assert caught.value.info.converged is False and caught.value.info.function_evals == 3


def test_not_converging_warns_when_asked():
    block = dense_block(8, 0.9)
    y = block(torch.randn(2, 8, dtype=torch.float64))
    with pytest.warns(ia.InversionWarning):
        x, info = block.inverse(y, method="anderson", tol=1e-14, max_iter=2, on_failure="warn", return_info=True)
    assert not info.converged and x.shape == y.shape


def test_divergence_is_reported_not_returned():
    g = nn.Linear(4, 4, bias=False).double()
    with torch.no_grad():
        g.weight.copy_(-3 * torch.eye(4))  # Lip = 3: the fixed-point iteration explodes
    block = ia.InvertibleResidual(g)
    with pytest.raises(ia.InversionError):
        block.inverse(torch.ones(1, 4, dtype=torch.float64), method="fixed_point", max_iter=2000)


def test_non_finite_inputs_are_refused():
    block = dense_block(4, 0.5)
    bad = torch.tensor([[0.0, float("nan"), 1.0, 2.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="non-finite"):
        block(bad)
    with pytest.raises(ValueError, match="non-finite"):
        block.inverse(bad)


def test_bad_solver_options_are_refused():
    block = dense_block(4, 0.5)
    y = torch.ones(1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="method must be one of"):
        block.inverse(y, method="newton")
    with pytest.raises(ValueError, match="max_iter"):
        block.inverse(y, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        block.inverse(y, tol=-1.0)


def test_callback_sees_every_iterate():
    block = dense_block(6, 0.7)
    y = block(torch.randn(3, 6, dtype=torch.float64))
    seen = []
    x_hat, info = block.inverse(y, method="fixed_point", return_info=True, callback=lambda k, x: seen.append(k))
    assert seen == list(range(info.iterations + 1))
    seen.clear()  # stopped by max_iter: the returned point is still the last one the callback saw
    returned = []
    x_hat = block.inverse(
        y,
        method="fixed_point",
        tol=1e-300,
        max_iter=4,
        on_failure="return",
        callback=lambda k, x: (seen.append(k), returned.append(x)),
    )
    assert seen == [0, 1, 2, 3, 4] and torch.equal(returned[-1], x_hat)


@pytest.mark.compat
def test_actnorm_initialises_from_data_and_inverts():
    norm = ia.ActNorm(3).double()
    x = torch.randn(64, 3, 4, 4, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.2]).view(1, 3, 1, 1).double() + 2
    y = norm(x)
    per_channel = y.transpose(0, 1).reshape(3, -1)
    var_x = x.transpose(0, 1).reshape(3, -1).var(1, unbiased=False)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    # unit variance up to the 1e-5 that keeps the scale finite: var(y) = var(x)/(var(x) + 1e-5)
    assert torch.allclose(per_channel.var(1, unbiased=False), var_x / (var_x + 1e-5), rtol=1e-10)
    assert torch.allclose(norm.inverse(y), x, atol=1e-12)
    jac = torch.func.jacrev(lambda t: norm(t.view(1, 3, 4, 4)).flatten())(x[:1].flatten())
    assert torch.allclose(norm.logdet(x[:1]), torch.linalg.slogdet(jac).logabsdet)


def test_actnorm_shape_errors():
    with pytest.raises(ValueError, match="ActNorm"):
        ia.ActNorm(3)(torch.randn(2, 4, 5, 5))


@pytest.mark.compat
def test_squeeze_round_trip_and_shape_errors():
    squeeze = ia.Squeeze()
    x = torch.randn(2, 3, 4, 6)
    y = squeeze(x)
    assert y.shape == (2, 12, 2, 3)
    assert torch.equal(squeeze.inverse(y), x)
    with pytest.raises(ValueError, match="divisible"):
        squeeze(torch.randn(1, 3, 5, 4))


@pytest.mark.compat
def test_sequence_inverse_runs_backwards():
    chain = ia.InvertibleSequential(ia.ActNorm(3), ia.Squeeze(), conv_block(12, (2, 2), 0.8)).double()
    x = torch.randn(4, 3, 4, 4, dtype=torch.float64)
    y = chain(x)  # initialises ActNorm in training mode...
    chain.eval()
    y = chain(x)
    assert torch.allclose(chain.inverse(y, method="anderson"), x, atol=1e-8)


def test_refuses_to_invert_a_block_with_certified_bound_not_below_one():
    g = nn.Sequential(ia.spectral_norm(nn.Linear(3, 3), coeff=0.9), nn.ELU(alpha=2.0)).eval()
    with pytest.raises(ValueError, match="not below 1"):
        ia.InvertibleResidual(g).inverse(torch.ones(1, 3))


@settings(max_examples=20, deadline=None)
@given(
    dim=st.integers(1, 16),
    batch=st.integers(1, 4),
    coeff=st.floats(0.05, 0.97),
    method=st.sampled_from(["anderson", "fixed_point"]),
    seed=st.integers(0, 10_000),
)
def test_property_inverse_of_forward_is_identity(dim, batch, coeff, method, seed):
    torch.manual_seed(seed)
    block = dense_block(dim, coeff, depth=2)
    x = torch.randn(batch, dim, dtype=torch.float64) * 4
    x_hat = block.inverse(block(x), method=method, max_iter=10_000)
    assert float((x_hat - x).norm() / x.norm()) < 1e-6


@pytest.mark.compat
def test_gradcheck_forward_small():
    block = dense_block(3, 0.8)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


def test_float32_inverse_to_default_tolerance():
    block = dense_block(16, 0.9).float()
    x = torch.randn(3, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_hat, info = block.inverse(block(x), return_info=True)
    assert info.tol == 1e-5 and info.converged
    assert float((x_hat - x).norm() / x.norm()) < 1e-4


def _tanh_block(dim=4, coeff=0.9, seed=0):
    torch.manual_seed(seed)
    g = nn.Sequential(ia.spectral_norm(nn.Linear(dim, dim, bias=False), coeff=coeff), nn.Tanh())
    return ia.InvertibleResidual(g).double().eval()


def test_anderson_with_a_sample_already_at_its_fixed_point():
    """A sample whose residuals are all zero (y = 0 and g(0) = 0) beside slower ones: no NaN, all converge."""
    block = _tanh_block()
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, -2.0, 1.0, 0.5], [1.0, 1.0, -1.0, 2.0]], dtype=torch.float64)
    y = block(x).detach()
    x_hat, info = block.inverse(y, method="anderson", tol=1e-12, return_info=True)
    assert info.converged and torch.allclose(x_hat, x, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype, size", [(torch.float32, 1e20), (torch.float64, 1e160), (torch.float64, 1e-150)])
def test_inputs_of_extreme_size_are_inverted_honestly(dtype, size):
    """Relative residuals in float64: no overflow to a false "converged" (float32 ‖y‖ > 1.8e19), no NaN in
    Anderson's Gram matrix (‖y‖ = 1e160), no absolute floor that hides the residual of a tiny y."""
    block = _tanh_block().to(dtype)
    x = torch.tensor([[size, -size, 0.5 * size, size], [1.0, 2.0, -1.0, 0.0]], dtype=dtype)
    y = block(x).detach()
    for method in ("anderson", "fixed_point"):
        x_hat, info = block.inverse(y, method=method, return_info=True)
        with torch.no_grad():
            relative = ((block(x_hat) - y).double().norm(dim=1) / y.double().norm(dim=1)).max()
        assert info.converged and float(relative) <= 4 * info.tol, (method, float(relative))
        assert math.isfinite(info.error_bound)


def test_solver_refuses_a_negative_lipschitz_bound():

    x0 = torch.ones(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="lipschitz"):
        solve_fixed_point(lambda x: 0.5 * x, x0, torch.ones(1, dtype=torch.float64), lipschitz=-0.5)


def test_anderson_takes_plain_steps_while_iteration_is_fast():
    """Below the rate gate Anderson is plain iteration, step for step; rate_gate=0 mixes from the start."""
    block = dense_block(16, 0.3)
    x = torch.randn(3, 16, dtype=torch.float64)
    y = block(x)
    fp_iterates, aa_iterates, textbook = [], [], []
    _, fp = block.inverse(y, method="fixed_point", return_info=True, callback=lambda k, t: fp_iterates.append(t))
    _, aa = block.inverse(y, method="anderson", return_info=True, callback=lambda k, t: aa_iterates.append(t))
    _, tb = block.inverse(
        y, method="anderson", rate_gate=0.0, return_info=True, callback=lambda k, t: textbook.append(t)
    )
    assert (
        max(fp.residuals[k + 1] / fp.residuals[k] for k in range(len(fp.residuals) - 1))
        <= ia.solvers.ANDERSON_RATE_GATE
    )
    assert aa.function_evals == fp.function_evals
    assert all(torch.equal(a, b) for a, b in zip(aa_iterates, fp_iterates))
    assert not all(torch.equal(a, b) for a, b in zip(textbook, fp_iterates))  # the textbook algorithm mixes


@pytest.mark.compat
def test_anderson_starts_mixing_once_iteration_is_slow():
    layer = nn.Linear(32, 32)
    with torch.no_grad():  # symmetric W: plain iteration's rate approaches its spectral radius ‖W‖ = 0.95 > the gate
        layer.weight.copy_(layer.weight + layer.weight.t())
    block = ia.InvertibleResidual(ia.spectral_norm(layer, coeff=0.95)).double().eval()
    x = torch.randn(4, 32, dtype=torch.float64)
    y = block(x)
    _, fp = block.inverse(y, method="fixed_point", max_iter=20_000, return_info=True)
    gated, textbook = [], []
    _, aa = block.inverse(y, method="anderson", return_info=True, callback=lambda k, t: gated.append(t))
    _, tb = block.inverse(
        y, method="anderson", rate_gate=0.0, return_info=True, callback=lambda k, t: textbook.append(t)
    )
    assert aa.converged and tb.converged and fp.converged
    assert aa.function_evals < fp.function_evals / 2 and tb.function_evals < fp.function_evals / 2
    # the first observed rate already exceeds the gate, so the gated solver mixes as early as the textbook one
    assert all(torch.equal(a, b) for a, b in zip(gated, textbook))


@pytest.mark.parametrize(
    "gate, error",
    [
        (-0.1, ValueError),
        (1.0, ValueError),
        (float("nan"), ValueError),
        ("0.5", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_a_bad_rate_gate_is_refused(gate, error):
    block = dense_block(4, 0.5)
    y = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(error, match="rate_gate"):
        block.inverse(y, rate_gate=gate)


def test_a_numpy_rate_gate_is_a_number():
    import numpy as np

    block = dense_block(4, 0.5)
    x = torch.randn(2, 4, dtype=torch.float64)
    assert torch.allclose(block.inverse(block(x), rate_gate=np.float32(0.25)), x, atol=1e-8)


def test_solver_options_are_checked_once_when_built():
    with pytest.raises(ValueError, match="method must be one of"):
        ia.SolverOptions(method="newton")
    with pytest.raises(ValueError, match="on_failure"):
        ia.SolverOptions(on_failure="ignore")
    with pytest.raises(ValueError, match="memory"):
        ia.SolverOptions(memory=0)
    with pytest.raises(ValueError, match="tol"):
        ia.SolverOptions(tol=0.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'tolerance'"):
        ia.SolverOptions.of(tolerance=1e-8)
    with pytest.raises(TypeError, match="SolverOptions"):
        ia.SolverOptions.of({"tol": 1e-8})
    base = ia.SolverOptions(method="fixed_point", tol=1e-9)
    assert ia.SolverOptions.of(base) is base  # passed through, not rebuilt
    assert ia.SolverOptions.of(base, max_iter=7) == ia.SolverOptions(method="fixed_point", tol=1e-9, max_iter=7)


def test_an_options_value_and_keywords_give_the_same_inverse():
    block = dense_block(5, 0.8)
    y = block(torch.randn(3, 5, dtype=torch.float64))
    options = ia.SolverOptions(method="fixed_point", tol=1e-11, memory=3)
    by_value, info = block.inverse(y, options, return_info=True)
    by_keywords = block.inverse(y, method="fixed_point", tol=1e-11, memory=3)
    assert torch.equal(by_value, by_keywords) and info.method == "fixed_point" and info.tol == 1e-11
    amended, info = block.inverse(y, options, method="anderson", return_info=True)  # keywords amend a value
    assert info.method == "anderson"
    chain = ia.InvertibleSequential(ia.ActNorm(5).double().eval(), block)
    assert torch.equal(chain.inverse(chain(by_value), options), chain.inverse(chain(by_value), **vars(options)))
    with pytest.raises(TypeError, match="unexpected keyword argument 'tolerance'"):
        chain.inverse(y, tolerance=1e-8)


def test_solve_fixed_point_takes_an_options_value():
    x0 = torch.ones(2, 3, dtype=torch.float64)
    scale = torch.ones(2, dtype=torch.float64)
    options = ia.SolverOptions(method="fixed_point", tol=1e-12)
    x, info = solve_fixed_point(lambda x: 0.5 * x + 1, x0, scale, options, lipschitz=0.5)
    same, _ = solve_fixed_point(lambda x: 0.5 * x + 1, x0, scale, method="fixed_point", tol=1e-12, lipschitz=0.5)
    assert torch.equal(x, same) and info.converged and torch.allclose(x, torch.full_like(x, 2.0))


def test_lipschitz_bound_of_a_residual_block_is_of_its_own_map():
    block = dense_block(4, 0.6)
    branch = block.branch_lipschitz_bound()
    assert branch == ia.lipschitz_bound(block.g) <= 0.6
    assert block.lipschitz_bound() == 1.0 + branch == ia.lipschitz_bound(block)  # Lip(x + g(x)) ≤ 1 + Lip(g)
    assert ia.lipschitz_bound(ia.InvertibleSequential(block, block)) == (1.0 + branch) ** 2
    assert ia.Squeeze().lipschitz_bound() == 1.0
    x = torch.randn(6, 4, dtype=torch.float64)
    x2 = x + 1e-3 * torch.randn(6, 4, dtype=torch.float64)
    quotient = (block(x) - block(x2)).norm(dim=1) / (x - x2).norm(dim=1)
    assert bool((quotient <= block.lipschitz_bound()).all())
    assert bool((quotient >= 1 - branch - 1e-12).all())  # and F⁻¹'s: Lip(F⁻¹) ≤ 1/(1 − Lip(g))


def test_the_chain_takes_only_blocks_and_logdet_only_blocks():
    with pytest.raises(TypeError, match="InvertibleBlocks"):
        ia.InvertibleSequential(ia.ActNorm(2), nn.Linear(2, 2))
    with pytest.raises(TypeError, match="no log-determinant for Linear"):
        ia.logdet(nn.Linear(2, 2), torch.ones(1, 2))
    with pytest.raises(TypeError, match="no certified inverse error bound for AdditiveCoupling"):
        ia.AdditiveCoupling(nn.Linear(1, 1), 2).inverse_and_error_bound(torch.ones(1, 2), torch.zeros(1))


def test_inverse_and_error_bound_covers_the_true_error():
    torch.manual_seed(1)
    block = dense_block(3, 0.9)
    actnorm = ia.ActNorm(3).double()
    with torch.no_grad():
        actnorm.log_scale.copy_(torch.tensor([0.3, -0.2, 0.1]))
    chain = ia.InvertibleSequential(actnorm, block).eval()
    x = torch.randn(4, 3, dtype=torch.float64)
    x_hat, bound = chain.inverse_and_error_bound(chain(x), torch.zeros(4, dtype=torch.float64), ia.SolverOptions())
    assert bound.shape == (4,) and bool(((x_hat - x).norm(dim=1) <= bound).all())
    # an incoming error grows by at most 1/(1 − L) through the residual block
    _, grown = block.inverse_and_error_bound(block(x), torch.ones(4, dtype=torch.float64))
    assert bool((grown >= 1 / (1 - block.branch_lipschitz_bound())).all())
    small = nn.Linear(3, 3).double()  # contracting, but without a certificate
    with torch.no_grad():
        small.weight.mul_(0.1)
    with pytest.raises(ValueError, match="no certified error"):
        ia.InvertibleResidual(small).inverse_and_error_bound(x, torch.zeros(4, dtype=torch.float64))


def test_options_refuse_values_of_the_wrong_kind_at_construction():
    """Validated once, where they are made: a string for a flag, a number for a callback or a generator would
    otherwise pass silently (bool("no") is True) or fail deep inside a solve."""
    for bad in (dict(allow_uncertified="no"), dict(callback=3)):
        with pytest.raises(TypeError, match=next(iter(bad))):
            ia.SolverOptions(**bad)
    for bad in (dict(generator=3), dict(neumann_gradient="x"), dict(p="0.5")):
        with pytest.raises(TypeError, match=next(iter(bad))):
            ia.LogdetOptions(**bad)
    with pytest.raises(ValueError, match="estimator named twice"):
        ia.LogdetOptions.of("exact", estimator="series")
    assert ia.LogdetOptions.of("exact", estimator="exact").estimator == "exact"


def test_chains_stay_chains_of_blocks():
    chain = ia.InvertibleSequential(ia.ActNorm(3), ia.Squeeze(), ia.ActNorm(12))
    assert isinstance(chain[0:2], ia.InvertibleSequential) and len(chain[0:2]) == 2
    assert isinstance(chain + chain, ia.InvertibleSequential) and len(chain + chain) == 6
    for add in (
        lambda: chain.append(nn.Linear(3, 3)),
        lambda: chain.insert(0, nn.ReLU()),
        lambda: chain.extend([nn.ReLU()]),
        lambda: chain.__setitem__(0, nn.ReLU()),
        lambda: chain + nn.Sequential(),
    ):
        with pytest.raises(TypeError, match="InvertibleSequential"):
            add()
    assert len(chain) == 3


def test_a_residual_block_names_a_dtype_or_shape_it_cannot_take():
    block = _tanh_block().float()
    with pytest.raises(ValueError, match="torch.float64 but the branch's parameters are torch.float32"):
        block(torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="torch.float64 but the branch's parameters are torch.float32"):
        block.inverse(torch.zeros(2, 4, dtype=torch.float64))
    widening = ia.InvertibleResidual(nn.Linear(4, 5))
    with pytest.raises(ValueError, match=r"maps \(2, 4\) to \(2, 5\)"):
        widening(torch.zeros(2, 4))


def test_solver_keywords_reach_the_solver_through_every_entry_point():
    from invattn import toy2d
    from invattn.classifiers import build_classifier, classifier_preset

    flow = toy2d.make_flow(n_blocks=2, width=8).double()
    z = torch.randn(5, 2, dtype=torch.float64)
    seen = []
    toy2d.invert(flow, z, callback=lambda k, x: seen.append(k))
    assert seen, "the callback never reached the solver"
    with pytest.raises(ia.InversionError):
        toy2d.sample_flow(flow, 4, max_iter=1)
    irevnet = build_classifier(classifier_preset("irevnet", "smoke")).eval()
    phi = irevnet.features(torch.rand(2, 1, 8, 8) - 0.5)
    assert torch.equal(irevnet.inverse(phi, tol=1e-6), irevnet.inverse(phi))  # analytic: options checked, unused
    with pytest.raises(TypeError, match="tolerance"):
        irevnet.inverse(phi, tolerance=1e-6)
