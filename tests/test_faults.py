"""Faults users of invertible networks have reported, tried on invattn (issue 23): no code runs from a data file,
no silently wrong inverse, lesson parameters read as papermill reads them, a diverging run named as such, what
training wrote loads back, and errors that name their real cause."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import invattn as ia
from invattn import ablation, demos, run_notebooks
from invattn import train as training
from invattn.classifiers import (
    IResNetClassifier,
    IRevNet,
    certified_radius,
    classifier_preset,
    load_classifier,
    save_classifier,
)
from invattn.data import digits
from invattn.models import PRESETS, ResidualFlow

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "invattn.train", "--no-progress", *args],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


class Payload:
    """What a tampered checkpoint carries: unpickling it calls Path.touch(marker), i.e. it runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A real density run of four steps (checkpoints at 2 and 4)."""
    out = tmp_path_factory.mktemp("smoke")
    training.train("smoke", out, steps=4, progress_bar=False, training_overrides=dict(checkpoint_every=2))
    return out


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("classify")
    result = training.train("smoke", out, task="classify", architecture="iresnet", progress_bar=False)
    return out, result


# -- 1. a checkpoint from someone else never runs code -------------------------------------------------------------
def test_a_tampered_checkpoint_is_refused_and_its_payload_never_runs(smoke_run, tmp_path):
    marker = tmp_path / "payload-ran"
    genuine = training.load_checkpoint(smoke_run)  # a genuine checkpoint loads with weights_only=True
    assert genuine["step"] == 4 and isinstance(genuine["rng"]["numpy"]["keys"], torch.Tensor)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({**genuine, "history": [Payload(marker)]}, run / "checkpoint.pt")

    with pytest.raises(ValueError, match="refused.*pickled"):
        training.load_checkpoint(run / "checkpoint.pt")
    with pytest.raises(ValueError, match="refused"):
        training.load_trained(run)
    with pytest.raises(ValueError, match="refused"):
        load_classifier(run / "checkpoint.pt")
    with pytest.raises(ValueError, match="refused"):
        ablation.load_model(run / "checkpoint.pt")
    resumed = cli("--out", str(run), "--resume")
    assert resumed.returncode == 2 and "refused" in resumed.stderr, resumed.stderr[-2000:]
    assert not marker.exists()

    # the payload is real: the loading the library used to do (weights_only=False) runs it
    torch.load(run / "checkpoint.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "change, says",
    [
        (dict(model_config="x"), "model_config is a str"),
        (dict(step="ten"), "step is a str"),
        (dict(train_config={"bogus": 1}), "settings do not build a run.*bogus"),
        (dict(model={}), "weights do not fit"),
    ],
    ids=["config", "step", "settings", "weights"],
)
def test_a_damaged_checkpoint_is_named_as_such(smoke_run, tmp_path, change, says):
    state = training.load_checkpoint(smoke_run)
    torch.save({**state, **change}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=f"damaged training checkpoint.*{says}"):
        training.load_trained(tmp_path)


@pytest.mark.compat
def test_a_refusal_names_the_object_the_file_would_run(smoke_run, tmp_path):
    class System:
        def __reduce__(self):
            return os.system, ("true",)

    torch.save({**training.load_checkpoint(smoke_run), "extra": System()}, tmp_path / "checkpoint.pt")
    with pytest.raises(
        ValueError, match=r"refused: it holds a pickled reference to the Python object \w+\.system"
    ) as caught:
        training.load_checkpoint(tmp_path)
    assert "weights_only" not in str(caught.value)  # never torch's advice to load it unsafely


@pytest.mark.compat
def test_a_checkpoint_with_numpy_random_state_from_before_still_resumes(smoke_run, tmp_path):
    state = training.load_checkpoint(smoke_run)
    numpy_state, python_state = state["rng"]["numpy"], state["rng"]["python"]
    legacy_rng = dict(
        state["rng"],
        numpy=(
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        ),
        python=(python_state["version"], tuple(python_state["words"]), python_state["gauss_next"]),
    )
    run = tmp_path / "legacy"
    run.mkdir()
    torch.save({**state, "rng": legacy_rng}, run / "checkpoint.pt")
    resumed = training.train("smoke", run, resume=True, steps=6, progress_bar=False)
    assert resumed["history"][-1]["step"] == 6


@pytest.mark.compat
def test_the_random_state_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    saved = training.rng_state()
    expected = (torch.rand(2), np.random.rand(2), __import__("random").random())
    training.save_checkpoint(tmp_path / "rng.pt", dict(rng=saved))
    training.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    again = (torch.rand(2), np.random.rand(2), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


# -- 2. batch normalisation in training mode: the inverse refuses and changes nothing ------------------------------
def test_irevnet_in_training_mode_refuses_to_invert_and_keeps_its_state():
    torch.manual_seed(0)
    model = IRevNet(classifier_preset("irevnet", "digits"))
    x = digits()[0][:32] - 0.5
    with torch.no_grad():
        phi = model.features(x)  # training mode, as after construction or train()
        before = {name: value.clone() for name, value in model.state_dict().items()}
        with pytest.raises(RuntimeError, match=r"BatchNorm2d.*training mode.*model\.eval\(\)"):
            model.inverse(phi[:4])
        assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
        model.eval()
        phi = model.features(x)
        x_hat = model.inverse(phi[:4])  # a sub-batch inverts exactly in eval mode
    assert float((x_hat - x[:4]).norm() / x[:4].norm()) < 1e-5


@pytest.mark.parametrize(
    "make",
    [lambda: nn.BatchNorm2d(2), lambda: nn.Dropout(0.2), lambda: nn.InstanceNorm2d(2, track_running_stats=True)],
    ids=["BatchNorm2d", "Dropout", "InstanceNorm2d"],
)
def test_every_block_refuses_a_branch_that_changes_in_training_mode(make, request):
    name = request.node.callspec.id
    blocks = [
        ia.AffineCoupling(nn.Sequential(make(), nn.Conv2d(2, 4, 3, padding=1)), 4),
        ia.AdditiveCoupling(nn.Sequential(make(), nn.Conv2d(2, 2, 3, padding=1)), 4),
        ia.InvertibleResidual(nn.Sequential(nn.Conv2d(4, 2, 1), make(), nn.Conv2d(2, 4, 1))),
    ]
    y = torch.randn(8, 4, 5, 5)
    for block in blocks:
        before = {key: value.clone() for key, value in block.state_dict().items()}
        with pytest.raises(RuntimeError, match=rf"{name}.*training mode.*model\.eval\(\)"):
            block.inverse(y[:1])
        assert all(torch.equal(before[key], value) for key, value in block.state_dict().items())
        block.eval()
        if not isinstance(block, ia.InvertibleResidual):  # the residual branch here has no certified bound
            with torch.no_grad():
                assert float((block.inverse(block(y)) - y).abs().max()) < 1e-4


class RunningMean(nn.Module):
    """A layer the library does not know that updates a buffer in training mode, as a hand-written norm would."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(2))

    def forward(self, x):
        if self.training:
            self.mean.mul_(0.9).add_(0.1 * x.mean((0, 2, 3)))
        return x - self.mean.view(1, -1, 1, 1)


