import ast
import hashlib
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import papermill
import pytest
import torch

from invattn import lesson, plots, run_notebooks


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        lesson.setup(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device_resolves_on_a_gpu():
    assert lesson.setup(device="cuda").device.type == "cuda"


def test_unknown_device_says_what_is_allowed():
    with pytest.raises(ValueError, match="'cpu', 'cuda', 'cuda:N' or 'auto'"):
        lesson.resolve_device("tpu")


def test_setup_seeds_everything():
    lesson.setup(seed=3)
    a = torch.rand(3)
    lesson.setup(seed=3)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="seed"):
        lesson.setup(seed=-1)


def test_saved_figures_are_byte_stable(tmp_path):
    digests = []
    for _ in range(2):
        plots.use_lesson_style()
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [1, 0, 1], label="a line")
        ax.legend()
        png = plots.savefig(fig, "stable", svg=True, folder=tmp_path)
        plt.close(fig)
        digests.append(
            (hashlib.sha256(png.read_bytes()).hexdigest(), hashlib.sha256((tmp_path / "stable.svg").read_bytes()).hexdigest())
        )
    assert digests[0] == digests[1]
    with pytest.raises(ValueError, match="bare file stem"):
        plots.savefig(plt.figure(), "x.png", folder=tmp_path)


def test_progress_is_plain_text_when_headless(monkeypatch, capsys):
    monkeypatch.setenv("INVATTN_PLAIN_PROGRESS", "1")
    for _ in lesson.progress(range(3), desc="steps"):
        pass
    assert "steps: 100%" in capsys.readouterr().out


def test_runner_refuses_unknown_parameters():
    notebook = ROOT / "notebooks" / "01_invertible_residual_networks.ipynb"
    with pytest.raises(SystemExit, match="unknown parameter.*colour.*this lesson takes: device"):
        run_notebooks.check_known(notebook, {"colour": "red"})
    run_notebooks.check_known(notebook, {"device": "cpu"})  # a known one passes


def test_runner_selects_lessons_by_prefix():
    folder = ROOT / "notebooks"
    assert [p.name[:2] for p in run_notebooks.find_notebooks(folder, "01")] == ["01"]
    with pytest.raises(SystemExit, match="no lesson matches"):
        run_notebooks.find_notebooks(folder, "99")


def test_runner_reads_values_as_yaml():
    assert run_notebooks.parse_parameters([["steps", "10"], ["device", "cuda"], ["coeffs", "[0.5, 0.9]"]]) == {
        "steps": 10, "device": "cuda", "coeffs": [0.5, 0.9]
    }


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_lessons_follow_the_contract(notebook):
    nb = nbformat.read(notebook, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "no cell tagged 'parameters'"
    assert all(c.execution_count is not None for c in code), "stored without outputs: run `make run`"
    assert any("# NBVAL_CHECK_OUTPUT" in c.source for c in code), "no cell marked for nbval to compare"
    for cell in code:
        for output in cell.outputs:
            assert output.output_type != "error", f"stored error in {notebook.name}"
            text = output.get("text", "")
            assert not (output.get("name") == "stderr" and "Warning" in text), f"stored warning: {text[:200]}"
    assert "lesson.setup(" in "".join(c.source for c in code), "no set-up cell calling invattn.lesson.setup"
    for cell in nb.cells:  # a LaTeX command written through an unescaped Python string ("\to", "\frac") breaks
        assert not set(cell.source) & set("\t\x07\x08\x0b\x0c"), f"control character in {cell.source[:80]!r}"
    # papermill must see every parameter (a comment it cannot parse hides the name, and `-p name` is then refused)
    parameters = next(c for c in code if "parameters" in c.metadata.get("tags", []))
    assigned = {t.id for node in ast.parse(parameters.source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert set(papermill.inspect_notebook(str(notebook))) == assigned
