"""The demos' state functions: values against the lessons' theory, shapes, and the refusal messages; the trained
models they use (invattn.pretrained)."""

import doctest
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from invattn import demos, pretrained
from invattn.attention import KINDS
from invattn.data import photograph_crops


# -- Banach's iteration -------------------------------------------------------------------------
@pytest.mark.parametrize("map_, c", [("1d", 0.5), ("1d", 0.9), ("2d", 0.6), ("2d", 0.95)])
def test_a_contraction_has_one_preimage_and_the_error_stays_within_the_bound(map_, c):
    state = demos.banach_state(map_, c, steps=80)
    d = 1 if map_ == "1d" else 2
    assert state.iterates.shape == (81, d) and state.preimages.shape == (1, d)
    root = state.preimages[0]
    assert np.allclose(root + demos.residual_map(root, c), state.y, atol=1e-12)  # it is a preimage
    assert state.bound_holds and state.settles
    assert state.errors[-1] < 1e-6 and len(state.bound) == 81
    assert "1 preimage" in state.summary() and "within the bound" in state.summary()


def test_the_banach_doctest_passes():
    from invattn.demos import banach

    result = doctest.testmod(banach)
    assert result.attempted >= 3 and result.failed == 0


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


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(map="3d"), "map"),
        (dict(c=0.0), "c"),
        (dict(c=4.5), "0 < c ≤ 4"),
        (dict(steps=0), "steps"),
        (dict(steps=501), "at most 500"),
        (dict(y=(1.0, 2.0)), "1 finite number"),
        (dict(map="2d", x0=(math.nan, 0.0)), "2 finite number"),
    ],
)
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
    assert "N = 16" in state.summary()


def test_the_l2_bound_grows_with_n_and_a_larger_radius_raises_the_dot_bound():
    small, large = (demos.bound_explorer_state("l2", n) for n in (16, 1024))
    assert large.raw > small.raw
    narrow, wide = (demos.bound_explorer_state("dot", 64, radius=r) for r in (0.5, 2.0))
    assert wide.raw > narrow.raw


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(kind="lipnorm", use=("radius",)), "lipnorm has no radius"),
        (dict(kind="concat", use=("temperature",)), "concat has no temperature"),
        (dict(n_positions=50), "square maps"),
        (dict(n_positions=4096), "N ≤ 1024"),
        (dict(kind="dot", radius=-1.0), "radius"),
        (dict(kind="softmax"), "kind"),
    ],
)
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


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(row=8), "outside the 8×8 grid"),
        (dict(col=-1), "outside"),
        (dict(temperature=0.0), "temperature"),
    ],
)
def test_attention_map_refusals(image, options, message):
    with pytest.raises(ValueError, match=message):
        demos.attention_map_state(image, "dot", **options)


def test_an_odd_image_is_refused():
    with pytest.raises(ValueError, match="H and W even"):
        demos.attention_map_state(torch.rand(3, 7, 8), "dot")


# -- lesson 08: sampling and latent walks ---------------------------------------------------------
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


@pytest.fixture(scope="module")
def flow():
    from invattn.ablation import load_model

    return load_model(CHECKPOINTS / "digits-200" / "concat-seed1.pt")


@pytest.fixture(scope="module")
def held_out():
    """The 297 digits the density model never saw (it trained on the first 1500)."""
    from invattn.data import digits

    return digits()[0][1500:]


@pytest.fixture(scope="module")
def test_digits():
    from invattn.data import load_labelled

    return load_labelled("digits", split="test")


def test_the_pretrained_loaders_are_the_lessons_models_and_digits(flow, held_out, test_digits):
    loaded = pretrained.density_model(CHECKPOINTS)  # the checkpoints folder, as demo_app takes it
    assert type(loaded) is type(flow) and loaded.config == flow.config and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), flow.state_dict().values()))
    assert torch.equal(pretrained.held_out_digits(), held_out) and len(held_out) == 297
    assert torch.equal(pretrained.test_digits(), test_digits[0])
    with pytest.raises(FileNotFoundError, match="no trained model"):
        pretrained.density_model(CHECKPOINTS / "nowhere")


