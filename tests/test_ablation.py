"""The attention ablation: its command line, resume, the saved models, clear errors, and the shipped checkpoints."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from invattn import KINDS, ablation
from invattn.models import FlowConfig

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "digits"


def test_command_line_trains_saves_and_resumes(tmp_path, capsys):
    args = [
        "--out",
        str(tmp_path),
        "--configs",
        "none",
        "generative-dot",
        "--seeds",
        "3",
        "4",
        "--epochs",
        "1",
        "--n-train",
        "64",
        "--keep",
        "all",
        "--no-progress",
    ]
    ablation.main(args)
    table = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"] == dict(  # the digits ablation's settings, as checkpoints/digits records them
        preset="digits", epochs=1, n_train=64, evaluation=dict(estimator="series", n_terms=20, n_probes=4)
    )
    assert sorted((r["label"], r["seed"]) for r in results["runs"]) == [
        ("generative-dot", 3),
        ("generative-dot", 4),
        ("none", 3),
        ("none", 4),
    ]
    assert all(len(r["train_curve"]) == 1 for r in results["runs"])  # 64 digits, batch 64: one step per epoch
    assert {p.name for p in tmp_path.glob("*.pt")} == {
        "none-seed3.pt",
        "none-seed4.pt",
        "generative-dot-seed3.pt",
        "generative-dot-seed4.pt",
    }
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
    assert "generative-dot" in table and "inf" in table  # the uncertified variant's bound is shown as inf
    # a saved model gives back the recorded held-out bits/dim (the evaluation is seeded)
    record = next(r for r in results["runs"] if r["label"] == "generative-dot" and r["seed"] == 4)
    model = ablation.load_model(tmp_path / "generative-dot-seed4.pt")
    assert model.config.attention_variant == "generative" and not model.training
    recorded = record["test_bits_per_dim"]
    again = ablation.held_out_bits_per_dim(model)
    assert again == pytest.approx(recorded, abs=1e-9) or (math.isnan(again) and math.isnan(recorded))
    assert record["attention_bound"] == math.inf
    # a second call finds every run done and trains nothing
    before = (tmp_path / "results.json").read_text()
    ablation.main(args)
    assert (tmp_path / "results.json").read_text() == before


@pytest.mark.parametrize("keep, expected", [("first", {"none-seed2.pt"}), ("none", set())])
def test_keep_chooses_which_models_are_saved(tmp_path, keep, expected):
    ablation.run(tmp_path, ["none"], [2, 5], epochs=1, n_train=64, keep=keep, progress_bar=False, plot=False)
    assert {p.name for p in tmp_path.glob("*.pt")} == expected
    assert not (tmp_path / "ablation.png").exists()


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    ablation.run(tmp_path, ["none"], [1], epochs=1, n_train=64, keep="none", progress_bar=False, plot=False)
    with pytest.raises(ValueError, match="other settings"):
        ablation.run(tmp_path, ["none"], [1], epochs=2, n_train=64, keep="none", progress_bar=False, plot=False)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(labels=["softmax"]), "configuration"),
        (dict(labels=["none", "none"]), "configurations must be distinct"),
        (dict(seeds=[1, 1]), "distinct"),
        (dict(seeds=[]), "distinct"),
        (dict(seeds=[-1]), "integer in"),
        (dict(seeds=[1.5]), "integer in"),
        (dict(seeds=[True]), "integer in"),
        (dict(n_train=1501), "held out"),
        (dict(n_train=10), "n_train"),
        (dict(keep="some"), "keep"),
        (dict(epochs=0), "epochs"),
    ],
)
def test_bad_settings_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        ablation.run(tmp_path, **{"labels": ["none"], **options})


def test_an_unknown_configuration_on_the_command_line_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ablation.main(["--out", str(tmp_path), "--configs", "softmax"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a refused value is a usage error, not a traceback
        ablation.main(["--out", str(tmp_path), "--seeds", "-1"])
    assert "integer in" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["{", "[]", '{"runs": []}', '{"settings": {}, "runs": [{"label": "none"}]}'])
def test_a_damaged_results_file_is_named(tmp_path, content):
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(ValueError, match="results.json is not an ablation's results file"):
        ablation.run(tmp_path, ["none"], [1], epochs=1, n_train=64)


def test_a_file_that_is_not_a_saved_model_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a model saved by python -m invattn.ablation"):
        ablation.load_model(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a model saved"):
        ablation.saved_record(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a model saved"):
        ablation.load_model(tmp_path / "text.pt")


def test_runs_that_diverged_are_flagged_and_counted():
    good = dict(
        label="none",
        seed=1,
        test_bits_per_dim=6.5,
        train_curve=[8.0, 7.0],
        attention_bound=math.nan,
        attention_measured=math.nan,
    )
    assert ablation.run_is_reliable(good) == (True, "")
    cases = [
        dict(good, test_bits_per_dim=math.inf),
        dict(good, train_curve=[8.0, -3.0]),
        dict(good, train_curve=[8.0, math.nan]),
        dict(good, attention_bound=math.inf, attention_measured=9.4),
    ]
    for case, reason in zip(cases, ["not finite", "diverged", "diverged", "≥ 1"]):
        reliable, why = ablation.run_is_reliable(case)
        assert not reliable and reason in why
    results = dict(
        settings=dict(epochs=1, n_train=64),
        runs=[
            good,
            dict(good, seed=2, test_bits_per_dim=6.6),
            dict(good, label="dot", attention_measured=0.2, attention_bound=0.9),
            dict(
                good,
                label="dot",
                seed=2,
                test_bits_per_dim=5.0,
                train_curve=[8.0, -1e18],
                attention_bound=0.9,
                attention_measured=0.2,
            ),
        ],
    )
    rows = {row["label"]: row for row in ablation.summary(results)}
    # the diverged seed is not left out: it is counted, and it stays in the statistics
    assert rows["dot"]["unreliable"] == 1 and rows["dot"]["mean"] == pytest.approx(5.75)
    assert rows["none"]["unreliable"] == 0 and rows["none"]["vs_none"] == 0
    assert "1 of 2 seeds unreliable" in ablation.format_summary(results)
    figure = ablation.plot_ablation(results)
    assert len(figure.axes) == 2


def test_evaluation_keeps_the_callers_mode_and_random_state():
    from invattn.models import ResidualFlow

    model = ResidualFlow(ablation.model_config("none")).train()
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    ablation.held_out_bits_per_dim(model)
    assert model.training and torch.equal(torch.random.get_rng_state(), before)


def test_held_out_digits_are_the_density_split():
    from invattn.data import DIGITS_HELD_OUT_FROM, dequantize, digits_density_split

    held_out = digits_density_split()[1]
    expected = dequantize((held_out * 255).round() / 255, torch.Generator().manual_seed(0))
    assert torch.equal(ablation.held_out_images(), expected) and expected.shape == (297, 1, 8, 8)
    assert ablation.DEFAULT_N_TRAIN == DIGITS_HELD_OUT_FROM


def test_saved_record_is_the_run_beside_the_model(tmp_path):
    ablation.run(tmp_path, ["none"], [7], epochs=1, n_train=64, progress_bar=False, plot=False)
    record = ablation.saved_record(tmp_path / "none-seed7.pt")
    assert record["label"] == "none" and record["seed"] == 7
    stored = json.loads((tmp_path / "results.json").read_text())["runs"][0]
    assert json.dumps(record, sort_keys=True) == json.dumps(stored, sort_keys=True)  # equal, nan fields included


def test_a_missing_model_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m invattn.ablation --out"):
        ablation.load_model(tmp_path / "none-seed1.pt")


def test_the_generative_variant_has_only_its_repository_kinds():
    with pytest.raises(ValueError, match="generative"):
        FlowConfig(attention=("l2", None, None), attention_variant="generative")
    with pytest.raises(ValueError, match="attention_variant"):
        FlowConfig(attention_variant="softmax")


# -- the checkpoints in the repository ---------------------------------------------------------------
def shipped_runs():
    return json.loads((SHIPPED / "results.json").read_text())


def test_every_configuration_was_run_with_three_seeds():
    results = shipped_runs()
    assert results["settings"]["epochs"] == ablation.DEFAULT_EPOCHS
    for label in ablation.CONFIGURATIONS:
        assert sorted(r["seed"] for r in results["runs"] if r["label"] == label) == [1, 2, 3], label


SHIPPED_MODELS = sorted((ROOT / "checkpoints").glob("*/*-seed*.pt"))


def test_the_ablation_ships_one_model_per_configuration():
    assert {p.name for p in SHIPPED.glob("*.pt")} == {f"{label}-seed1.pt" for label in ablation.CONFIGURATIONS}


SHIPPED_PATCHES = ROOT / "checkpoints" / "patches"


def test_the_patches_ablation_ships_every_run_and_each_seed_1_model_that_finished():
    """checkpoints/patches: 9 configurations × seeds 1 2 3 with the patches defaults; a model for each seed-1 run that
    finished (a diverged run has no model, and its record says where it stopped)."""
    results = json.loads((SHIPPED_PATCHES / "results.json").read_text())
    defaults = ablation.DEFAULTS["patches"]
    assert results["settings"]["data"] == "patches"
    assert (results["settings"]["epochs"], results["settings"]["n_train"]) == (defaults["epochs"], defaults["n_train"])
    assert results["settings"]["evaluation"] == ablation.PATCHES_EVALUATION
    for label in ablation.CONFIGURATIONS:
        assert sorted(r["seed"] for r in results["runs"] if r["label"] == label) == [1, 2, 3], label
    first = {r["label"]: r for r in results["runs"] if r["seed"] == 1}
    finished = {label for label, r in first.items() if "diverged_at_step" not in r}
    assert {p.name for p in SHIPPED_PATCHES.glob("*.pt")} == {f"{label}-seed1.pt" for label in finished}
    assert all(math.isnan(first[label]["test_bits_per_dim"]) for label in set(first) - finished)
    assert {"none", *KINDS} <= finished  # every certified run finished


@pytest.mark.parametrize("path", SHIPPED_MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_models_reproduce_their_recorded_bits_per_dim(path):
    label, seed = path.stem.rsplit("-seed", 1)
    runs = json.loads((path.parent / "results.json").read_text())["runs"]
    record = next(r for r in runs if r["label"] == label and r["seed"] == int(seed))
    model = ablation.load_model(path)
    assert model.config == ablation.model_config(label, ablation.data_of(model.config))
    assert ablation.held_out_bits_per_dim(model) == pytest.approx(record["test_bits_per_dim"], abs=1e-4)
    bounds = model.lipschitz_bounds()
    if model.config.attention_variant == "certified":
        assert max(bounds) < 1  # re-certified from the loaded weights
    else:
        assert max(bounds) == math.inf


def test_a_model_with_the_generative_formulation_builds_trains_and_inverts():
    """Its attention block has no certificate: the model still evaluates, and inverts by trying (allow_uncertified),
    with every certified block's bound intact."""
    from invattn.data import dequantize, digits
    from invattn.models import ResidualFlow

    torch.manual_seed(0)
    model = ResidualFlow(ablation.model_config("generative-concat"))
    x = dequantize(digits()[0][:8], torch.Generator().manual_seed(0))
    loss = model.bits_per_dim(x).mean()
    loss.backward()
    assert torch.isfinite(loss)
    bounds = model.lipschitz_bounds()
    assert bounds.count(math.inf) == 1 and max(b for b in bounds if b != math.inf) < 1
    _, error = model.eval().reconstruct(x, tol=1e-6)
    assert error < 1e-4
    with pytest.raises(ValueError, match="not below 1"):  # the caller may still refuse to try
        model.inverse(model.latents(x), tol=1e-6, allow_uncertified=False)


