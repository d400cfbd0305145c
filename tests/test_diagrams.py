"""The course's diagrams (invattn.diagrams): each draws, saves byte-stable SVG, and every lesson shows one."""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from invattn import diagrams  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted({p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")})


def test_there_are_twelve_or_more_diagrams_and_one_for_every_lesson():
    assert len(diagrams.DIAGRAMS) >= 12
    assert {name[:2] for name in diagrams.DIAGRAMS} >= set(LESSONS)


@pytest.mark.parametrize("name", sorted(diagrams.DIAGRAMS))
def test_a_diagram_is_the_same_bytes_every_time(name, tmp_path):
    path = diagrams.save_diagram(name, tmp_path)
    assert path == tmp_path / f"{name}.svg"
    first = path.read_bytes()
    assert first.startswith(b"<?xml") and b"<svg" in first and len(first) > 2000
    assert not re.search(rb"<dc:date>", first)  # no timestamp: the file changes only when the drawing does
    diagrams.save_diagram(name, tmp_path)
    assert path.read_bytes() == first
    assert (ROOT / "figures" / f"{name}.svg").is_file(), (
        "not in figures/: run `make run` (or python -m invattn.diagrams)"
    )


def test_the_command_line_draws_every_diagram(tmp_path, capsys):
    before = dict(matplotlib.rcParams)
    diagrams.main([str(tmp_path)])
    assert sorted(p.stem for p in tmp_path.glob("*.svg")) == sorted(diagrams.DIAGRAMS)
    assert len(capsys.readouterr().out.splitlines()) == len(diagrams.DIAGRAMS)
    assert dict(matplotlib.rcParams) == before  # the lessons' style was for those files only
    # drawn in the lessons' style: the very files the lessons save
    for path in tmp_path.glob("*.svg"):
        stored = ROOT / "figures" / path.name
        if stored.is_file():
            assert path.read_bytes() == stored.read_bytes(), f"{path.name} differs from figures/"
    with pytest.raises(SystemExit):
        diagrams.main(["--nonsense"])  # an option is not taken for a folder


def test_names_are_checked():
    with pytest.raises(KeyError, match="no diagram named '01_diagram_nothing'; the diagrams are: 01_diagram_"):
        diagrams.save_diagram("01_diagram_nothing")
    with pytest.raises(ValueError, match="'NN_diagram_<what>'"):
        diagrams.diagram("fixed point")
    with pytest.raises(ValueError, match="two diagrams are named"):
        diagrams.diagram(next(iter(diagrams.DIAGRAMS)))(lambda: None)


def test_draw_diagram_saves_and_shows(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(diagrams.plt, "show", lambda: shown.append(diagrams.plt.gcf()))
    path = diagrams.draw_diagram(sorted(diagrams.DIAGRAMS)[0], tmp_path)
    assert path.is_file() and len(shown) == 1 and shown[0].get_axes()
    diagrams.plt.close("all")