class FunctionalDropout(nn.Module):
    def forward(self, x):
        return nn.functional.dropout(x, 0.5, self.training)


@pytest.mark.parametrize(
    "make, says",
    [
        (nn.RReLU, "RReLU.*random"),
        (RunningMean, "RunningMean.*defined outside torch"),
        (FunctionalDropout, "FunctionalDropout.*defined outside torch"),
    ],
    ids=["RReLU", "buffer", "functional-dropout"],
)
def test_layers_the_library_does_not_know_are_caught_by_what_they_do(make, says):
    blocks = [
        ia.AdditiveCoupling(nn.Sequential(nn.Conv2d(2, 2, 1), make()), 4),
        ia.InvertibleResidual(nn.Sequential(nn.Conv2d(4, 2, 1), make(), nn.Conv2d(2, 4, 1))),
    ]
    y = torch.randn(4, 4, 3, 3)
    for block in blocks:
        before = {key: value.clone() for key, value in block.state_dict().items()}
        random_state = torch.get_rng_state()
        with pytest.raises(RuntimeError, match=rf"{says}.*model\.eval\(\)"):
            block.inverse(y, **({} if isinstance(block, ia.AdditiveCoupling) else dict(allow_uncertified=True)))
        assert all(torch.equal(before[key], value) for key, value in block.state_dict().items())
        assert torch.equal(random_state, torch.get_rng_state())  # put back as it was


