"""All six lesson demos in one tabbed page: :func:`demo_app`, the app ``make demo`` serves with Voilà
(app/demos.ipynb)."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets

from ..data import photograph_crops, photograph_thumbnail
from ..pretrained import TWO_ROADS, density_model, held_out_digits, test_digits, two_roads_models
from .attention_map import attention_map_demo
from .banach import banach_demo
from .bound_explorer import bound_explorer_demo
from .inversion import inversion_demo
from .latent_walk import latent_demo
from .two_roads import two_roads_demo

__all__ = ["DEMO_TABS", "demo_app"]

DEMO_TABS = (  # (tab title, lesson, one plain sentence: the app shows no code and typesets no math)
    (
        "Banach's iteration",
        "01",
        "Step the fixed-point iteration x ← y − g(x) for g = c·sin: it converges for c < 1; "
        "above 1 the map folds (its Jacobian changes sign), and for larger c the chosen y has "
        "several preimages.",
    ),
    (
        "Bound explorer",
        "02",
        "Each attention kind's bound before the output gain, after it (the certified one) and the "
        "Lipschitz constant measured on random inputs, at N positions.",
    ),
    (
        "Attention map",
        "03",
        "Where one query position of the photograph looks: its attention weights on every position.",
    ),
    (
        "Inversion",
        "04",
        "Invert one attention block y = x + g(x) step by step: the error per iteration beside the a-priori "
        "bound, and the error per pixel.",
    ),
    (
        "Samples and walks",
        "08",
        "The trained digits model: samples at a temperature, a straight walk in latent "
        "space between two held-out digits, and each decoded image's re-encoding error.",
    ),
    (
        "Two roads",
        "09",
        "Invert a classifier's final features back to the digit: i-RevNet analytically, the i-ResNet "
        "classifier and an unconstrained ResNet by iteration, with optional noise on the features.",
    ),
)


def demo_app(checkpoints: str = "../checkpoints") -> widgets.Tab:
    """The six lesson demos in one tabbed widget, each with its lesson number and one sentence (:data:`DEMO_TABS`).

    Arguments:
        checkpoints: the folder holding ``digits-200/concat-seed1.pt`` (lesson 08's trained model,
            :func:`invattn.pretrained.density_model`) and ``two-roads/`` (lesson 09's classifiers, trained there first
            if missing: :func:`invattn.pretrained.two_roads_models`); the default is the app notebook's view of it.
    Returns:
        the ``ipywidgets.Tab``; ``.demos`` maps each title to its demo (whose ``.state`` is the latest state).
    Raises:
        FileNotFoundError: when lesson 08's model is missing.
        ValueError: when a checkpoint holds another model than its name says.
    """
    folder = Path(checkpoints)
    held_out = held_out_digits()  # the digits the density model never saw
    digits_test = test_digits()  # the classifiers' held-out split
    demos = {
        "Banach's iteration": lambda: banach_demo(map="1d", c=0.9, steps=30),
        "Bound explorer": lambda: bound_explorer_demo(kind="l2", n_positions=256),
        "Attention map": lambda: attention_map_demo(
            photograph_crops(1, 64, seed=0)[0], kind="gaussian", temperature=3.0, radius=3.0
        ),
        "Inversion": lambda: inversion_demo(photograph_thumbnail(64), kind="concat", iterations=8),
        "Samples and walks": lambda: latent_demo(density_model(folder), held_out, first=0, second=1),
        "Two roads": lambda: two_roads_demo(two_roads_models(folder / TWO_ROADS), digits_test),
    }
    built, pages = {}, []
    for title, lesson, sentence in DEMO_TABS:
        built[title] = demos[title]()
        pages.append(widgets.VBox([widgets.HTML(f"<p><b>Lesson {lesson}.</b> {sentence}</p>"), built[title]]))
    tab = widgets.Tab(children=pages, titles=[title for title, _, _ in DEMO_TABS])
    tab.demos = built
    return tab
