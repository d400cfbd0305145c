"""Coupling blocks, i-RevNet, the i-ResNet classifier, certified radii and classification training."""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import invattn as ia
from invattn import AdditiveCoupling, AffineCoupling, AttentionCoupling, InjectivePad
from invattn import train as training
from invattn.classifiers import (
    ClassifierConfig,
    IResNetClassifier,
    IRevNet,
    build_classifier,
    certified_radius,
    classifier_preset,
    pgd_attack,
)
from invattn.data import DatasetNotFoundError, load_labelled

ROOT = Path(__file__).resolve().parent.parent


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def _conv_f(half: int, out: int | None = None) -> nn.Module:
    return nn.Sequential(nn.Conv2d(half, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, out or half, 3, padding=1))


# -- coupling blocks -------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    half=st.integers(1, 4),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    batch=st.integers(1, 3),
    affine=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_property_coupling_round_trip_is_exact_in_float64(half, height, width, batch, affine, seed):
    torch.manual_seed(seed)
    channels = 2 * half
    block = AffineCoupling(_conv_f(half, channels), channels) if affine else AdditiveCoupling(_conv_f(half), channels)
    block = block.double()
    x = 3 * torch.randn(batch, channels, height, width, dtype=torch.float64)
    y = block(x)
    assert y.shape == x.shape
    assert _relative(block.inverse(y), x) <= 1e-10
    assert _relative(block(block.inverse(y)), y) <= 1e-10


@pytest.mark.parametrize("affine", [False, True])
def test_coupling_log_determinant_is_exact(affine):
    torch.manual_seed(0)
    block = (AffineCoupling(_conv_f(2, 4), 4) if affine else AdditiveCoupling(_conv_f(2), 4)).double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    for i in range(2):
        jacobian = torch.func.jacrev(lambda v: block(v[None])[0])(x[i]).reshape(36, 36)
        exact = torch.linalg.slogdet(jacobian).logabsdet
        assert float(block.logdet(x)[i].detach()) == pytest.approx(float(exact), abs=1e-10)
    if not affine:
        assert torch.equal(block.logdet(x), torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("affine", [False, True])
def test_coupling_gradcheck(affine):
    torch.manual_seed(0)
    block = (AffineCoupling(_conv_f(1, 2), 2) if affine else AdditiveCoupling(_conv_f(1), 2)).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))
    assert torch.autograd.gradcheck(block.inverse, (x,))


@pytest.mark.parametrize("kind", ia.PAPER_KINDS)
def test_attention_coupling_inverts_the_unbounded_paper_attention(kind):
    """The paper's attention has no Lipschitz bound (inf), yet inside a coupling it inverts exactly."""
    torch.manual_seed(0)
    block = AttentionCoupling(kind, 8, variant="paper").double().eval()
    assert block.f.lipschitz_bound() == math.inf
    x = 5 * torch.randn(2, 8, 4, 4, dtype=torch.float64)
    assert _relative(block.inverse(block(x)), x) <= 1e-10


def test_attention_coupling_takes_certified_kinds_too():
    block = AttentionCoupling("l2", 6, variant="certified").double()
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    assert _relative(block.inverse(block(x)), x) <= 1e-10


def test_injective_pad_is_injective_not_bijective():
    pad = InjectivePad(3, 8)
    x = torch.randn(2, 3, 4, 4)
    y = pad(x)
    assert y.shape == (2, 8, 4, 4) and torch.equal(pad.inverse(y), x)
    assert torch.equal(pad.distance_from_range(y), torch.zeros(2))
    off = y.clone()
    off[:, 5] = 1.0
    assert torch.equal(pad.inverse(off), x)  # the padded channels are dropped, not checked
    assert float(pad.distance_from_range(off)[0]) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="no log-determinant"):
        pad.logdet(x)
    with pytest.raises(ValueError, match="adds channels"):
        InjectivePad(4, 3)


