"""Training: the smoke preset end to end, exact resume after SIGKILL, two-process torchrun, clear errors."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from invattn import train as training
from invattn.classifiers import CLASSIFIER_PRESETS, classifier_preset
from invattn.data import DatasetNotFoundError, digits
from invattn.models import PRESET_TRAINING, PRESETS, ResidualFlow

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def command(*args):
    return [sys.executable, "-m", "invattn.train", "--preset", "smoke", "--no-progress", *args]


@pytest.mark.compat
def test_smoke_training_learns_and_writes_everything(tmp_path):
    result = training.train(
        "smoke", tmp_path, steps=8, progress_bar=False, training_overrides=dict(checkpoint_every=4, samples_per_epoch=4)
    )
    history = result["history"]
    assert [h["step"] for h in history] == list(range(1, 9))
    assert history[-1]["bits_per_dim"] < history[0]["bits_per_dim"]
    for name in ("checkpoint.pt", "metrics.jsonl", "curves.png", "samples_epoch1.png"):
        assert (tmp_path / name).is_file()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 8
    state = training.load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 8 and not list(tmp_path.glob(".*tmp*"))
    model = result["model"].eval()
    assert max(model.lipschitz_bounds()) < 1
    x = digits()[0][:4] - 0.5 + torch.rand(4, 1, 8, 8) / 256
    _, error = model.reconstruct(x, tol=1e-6)
    assert error < 1e-5


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    steps = ["--steps", "24", "--checkpoint-every", "4"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(command("--out", str(straight), *steps), check=True, env=ENV, cwd=ROOT, capture_output=True)
    process = subprocess.Popen(
        command("--out", str(killed), *steps), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 6:  # past the first checkpoint (step 4)
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = training.load_checkpoint(killed / "checkpoint.pt")["step"]
    assert 4 <= saved < 24
    subprocess.run(command("--out", str(killed), "--resume"), check=True, env=ENV, cwd=ROOT, capture_output=True)
    a = training.load_checkpoint(straight / "checkpoint.pt")
    b = training.load_checkpoint(killed / "checkpoint.pt")
    assert a["step"] == b["step"] == 24
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert [h["bits_per_dim"] for h in a["history"]] == [h["bits_per_dim"] for h in b["history"]]
    logged = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 25))  # replayed steps are not logged twice


def test_torchrun_two_cpu_processes_stay_in_step(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "invattn.train",
            "--preset",
            "smoke",
            "--no-progress",
            "--out",
            str(tmp_path),
            "--steps",
            "6",
            "--checkpoint-every",
            "2",
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    # every checkpoint compared the two ranks' weights and buffers bit for bit (training raises otherwise)
    state = training.load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 6
    model = ResidualFlow(PRESETS["smoke"])
    model.load_state_dict(state["model"])


def test_bad_requests_are_clear(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="Nothing is downloaded"):
        training.train(
            "smoke", tmp_path, training_overrides=dict(dataset="cifar10", data_root=str(tmp_path)), progress_bar=False
        )
    with pytest.raises(ValueError, match="amp"):
        training.train("smoke", tmp_path, amp=True, progress_bar=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        training.train("smoke", tmp_path / "empty", resume=True, progress_bar=False)
    with pytest.raises(ValueError, match="preset must be one of"):
        training.train("imagenet", tmp_path)


@pytest.mark.compat
def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "checkpoint.pt"
    training.save_checkpoint(path, {"step": 1})
    with pytest.raises(Exception):
        training.save_checkpoint(path, {"step": 2, "bad": lambda: None})  # cannot be pickled mid-write
    assert torch.load(path, weights_only=True)["step"] == 1  # the old checkpoint survives
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_smoke_training_on_gpu_with_bfloat16(tmp_path):
    result = training.train("smoke", tmp_path, steps=4, device="cuda", amp=True, progress_bar=False)
    assert result["history"][-1]["bits_per_dim"] < result["history"][0]["bits_per_dim"] + 1.0


def test_estimator_flags_reach_the_model(tmp_path):
    training.main(
        [
            "--preset",
            "smoke",
            "--no-progress",
            "--out",
            str(tmp_path),
            "--steps",
            "2",
            "--logdet",
            "roulette",
            "--n-terms",
            "2",
            "--neumann-gradient",
        ]
    )
    saved = training.load_checkpoint(tmp_path / "checkpoint.pt")["model_config"]
    assert (saved["logdet"], saved["n_terms"], saved["neumann_gradient"]) == ("roulette", 2, True)
    training.main(
        [
            "--preset",
            "smoke",
            "--no-progress",
            "--out",
            str(tmp_path / "series"),
            "--steps",
            "1",
            "--no-neumann-gradient",
        ]
    )
    assert training.load_checkpoint(tmp_path / "series" / "checkpoint.pt")["model_config"]["neumann_gradient"] is False
    with pytest.raises(SystemExit):
        training.main(
            [
                "--task",
                "classify",
                "--model",
                "irevnet",
                "--preset",
                "smoke",
                "--out",
                str(tmp_path / "c"),
                "--neumann-gradient",
            ]
        )


def test_training_leaves_the_plotting_backend_alone(tmp_path, monkeypatch):
    """Inside a notebook, a backend switch would blank every later figure of the lesson."""
    import matplotlib

    def refuse(*args, **kwargs):
        raise AssertionError("training switched the matplotlib backend")

    monkeypatch.setattr(matplotlib, "use", refuse)
    training.train(
        "smoke", tmp_path, steps=2, progress_bar=False, training_overrides=dict(checkpoint_every=2, samples_per_epoch=4)
    )
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "samples_epoch1.png").is_file()


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from invattn._files import write_atomically

    path = tmp_path / "results.json"
    write_atomically(path, lambda handle: handle.write("old"), binary=False)

    def interrupted(handle):
        handle.write("half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, interrupted, binary=False)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_cosine_schedule_decays_to_zero_and_a_wrong_schedule_is_refused(tmp_path):
    factors = [training.lr_factor(s, warmup=2, schedule="cosine", total_steps=10) for s in range(11)]
    assert factors[0] == pytest.approx(0.5 * 0.5 * (1 + math.cos(0)))  # the ramp's first half, times 1
    assert all(a >= b for a, b in zip(factors[1:], factors[2:])) and factors[10] == pytest.approx(0.0, abs=1e-12)
    assert [training.lr_factor(s, 0, "constant", 10) for s in (0, 9)] == [1.0, 1.0]
    result = training.train(
        "smoke",
        tmp_path / "run",
        task="classify",
        architecture="irevnet",
        steps=8,
        training_overrides=dict(lr_schedule="cosine"),
        progress_bar=False,
    )
    checkpoint = training.load_checkpoint(tmp_path / "run" / training.CHECKPOINT)
    assert checkpoint["train_config"]["lr_schedule"] == "cosine"
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)  # decayed to 0 at step 8
    assert result["model"] is not None
    with pytest.raises(ValueError, match="lr_schedule"):
        training.train("smoke", tmp_path / "bad", training_overrides=dict(lr_schedule="linear"), progress_bar=False)


# every option of python -m invattn.train, and the test that exercises it (this file, test_classifiers, test_faults)
FLAGS = {
    "--task": "test_classifiers: run('--task', 'classify', ...)",
    "--model": "test_classifiers",
    "--preset": "here: command()",
    "--out": "here",
    "--resume": "test_killed_run_resumes_to_the_same_weights",
    "--steps": "here",
    "--epochs": "test_classifiers",
    "--device": "test_settings_flags_reach_the_run",
    "--dataset": "test_classifiers",
    "--data-root": "test_classifiers",
    "--batch-size": "test_settings_flags_reach_the_run",
    "--lr": "test_settings_flags_reach_the_run",
    "--checkpoint-every": "test_killed_run_resumes_to_the_same_weights",
    "--attention": "test_classifiers",
    "--coeff": "test_classifiers",
    "--logdet": "test_estimator_flags_reach_the_model",
    "--n-terms": "test_estimator_flags_reach_the_model",
    "--neumann-gradient": "test_estimator_flags_reach_the_model",
    "--amp": "test_settings_flags_reach_the_run",
    "--no-progress": "here",
}


def test_the_command_line_has_exactly_the_options_the_tests_cover():
    options = {
        option
        for action in training.cli.parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--no-neumann-gradient")
    }
    assert options == set(FLAGS)


def test_settings_flags_reach_the_run(tmp_path, capsys):
    training.main(
        [
            *command("--out", str(tmp_path), "--steps", "2")[3:],
            "--device",
            "cpu",
            "--batch-size",
            "8",
            "--lr",
            "1e-3",
            "--checkpoint-every",
            "1",
        ]
    )
    assert "step 2:" in capsys.readouterr().out
    state = training.load_checkpoint(tmp_path)
    assert (state["train_config"]["batch_size"], state["train_config"]["lr"]) == (8, 1e-3)
    assert state["optimizer"]["param_groups"][0]["lr"] == 1e-3
    with pytest.raises(SystemExit) as stopped:
        training.main([*command("--out", str(tmp_path / "amp"), "--steps", "1")[3:], "--amp"])
    assert stopped.value.code == 2 and "amp=True (bfloat16 autocast) is for CUDA" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        training.main([*command("--out", str(tmp_path / "gone"))[3:], "--device", "cuda:7"])
    assert stopped.value.code == 2


def test_each_task_supplies_its_pieces_and_the_loop_tests_no_task():
    assert set(training.TASKS) == {"density", "classify"}
    for name, task in training.TASKS.items():
        assert isinstance(task, training.Task) and task.name == name
        for method in ("settings", "config_from_dict", "data", "build", "objective", "loss", "shown", "plot_curves"):
            assert getattr(type(task), method) is not getattr(training.Task, method), (name, method)
    source = Path(training.loop.__file__).read_text()
    assert not any(test in source for test in ('== "density"', '== "classify"', "task ==", "isinstance(run.task"))
    # each task's presets sit next to its models: the density model's training beside its PRESETS, the classifiers'
    # one table holding model and training
    assert set(training.TRAINING) == set(PRESETS) == set(PRESET_TRAINING)
    for name, settings in PRESET_TRAINING.items():
        assert training.TRAINING[name] == training.TrainConfig(**settings)

    for name, preset in CLASSIFIER_PRESETS.items():
        assert training.CLASSIFY_TRAINING[name] == training.TrainConfig(**preset.training)
        for architecture in ("irevnet", "iresnet"):
            assert classifier_preset(architecture, name) is preset.models[architecture]
            assert preset.models[architecture].architecture == architecture


def test_a_fresh_run_and_a_resumed_one_draw_the_same_numbers(tmp_path):
    """The loop's order of random draws: 6 steps straight equal 3 steps, a checkpoint, and 3 more resumed."""
    straight = training.train("smoke", tmp_path / "a", steps=6, progress_bar=False)["history"]
    training.train("smoke", tmp_path / "b", steps=3, progress_bar=False)
    resumed = training.train("smoke", tmp_path / "b", resume=True, steps=6, progress_bar=False)["history"]
    assert [h["bits_per_dim"] for h in straight] == [h["bits_per_dim"] for h in resumed]


def test_the_patches_preset_trains_on_the_training_patches(tmp_path, capsys):
    """``python -m invattn.train --preset patches``: the reduced CIFAR-10 layout on the offline photograph patches."""
    from invattn.data import photograph_patches

    assert PRESETS["patches"].in_channels == 3 and PRESETS["patches"].image_size == 32
    assert PRESET_TRAINING["patches"]["dataset"] == "patches"
    training.main(["--preset", "patches", "--out", str(tmp_path), "--steps", "2", "--batch-size", "8", "--no-progress"])
    assert "step 2:" in capsys.readouterr().out
    state = training.load_checkpoint(tmp_path)
    assert state["model_config"] == PRESETS["patches"].to_dict() and state["train_config"]["dataset"] == "patches"
    model, _ = training.load_trained(tmp_path)
    assert max(model.lipschitz_bounds()) < 1 and model.config.attention == ("concat", None, None)
    images = training.training_images(training.TRAINING["patches"], PRESETS["patches"])
    assert torch.equal(images, photograph_patches("train"))  # the training photographs only
