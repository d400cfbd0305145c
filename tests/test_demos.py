"""The demos' state functions: values against the lessons' theory, shapes, and the refusal messages."""

import math

import numpy as np
import pytest
import torch

from invattn import demos
from invattn.attention import KINDS
from invattn.data import photograph_crops


# -- Banach's iteration -------------------------------------------------------------------------
@pytest.mark.parametrize("map_, c", [("1d", 0.5), ("1d", 0.9), ("2d", 0.6), ("2d", 0.95)])
def test_a_contraction_has_one_preimage_and_the_error_stays_within_the_bound(map_, c):
    state = demos.banach_state(map_, c, steps=80)
    d = 1 if map_ == "1d" else 2
    assert state.iterates.shape == (81, d) and state.preimages.shape == (1, d)
    root = state.preimages[0]
    assert np.allclose(root + demos._residual_map(root, c), state.y, atol=1e-12)  # it is a preimage
    assert state.bound_holds and state.settles
    assert state.errors[-1] < 1e-6 and len(state.bound) == 81
    assert "1 preimage" in state.summary() and "within the bound" in state.summary()


def test_above_one_the_1d_map_folds_and_the_iteration_does_not_settle():
    state = demos.banach_state("1d", 2.5, steps=200)
    assert len(state.preimages) == 3  # lesson 01: three inputs share the output 3
    assert all(abs(2.5 * math.cos(r)) > 1 for r in state.preimages[:, 0])  # each fixed point repels
    assert not state.settles and state.bound == []
    assert "3 preimages" in state.summary() and "does not settle" in state.summary()


def test_above_one_the_2d_map_has_several_preimages():
    state = demos.banach_state("2d", 1.8)
    assert len(state.preimages) > 1 and "F folds" in state.summary()


def test_banach_starts_where_it_is_told():
    state = demos.banach_state("2d", 0.5, steps=3, y=(1.0, 2.0), x0=(0.0, 0.0))
    assert np.array_equal(state.iterates[0], [0.0, 0.0])
    assert np.allclose(state.iterates[1], [1.0, 2.0])  # y − g(0) = y


@pytest.mark.parametrize("options, message", [
    (dict(map="3d"), "map"),
    (dict(c=0.0), "c"),
    (dict(c=4.5), "0 < c ≤ 4"),
    (dict(steps=0), "steps"),
    (dict(steps=501), "at most 500"),
    (dict(y=(1.0, 2.0)), "1 finite number"),
    (dict(map="2d", x0=(math.nan, 0.0)), "2 finite number"),
])
def test_banach_refusals_say_what_is_allowed(options, message):
    with pytest.raises(ValueError, match=message):
        demos.banach_state(**options)


# -- the bound explorer -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reports_raw_certified_and_measured_in_order(kind):
    state = demos.bound_explorer_state(kind, n_positions=16)
    assert 0 < state.measured <= state.certified <= state.coeff
    assert state.certified <= state.raw * (1 + 1e-12) or state.raw <= state.coeff
    assert set(state.options) == set(demos.OPTIONS[kind])
    assert f"N = 16" in state.summary()


def test_the_l2_bound_grows_with_n_and_a_larger_radius_raises_the_dot_bound():
    small, large = (demos.bound_explorer_state("l2", n) for n in (16, 1024))
    assert large.raw > small.raw
    narrow, wide = (demos.bound_explorer_state("dot", 64, radius=r) for r in (0.5, 2.0))
    assert wide.raw > narrow.raw


@pytest.mark.parametrize("options, message", [
    (dict(kind="lipnorm", use=("radius",)), "lipnorm has no radius"),
    (dict(kind="concat", use=("temperature",)), "concat has no temperature"),
    (dict(n_positions=50), "square maps"),
    (dict(n_positions=4096), "N ≤ 1024"),
    (dict(kind="dot", radius=-1.0), "radius"),
    (dict(kind="softmax"), "kind"),
])
def test_bound_explorer_refusals(options, message):
    with pytest.raises(ValueError, match=message):
        demos.bound_explorer_state(**options)


# -- the attention-map explorer -----------------------------------------------------------------
@pytest.fixture(scope="module")
def image():
    return photograph_crops(1, size=16, seed=0)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_a_map_row_is_a_distribution_over_the_squeezed_grid(image, kind):
    state = demos.attention_map_state(image, kind, row=3, col=5)
    assert state.weights.shape == (8, 8)
    assert float(state.weights.sum()) == pytest.approx(1.0, abs=1e-5) and float(state.weights.min()) > 0
    assert 0 < state.entropy_ratio <= 1 + 1e-9
    assert "query (3, 5)" in state.summary()


def test_a_higher_temperature_sharpens_the_gaussian_map(image):
    cool, hot = (demos.attention_map_state(image, "gaussian", 2, 2, temperature=t, radius=3.0) for t in (0.1, 10.0))
    assert hot.entropy_ratio < cool.entropy_ratio


def test_the_query_position_changes_a_query_dependent_map(image):
    a, b = (demos.attention_map_state(image, "dot", r, c, temperature=20.0, radius=2.0) for r, c in ((0, 0), (7, 7)))
    assert not torch.allclose(a.weights, b.weights)


@pytest.mark.parametrize("options, message", [
    (dict(row=8), "outside the 8×8 grid"),
    (dict(col=-1), "outside"),
    (dict(temperature=0.0), "temperature"),
])
def test_attention_map_refusals(image, options, message):
    with pytest.raises(ValueError, match=message):
        demos.attention_map_state(image, "dot", **options)


def test_an_odd_image_is_refused():
    with pytest.raises(ValueError, match="H and W even"):
        demos.attention_map_state(torch.rand(3, 7, 8), "dot")