# -- the paired differences and the patches ablation ------------------------------------------------------------------
def _record(label, seed, bpd):
    return dict(
        label=label,
        seed=seed,
        test_bits_per_dim=bpd,
        train_curve=[8.0, 7.0],
        attention_bound=math.nan if label == "none" else 0.9,
        attention_measured=math.nan if label == "none" else 0.2,
    )


def test_paired_differences_with_no_attention_seed_by_seed():
    runs = [_record("none", s, v) for s, v in ((1, 5.0), (2, 5.4), (3, 5.2))]
    runs += [_record("concat", s, v) for s, v in ((1, 4.9), (2, 5.2), (3, 5.4))]  # d = −0.1, −0.2, +0.2
    runs += [_record("dot", s, v) for s, v in ((1, 5.1), (4, 3.0))]  # seed 4 has no partner: left out of the pairing
    runs += [_record("l2", s, v) for s, v in ((1, 5.0), (2, math.inf))]
    rows = {row["label"]: row for row in ablation.summary(dict(settings=dict(epochs=1), runs=runs))}
    assert rows["none"]["paired"] == 0 and rows["none"]["paired_std"] == 0 and rows["none"]["paired_n"] == 3
    concat = rows["concat"]
    assert concat["paired"] == pytest.approx(-0.1 / 3) and concat["paired_n"] == 3
    assert concat["paired_std"] == pytest.approx(
        math.sqrt(((-0.1 + 0.1 / 3) ** 2 + (-0.2 + 0.1 / 3) ** 2 + (0.2 + 0.1 / 3) ** 2) / 2)
    )
    assert concat["paired_std"] < concat["std"]  # what the seeds share cancels
    assert concat["vs_none"] == pytest.approx(concat["paired"])  # the same seeds: the means agree
    dot = rows["dot"]
    assert dot["paired"] == pytest.approx(0.1) and dot["paired_n"] == 1 and math.isnan(dot["paired_std"])
    assert dot["vs_none"] == pytest.approx(4.05 - 5.2)  # the unpaired difference of means differs
    assert math.isnan(rows["l2"]["paired"]) and rows["l2"]["paired_n"] == 2
    table = ablation.format_summary(dict(settings=dict(epochs=1), runs=runs))
    assert "per-seed Δ ± std" in table
    assert "-0.0333 ± 0.2082" in next(line for line in table.splitlines() if line.strip().startswith("concat |"))
    alone = ablation.summary(dict(settings=dict(epochs=1), runs=runs[3:6]))[0]  # no "none": nothing to pair with
    assert math.isnan(alone["paired"]) and alone["paired_n"] == 0
    dot_line = next(line for line in table.splitlines() if line.strip().startswith("dot |"))
    assert "+0.1000 ± —" in dot_line  # one pair: no spread to show
    lines = [line for i, line in enumerate(table.splitlines()) if i != 1]  # the header and every row, not the rule
    columns = {tuple(i for i in range(len(line)) if line.startswith(" | ", i)) for line in lines}
    assert len(columns) == 1  # a nan difference (l2) keeps the columns in line


