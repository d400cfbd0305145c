"""The lessons' cross-references resolve (invattn.course), and the check catches planted broken ones."""

import shutil
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from invattn import colab, course
from invattn._notebooks import lesson_notebooks

ROOT = Path(__file__).resolve().parent.parent


def test_every_cross_reference_of_the_stored_lessons_resolves():
    findings = course.check_lessons(ROOT / "notebooks")
    assert not findings, "\n".join(map(str, findings))


def _lesson(folder: Path, name: str, cells: list) -> None:
    nbformat.write(new_notebook(cells=cells), folder / name)


def test_planted_broken_references_are_found(tmp_path):
    _lesson(
        tmp_path,
        "01_first.ipynb",
        [
            new_markdown_cell(f"# 01 · First\n\n{OPENING}\n\n## 1 · Start\n\nSee section 2 and lesson 02's section 1."),
            new_code_cell("x = 1\nassert x == 1"),
            new_markdown_cell(
                "It is one (asserted). Section 7 does not exist, nor does lesson 42; lesson 02's section 5 neither."
            ),
            new_markdown_cell("## 2 · Next\n\nThe value is positive (asserted below)."),
            new_code_cell("y = 2"),
            new_markdown_cell("Also true (asserted in section 1). And this (asserted in section 2)."),
            new_markdown_cell("Finally a claim (asserted)."),
            _diagram(),
            _ran(),
        ],
    )
    _lesson(
        tmp_path,
        "02_second.ipynb",
        [
            new_markdown_cell(f"# 02 · Second\n\n{OPENING}\n\n## 1 · Only section\n\nBack to lesson 01."),
            _diagram(),
            _ran(),
        ],
    )
    found = {(f.lesson, f.cell, f.text.split(")")[0], f.problem) for f in course.check_lessons(tmp_path, badges=False)}
    assert found == {
        ("01_first.ipynb", 2, "Section 7", "this lesson has no section 7"),
        ("01_first.ipynb", 2, "lesson 42", "there is no such lesson"),
        ("01_first.ipynb", 2, "lesson 02's section 5", "lesson 02 has no section 5"),
        ("01_first.ipynb", 3, "asserted below", "no assert in the code cells below it"),
        ("01_first.ipynb", 5, "asserted in section 2", "no assert in a code cell of section 2"),
        ("01_first.ipynb", 6, "asserted", "no assert in the code cells above it"),
    }


def test_the_command_line_fails_on_a_broken_reference(tmp_path, capsys):
    for path in lesson_notebooks(ROOT / "notebooks"):
        shutil.copy(path, tmp_path / path.name)
    course.main([str(tmp_path)])  # the stored lessons: nothing to report, no exit
    assert "0 finding(s)" in capsys.readouterr().out
    nb = nbformat.read(next(tmp_path.glob("01_*.ipynb")), as_version=4)
    nb.cells.append(new_markdown_cell("As section 12 showed."))
    nbformat.write(nb, next(tmp_path.glob("01_*.ipynb")))
    try:
        course.main([str(tmp_path)])
    except SystemExit as exit:
        assert exit.code == 1
    else:
        raise AssertionError("a broken reference did not fail the check")
    assert "has no section 12" in capsys.readouterr().out


OPENING = "**Time:** about 1 min to read, about 20 s to run on a laptop CPU (the last cell prints this run's time)."


def _ran(seconds: str = "20 s", source: str = "lesson.report_run_time();"):
    cell = new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"This run took {seconds}.\n")]
    return cell


def _printing(text: str, source: str = "print(x)"):
    cell = new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    return cell


def _diagram():
    return new_code_cell('draw_diagram("01_diagram_fixed_point");')


