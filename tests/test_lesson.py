import ast
import hashlib
import re
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import papermill
import pytest
import torch

from invattn import lesson, plots, progress, run_notebooks
from invattn._notebooks import lesson_notebooks

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        lesson.setup(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device_resolves_on_a_gpu():
    assert lesson.setup(device="cuda").device.type == "cuda"


def test_unknown_device_says_what_is_allowed():
    with pytest.raises(ValueError, match="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"):
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
            (
                hashlib.sha256(png.read_bytes()).hexdigest(),
                hashlib.sha256((tmp_path / "stable.svg").read_bytes()).hexdigest(),
            )
        )
    assert digests[0] == digests[1]
    with pytest.raises(ValueError, match="bare file stem"):
        plots.savefig(plt.figure(), "x.png", folder=tmp_path)


def test_figures_go_to_the_checkout_or_where_invattn_figures_says(tmp_path, monkeypatch):
    monkeypatch.delenv("INVATTN_FIGURES", raising=False)
    assert plots.figures_dir() == ROOT / "figures"
    monkeypatch.setenv("INVATTN_FIGURES", str(tmp_path / "elsewhere"))
    assert plots.figures_dir() == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()  # made if missing
    assert plots.savefig(plt.figure(), "default_folder") == tmp_path / "elsewhere" / "default_folder.png"
    plt.close("all")
    assert lesson.setup().figures == tmp_path / "elsewhere"


def test_the_lessons_progress_bar_is_the_librarys():
    assert lesson.progress is progress.progress
    assert lesson.HEADLESS_ENV[progress.PLAIN_PROGRESS_VARIABLE] == "1"


def test_progress_is_plain_text_when_headless(monkeypatch, capsys):
    monkeypatch.setenv(progress.PLAIN_PROGRESS_VARIABLE, "1")
    bar = lesson.progress(range(3), desc="steps")
    for _ in bar:
        bar.set_postfix(loss=0.5, refresh=False)  # as the library sets it
    line = capsys.readouterr().out.strip()
    assert line.startswith("steps: 100%") and line.endswith("| 3/3, loss=0.5"), line  # no rate, no elapsed time


def test_setup_pins_threads_and_says_so(capsys):
    threads = torch.get_num_threads()
    try:
        env = lesson.setup(seed=0, threads=2)
        assert torch.get_num_threads() == env.threads == 2
        assert "torch on 2 CPU threads" in capsys.readouterr().out
        env = lesson.setup(seed=0)
        assert torch.get_num_threads() == env.threads == lesson.CPU_THREADS == 1
        assert f"({env.cpu_capability} kernels)" in capsys.readouterr().out
        with pytest.raises(ValueError, match="threads"):
            lesson.setup(threads=0)
    finally:
        torch.set_num_threads(threads)


def test_auto_device_order_and_mps_refused_where_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert lesson.resolve_device("auto").type == "mps"
    assert lesson.resolve_device("mps").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert lesson.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert lesson.resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="no MPS"):
        lesson.resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # a Mac: the lessons stay on the CPU
    assert lesson.setup(device="auto").device.type == "cpu"
    with pytest.raises(ValueError, match="float64"):
        lesson.setup(device="mps")


def test_a_rerun_of_an_unchanged_lesson_changes_no_byte(tmp_path, monkeypatch):
    """Lesson 01 run twice by the runner: the second run leaves the file byte for byte; the first reproduces the
    stored lesson but for timings (and keeps it, when those are within a factor 2)."""
    stored = ROOT / "notebooks" / "01_invertible_residual_networks.ipynb"
    (tmp_path / stored.name).write_bytes(stored.read_bytes())
    monkeypatch.setenv("INVATTN_FIGURES", str(tmp_path / "figures"))
    runs = []
    for _ in range(2):
        run_notebooks.main(["--only", "01", "--folder", str(tmp_path)])
        runs.append((tmp_path / stored.name).read_bytes())
    assert runs[0] == runs[1]
    first, reference = (nbformat.reads(text, as_version=4) for text in (runs[0].decode(), stored.read_text()))
    assert run_notebooks.same_but_timings(first, reference, factor=float("inf")), "the stored lesson is out of date"