def test_a_diverged_seed_does_not_hide_the_others_measured_constant():
    """A diverged run measures nothing (nan): the largest measured constant is over the runs that have one, whatever
    their order."""
    diverged = dict(_record("generative-concat", 1, math.nan), attention_measured=math.nan)
    finished = dict(_record("generative-concat", 2, 5.1), attention_measured=5.0)
    for runs in ([diverged, finished], [finished, diverged]):
        (row,) = ablation.summary(dict(settings=dict(epochs=1), runs=runs))
        assert row["measured"] == 5.0
    (row,) = ablation.summary(dict(settings=dict(epochs=1), runs=[diverged]))
    assert math.isnan(row["measured"])


def test_data_of_names_what_it_takes():
    with pytest.raises(TypeError, match="FlowConfig"):
        ablation.data_of("digits")
    assert ablation.data_of(ablation.model_config("none", "patches")) == "patches"


def test_patches_ablation_trains_resumes_and_reports(tmp_path, monkeypatch, capsys):
    """A tiny patches ablation: 2 steps per run, the held-out score on 16 patches instead of 512."""
    from invattn.data import dequantize, photograph_patches

    monkeypatch.setitem(ablation.PATCHES_EVALUATION, "held_out", 16)
    args = ["--out", str(tmp_path), "--data", "patches", "--seeds", "5", "--epochs", "1", "--n-train", "64"]
    ablation.main([*args, "--configs", "none", "--keep", "all", "--no-progress"])
    first = json.loads((tmp_path / "results.json").read_text())
    assert first["settings"] == dict(
        data="patches",
        preset="patches",
        epochs=1,
        n_train=64,
        batch_size=32,
        evaluation=dict(estimator="series", n_terms=10, n_probes=2, held_out=16, batch=128),
    )
    ablation.main([*args, "--configs", "none", "concat", "--keep", "all", "--no-progress"])  # resumes: concat only
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs"][0] == first["runs"][0] and [r["label"] for r in results["runs"]] == ["none", "concat"]
    assert all(len(r["train_curve"]) == 2 for r in results["runs"])  # 64 patches, batch 32
    assert "per-seed Δ ± std" in capsys.readouterr().out
    concat = results["runs"][1]
    model = ablation.load_model(tmp_path / "concat-seed5.pt")
    assert model.config == ablation.model_config("concat", "patches") and model.config.attention == (
        "concat",
        None,
        None,
    )
    assert ablation.held_out_bits_per_dim(model) == pytest.approx(concat["test_bits_per_dim"], abs=1e-9)  # its data
    assert ablation.saved_record(tmp_path / "concat-seed5.pt") == concat
    assert concat["attention_bound"] <= 0.9 and ablation.run_is_reliable(concat) == (True, "")
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
    # the held-out patches are the first ones of the held-out photographs, dequantised with seed 0
    expected = photograph_patches("test")[:16]
    assert torch.equal(ablation.held_out_images("patches"), dequantize(expected, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="other settings"):  # digits in a patches folder
        ablation.run(tmp_path, ["none"], [5], epochs=1, n_train=64, progress_bar=False, plot=False)


def test_patches_defaults_and_refusals(tmp_path, capsys):
    from invattn.data import photograph_patches
    from invattn.models import PRESETS

    assert ablation.DATA == ("digits", "patches")
    assert ablation.DEFAULTS["patches"]["n_train"] == len(photograph_patches("train"))
    assert ablation.DEFAULTS["digits"] == dict(epochs=ablation.DEFAULT_EPOCHS, n_train=ablation.DEFAULT_N_TRAIN)
    assert ablation.held_out_images("patches").shape == (512, 3, 32, 32)
    assert ablation.model_config("none", "patches") == replace(PRESETS["patches"], attention=(None, None, None))
    assert ablation.model_config("dot") == ablation.model_config("dot", "digits")
    assert ablation.data_of(PRESETS["patches"]) == "patches" and ablation.data_of(PRESETS["digits"]) == "digits"
    with pytest.raises(ValueError, match="not an ablation's"):
        ablation.data_of(FlowConfig(image_size=16))
    with pytest.raises(ValueError, match="data"):
        ablation.model_config("none", "cifar10")
    with pytest.raises(ValueError, match="data"):
        ablation.run(tmp_path, ["none"], data="cifar10")
    with pytest.raises(ValueError, match="held-out patches"):
        ablation.run(tmp_path, ["none"], n_train=4161, data="patches")
    with pytest.raises(SystemExit):
        ablation.main(["--out", str(tmp_path), "--data", "cifar10"])
    assert "invalid choice" in capsys.readouterr().err


def test_a_run_whose_training_diverges_is_recorded_and_the_ablation_goes_on(tmp_path, monkeypatch, capsys):
    import invattn.ablation.runner as runner
    from invattn.train import TrainingDiverged

    real_train = runner.train

    def train(preset, folder, **options):  # generative-dot overflows at its third step; the others train for real
        if options["model_overrides"]["attention_variant"] != "generative":
            return real_train(preset, folder, **options)
        lines = [json.dumps(dict(step=s, bits_per_dim=v)) for s, v in ((1, 9.0), (2, 7.12345))]
        Path(folder, "metrics.jsonl").write_text("\n".join(lines) + "\n")
        raise TrainingDiverged("training diverged at step 3", step=3, last_checkpoint_step=0)

    monkeypatch.setattr(runner, "train", train)
    results = ablation.run(tmp_path, ["generative-dot", "none"], [1], epochs=1, n_train=64, keep="all", plot=False)
    assert "generative-dot seed 1: training diverged at step 3" in capsys.readouterr().out
    diverged, none = results["runs"]
    assert none["label"] == "none" and math.isfinite(none["test_bits_per_dim"])  # the next run trained
    assert diverged["diverged_at_step"] == 3 and math.isnan(diverged["test_bits_per_dim"])
    assert diverged["train_curve"][:2] == [9.0, 7.1235] and math.isnan(diverged["train_curve"][2])
    assert diverged["attention_bound"] == math.inf and math.isnan(diverged["attention_measured"])
    assert ablation.run_is_reliable(diverged) == (False, "held-out bits/dim not finite")
    assert {p.name for p in tmp_path.glob("*.pt")} == {"none-seed1.pt"}  # no weights to keep
    rows = {row["label"]: row for row in ablation.summary(results)}
    assert rows["generative-dot"]["unreliable"] == 1 and math.isnan(rows["generative-dot"]["paired"])
    # resuming does not train it again
    again = ablation.run(tmp_path, ["generative-dot", "none"], [1], epochs=1, n_train=64, plot=False)
    assert json.dumps(again, sort_keys=True) == json.dumps(results, sort_keys=True)


def test_a_curve_that_stopped_early_is_drawn_to_its_end_not_cutting_the_others():
    runs = [dict(_record("none", s, 5.0 + s), train_curve=[8.0, 7.0, 6.5, 6.0]) for s in (1, 2)]
    runs += [
        dict(_record("generative-dot", 1, 5.0), train_curve=[8.0, 7.0, 6.0, 5.0]),
        dict(_record("generative-dot", 2, math.nan), train_curve=[8.0, 7.5, math.nan]),  # diverged at step 3
    ]
    figure = ablation.plot_ablation(dict(settings=dict(epochs=4), runs=runs))
    lines = {line.get_label().split(" ")[0]: line for line in figure.axes[1].get_lines()}
    assert len(lines["none"].get_xdata()) == 4 and len(lines["generative-dot"].get_xdata()) == 4
    assert lines["generative-dot"].get_ydata()[:2].tolist() == [8.0, 7.25]
    assert math.isnan(lines["generative-dot"].get_ydata()[3])


def test_a_diverged_number_does_not_squash_the_held_out_panel():
    """A run whose series diverged can score −10²⁶ bits/dim: the panel keeps the reliable runs' range and marks the
    number at its edge with its value; numbers within reach keep the panel as it was."""
    runs = [_record("none", s, 4.46 + s / 100) for s in (1, 2)] + [_record("concat", s, 4.40 + s / 100) for s in (1, 2)]
    far = [dict(_record("generative-dot", 1, -4.7e26), attention_bound=math.inf, attention_measured=37.0)]
    figure = ablation.plot_ablation(dict(settings=dict(epochs=3), runs=runs + far))
    bottom, top = figure.axes[0].get_ylim()
    assert 4.3 < bottom < 4.41 and 4.48 < top < 4.6
    assert any(text.get_text() == "-4.7e+26" for text in figure.axes[0].texts)
    near = [dict(_record("generative-dot", 1, 4.6), attention_bound=math.inf, attention_measured=37.0)]
    bottom, top = ablation.plot_ablation(dict(settings=dict(epochs=3), runs=runs + near)).axes[0].get_ylim()
    assert bottom < 4.41 and top > 4.6  # within reach: every point drawn where it is
