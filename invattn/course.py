"""Mechanical checks of the lessons' cross-references, so a sentence cannot point at something that is not there.

``python -m invattn.course`` (and ``tests/test_course.py`` in ``make test``) reads every stored lesson and reports:

* ``section N`` (or ``§N``) that the lesson has no heading ``## N ·`` for; ``lesson NN's section N`` and ``section N
  of lesson NN`` are looked up in lesson NN;
* ``lesson NN`` for a lesson that does not exist;
* ``asserted`` whose code does not hold an ``assert``: ``asserted in section N`` needs an assert in a code cell of
  section N, ``asserted below`` in the code cells that follow the sentence's cell (up to the next markdown cell), and
  any other ``asserted`` (above, under the table) in the code cells just before it; a code cell that writes the
  sentence may also assert itself.

Each finding is ``(lesson file name, cell index, the text found, what is wrong)``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["Finding", "check_lessons", "main"]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_HEADING = re.compile(r"^##\s+(\d+)\s*·", re.MULTILINE)
_LESSON = re.compile(r"\blesson\s+(\d\d)\b", re.IGNORECASE)
_SECTION = re.compile(
    r"(?:\blesson\s+(?P<before>\d\d)['’]s\s+)?(?:\bsection|§)\s*(?P<number>\d+)(?:\s+of\s+lesson\s+(?P<after>\d\d))?",
    re.IGNORECASE)
_ASSERTED = re.compile(r"\basserted\b(?P<tail>[^.;\n]{0,60})", re.IGNORECASE)
_ASSERT_CODE = re.compile(r"^\s*assert\b|[;:]\s*assert\b", re.MULTILINE)


@dataclass(frozen=True)
class Finding:
    lesson: str
    cell: int
    text: str
    problem: str

    def __str__(self) -> str:
        return f"{self.lesson}, cell {self.cell}: {self.text!r}: {self.problem}"


def _sections(cells) -> list[int | None]:
    """The section number each cell belongs to (None before the first numbered heading or after an unnumbered one)."""
    current, owners = None, []
    for cell in cells:
        if cell.cell_type == "markdown":
            headings = [line for line in cell.source.splitlines() if line.startswith("## ")]
            if headings:
                numbered = _HEADING.match(headings[-1])
                current = int(numbered.group(1)) if numbered else None
        owners.append(current)
    return owners


def _run(cells, index: int, step: int) -> list:
    """The code cells next to cell ``index`` in direction ``step`` (−1 above, +1 below), up to the nearest markdown
    cell: the cells a sentence there speaks about."""
    found, position = [], index + step
    while 0 <= position < len(cells) and cells[position].cell_type == "code":
        found.append(cells[position])
        position += step
    return found


def _asserts(cell) -> bool:
    return cell.cell_type == "code" and bool(_ASSERT_CODE.search(cell.source))


def check_lessons(folder: str | Path = NOTEBOOKS) -> list[Finding]:
    """Every broken cross-reference in the lessons ``NN_*.ipynb`` of ``folder`` (empty when all resolve)."""
    folder = Path(folder)
    lessons = {path.name[:2]: nbformat.read(path, as_version=4) for path in sorted(folder.glob("[0-9][0-9]_*.ipynb"))}
    numbered = {key: {int(n) for cell in nb.cells if cell.cell_type == "markdown" for n in _HEADING.findall(cell.source)}
                for key, nb in lessons.items()}
    findings = []
    for key, nb in lessons.items():
        name = next(folder.glob(f"{key}_*.ipynb")).name
        owners = _sections(nb.cells)
        for index, cell in enumerate(nb.cells):
            text = cell.source
            for match in _LESSON.finditer(text):
                if match.group(1) not in lessons:
                    findings.append(Finding(name, index, match.group(0), "there is no such lesson"))
            for match in _SECTION.finditer(text):
                other = match.group("before") or match.group("after") or key
                number = int(match.group("number"))
                if other in lessons and number not in numbered[other]:
                    where = "this lesson" if other == key else f"lesson {other}"
                    findings.append(Finding(name, index, match.group(0), f"{where} has no section {number}"))
            for match in _ASSERTED.finditer(text):
                tail = match.group("tail").lower()
                if cell.cell_type == "code":  # a cell that writes the sentence: it or the code cells just above
                    ok = _asserts(cell) or any(_asserts(c) for c in _run(nb.cells, index, -1))
                    target = "this cell or the code cells above it"
                else:
                    section = re.search(r"in section\s*(\d+)", tail)
                    if section:
                        wanted = int(section.group(1))
                        ok = any(_asserts(c) for c, owner in zip(nb.cells, owners) if owner == wanted)
                        target = f"a code cell of section {wanted}"
                    elif re.search(r"\bbelow\b", tail):
                        ok = any(_asserts(c) for c in _run(nb.cells, index, +1))
                        target = "the code cells below it"
                    else:  # "(asserted)", "asserted above", "asserted under the table" (the cell that prints it)
                        ok = any(_asserts(c) for c in _run(nb.cells, index, -1))
                        target = "the code cells above it"
                if not ok:
                    findings.append(Finding(name, index, match.group(0).strip(), f"no assert in {target}"))
    return findings


def main(argv: list[str] | None = None) -> None:
    folder = Path(argv[0]) if argv else NOTEBOOKS
    findings = check_lessons(folder)
    for finding in findings:
        print(finding)
    print(f"{len(findings)} broken cross-reference(s) in {folder}")
    if findings:
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