def test_rerun_normalisation_ids_streams_and_timings():
    nb = nbformat.v4.new_notebook()
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0}}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "x",
            outputs=[
                nbformat.v4.new_output("display_data", data=view),
                nbformat.v4.new_output("stream", name="stdout", text="took 10 s\n"),
                nbformat.v4.new_output("stream", name="stdout", text="accuracy 98.9%\n"),
            ],
        )
    ]
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {
                "abc": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_def"]}},
                "def": {"model_name": "HTMLModel", "state": {"value": "<code>ok</code>"}},
            },
            "version_major": 2,
        }
    }
    nb.metadata["papermill"] = {"duration": 1.0}
    run_notebooks.strip_run_metadata(nb)
    run_notebooks.stable_widget_ids(nb, "x.ipynb")
    assert "papermill" not in nb.metadata and len(nb.cells[0].outputs) == 2  # the two prints joined
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    root = nb.cells[0].outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert list(state) == [root, state[root]["state"]["children"][0].removeprefix("IPY_MODEL_")]
    assert "abc" not in state and "def" not in state
    slower, wrong = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), 4)), nbformat.reads(nbformat.writes(nb), 4)
    slower.cells[0].outputs[1]["text"] = "took 19 s\naccuracy 98.9%\n"
    assert run_notebooks.same_but_timings(slower, nb)
    slower.cells[0].outputs[1]["text"] = "took 21 s\naccuracy 98.9%\n"
    assert not run_notebooks.same_but_timings(slower, nb)
    ratio = nbformat.reads(nbformat.writes(nb), 4)
    ratio.cells[0].outputs[1]["text"] = "took 10 s\naccuracy 98.9%\n13× faster\n"
    faster = nbformat.reads(nbformat.writes(ratio), 4)
    faster.cells[0].outputs[1]["text"] = "took 10 s\naccuracy 98.9%\n17× faster\n"
    assert run_notebooks.same_but_timings(faster, ratio)  # a ratio of timings is a timing
    minutes = nbformat.reads(nbformat.writes(nb), 4)
    minutes.cells[0].outputs[1]["text"] = "took 0.2 min\naccuracy 98.9%\n"
    assert run_notebooks.same_but_timings(minutes, nb)  # 12 s against 10 s
    ended = nbformat.reads(nbformat.writes(nb), 4)
    ended.cells[0].outputs[1]["text"] = "This run took 10 s.\n"
    minutes.cells[0].outputs[1]["text"] = "This run took 16 s.\n"  # at a sentence's end
    assert run_notebooks.same_but_timings(minutes, ended)
    minutes.cells[0].outputs[1]["text"] = "took 10 ms\naccuracy 98.9%\n"
    assert not run_notebooks.same_but_timings(minutes, nb)
    table, wider = nbformat.reads(nbformat.writes(nb), 4), nbformat.reads(nbformat.writes(nb), 4)
    table.cells[0].outputs[1]["text"] = "model |  step\n    a | 66 ms\n    b | 31 ms\n"
    wider.cells[0].outputs[1]["text"] = "model |   step\n    a | 114 ms\n    b |  34 ms\n"
    assert not run_notebooks.same_but_timings(wider, table)  # the header's padding is not a timing's
    wider.cells[0].outputs[1]["text"] = "model |  step\n    a | 114 ms\n    b |  34 ms\n"
    assert run_notebooks.same_but_timings(wider, table)  # a timing column padded to its widest value
    for before, after in [
        ("N=4 s=2", "N=7 s=2"),
        ("within 4 s.e.", "within 7 s.e."),
        ("1,500 s", "9,500 s"),
        ("err 1.0e-05 s", "err 1.0e-09 s"),
        ("3 min(a, b)", "5 min(a, b)"),
    ]:
        a, b = (nbformat.reads(nbformat.writes(nb), 4) for _ in range(2))
        a.cells[0].outputs[1]["text"], b.cells[0].outputs[1]["text"] = before, after
        assert not run_notebooks.same_but_timings(b, a), before  # numbers that are not durations
    wrong.cells[0].outputs[1]["text"] = "took 10 s\naccuracy 98.8%\n"
    assert not run_notebooks.same_but_timings(wrong, nb)


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
        "steps": 10,
        "device": "cuda",
        "coeffs": [0.5, 0.9],
    }