def test_planted_numbers_timings_widgets_and_budgets_are_found(tmp_path):
    _lesson(
        tmp_path,
        "01_first.ipynb",
        [
            new_markdown_cell(f"# 01 · First\n\n{OPENING}\n\n## 1 · Start"),
            _diagram(),
            _printing("concat 0.93, dot 0.33; solved in 7 s\n"),
            new_markdown_cell(
                "Solving took 7 s (printed above), and 12 s on the GPU. The paper reports 3 h, which we "
                "do not print. With $h = 10^{-5} s$ nothing is timed."
            ),
            _ran(),
        ],
    )
    _lesson(
        tmp_path,
        "02_second.ipynb",
        [
            new_markdown_cell(
                "# 02 · Second\n\n**Time:** about 30 min to read, about 5 s to run.\n\n## 1 · Only section\n\n"
                "As lesson 01 measured, concat reached 0.93 and dot 0.50. Lesson 01 showed a 69× gap."
            ),
            _diagram(),
            _printing("state B\n"),
            _ran("20 s"),
        ],
    )
    widget = nbformat.read(tmp_path / "02_second.ipynb", as_version=4)
    widget.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {
                "a": {"model_name": "HTMLModel", "state": {"value": "<code>state A &amp; more</code>"}},
                "b": {"model_name": "HTMLModel", "state": {"value": "<code>state B</code>"}},
                "c": {"model_name": "FloatSliderModel", "state": {"value": 0.5, "description": "c"}},
            }
        }
    }
    widget.cells[2].outputs.append(
        nbformat.v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "a", "version_major": 2, "version_minor": 0}
            },
        )
    )
    nbformat.write(widget, tmp_path / "02_second.ipynb")
    _lesson(
        tmp_path,
        "03_third.ipynb",
        [
            new_markdown_cell("# 03 · Third\n\nNo opening here.\n\n## 1 · Long\n\n" + "word " * 2600),
            new_code_cell("x = 1"),
        ],
    )
    _lesson(
        tmp_path,
        "03a_third_proofs.ipynb",
        [  # an appendix: references checked, no budget, no opening needed
            new_markdown_cell(
                "# 03a · Appendix\n\n## 1 · Proofs\n\n" + "proof " * 3000 + "\n\nSee lesson 03 and appendix 03b."
            ),
        ],
    )
    _lesson(
        tmp_path,
        "04_fourth.ipynb",
        [
            new_markdown_cell(
                f"# 04 · Fourth\n\n{OPENING}\n\n## 1 · Links\n\nProofs: appendix 03a, section 1 and appendix 03a, "
                "section 2; section 1 of appendix 03a."
            ),
            _diagram(),
            _ran(),
        ],
    )
    found = {(f.lesson, f.text, f.problem) for f in course.check_lessons(tmp_path, badges=False)}
    words = course.reading_stats(nbformat.read(tmp_path / "03_third.ipynb", as_version=4)).words
    assert words > 2600
    assert found == {
        ("01_first.ipynb", "12 s", "a timing no cell of this lesson prints"),
        ("02_second.ipynb", "about 30 min to read", "the lesson reads in 1 min"),
        ("02_second.ipynb", "about 5 s to run", "the stored run took 20 s"),
        ("02_second.ipynb", "lesson 01 … 0.50", "lesson 01's stored outputs do not contain 0.50"),
        ("02_second.ipynb", "lesson 01 … 69", "lesson 01's stored outputs do not contain 69"),
        ("02_second.ipynb", "state A & more", "the stored widget shows a state that no cell beneath it prints"),
        ("03_third.ipynb", f"{words} words", "over 2500 words of prose on the main path"),
        ("03_third.ipynb", f"{words} words, 0 pictures", "over 425 words per picture"),
        ("03_third.ipynb", "draw_diagram", "no diagram"),
        (
            "03_third.ipynb",
            "# 03 · Third\n\nNo opening here.\n\n## 1 · L",
            "the opening does not say 'about N min to read' and 'about T s to run'",
        ),
        ("03a_third_proofs.ipynb", "appendix 03b", "there is no such lesson"),
        ("04_fourth.ipynb", "appendix 03a, section 2", "appendix 03a has no section 2"),
    }


def test_reading_stats_count_the_main_path_and_the_collapsed_sections_apart():
    nb = new_notebook(
        cells=[
            new_markdown_cell(
                "one two three\n\n<details><summary>Proof</summary>\n\nfour five six seven\n</details>\n\n![a](b.png)"
            ),
            new_code_cell("a = 1\n\nb = 2\n"),
            _diagram(),
        ]
    )
    nb.cells[2].outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})]
    stats = course.reading_stats(nb)
    assert (stats.words, stats.code_lines, stats.pictures, stats.diagrams) == (4, 3, 2, 1)  # "one two three" + the link
    assert stats.collapsed == 6  # <details><summary>Proof</summary> four five six seven </details>
    assert stats.minutes == 4 / 130 + 3 * 5 / 60 + 2


def test_a_lesson_without_its_colab_badge_and_install_cell_is_found(tmp_path):
    _lesson(tmp_path, "01_first.ipynb", [new_markdown_cell("# 01 · First"), new_code_cell("x = 1")])
    assert [f.text for f in course.check_lessons(tmp_path) if f.text == "Open in Colab"] == ["Open in Colab"]
    colab.update(tmp_path)
    assert not [f for f in course.check_lessons(tmp_path) if f.text == "Open in Colab"]