def test_a_known_looking_layer_that_changes_state_is_caught_and_rolled_back():
    """The second line of defence: a layer that passes the type checks (here one posing as a torch layer) but changes
    a parameter, a buffer or a generator during the inverse is refused and everything is put back."""

    class Drifting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(2), requires_grad=False)
            self.generator = torch.Generator().manual_seed(0)

        def forward(self, x):
            self.scale.add_(0.1)
            return x * self.scale.view(1, -1, 1, 1) + 1e-3 * torch.randn(x.shape, generator=self.generator)

    Drifting.__module__ = "torch.nn.modules.drifting"
    block = ia.AdditiveCoupling(nn.Sequential(nn.Conv2d(2, 2, 1), Drifting()), 4)
    before = {key: value.clone() for key, value in block.state_dict().items()}
    generator_state = block.f[1].generator.get_state()
    with pytest.raises(RuntimeError, match=r"changed 1\.scale.*drew random numbers.*model\.eval\(\)"):
        block.inverse(torch.randn(2, 4, 3, 3))
    assert all(torch.equal(before[key], value) for key, value in block.state_dict().items())
    assert torch.equal(generator_state, block.f[1].generator.get_state())


def test_batch_norm_without_running_statistics_is_refused_even_in_eval_mode():
    block = ia.AdditiveCoupling(
        nn.Sequential(nn.BatchNorm2d(2, track_running_stats=False), nn.Conv2d(2, 2, 1)), 4
    ).eval()
    with pytest.raises(RuntimeError, match="track_running_stats"):
        block.inverse(torch.randn(2, 4, 3, 3))


# -- 5. lesson parameters from the command line, as papermill reads them -------------------------------------------
@pytest.mark.parametrize(
    "text, value",
    [
        ("1e-3", 0.001),
        ("0.001", 0.001),
        ("1E+4", 1e4),
        (".5", 0.5),
        ("12", 12),
        ("-3", -3),
        ("cuda", "cuda"),
        ("digits", "digits"),
        ("True", True),
        ("False", False),
        ("None", None),
        # papermill's -p keeps these as text; lesson 08 takes attention="none"
        ("none", "none"),
        ("false", "false"),
        ("null", "null"),
        ("yes", "yes"),
        ("0x10", "0x10"),
    ],
)
def test_parameters_are_read_as_papermill_reads_them(text, value):
    from papermill.cli import _resolve_type  # papermill's own reading of -p NAME VALUE

    parsed = run_notebooks.parse_value(text)
    assert parsed == value and type(parsed) is type(value)
    assert parsed == _resolve_type(text) and type(parsed) is type(_resolve_type(text))


@pytest.mark.parametrize(
    "text, value",
    [
        ("[0.5, 0.9]", [0.5, 0.9]),
        ("[1e-3, 2]", [0.001, 2]),
        ("{lr: 1e-3}", {"lr": 0.001}),
        ("[none, True, yes, .inf, 2026-01-01]", ["none", True, "yes", ".inf", "2026-01-01"]),
    ],
)
def test_list_parameters_read_each_item_by_the_same_rule(text, value):
    assert run_notebooks.parse_value(text) == value


