"""The training benchmark's settings table, run on a tiny model (its timings are not asserted, only their form)."""

import math
from dataclasses import replace

import torch

from invattn.bench.train import REFERENCE, SETTINGS, _layouts, _seconds_per_step
from invattn.models import PRESETS, ResidualFlow


def test_the_settings_table_times_every_setting_on_every_layout():
    tiny = replace(PRESETS["smoke"], in_channels=3, attention=(None, None))
    layouts = [("none, 2", tiny, 2), ("concat, 2", replace(tiny, attention=("concat", None)), 2)]
    times = _seconds_per_step(layouts, rounds=1, device=torch.device("cpu"))
    assert set(times) == set(SETTINGS) and REFERENCE in SETTINGS
    assert all(len(row) == len(layouts) and all(math.isfinite(t) and t > 0 for t in row) for row in times.values())
    for options in SETTINGS.values():  # every setting builds a model that trains
        ResidualFlow(replace(tiny, **options))


def test_the_cpu_layouts_are_the_reduced_paper_model_without_and_with_attention():
    names = [name for name, _, _ in _layouts(quick=False, gpu=False)]
    assert names == ["none, 8", "none, 64", "concat, 64"]
    for _, config, _ in _layouts(quick=False, gpu=False):
        assert config.blocks == (2, 2, 2) and config.width == 128 and config.image_size == 32
    assert [name for name, _, _ in _layouts(quick=True, gpu=True)] == ["none, 64", "concat, 64"]
