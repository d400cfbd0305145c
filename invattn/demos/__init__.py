"""The lessons' interactive demos, one module each: its state (a plain function of the controls, unit-tested), its
plot (matplotlib) and its widget (ipywidgets), and :func:`demo_app`, all six in one page (what ``make demo`` serves).

* :mod:`~invattn.demos.banach` (lesson 01): fixed-point iteration of x ↦ y − g(x), its error against the a-priori
  bound, and the preimages of y (several once the map folds).
* :mod:`~invattn.demos.bound_explorer` (lesson 02): one attention kind's raw, certified and measured Lipschitz bounds
  at N positions.
* :mod:`~invattn.demos.attention_map` (lesson 03): the weights one query position of a photograph puts on every
  position.
* :mod:`~invattn.demos.inversion` (lesson 04): one attention block inverted step by step, the error per iteration
  beside the a-priori bound.
* :mod:`~invattn.demos.latent_walk` (lesson 08): samples of the trained density model and a walk in latent space.
* :mod:`~invattn.demos.two_roads` (lesson 09): a classifier's features inverted by i-RevNet, the i-ResNet classifier
  and the unconstrained ResNet.
* :mod:`~invattn.demos.front`: what they share (the widget front end, image and index checks);
  :mod:`~invattn.demos.app`: :func:`demo_app`. The trained models come from :mod:`invattn.pretrained`.

Every state function raises ``ValueError`` with a message a widget can show when a combination of controls is refused.
"""

from .app import DEMO_TABS, demo_app
from .attention_map import MapState, attention_map_demo, attention_map_state, plot_attention_map
from .banach import BANACH_MAPS, MAX_STEPS, BanachState, banach_demo, banach_state, plot_banach, residual_map
from .bound_explorer import (
    MAX_POSITIONS,
    OPTIONS,
    BoundState,
    bound_explorer_demo,
    bound_explorer_state,
    plot_bound_explorer,
)
from .inversion import (
    VARIANTS,
    DemoState,
    error_map_range,
    error_per_iteration,
    inversion_demo,
    inversion_demo_state,
    plot_inversion_demo,
)
from .latent_walk import MAX_TEMPERATURE, LatentState, latent_demo, latent_state, plot_latent
from .two_roads import NOISE_LEVELS, ROADS, TwoRoadsState, plot_two_roads, two_roads_demo, two_roads_state

__all__ = [
    "BANACH_MAPS",
    "MAX_STEPS",
    "BanachState",
    "banach_demo",
    "banach_state",
    "plot_banach",
    "residual_map",
    "MAX_POSITIONS",
    "OPTIONS",
    "BoundState",
    "bound_explorer_demo",
    "bound_explorer_state",
    "plot_bound_explorer",
    "MapState",
    "attention_map_demo",
    "attention_map_state",
    "plot_attention_map",
    "VARIANTS",
    "DemoState",
    "error_map_range",
    "error_per_iteration",
    "inversion_demo",
    "inversion_demo_state",
    "plot_inversion_demo",
    "MAX_TEMPERATURE",
    "LatentState",
    "latent_demo",
    "latent_state",
    "plot_latent",
    "NOISE_LEVELS",
    "ROADS",
    "TwoRoadsState",
    "plot_two_roads",
    "two_roads_demo",
    "two_roads_state",
    "DEMO_TABS",
    "demo_app",
]