@pytest.mark.parametrize("notebook", lesson_notebooks(ROOT / "notebooks"), ids=lambda p: p.stem)
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
    for cell in code:  # a figure shown is a figure stored (a backend switch once blanked every later plot)
        if "plt.show()" in cell.source:
            assert any("image/png" in output.get("data", {}) for output in cell.outputs), (
                f"no figure: {cell.source[:80]!r}"
            )
    for cell in nb.cells:  # a LaTeX command written through an unescaped Python string ("\to", "\frac") breaks
        assert not set(cell.source) & set("\t\x07\x08\x0b\x0c"), f"control character in {cell.source[:80]!r}"
    # papermill must see every parameter (a comment it cannot parse hides the name, and `-p name` is then refused)
    parameters = next(c for c in code if "parameters" in c.metadata.get("tags", []))
    assigned = {
        t.id for node in ast.parse(parameters.source).body if isinstance(node, ast.Assign) for t in node.targets
    }
    assert set(papermill.inspect_notebook(str(notebook))) == assigned
    # every parameter is checked behind the one call (device and seed by lesson.setup)
    calls = [
        node
        for cell in code
        for node in ast.walk(
            ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        )
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "check_parameters"
    ]
    assert len(calls) == 1, (
        "the set-up cell checks its parameters with one lesson.check_parameters(globals(), ...) call"
    )
    checked = {keyword.arg for keyword in calls[0].keywords} | {"device", "seed"}
    assert assigned <= checked, f"parameters not checked: {sorted(assigned - checked)}"


def test_check_parameters_reports_every_problem_at_once():
    from invattn import lesson

    namespace = dict(coefficients=[0.5, 1.2], size=7, kind="dott", steps=10, full=True, lr=-1.0, batch=32, n=8)
    with pytest.raises(ValueError) as caught:
        lesson.check_parameters(
            namespace,
            coefficients=lesson.each(lesson.coeff()),
            size=lesson.integer(minimum=4, even=True),
            kind=lesson.choice(("dot", "l2")),
            steps=lesson.integer(maximum=5),
            full=lesson.flag(),
            lr=lesson.positive(),
        )
    message = str(caught.value)
    assert message.startswith("5 lesson parameter problem(s)")
    for expected in (
        "coefficients[1] must be in (0, 1)",
        "size must be even",
        "kind must be one of 'dot', 'l2'",
        "steps must be at most 5",
        "lr must be a positive finite number",
    ):
        assert expected in message
    assert "full" not in message
    # constraints run only when every single parameter is valid, and may then assume valid types
    with pytest.raises(ValueError, match="n must be at least batch"):
        lesson.check_parameters(
            namespace,
            constraints=[(lambda: namespace["n"] >= namespace["batch"], "n must be at least batch")],
            n=lesson.integer(),
            batch=lesson.integer(),
        )
    lesson.check_parameters(namespace, n=lesson.integer(), full=lesson.flag())  # valid: no error
    with pytest.raises(NameError, match="no parameter"):
        lesson.check_parameters(namespace, missing=lesson.integer())
    with pytest.raises(ValueError, match="must not repeat"):
        lesson.check_parameters(dict(kinds=["dot", "dot"]), kinds=lesson.each(lesson.choice(("dot",)), distinct=True))
    with pytest.raises(ValueError, match="must not be empty"):
        lesson.check_parameters(dict(kinds=[]), kinds=lesson.each(lesson.choice(("dot",))))
    with pytest.raises(ValueError, match="must be a number"):
        lesson.check_parameters(dict(c="0.5"), c=lesson.coeff())
    with pytest.raises(ValueError, match="must be a positive number"):
        lesson.check_parameters(dict(lr=True), lr=lesson.positive())
    import numpy as np

    lesson.check_parameters(dict(n=np.int64(5)), n=lesson.integer())  # numpy integers are integers
    with pytest.raises(ValueError, match="True or False"):
        lesson.check_parameters(dict(full="yes"), full=lesson.flag())


def test_report_run_time_prints_the_time_since_setup(capsys, monkeypatch):
    from invattn import lesson

    monkeypatch.setattr(lesson, "_started", None)
    with pytest.raises(RuntimeError, match="call lesson.setup"):
        lesson.report_run_time()
    lesson.setup(seed=0)
    capsys.readouterr()  # setup's own line
    monkeypatch.setattr(lesson, "_started", lesson.time.perf_counter() - 42.4)
    assert 42 < lesson.report_run_time() < 100
    monkeypatch.setattr(lesson, "_started", lesson.time.perf_counter() - 150)
    lesson.report_run_time()
    first, second = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"This run took 4\d s\.", first) and second == "This run took 2.5 min."
