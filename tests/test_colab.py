"""Each lesson's "Open in Colab" badge and install cell (invattn.colab): generated from the one repository address,
kept in step with it, and doing the right thing where the package is present, in a checkout, or nowhere."""

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from invattn import colab
from invattn._notebooks import lesson_notebooks

ROOT = Path(__file__).resolve().parent.parent
LESSONS = lesson_notebooks(ROOT / "notebooks")


def test_every_lesson_opens_with_its_badge_and_install_cell():
    url = colab.repository_url()
    assert colab.out_of_date() == []
    for path in LESSONS:
        nb = nbformat.read(path, as_version=4)
        assert colab.badge(path.name, url) in nb.cells[0].source
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert colab.INSTALL_TAG in first_code.metadata.tags and "git+" + url in first_code.source
        assert first_code.outputs == [], "the install cell prints nothing where invattn is installed"


def test_a_new_address_is_one_edit_and_one_command(tmp_path):
    for path in LESSONS[:2]:
        shutil.copy(path, tmp_path / path.name)
    new = "https://github.com/someone/invertible-course"
    assert colab.out_of_date(tmp_path, new) == [p.name for p in LESSONS[:2]]
    assert colab.update(tmp_path, new) == [p.name for p in LESSONS[:2]]
    assert colab.out_of_date(tmp_path, new) == [] and colab.update(tmp_path, new) == []  # idempotent
    nb = nbformat.read(tmp_path / LESSONS[0].name, as_version=4)
    assert (
        f"colab.research.google.com/github/someone/invertible-course/blob/main/notebooks/{LESSONS[0].name}"
        in nb.cells[0].source
    )
    assert sum(colab.INSTALL_TAG in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert len(nb.cells) == len(nbformat.read(LESSONS[0], as_version=4).cells)


def test_the_address_must_be_a_github_repository(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[project.urls]\nRepository = "https://example.org/x"\n'
    )
    with pytest.raises(ValueError, match="must be https://github.com/OWNER/NAME"):
        colab.repository_url(tmp_path / "pyproject.toml")
    with pytest.raises(FileNotFoundError, match="inside a checkout"):
        colab.repository_url(tmp_path / "missing.toml")


def _run_install_cell(monkeypatch, cwd: Path, installed: bool) -> tuple[list, list]:
    """Run the install cell's code in ``cwd`` with pip faked; returns (pip commands, sys.path after)."""
    import sys
    from importlib import metadata

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: calls.append(command))
    real = metadata.version

    def version(name):
        if name == "invattn" and not installed:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(ROOT)])
    exec(colab.install_cell_source(colab.repository_url()), {})
    return calls, list(sys.path)


def test_the_install_cell_installs_only_what_is_missing(monkeypatch, tmp_path):
    calls, path = _run_install_cell(monkeypatch, ROOT / "notebooks", installed=True)  # make setup: nothing to install
    assert calls == [] and path[0] == str(ROOT)  # but this checkout's library comes first
    (call,), path = _run_install_cell(monkeypatch, ROOT / "notebooks", installed=False)  # a clone: its checkout
    assert call[-2:] == ["-e", str(ROOT)] and call[1:4] == ["-m", "pip", "install"] and path[0] == str(ROOT)
    (call,), path = _run_install_cell(monkeypatch, tmp_path, installed=False)  # Colab: the repository
    assert call[-1] == "git+" + colab.repository_url() and "torch" not in " ".join(call)
    assert str(ROOT) not in path


def test_drift_in_place_and_number_is_found_and_mended(tmp_path):
    lesson = LESSONS[0]
    nb = nbformat.read(lesson, as_version=4)
    install = next(i for i, c in enumerate(nb.cells) if colab.INSTALL_TAG in c.metadata.get("tags", []))
    below = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "import invattn" in c.source)
    moved = nbformat.from_dict(nb)
    cell = moved.cells.pop(install)
    moved.cells.insert(below, cell)  # below the import it must precede
    untagged = nbformat.reads(nbformat.writes(nb), 4)
    untagged.cells[install].metadata.tags = []
    doubled = nbformat.reads(nbformat.writes(nb), 4)
    last_text = [c for c in doubled.cells if c.cell_type == "markdown"][-1]
    last_text.source += "\n\n" + colab.badge(lesson.name, colab.repository_url())  # a stale copy further down
    for case, broken in {"moved": moved, "untagged": untagged, "doubled": doubled}.items():
        folder = tmp_path / case
        folder.mkdir()
        nbformat.write(broken, folder / lesson.name)
        assert colab.out_of_date(folder) == [lesson.name], case
        assert colab.update(folder) == [lesson.name] and colab.out_of_date(folder) == [], case
        mended = nbformat.read(folder / lesson.name, as_version=4)
        assert sum(colab.INSTALL_TAG in c.metadata.get("tags", []) for c in mended.cells) == 1
        assert sum(len(colab.BADGE.findall(c.source)) for c in mended.cells if c.cell_type == "markdown") == 1


def test_the_command_line_refuses_a_folder_without_lessons(tmp_path, capsys):
    with pytest.raises(SystemExit):
        colab.main([str(tmp_path)])
    assert "no lessons" in capsys.readouterr().err