def test_coupling_errors_are_clear():
    with pytest.raises(ValueError, match="odd"):
        AdditiveCoupling(nn.Identity(), 3)
    block = AdditiveCoupling(nn.Identity(), 4)
    with pytest.raises(ValueError, match=r"\[B, 4, \.\.\.\]"):
        block(torch.randn(2, 6, 3, 3))
    with pytest.raises(ValueError, match="non-finite"):
        block(torch.full((1, 4, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="keep the half's shape"):
        AdditiveCoupling(nn.Conv2d(2, 3, 1), 4)(torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match="ŝ and t"):
        AffineCoupling(nn.Conv2d(2, 2, 1), 4)(torch.randn(1, 4, 2, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        AdditiveCoupling(lambda x: x, 4)


# -- i-RevNet ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        classifier_preset("irevnet", "smoke"),
        classifier_preset("irevnet", "digits"),
        # the bijective variant (b): one initial squeeze makes 4 channels, exactly 2·2; then 16 = 2·8
        ClassifierConfig(
            in_channels=1,
            image_size=8,
            blocks=(2, 2),
            strides=(1, 2),
            channels=(2, 8),
            hidden=4,
            init_downsampling=1,
            injective=False,
        ),
        ClassifierConfig(
            in_channels=1,
            image_size=8,
            blocks=(1, 1),
            strides=(1, 2),
            channels=(4, 16),
            hidden=4,
            attention="dot",
            attention_variant="paper",
        ),
    ],
    ids=["smoke", "digits", "bijective", "paper-attention"],
)
def test_irevnet_inverse_is_exact(config):
    torch.manual_seed(0)
    model = IRevNet(config).double().eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) - 0.5
    phi = model.features(x)
    assert phi.shape[1:] == model.feature_shape
    assert model(x).shape == (3, 10)
    assert _relative(model.inverse(phi), x) <= 1e-10
    model32 = model.float()
    assert _relative(model32.inverse(model32.features(x.float())), x.float()) <= 1e-5


def test_irevnet_paper_configuration_builds():
    model = build_classifier(classifier_preset("irevnet", "cifar10-paper"))
    assert [len(stage) for stage in model.stages] == [18, 18, 18]
    assert [shape[0] for shape in model.shapes] == [32, 128, 512]  # 16-64-256 per half
    assert isinstance(model.pads[0], InjectivePad)


def test_bijective_variant_refuses_padding():
    with pytest.raises(ValueError, match="injective padding"):
        IRevNet(
            ClassifierConfig(in_channels=1, image_size=8, blocks=(1,), strides=(1,), channels=(4,), injective=False)
        )
    with pytest.raises(ValueError, match="channels only grow"):
        IRevNet(ClassifierConfig(in_channels=4, image_size=8, blocks=(1,), strides=(1,), channels=(1,)))
    with pytest.raises(ValueError, match="squeezed"):
        ClassifierConfig(image_size=12, strides=(1, 2, 2), init_downsampling=1)


def test_classifier_input_and_feature_shapes_are_checked():
    model = IRevNet(classifier_preset("irevnet", "smoke"))
    with pytest.raises(ValueError, match="takes images"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="features are"):
        model.inverse(torch.rand(2, 3, 4, 4))


# -- the i-ResNet classifier ------------------------------------------------------------------------------------


def test_iresnet_classifier_inverts_to_its_tolerance_and_reports():
    torch.manual_seed(0)
    model = IResNetClassifier(classifier_preset("iresnet", "smoke")).double().eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) - 0.5
    x_hat, infos = model.inverse(model.features(x), tol=1e-12, return_info=True)
    assert len(infos) == 2 and all(info.converged for info in infos)
    assert _relative(x_hat, x) <= 1e-10


def test_iresnet_bounds_hold_against_measured_constants():
    torch.manual_seed(1)
    model = IResNetClassifier(classifier_preset("iresnet", "smoke")).double().eval()
    x = torch.rand(8, 1, 8, 8, dtype=torch.float64) - 0.5
    features = ia.estimate_lipschitz(model.features, x, n_iterations=30)
    logits = ia.estimate_lipschitz(model, x, n_iterations=30)
    assert 0 < features <= model.lipschitz_bound()
    assert 0 < logits <= model.logit_lipschitz_bound()


def test_certified_radius_survives_an_attack():
    """PGD inside the certified ℓ₂ ball never changes a prediction (the radius is a proof, the attack a check)."""
    torch.manual_seed(2)
    model = IResNetClassifier(classifier_preset("iresnet", "smoke")).double().eval()
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64) - 0.5
    radius, predicted = certified_radius(model, x)
    assert (radius > 0).any()
    assert not pgd_attack(model, x, predicted, 0.999 * radius, steps=40).any()
    assert pgd_attack(model, x, predicted, 20 * radius, steps=40).any()  # the attack itself is not toothless


def test_certified_radius_refuses_models_without_a_bound():
    with pytest.raises(ValueError, match="no"):
        certified_radius(IRevNet(classifier_preset("irevnet", "smoke")), torch.rand(1, 1, 8, 8))
    unconstrained = IResNetClassifier(
        ClassifierConfig(**{**classifier_preset("iresnet", "smoke").to_dict(), "coeff": None})
    )
    with pytest.raises(ValueError, match="no"):
        certified_radius(unconstrained, torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="no certified Lipschitz bound"):
        unconstrained.lipschitz_bound()


