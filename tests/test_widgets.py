"""The demos' widgets (no browser): lesson 04's inversion states and errors, every demo's widget callbacks, and
the app."""

import math

import pytest
import torch

from invattn.data import photograph_crops
from invattn.demos import inversion_demo, inversion_demo_state, plot_inversion_demo


@pytest.fixture(scope="module")
def image():
    return photograph_crops(1, 32, seed=5)[0]


def test_more_iterations_give_a_smaller_error_within_the_bound(image):
    few = inversion_demo_state(image, kind="dot", iterations=2)
    many = inversion_demo_state(image, kind="dot", iterations=12)
    assert len(few.errors) == 3 and len(many.errors) == 13
    assert many.final_error < few.final_error
    assert many.final_error < 1e-8
    assert few.errors == pytest.approx(many.errors[:3])  # same block, same iterates
    floor = 1e-15
    assert all(e <= b + floor for e, b in zip(many.errors, many.bound))  # a-priori bound with the certified L
    assert many.reconstruction.shape == image.shape and many.error_map.shape == image.shape[1:]


def test_anderson_and_coefficient_change_the_curve(image):
    fixed = inversion_demo_state(image, kind="embedded_gaussian", coeff=0.9, iterations=6, method="fixed_point")
    anderson = inversion_demo_state(image, kind="embedded_gaussian", coeff=0.9, iterations=6, method="anderson")
    assert anderson.final_error < fixed.final_error
    weak = inversion_demo_state(image, kind="embedded_gaussian", coeff=0.3, iterations=3)
    assert weak.lipschitz == pytest.approx(0.3) and weak.final_error < fixed.errors[3]


def test_noise_on_y_levels_the_error_off_below_its_bound(image):
    state = inversion_demo_state(image, kind="concat", iterations=30, noise=0.01)
    assert 1e-4 < state.final_error <= state.noise_floor


def test_paper_variant_has_no_bound_and_may_fail(image):
    state = inversion_demo_state(image, kind="concat", variant="paper", iterations=20)
    assert state.bound == [] and math.isinf(state.lipschitz)
    assert torch.isfinite(state.reconstruction).all()


def test_bad_demo_input_is_refused(image):
    with pytest.raises(ValueError, match="kind must be one of"):
        inversion_demo_state(image, kind="softmax")
    with pytest.raises(ValueError, match="variant='paper'"):
        inversion_demo_state(image, kind="l2", variant="paper")
    with pytest.raises(ValueError, match="noise"):
        inversion_demo_state(image, noise=-0.1)
    with pytest.raises(ValueError, match="H and W even"):
        inversion_demo_state(image[:, :31])


def test_widget_updates_when_a_slider_moves(image):
    demo = inversion_demo(image, kind="dot", iterations=10)
    before = demo.state.final_error
    assert "10 iterations" in demo.summary.value
    demo.controls["iterations"].value = 2  # what a user's slider move does
    assert "2 iterations" in demo.summary.value
    assert demo.state.final_error > before
    assert demo.children[-1].value[:4] == b"\x89PNG"  # the figure, as a PNG image widget
    demo.controls["kind"].value = "l2"
    demo.controls["variant"].value = "paper"  # no paper variant of l2: a message, not a crash
    assert "exists for" in demo.summary.value and "<b>" in demo.summary.value
    assert demo.state.variant == "certified"  # the last good state stays
    for control in ("coeff", "iterations", "noise"):
        assert demo.controls[control].continuous_update is False  # a slow kernel shows the last state


def test_plot_has_four_panels(image):
    fig = plot_inversion_demo(inversion_demo_state(image, iterations=3))
    assert len(fig.axes) == 5  # four panels and the error map's colour bar


def test_error_map_range_follows_the_map_so_small_errors_stay_visible():
    from invattn.demos import error_map_range

    tiny = torch.tensor([[1e-13, 3e-14], [2e-15, 0.0]])
    vmin, vmax = error_map_range(tiny)
    assert vmax == pytest.approx(1e-13) and vmin == pytest.approx(2e-15)  # the smallest positive entry
    assert error_map_range(torch.tensor([[1.0, 1e-12]]))[0] == pytest.approx(1e-4)  # at most 4 decades
    assert error_map_range(torch.zeros(2, 2)) == pytest.approx((1e-20, 1e-16))
    assert error_map_range(torch.tensor([[float("inf"), 0.5]])) == pytest.approx((0.05, 0.5))


def test_demo_figure_error_map_is_not_one_colour():
    import matplotlib

    matplotlib.use("Agg")
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    state = inversion_demo_state(image, kind="dot", iterations=8)
    fig = plot_inversion_demo(state)
    shown = fig.axes[2].images[0]
    colours = shown.to_rgba(shown.get_array())
    assert len({tuple(c) for c in colours.reshape(-1, 4).round(3).tolist()}) > 10


