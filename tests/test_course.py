"""The lessons' cross-references resolve (invattn.course), and the check catches planted broken ones."""

import shutil
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from invattn import course

ROOT = Path(__file__).resolve().parent.parent


def test_every_cross_reference_of_the_stored_lessons_resolves():
    findings = course.check_lessons(ROOT / "notebooks")
    assert not findings, "\n".join(map(str, findings))


def _lesson(folder: Path, name: str, cells: list) -> None:
    nbformat.write(new_notebook(cells=cells), folder / name)


def test_planted_broken_references_are_found(tmp_path):
    _lesson(tmp_path, "01_first.ipynb", [
        new_markdown_cell("# 01 · First\n\n## 1 · Start\n\nSee section 2 and lesson 02's section 1."),
        new_code_cell("x = 1\nassert x == 1"),
        new_markdown_cell("It is one (asserted). Section 7 does not exist, nor does lesson 42; lesson 02's section 5 neither."),
        new_markdown_cell("## 2 · Next\n\nThe value is positive (asserted below)."),
        new_code_cell("y = 2"),
        new_markdown_cell("Also true (asserted in section 1). And this (asserted in section 2)."),
        new_markdown_cell("Finally a claim (asserted)."),
    ])
    _lesson(tmp_path, "02_second.ipynb", [new_markdown_cell("# 02 · Second\n\n## 1 · Only section\n\nBack to lesson 01.")])
    found = {(f.lesson, f.cell, f.text.split(")")[0], f.problem) for f in course.check_lessons(tmp_path)}
    assert found == {
        ("01_first.ipynb", 2, "Section 7", "this lesson has no section 7"),
        ("01_first.ipynb", 2, "lesson 42", "there is no such lesson"),
        ("01_first.ipynb", 2, "lesson 02's section 5", "lesson 02 has no section 5"),
        ("01_first.ipynb", 3, "asserted below", "no assert in the code cells below it"),
        ("01_first.ipynb", 5, "asserted in section 2", "no assert in a code cell of section 2"),
        ("01_first.ipynb", 6, "asserted", "no assert in the code cells above it"),
    }


def test_the_command_line_fails_on_a_broken_reference(tmp_path, capsys):
    for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        shutil.copy(path, tmp_path / path.name)
    course.main([str(tmp_path)])  # the stored lessons: nothing to report, no exit
    assert "0 broken cross-reference(s)" in capsys.readouterr().out
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