def test_the_unconstrained_resnet_can_fail_to_invert():
    """Without the constraint a block may not be invertible: scaled-up weights make the fixed-point iteration
    diverge, and the solver reports it instead of returning a wrong x silently."""
    torch.manual_seed(3)
    config = ClassifierConfig(**{**classifier_preset("iresnet", "smoke").to_dict(), "coeff": None})
    model = IResNetClassifier(config).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(6.0)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64) - 0.5
    with pytest.raises(ia.InversionError):
        model.inverse(model.features(x), tol=1e-10, max_iter=50)
    x_hat, infos = model.inverse(model.features(x), tol=1e-10, max_iter=50, on_failure="return", return_info=True)
    assert not all(info.converged for info in infos)


# -- data and training -----------------------------------------------------------------------------------------


def test_labelled_digits_split_and_missing_data_sets():
    train_x, train_y = load_labelled("digits", split="train")
    test_x, test_y = load_labelled("digits", split="test")
    assert len(train_x) + len(test_x) == 1797 and len(test_x) == 360
    assert train_x.shape[1:] == (1, 8, 8) and set(test_y.tolist()) == set(range(10))
    with pytest.raises(DatasetNotFoundError, match="dataset='digits'"):
        load_labelled("cifar10", "/nonexistent-folder")
    with pytest.raises(ValueError, match="for classification"):
        load_labelled("photos")