# -- the demos of lessons 01–03 ---------------------------------------------------------------------
def test_banach_demo_follows_its_sliders():
    from invattn.demos import banach_demo

    demo = banach_demo(c=0.5, steps=20)
    assert "1 preimage" in demo.summary.value and demo.picture.value[:4] == b"\x89PNG"
    demo.controls["c"].value = 2.5  # across 1: the map folds
    assert "3 preimages" in demo.summary.value and "does not settle" in demo.summary.value
    demo.controls["map"].value = "2d"
    assert demo.state.iterates.shape == (21, 2)
    assert all(demo.controls[name].continuous_update is False for name in ("c", "steps"))


def test_bound_explorer_demo_follows_its_sliders():
    from invattn.demos import bound_explorer_demo

    demo = bound_explorer_demo(kind="l2", n_positions=16)
    small = demo.state.raw
    demo.controls["n_positions"].value = 256  # l2's bound grows with N
    assert demo.state.raw > small and "N = 256" in demo.summary.value
    demo.controls["kind"].value = "lipnorm"
    assert "lipnorm (reduction 4)" in demo.summary.value  # the options it has; radius and temperature do not apply
    assert demo.state.measured <= demo.state.certified <= 0.9


def test_attention_map_demo_follows_its_sliders(image):
    from invattn.demos import attention_map_demo

    demo = attention_map_demo(image, kind="gaussian", radius=3.0)
    before = demo.state.weights.clone()
    demo.controls["row"].value = 0
    demo.controls["col"].value = 0
    assert "query (0, 0)" in demo.summary.value and not torch.equal(before, demo.state.weights)
    demo.controls["temperature"].value = 10.0
    assert demo.state.entropy_ratio < 1
    started = attention_map_demo(
        image, kind="gaussian", radius=3.0, row=2, col=3
    )  # the lesson starts it where its figure is
    assert "query (2, 3)" in started.summary.value
    with pytest.raises(ValueError, match="row = 99 is not a value its control offers"):
        attention_map_demo(image, row=99)


def test_a_refused_combination_is_a_message_not_a_traceback():
    import ipywidgets as widgets

    from invattn.demos import banach_state, plot_banach
    from invattn.demos.front import demo_box

    controls = dict(c=widgets.FloatText(value=0.5), steps=widgets.IntText(value=5))
    demo = demo_box(controls, lambda **v: banach_state("1d", **v), plot_banach, [["c", "steps"]], dict(c=0.5, steps=5))
    picture = demo.picture.value
    controls["steps"].value = 9999
    assert "at most 500" in demo.summary.value and "<b>" in demo.summary.value
    assert demo.picture.value == picture and demo.state.iterates.shape == (6, 1)  # the last good state stays


CHECKPOINTS = __import__("pathlib").Path(__file__).resolve().parent.parent / "checkpoints"


def test_latent_demo_follows_temperature_and_digits():
    from invattn.ablation import load_model
    from invattn.data import load_labelled
    from invattn.demos import latent_demo

    images = load_labelled("digits", split="test")[0][:20]
    demo = latent_demo(load_model(CHECKPOINTS / "digits-200" / "concat-seed1.pt"), images, temperature=0.8)
    first = demo.state.samples.clone()
    demo.controls["temperature"].value = 1.2
    assert "T = 1.2" in demo.summary.value and not torch.allclose(first, demo.state.samples)
    demo.controls["second"].value = 7
    assert "to image 7" in demo.summary.value and demo.state.reencoding_error < 1e-4
    assert demo.controls["first"].max == 19  # the sliders span the images given


def test_two_roads_demo_follows_noise_and_solver():
    from invattn.data import load_labelled
    from invattn.demos import NOISE_LEVELS, two_roads_demo
    from invattn.pretrained import two_roads_models

    images = load_labelled("digits", split="test")[0]
    demo = two_roads_demo(two_roads_models(CHECKPOINTS / "two-roads", train_missing=False), images, index=2)
    clean = dict(demo.state.errors)
    demo.controls["noise"].value = 1e-2
    assert "noise 0.01 on Φ" in demo.summary.value
    assert all(demo.state.errors[road] > clean[road] for road in ("i-RevNet", "i-ResNet"))
    demo.controls["iterations"].value = 1
    assert "NOT converged" in demo.summary.value and not demo.state.converged["i-ResNet"]
    assert demo.controls["noise"].options == NOISE_LEVELS