def test_the_walk_starts_and_ends_at_the_encoded_digits_and_everything_re_encodes(flow, held_out):
    images = held_out
    state = demos.latent_state(flow, images, temperature=0.8, seed=1, first=3, second=9, count=6, steps=5)
    assert state.samples.shape == (6, 1, 8, 8) and state.walk.shape == (5, 1, 8, 8)
    assert state.sample_errors.shape == (6,) and state.walk_errors.shape == (5,)
    expected = (torch.round(images[[3, 9]] * 255) + 0.5) / 256 - 0.5
    assert torch.equal(state.endpoints, expected)
    # the walk's ends are f⁻¹(f(x_a)) and f⁻¹(f(x_b)): the digits themselves, to the solver's tolerance
    assert state.endpoint_error < 1e-4
    assert float((state.walk[0] - expected[0]).abs().max()) < 1e-4
    assert state.reencoding_error < 1e-4  # every decoded image encodes back to its z (float32, tol 1e-6 per block)
    assert "5 images on the line from image 3 to image 9" in state.summary()


def test_temperature_and_seed_set_the_samples(flow, held_out):
    images = held_out
    cold = demos.latent_state(flow, images, temperature=0.0, count=4, steps=2)
    # T = 0: every z is the prior's mean, so every sample is the same image
    assert float((cold.samples - cold.samples[:1]).abs().max()) < 1e-5
    a = demos.latent_state(flow, images, temperature=1.0, seed=4, count=4, steps=2)
    b = demos.latent_state(flow, images, temperature=1.0, seed=4, count=4, steps=2)
    c = demos.latent_state(flow, images, temperature=1.0, seed=5, count=4, steps=2)
    assert torch.equal(a.samples, b.samples) and not torch.allclose(a.samples, c.samples)
    # the same draws as the model's own sampler
    same = flow.sample(4, temperature=1.0, generator=torch.Generator().manual_seed(4), tol=1e-6)
    assert torch.allclose(a.samples, same, atol=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(temperature=-0.1), "temperature must be in"),
        (dict(temperature=demos.MAX_TEMPERATURE + 0.1), "temperature must be in"),
        (dict(first=-1), "first must be an integer >= 0"),
        (dict(second=10_000), "second 10000 is not among the 297 images"),
        (dict(steps=1), "steps"),
        (dict(count=0), "count"),
        (dict(tol=0.0), "tol"),
        (dict(tol=1.0), "tol is a relative tolerance"),
    ],
)
def test_latent_refusals(flow, held_out, options, message):
    with pytest.raises(ValueError, match=message):
        demos.latent_state(flow, held_out, **options)