@pytest.mark.parametrize("architecture", ["irevnet", "iresnet"])
def test_classifier_training_runs_resumes_exactly_and_logs(tmp_path, architecture):
    straight = training.train(
        "smoke",
        tmp_path / "a",
        steps=6,
        progress_bar=False,
        task="classify",
        architecture=architecture,
        training_overrides=dict(checkpoint_every=3),
    )
    training.train(
        "smoke",
        tmp_path / "b",
        steps=3,
        progress_bar=False,
        task="classify",
        architecture=architecture,
        training_overrides=dict(checkpoint_every=3),
    )
    resumed = training.train("smoke", tmp_path / "b", steps=6, resume=True, progress_bar=False)
    a, b = straight["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(straight["history"]) == strip(resumed["history"])  # held-out accuracy only at epoch ends
    assert 0 <= straight["test_accuracy"] <= 1
    assert (tmp_path / "a" / "curves.png").is_file()
    assert training.load_checkpoint(tmp_path / "a" / "checkpoint.pt")["task"] == "classify"


def test_classifier_options_work(tmp_path):
    result = training.train(
        "smoke",
        tmp_path,
        steps=2,
        progress_bar=False,
        task="classify",
        architecture="iresnet",
        model_overrides=dict(coeff=0.5),
        training_overrides=dict(optimizer="sgd", weight_decay=5e-4, lr=0.05),
    )
    model = result["model"].eval()
    assert model.config.coeff == 0.5
    assert all(block.branch_lipschitz_bound() <= 0.5 for stage in model.stages for block in stage)
    assert isinstance(result["model"], IResNetClassifier)
    with pytest.raises(ValueError, match="needs a model"):
        training.train("smoke", tmp_path, task="classify")
    with pytest.raises(ValueError, match="batch_size"):
        training.train(
            "smoke", tmp_path, task="classify", architecture="irevnet", training_overrides=dict(batch_size=0)
        )
    with pytest.raises(ValueError, match="resume continues it as saved"):
        training.train("smoke", tmp_path, resume=True, task="classify", architecture="irevnet")  # an iresnet run
    with pytest.raises(ValueError, match="weight_decay"):
        training.train(
            "smoke", tmp_path, task="classify", architecture="irevnet", training_overrides=dict(weight_decay=-1.0)
        )


def test_classify_command_line(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "invattn.train", "--no-progress", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = run(
        "--task",
        "classify",
        "--model",
        "iresnet",
        "--preset",
        "smoke",
        "--coeff",
        "none",
        "--steps",
        "2",
        "--attention",
        "none",
        "--out",
        str(tmp_path / "r"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "held-out accuracy" in done.stdout
    state = training.load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert state["model_config"]["coeff"] is None and state["model_config"]["architecture"] == "iresnet"
    assert "needs --model" in run("--task", "classify", "--preset", "smoke", "--out", str(tmp_path / "x")).stderr
    assert "--coeff" in run("--preset", "smoke", "--coeff", "0.5", "--out", str(tmp_path / "x")).stderr
    assert (
        "--coeff takes"
        in run(
            "--task",
            "classify",
            "--model",
            "iresnet",
            "--preset",
            "smoke",
            "--coeff",
            "big",
            "--out",
            str(tmp_path / "x"),
        ).stderr
    )
    assert (
        "only --steps"
        in run(
            "--task", "classify", "--model", "irevnet", "--preset", "smoke", "--resume", "--out", str(tmp_path / "r")
        ).stderr
    )
    epochs = run(
        "--task", "classify", "--model", "irevnet", "--preset", "smoke", "--epochs", "2", "--out", str(tmp_path / "e")
    )
    assert epochs.returncode == 0 and training.load_checkpoint(tmp_path / "e" / "checkpoint.pt")["step"] == 16
    missing = run(
        "--task",
        "classify",
        "--model",
        "irevnet",
        "--preset",
        "smoke",
        "--dataset",
        "cifar10",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "x"),
    )
    assert missing.returncode == 2 and "Nothing is downloaded" in missing.stderr


def test_classifier_training_under_torchrun_stays_in_step(tmp_path):
    """Two CPU processes, DistributedDataParallel: every checkpoint compares the ranks' weights and buffers (the
    batch-norm statistics of i-RevNet's F included) bit for bit, and training raises if they differ."""
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "invattn.train",
            "--task",
            "classify",
            "--model",
            "irevnet",
            "--preset",
            "smoke",
            "--no-progress",
            "--out",
            str(tmp_path),
            "--steps",
            "4",
            "--checkpoint-every",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-6000:]
    state = training.load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4 and state["task"] == "classify"
    model = build_classifier(ClassifierConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])


def test_configurations_that_cannot_work_are_refused():
    base = classifier_preset("iresnet", "smoke").to_dict()
    cases = [
        (dict(classes=1), "at least 2 classes"),
        (dict(hidden=0), "hidden"),
        (dict(pool="no"), "True or False"),
        (dict(attention="dot", attention_variant="paper"), "must be certified"),
        (dict(attention="dot", coeff=None), "takes no attention"),
        (dict(attention="softmax"), "attention"),
    ]
    for change, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            ClassifierConfig(**{**base, **change})
    with pytest.raises(ValueError, match="exists for"):
        ClassifierConfig(
            **{**classifier_preset("irevnet", "smoke").to_dict(), "attention": "l2", "attention_variant": "paper"}
        )


def test_affine_coupling_refuses_what_would_overflow():
    with pytest.raises(ValueError, match="at most 10"):
        AffineCoupling(nn.Conv2d(1, 2, 1), 2, max_log_scale=100)

    class Huge(nn.Module):
        def forward(self, x):
            return torch.cat([torch.zeros_like(x), torch.full_like(x, 3e38)], dim=1)

    block = AffineCoupling(Huge(), 2)
    with pytest.raises(ValueError, match="overflowed"):
        block(torch.ones(1, 2, 2, 2) * 1e38)


def test_float32_certified_radii_never_exceed_the_float64_proof():
    torch.manual_seed(0)
    model = IResNetClassifier(classifier_preset("iresnet", "smoke")).eval()
    x = torch.rand(64, 1, 8, 8) - 0.5
    radius32, _ = certified_radius(model, x)
    radius64, _ = certified_radius(copy.deepcopy(model).double(), x.double())  # the float64 model: its own proof
    assert radius32.dtype == torch.float32 and bool((radius32.double() <= radius64).all())


@pytest.mark.parametrize(
    "architecture, overrides", [("irevnet", {}), ("iresnet", {"coeff": 0.7}), ("iresnet", {"coeff": None})]
)
def test_a_saved_classifier_loads_with_its_weights_config_and_record(tmp_path, architecture, overrides):
    from dataclasses import replace

    from invattn.classifiers import classifier_preset, load_classifier, save_classifier

    torch.manual_seed(3)
    model = build_classifier(replace(classifier_preset(architecture, "smoke"), **overrides)).eval()
    path = tmp_path / "model.pt"
    save_classifier(model, path, test_accuracy=0.5, epochs=2)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
    loaded, record = load_classifier(path, device="cpu")
    assert record == dict(test_accuracy=0.5, epochs=2) and loaded.config == model.config and not loaded.training
    assert next(loaded.parameters()).device.type == "cpu"
    with pytest.raises(TypeError, match="accuracy is Tensor"):
        save_classifier(model, tmp_path / "other.pt", accuracy=torch.tensor(0.5))
    assert not (tmp_path / "other.pt").exists()
    x = torch.rand(3, 1, 8, 8) - 0.5
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_classifier_names_a_missing_or_foreign_file(tmp_path):
    from invattn.classifiers import load_classifier

    with pytest.raises(FileNotFoundError, match="no classifier at"):
        load_classifier(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a classifier saved by save_classifier"):
        load_classifier(tmp_path / "junk.pt")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a classifier saved by save_classifier"):
        load_classifier(tmp_path / "other.pt")
