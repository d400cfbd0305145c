"""invattn.toy2d: the toy densities, the exact 2-D log-density, its normalisation, the certified inverse, refusals."""

import copy
import math

import numpy as np
import pytest
import torch

import invattn as ia
from invattn import toy2d


def small_flow(coeff=0.9, seed=0, dtype=torch.float64):
    """A 3-block flow whose ActNorms are not the identity, so every part of the Jacobian is exercised."""
    torch.manual_seed(seed)
    flow = toy2d.make_flow(n_blocks=3, width=16, coeff=coeff).to(dtype)
    with torch.no_grad():
        for block in flow:
            if isinstance(block, ia.ActNorm):
                block.log_scale.uniform_(-0.3, 0.3)
                block.bias.uniform_(-0.5, 0.5)
    return flow


@pytest.mark.parametrize("name", list(toy2d.DATASETS))
def test_samplers_shape_dtype_and_determinism(name):
    points = toy2d.sample_data(name, 500, seed=3)
    assert points.shape == (500, 2) and points.dtype == torch.float32 and torch.isfinite(points).all()
    assert torch.equal(points, toy2d.sample_data(name, 500, seed=3))
    assert not torch.equal(points, toy2d.sample_data(name, 500, seed=4))
    assert points.abs().max() < 5  # everything the lesson plots lies in [−4.5, 4.5]²


def test_samplers_draw_the_densities_they_name():
    board = toy2d.sample_data("checkerboard", 4000)
    column, row = torch.floor((board[:, 0] + 4) / 2), torch.floor((board[:, 1] + 4) / 2)
    assert ((column + row) % 2 == 0).all() and board.abs().max() <= 4  # black squares only
    assert len(set(zip(column.tolist(), row.tolist()))) == 8
    ring = toy2d.sample_data("ring_of_gaussians", 4000)
    angles = 2 * math.pi * torch.arange(8) / 8
    centres = 3.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    nearest = torch.cdist(ring, centres).min(dim=1).values
    # a 2-D Gaussian of std 0.3 about its centre: mean distance 0.3·√(π/2) ≈ 0.38
    assert abs(float(nearest.mean()) - 0.3 * math.sqrt(math.pi / 2)) < 0.03


def test_exact_log_density_equals_brute_force_jacobian():
    flow = small_flow()
    x = torch.randn(6, 2, dtype=torch.float64) * 2
    z, log_det = toy2d.latent_and_log_det(flow, x)
    for point, z_point, value in zip(x, z, log_det):
        jacobian = torch.autograd.functional.jacobian(lambda p: flow(p.unsqueeze(0)).squeeze(0), point)
        assert jacobian.shape == (2, 2)
        determinant = jacobian[0, 0] * jacobian[1, 1] - jacobian[0, 1] * jacobian[1, 0]
        assert determinant > 0
        assert torch.allclose(value, determinant.log(), atol=1e-12, rtol=0)
        assert torch.allclose(z_point, flow(point.unsqueeze(0)).squeeze(0), atol=1e-14, rtol=0)
    log_p = toy2d.log_density(flow, x)
    assert torch.allclose(log_p, -0.5 * z.square().sum(1) - math.log(2 * math.pi) + log_det, atol=1e-12, rtol=0)
    # the sum of the blocks' exact log-determinants (library estimator "exact") agrees: the chain rule
    assert torch.allclose(ia.logdet(flow, x, "exact"), log_det, atol=1e-12, rtol=0)


def test_log_density_is_differentiable_in_the_parameters():
    flow = small_flow(dtype=torch.float32)
    toy2d.log_density(flow, torch.randn(8, 2)).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow.parameters())


def test_untrained_density_integrates_to_one():
    flow = toy2d.make_flow(n_blocks=3, width=16, coeff=0.9)
    centres, log_p = toy2d.log_density_on_grid(flow, extent=7.0, resolution=200)
    assert centres.shape == (200,) and log_p.shape == (200, 200)
    integral = float(np.exp(log_p.astype(np.float64)).sum() * (centres[1] - centres[0]) ** 2)
    assert abs(integral - 1) < 1e-3


def test_inverse_of_forward_recovers_inputs_within_the_certified_bound():
    flow = small_flow(coeff=0.95)
    x = torch.randn(200, 2, dtype=torch.float64) * 2
    with torch.no_grad():
        x_hat, bound = toy2d.invert(flow, flow(x))
    error = (x_hat - x).norm(dim=1)
    assert error.max() < 1e-8 and (error <= bound).all() and (bound > 0).all()
    samples, sample_bounds = toy2d.sample_flow(flow, 50, seed=1)
    assert samples.shape == (50, 2) and samples.dtype == torch.float64 and sample_bounds.shape == (50,)
    assert torch.equal(samples, toy2d.sample_flow(flow, 50, seed=1)[0])


def test_training_is_deterministic_improves_and_leaves_a_copyable_flow():
    data = toy2d.sample_data("ring_of_gaussians", 2000)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        flow = toy2d.make_flow(n_blocks=2, width=16, coeff=0.9)
        history = toy2d.train_flow(flow, data, steps=30, batch_size=128, lr=2e-2, seed=5)
        runs.append((flow, history))
    (flow, history), (other, other_history) = runs
    assert history.shape == (30,) and np.array_equal(history, other_history)
    assert all(torch.equal(a, b) for a, b in zip(flow.state_dict().values(), other.state_dict().values()))
    assert not flow.training and history[-5:].mean() > history[:5].mean()
    twin = copy.deepcopy(flow).double()  # a trained flow copies (no torch.func wrappers left in its caches)
    x = data[:10].double()
    assert torch.allclose(toy2d.log_density(twin, x), toy2d.log_density(flow, data[:10]).double(), atol=1e-4)


def test_deformed_grid_shapes_and_straight_lines():
    lines, images = toy2d.deformed_grid(small_flow(), extent=2.0, n_lines=5, n_points=11)
    assert lines.shape == images.shape == (10, 11, 2)
    assert np.allclose(lines[0, :, 0], -2.0) and np.allclose(lines[5, :, 1], -2.0)


def test_refusals_say_what_is_allowed():
    with pytest.raises(ValueError, match="two_moons, ring_of_gaussians, checkerboard"):
        toy2d.sample_data("spirals", 10)
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"coeff must be in \(0, 1\)"):
            toy2d.make_flow(coeff=bad)
    flow = toy2d.make_flow(n_blocks=1, width=4)
    with pytest.raises(ValueError, match="non-finite"):
        toy2d.log_density(flow, torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="non-finite"):
        toy2d.train_flow(flow, torch.tensor([[0.0, float("inf")]] * 4), steps=1)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        toy2d.log_density(flow, torch.zeros(3, 3))
    with pytest.raises(TypeError, match="floating point"):
        toy2d.log_density(flow, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="ActNorm is in training mode but not initialised"):
        toy2d.log_density(flow.train(), torch.zeros(3, 2))


def test_refusals_found_in_review():
    from invattn import toy2d

    with pytest.raises(ValueError, match="unknown data set"):
        toy2d.sample_data(["two_moons"], 10)
    with pytest.raises(TypeError, match="coeff"):
        toy2d.make_flow(coeff="0.5")
    flow = toy2d.make_flow(n_blocks=1, width=8).eval()
    with pytest.raises(ValueError, match="seed"):
        toy2d.sample_flow(flow, 4, seed=-3)
    with pytest.raises(TypeError, match="computes in"):
        toy2d.log_density(flow, torch.zeros(3, 2, dtype=torch.float64))