def test_the_runner_passes_typed_parameters_to_the_lesson(monkeypatch):
    seen = {}
    monkeypatch.setattr(
        run_notebooks, "run", lambda notebook, parameters, output: (seen.update(parameters), (0.0, True))[1]
    )
    run_notebooks.main(["--only", "05", "-p", "lr", "1e-3", "-p", "device", "cuda"])
    assert seen == {"lr": 0.001, "device": "cuda"}
    seen.clear()
    run_notebooks.main(["--only", "08", "-p", "attention", "none"])
    assert seen == {"attention": "none"}
    with pytest.raises(SystemExit):
        run_notebooks.main(["--only", "05", "-p", "lr", "[1e-3"])  # a broken list is refused, not passed on as text


def test_the_lessons_own_check_accepts_what_the_runner_passes():
    from invattn import lesson

    parsed = {"lr": run_notebooks.parse_value("1e-3"), "device": run_notebooks.parse_value("cpu")}
    lesson.check_parameters(dict(parsed), lr=lesson.positive(), device=lesson.text())


# -- 6. a diverging run is named as such, and no checkpoint of it is written ---------------------------------------
def test_divergence_is_named_with_its_step_and_the_last_finite_checkpoint_is_kept(tmp_path):
    run = tmp_path / "run"
    training.train("smoke", run, steps=4, progress_bar=False, training_overrides=dict(checkpoint_every=2))
    good = training.load_checkpoint(run)
    diverged = cli("--out", str(run), "--resume", "--lr", "30", "--steps", "12")
    assert diverged.returncode == 2
    assert "training diverged at step" in diverged.stderr and "(step 4)" in diverged.stderr
    assert "Lower the learning rate (lr=30" in diverged.stderr and "--resume --lr SMALLER" in diverged.stderr
    kept = training.load_checkpoint(run)
    assert kept["step"] == 4 and all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])
    training.train(out=run, resume=True, steps=6, training_overrides=dict(lr=1e-3), progress_bar=False)
    resumed = training.load_checkpoint(run)
    assert resumed["step"] == 6 and resumed["train_config"]["lr"] == 1e-3
    assert all(bool(torch.isfinite(v).all()) for v in resumed["model"].values() if v.is_floating_point())


