"""The attention ablation: its command line, resume, the saved models, clear errors, and the shipped checkpoints."""

import json
import math
from pathlib import Path

import pytest
import torch

from invattn import ablation
from invattn.models import FlowConfig

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "digits"


def test_command_line_trains_saves_and_resumes(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--configs", "none", "generative-dot", "--seeds", "3", "4", "--epochs", "1",
            "--n-train", "64", "--keep", "all", "--no-progress"]
    ablation.main(args)
    table = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["epochs"] == 1 and results["settings"]["n_train"] == 64
    assert sorted((r["label"], r["seed"]) for r in results["runs"]) == [
        ("generative-dot", 3), ("generative-dot", 4), ("none", 3), ("none", 4)]
    assert all(len(r["train_curve"]) == 1 for r in results["runs"])  # 64 digits, batch 64: one step per epoch
    assert {p.name for p in tmp_path.glob("*.pt")} == {"none-seed3.pt", "none-seed4.pt", "generative-dot-seed3.pt",
                                                       "generative-dot-seed4.pt"}
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


@pytest.mark.parametrize("options, message", [
    (dict(labels=["softmax"]), "configuration"),
    (dict(seeds=[1, 1]), "distinct"),
    (dict(seeds=[]), "distinct"),
    (dict(n_train=1501), "held out"),
    (dict(n_train=10), "n_train"),
    (dict(keep="some"), "keep"),
    (dict(epochs=0), "epochs"),
])
def test_bad_settings_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        ablation.run(tmp_path, **{"labels": ["none"], **options})


def test_an_unknown_configuration_on_the_command_line_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ablation.main(["--out", str(tmp_path), "--configs", "softmax"])
    assert "invalid choice" in capsys.readouterr().err


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


@pytest.mark.parametrize("path", SHIPPED_MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_models_reproduce_their_recorded_bits_per_dim(path):
    label, seed = path.stem.rsplit("-seed", 1)
    runs = json.loads((path.parent / "results.json").read_text())["runs"]
    record = next(r for r in runs if r["label"] == label and r["seed"] == int(seed))
    model = ablation.load_model(path)
    assert model.config == ablation.model_config(label)
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