def test_latent_refuses_images_the_model_does_not_take(flow, held_out):
    test_digits = (held_out, None)
    with pytest.raises(ValueError, match=r"images must be \[N, 1, 8, 8\]"):
        demos.latent_state(flow, torch.rand(4, 3, 8, 8))
    broken = test_digits[0][:4].clone()
    broken[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="images"):
        demos.latent_state(flow, broken)
    for wrong in (test_digits[0] * 255, test_digits[0] - 0.5):  # pixel values, or already centred: not [0, 1]
        with pytest.raises(ValueError, match=r"images must be in \[0, 1\]"):
            demos.latent_state(flow, wrong)
    with pytest.raises(ValueError, match="float tensor"):
        demos.latent_state(flow, (test_digits[0] * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="first must be an integer"):
        demos.latent_state(flow, test_digits[0], first=1.0)
    with pytest.raises(TypeError, match="first must be an integer"):
        demos.latent_state(flow, test_digits[0], first=True)


# -- lesson 09: two roads ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def roads():
    return pretrained.two_roads_models(CHECKPOINTS / "two-roads", train_missing=False)


def test_without_noise_both_invertible_roads_return_the_digit(roads, test_digits):
    images, labels = test_digits
    state = demos.two_roads_state(roads, images, index=11, iterations=200)
    assert state.image.shape == (1, 8, 8) and all(r.shape == (1, 8, 8) for r in state.reconstructions.values())
    assert state.converged["i-RevNet"] is None and state.evaluations["i-RevNet"] == 0
    assert state.errors["i-RevNet"] < 1e-5  # analytic, float32 rounding
    assert state.converged["i-ResNet"] and state.errors["i-ResNet"] < 1e-4  # certified contraction, tol 1e-6 per block
    with torch.no_grad():
        for road, model in roads.items():
            assert state.predictions[road] == int(model(images[11:12] - 0.5).argmax(1))


def test_fixed_point_iteration_fails_on_the_unconstrained_resnet_and_a_short_budget_stops_the_i_resnet(
    roads, test_digits
):
    images = test_digits[0]
    state = demos.two_roads_state(roads, images, index=0, method="fixed_point", iterations=100)
    assert not state.converged["ResNet"] and state.errors["ResNet"] > 0.1
    short = demos.two_roads_state(roads, images, index=0, method="fixed_point", iterations=2)
    assert not short.converged["i-ResNet"] and short.errors["i-ResNet"] > state.errors["i-ResNet"]
    assert short.evaluations["i-ResNet"] < state.evaluations["i-ResNet"]


def test_noise_on_the_features_grows_the_error_of_every_road(roads, test_digits):
    images = test_digits[0]
    errors = [
        demos.two_roads_state(roads, images, index=5, noise=noise, method="anderson").errors
        for noise in (0.0, 1e-3, 1e-2, 1e-1)
    ]
    for road in ("i-RevNet", "i-ResNet", "ResNet"):  # Anderson inverts even the unconstrained network here
        values = [e[road] for e in errors]
        assert values == sorted(values) and values[-1] > 100 * values[0]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(index=-1), "test image must be an integer >= 0"),
        (dict(index=10_000), "test image 10000 is not among the 360 images"),
        (dict(noise=1.5), "noise is relative"),
        (dict(method="newton"), "method"),
        (dict(iterations=0), "iterations"),
        (dict(tol=2.0), "tol is a relative tolerance"),
    ],
)
def test_two_roads_refusals(roads, test_digits, options, message):
    with pytest.raises(ValueError, match=message):
        demos.two_roads_state(roads, test_digits[0], **options)


def test_two_roads_needs_all_three_models(roads, test_digits):
    with pytest.raises(ValueError, match="missing"):
        demos.two_roads_state({"i-RevNet": roads["i-RevNet"]}, test_digits[0])