def test_a_checkpoint_is_never_written_for_weights_whose_loss_overflows(tmp_path):
    """At lr = 20 the first step's weights give finite latents of ~1e32 whose prior log-density overflows: a resumed
    run would diverge at once whatever its learning rate, so that checkpoint is refused."""
    with pytest.raises(training.TrainingDiverged, match="diverged at step 1.*non-finite loss"):
        training.train("smoke", tmp_path, training_overrides=dict(lr=20.0, checkpoint_every=1), progress_bar=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_divergence_from_the_start_raises_training_diverged(tmp_path):
    with pytest.raises(training.TrainingDiverged, match=r"diverged at step \d+.*no checkpoint was written") as caught:
        training.train("smoke", tmp_path, training_overrides=dict(lr=30.0), progress_bar=False)
    assert caught.value.last_checkpoint_step == 0 and not (tmp_path / "checkpoint.pt").exists()


def test_non_finite_training_data_is_named_as_bad_data(tmp_path, monkeypatch):
    real = training.DensityTask.data

    def damaged(self, *args):
        images, labels, test = real(self, *args)
        images = images.clone()
        images[3, 0, 2, 2] = float("nan")
        return images, labels, test

    monkeypatch.setattr(training.DensityTask, "data", damaged)
    with pytest.raises(ValueError, match=r"1 training image\(s\).*NaN"):
        training.train("smoke", tmp_path, progress_bar=False)


def test_resume_refuses_settings_it_would_ignore(smoke_run):
    with pytest.raises(ValueError, match="only steps and lr can be changed.*batch_size"):
        training.train("smoke", smoke_run, resume=True, training_overrides=dict(batch_size=8), progress_bar=False)
    with pytest.raises(ValueError, match="only steps and lr"):
        training.train("smoke", smoke_run, resume=True, model_overrides=dict(width=8), progress_bar=False)


# -- 8. what training wrote loads back --------------------------------------------------------------------------
def test_a_trained_classifier_loads_from_its_run_folder(classify_run):
    out, result = classify_run
    x = digits()[0][:16] - 0.5
    with torch.no_grad():
        expected = result["model"].eval()(x)
    for path in (out, out / "checkpoint.pt"):
        model, record = load_classifier(path)
        assert isinstance(model, IResNetClassifier) and not model.training
        assert record["task"] == "classify" and record["step"] == result["history"][-1]["step"]
        with torch.no_grad():
            assert torch.equal(model(x), expected)
    model, record = training.load_trained(out)
    assert isinstance(model, IResNetClassifier) and record["task"] == "classify" and record["preset"] == "smoke"


@pytest.mark.compat
def test_a_trained_density_model_loads_from_its_run_folder(smoke_run):
    model, record = training.load_trained(smoke_run)
    assert isinstance(model, ResidualFlow) and not model.training and record["step"] == 4
    assert model.config == PRESETS["smoke"]
    assert isinstance(ablation.load_model(smoke_run / "checkpoint.pt"), ResidualFlow)
    with pytest.raises(ValueError, match="holds a density model.*load_trained"):
        load_classifier(smoke_run / "checkpoint.pt")


def test_loaders_name_a_missing_device_not_a_damaged_file(smoke_run):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for load in (training.load_trained, load_classifier, ablation.load_model):
        with pytest.raises(ValueError, match="no CUDA GPU"):
            load(smoke_run / "checkpoint.pt", "cuda")


# -- every error names its real cause ---------------------------------------------------------------------------
def test_a_wrapped_model_is_refused_with_the_fix():
    model = IResNetClassifier(classifier_preset("iresnet", "smoke"))
    with pytest.raises(TypeError, match=r"DataParallel.*model\.module"):
        save_classifier(nn.DataParallel(model), "unused.pt")
    with pytest.raises(TypeError, match=r"DataParallel.*model\.module"):
        certified_radius(nn.DataParallel(model), torch.rand(1, 1, 8, 8) - 0.5)
    flow = ResidualFlow(PRESETS["smoke"])
    with pytest.raises(TypeError, match=r"DataParallel.*model\.module"):
        ablation.held_out_bits_per_dim(nn.DataParallel(flow))
    with pytest.raises(TypeError, match=r"DataParallel.*model\.module"):
        demos.latent_state(nn.DataParallel(flow), digits()[0][:2])
    with pytest.raises(TypeError, match=r"DataParallel.*\.module"):
        demos.two_roads_state(
            {
                "i-RevNet": IRevNet(classifier_preset("irevnet", "smoke")),
                "i-ResNet": nn.DataParallel(model),
                "ResNet": IResNetClassifier(replace(classifier_preset("iresnet", "smoke"), coeff=None)),
            },
            digits()[0][:2],
        )


def test_images_of_the_wrong_kind_are_named():
    classifier = IResNetClassifier(classifier_preset("iresnet", "smoke"))
    flow = ResidualFlow(PRESETS["smoke"])
    pixels = (digits()[0][:2] * 16).to(torch.uint8)
    for forward in (classifier, flow.latents):
        with pytest.raises(TypeError, match="floating-point tensor"):
            forward(pixels)
        with pytest.raises(TypeError, match="torch.Tensor"):
            forward(pixels.numpy())
        with pytest.raises(TypeError, match=r"float64 but the model computes in torch.float32"):
            forward(pixels.double())
        with pytest.raises(ValueError, match="empty batch"):
            forward(torch.zeros(0, 1, 8, 8))
