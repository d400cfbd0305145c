"""The input search of invattn.attention.tightness: it finds a linear map's norm, never exceeds a certified
bound, leaves the searched function's parameters alone, and refuses what it cannot measure."""

import pytest
import torch

import invattn as ia
from invattn.attention import KINDS, attention_tightness, search_lipschitz


def test_search_finds_the_norm_of_a_linear_map():
    matrix = torch.randn(6, 5, dtype=torch.float64)
    norm = float(torch.linalg.matrix_norm(matrix, ord=2))
    found = search_lipschitz(lambda x: x @ matrix.T, torch.randn(4, 5, dtype=torch.float64), steps=300, lr=0.05)
    assert found.quotient <= norm * (1 + 1e-9)  # the float64 difference of two outputs rounds at ~1e-11
    assert found.quotient > norm * (1 - 1e-4)
    assert found.per_start.shape == (4,) and found.inputs.shape == (4, 5)


def test_search_finds_the_steepest_point_of_a_nonlinear_map():
    # tanh has Lip = 1, reached only at 0: the search must move the point there from far away
    found = search_lipschitz(torch.tanh, torch.full((2, 1), 2.0, dtype=torch.float64), steps=200, lr=0.05)
    assert 0.99 < found.quotient <= 1.0
    assert float(found.inputs.abs().min()) < 0.1


def test_search_leaves_parameter_gradients_alone():
    layer = torch.nn.Linear(3, 3).double()
    search_lipschitz(layer, torch.randn(2, 3, dtype=torch.float64), steps=3)
    assert all(p.grad is None for p in layer.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_attention_tightness_stays_below_the_certified_bound(kind):
    g = ia.make_attention(kind, 12, coeff=0.9)
    result = attention_tightness(g, (3, 3), starts=4, steps=20)
    assert result.bound == g.double().lipschitz_bound(9)
    assert 0 < result.measured <= result.bound
    assert 0 < result.ratio <= 1


def test_attention_tightness_is_reproducible():
    g = ia.make_attention("dot", 12)
    first = attention_tightness(g, (2, 2), starts=2, steps=10, seed=3)
    second = attention_tightness(g, (2, 2), starts=2, steps=10, seed=3)
    assert first == second


def test_attention_tightness_refuses_what_it_cannot_measure():
    with pytest.raises(ValueError, match="paper"):
        attention_tightness(ia.make_attention("dot", 12, variant="paper"), (2, 2))
    with pytest.raises(TypeError, match="certified attention branch"):
        attention_tightness(torch.nn.Linear(3, 3), (2, 2))
    g = ia.make_attention("dot", 12)
    with pytest.raises(ValueError, match="size"):
        attention_tightness(g, (4,))
    with pytest.raises(ValueError, match="size"):
        attention_tightness(g, (0, 4))
    with pytest.raises(ValueError, match="scales"):
        attention_tightness(g, (2, 2), scales=(10.0, 1.0))


def test_search_refuses_bad_arguments():
    with pytest.raises(TypeError, match="floating-point"):
        search_lipschitz(torch.tanh, torch.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        search_lipschitz(torch.tanh, torch.full((1, 2), float("nan")))
    with pytest.raises(ValueError, match="steps"):
        search_lipschitz(torch.tanh, torch.ones(1, 2), steps=0)
    with pytest.raises(ValueError, match="offset"):
        search_lipschitz(torch.tanh, torch.ones(1, 2), offset=-1.0)


def test_search_refuses_what_it_cannot_measure():
    from invattn.attention.tightness import search_lipschitz

    starts = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="finite"):
        search_lipschitz(lambda x: torch.log(x - 1e9), starts, steps=2)
    with pytest.raises(ValueError, match="underflow"):
        search_lipschitz(torch.tanh, starts, steps=2, offset=1e-320)