def test_two_roads_models_trains_what_is_missing_once_and_then_loads(tmp_path):
    with pytest.raises(FileNotFoundError, match="two_roads_models"):
        pretrained.two_roads_models(tmp_path, train_missing=False)
    trained = pretrained.two_roads_models(tmp_path, epochs=1, progress_bar=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["iresnet-c0.9.pt", "irevnet.pt", "resnet-unconstrained.pt"]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    loaded = pretrained.two_roads_models(tmp_path, train_missing=False)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps  # nothing trained again
    x = torch.rand(2, 1, 8, 8) - 0.5
    with torch.no_grad():
        for road in demos.ROADS:
            assert torch.equal(trained[road](x), loaded[road](x))
    assert loaded["i-ResNet"].config.coeff == 0.9 and loaded["ResNet"].config.coeff is None
    from invattn.classifiers import load_classifier

    assert load_classifier(tmp_path / "irevnet.pt")[1]["epochs"] == 1


def test_tol_and_seed_reach_the_solve_and_the_noise(roads, test_digits, flow):
    images = test_digits[0]
    loose = demos.two_roads_state(roads, images, index=3, tol=1e-2, method="fixed_point")
    tight = demos.two_roads_state(roads, images, index=3, tol=1e-6, method="fixed_point")
    assert (
        loose.evaluations["i-ResNet"] < tight.evaluations["i-ResNet"]
        and loose.errors["i-ResNet"] > tight.errors["i-ResNet"]
    )
    a = demos.two_roads_state(roads, images, index=3, noise=0.1, seed=0)
    b = demos.two_roads_state(roads, images, index=3, noise=0.1, seed=1)
    assert not torch.equal(a.reconstructions["i-RevNet"], b.reconstructions["i-RevNet"])  # another noise direction
    loose = demos.latent_state(flow, images, count=2, steps=2, tol=1e-2)
    # 1e-5 is 168 unit roundoffs of float32, far above the residual's rounding floor (1u–5u on this model); 1e-7 (1.7u)
    # was reached on some processors and not on others, and is now refused before any solve
    tight = demos.latent_state(flow, images, count=2, steps=2, tol=1e-5)
    assert loose.reencoding_error > tight.reencoding_error
    with pytest.raises(
        ValueError, match=r"tol=1e-07 cannot be reached in torch.float32: its unit roundoff is u = 5.96e-08"
    ):
        demos.latent_state(flow, images, count=2, steps=2, tol=1e-7)


def test_the_image_follows_each_model_dtype(roads, test_digits):
    """float64 models with float32 images (or the reverse) work: the image is moved to each model's dtype/device."""
    import copy

    doubled = {road: copy.deepcopy(model).double() for road, model in roads.items()}
    single = demos.two_roads_state(roads, test_digits[0], index=4)
    double = demos.two_roads_state(doubled, test_digits[0], index=4)
    assert double.reconstructions["i-RevNet"].dtype == torch.float64
    assert double.errors["i-RevNet"] < single.errors["i-RevNet"] / 1e3  # float64's rounding, far below float32's
    assert single.reconstructions["i-ResNet"].device.type == "cpu"


def test_a_road_holding_another_model_is_refused(roads, test_digits, tmp_path):
    import shutil

    swapped = {**roads, "i-RevNet": roads["i-ResNet"]}
    with pytest.raises(ValueError, match="the i-RevNet road needs an IRevNet, got IResNetClassifier"):
        demos.two_roads_state(swapped, test_digits[0])
    with pytest.raises(ValueError, match="the ResNet road needs an IResNetClassifier with coeff=None"):
        demos.two_roads_state({**roads, "ResNet": roads["i-ResNet"]}, test_digits[0])
    for name in ("irevnet.pt", "iresnet-c0.9.pt", "resnet-unconstrained.pt"):
        shutil.copy(CHECKPOINTS / "two-roads" / name, tmp_path / name)
    shutil.copy(CHECKPOINTS / "two-roads" / "iresnet-c0.9.pt", tmp_path / "irevnet.pt")
    with pytest.raises(ValueError, match="irevnet.pt: the i-RevNet road needs an IRevNet.*delete it"):
        pretrained.two_roads_models(tmp_path, train_missing=False)


def test_numpy_integers_and_images_with_gradients_are_taken(roads, flow, held_out):
    images = held_out.clone().requires_grad_(True)
    state = demos.two_roads_state(roads, images, index=np.int64(2), iterations=np.int64(50), seed=np.int64(1))
    assert not state.image.requires_grad and type(state.index) is int and state.errors["i-RevNet"] < 1e-5
    walked = demos.latent_state(flow, images, seed=np.int64(3), count=np.int64(2), steps=np.int64(2))
    assert walked.seed == 3 and type(walked.seed) is int and walked.samples.shape[0] == 2


def test_an_image_that_is_zero_after_centring_is_refused(roads):
    images = torch.full((2, 1, 8, 8), 0.5)
    with pytest.raises(ValueError, match="0 after centring"):
        demos.two_roads_state(roads, images, index=1)
