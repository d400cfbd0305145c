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


def test_bench_train_quick_prints_every_setting_side_by_side(monkeypatch, capsys):
    """``python -m invattn.bench train --quick`` on a tiny model: the command line reaches ``run(quick=True)``, the
    settings table has a row per setting, its columns line up, and the rows returned hold what was printed. The two
    slow parts are replaced: the throughput table and the 1500-digit training (a stand-in records its options)."""
    import sys

    from invattn.bench import __main__ as bench_cli
    from invattn.bench import train as bench_train

    tiny = replace(PRESETS["smoke"], in_channels=3, attention=(None, None))
    monkeypatch.setattr(bench_train, "_layouts", lambda quick, gpu: [("none, 2", tiny, 2)] if quick else [])
    monkeypatch.setattr(bench_train, "throughput", lambda quick, device, amp: dict(quick=quick, amp=amp))
    trained = []

    def digits_with(options, epochs, device):
        trained.append((dict(options), epochs))
        return 6.5 + len(trained) / 100, 1.0, [dict(bits_per_dim=7.0)] * 10

    monkeypatch.setattr(bench_train, "_digits_with", digits_with)
    monkeypatch.setattr(sys, "argv", ["python -m invattn.bench", "train", "--quick"])
    bench_cli.main()
    out = capsys.readouterr().out
    assert [options for options, _ in trained[: len(SETTINGS)]] == list(SETTINGS.values())
    assert all(epochs == 1 for _, epochs in trained[: len(SETTINGS)])  # --quick: one epoch per setting
    rows = [line for line in out.splitlines() if line.split(" | ")[0].strip() in (*SETTINGS, "setting")]
    assert len(rows) == len(SETTINGS) + 1 and len({line.index(" | ") for line in rows}) == 1  # header and rows aligned
    results = bench_train.run(quick=True)
    assert results["throughput"] == dict(quick=True, amp=False)
    assert [row["setting"] for row in results["settings"]] == list(SETTINGS)
    for row in results["settings"]:
        assert set(row["seconds_per_step"]) == {"none, 2"} and row["peak_mib"] > 0 and row["epochs"] == 1
    reference = next(row for row in results["settings"] if row["setting"] == REFERENCE)
    assert reference["speedup"]["none, 2"] == 1.0  # the reference against itself


def test_the_cifar_sized_presets_take_the_settings_the_table_recommends():
    """The paper's model and the patches preset estimate the log-det with 2 series terms and the Neumann gradient (the
    row the settings table marks as theirs); the digits preset keeps 5 (its shipped ablation was trained with them)."""
    recommended = SETTINGS["Neumann gradient, 2 terms (CIFAR presets)"]
    for name in ("cifar10-paper", "patches"):
        preset = PRESETS[name]
        assert (preset.n_terms, preset.neumann_gradient, preset.logdet) == (2, True, "series"), name
        assert {key: getattr(preset, key) for key in recommended} == recommended
    assert PRESETS["patches"].blocks == (2, 2, 2) and PRESETS["patches"].width == 128
    assert PRESETS["cifar10-paper"].blocks == (16, 16, 16) and PRESETS["cifar10-paper"].width == 512
    assert PRESETS["digits"].n_terms == 5