def test_the_app_holds_the_six_demos_with_their_lessons():
    from invattn.bench.demos import response_times
    from invattn.demos import DEMO_TABS, demo_app

    app = demo_app(str(CHECKPOINTS))
    assert [app.get_title(i) for i in range(len(app.children))] == [title for title, _, _ in DEMO_TABS]
    assert set(app.demos) == {title for title, _, _ in DEMO_TABS}
    for (title, lesson, _), page in zip(DEMO_TABS, app.children):
        assert f"Lesson {lesson}." in page.children[0].value
        assert app.demos[title].state is not None and app.demos[title].picture.value  # a first state, drawn
    # the benchmark's probe moves every control over its range (each option; a slider's neighbour, ends) and back
    app.demos = {title: app.demos[title] for title in ("Banach's iteration", "Bound explorer")}
    rows = response_times(app, rounds=1)
    assert [row["control"] for row in rows] == [
        "map",
        "c",
        "steps",
        "kind",
        "n_positions",
        "radius",
        "temperature",
        "reduction",
    ]
    assert all(0 < row["median"] <= row["worst"] for row in rows)
    radius = next(row for row in rows if row["control"] == "radius")  # a log slider: its neighbour and both ends
    assert sorted(radius["values"]) == pytest.approx(sorted([10**0.1, 0.1, 10.0]))
    kind = next(row for row in rows if row["control"] == "kind")
    assert len(kind["values"]) == len(app.demos["Bound explorer"].controls["kind"].options) - 1  # every other option
    banach = app.children[0].children[1]
    assert banach.state.c == 0.9 and len(banach.state.iterates) == 31 and banach.state.map == "1d"  # moved back


def test_a_refused_message_is_escaped_and_a_non_converging_solve_is_a_message_too():
    import ipywidgets as widgets

    from invattn.demos.front import demo_box
    from invattn.solvers import InverseInfo, InversionError

    class State:
        def summary(self):
            return "fine"

    def compute(value):
        if value == 1:
            raise ValueError("kinds <b>('a', 'b')</b>")
        if value == 2:
            raise InversionError("did not converge", InverseInfo(method="fixed_point", tol=1e-6))
        return State()

    control = widgets.IntText(value=0)
    demo = demo_box(
        dict(value=control),
        compute,
        lambda state: __import__("matplotlib.pyplot").pyplot.figure(),
        [["value"]],
        dict(value=0),
    )
    control.value = 1
    assert demo.summary.value == "<b>kinds &lt;b&gt;(&#x27;a&#x27;, &#x27;b&#x27;)&lt;/b&gt;</b>"
    control.value = 2
    assert demo.summary.value == "<b>did not converge</b>" and isinstance(demo.state, State)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: __import__("invattn.demos").demos.banach_demo(c=9.0), "c = 9.0 is not a value its control offers"),
        (lambda: __import__("invattn.demos").demos.banach_demo(map="3d"), "not one the demo's controls offer"),
        (
            lambda: __import__("invattn.demos").demos.inversion_demo(torch.rand(3, 8, 8), coeff=2.0),
            "coeff = 2.0 is not a value",
        ),
        (
            lambda: __import__("invattn.demos").demos.inversion_demo(torch.rand(3, 8, 8), kind="l2", variant="paper"),
            "starting values are refused: variant='paper' exists for",
        ),
    ],
)
def test_a_starting_value_a_control_cannot_show_is_refused_not_clamped(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_latent_and_two_roads_demos_refuse_starting_values_outside_their_sliders():
    from invattn.ablation import load_model
    from invattn.data import load_labelled
    from invattn.demos import latent_demo, two_roads_demo
    from invattn.pretrained import two_roads_models

    images = load_labelled("digits", split="test")[0][:20]
    flow = load_model(CHECKPOINTS / "digits-200" / "concat-seed1.pt")
    for options, message in (
        (dict(first=1000), "first = 1000 is not a value its control offers"),
        (dict(temperature=5.0), "temperature = 5.0"),
        (dict(seed=-1), "seed = -1"),
    ):
        with pytest.raises(ValueError, match=message):
            latent_demo(flow, images, **options)
    with pytest.raises(ValueError, match="images must be"):
        latent_demo(flow, images[:0], second=0)
    roads = two_roads_models(CHECKPOINTS / "two-roads", train_missing=False)
    for options, message in (
        (dict(index=-1), "index = -1 is not a value"),
        (dict(iterations=500), "iterations = 500"),
        (dict(method="newton"), "not one the demo's controls offer"),
    ):
        with pytest.raises(ValueError, match=message):
            two_roads_demo(roads, images, **options)
    demo = latent_demo(flow, images, seed=250)  # any seed a lesson is run with: the seed slider reaches it
    assert demo.controls["seed"].max == 250 and "seed 250" in demo.summary.value
    with pytest.raises(ValueError, match=r"radius = 0.05 is not a value its control offers \(from 0.1 to 10\)"):
        __import__("invattn.demos").demos.bound_explorer_demo(radius=0.05)
    demo = two_roads_demo(roads, images, noise=0.05)  # a noise level of one's own joins the slider's options
    assert 0.05 in demo.controls["noise"].options and "noise 0.05 on Φ" in demo.summary.value
