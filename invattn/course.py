"""Mechanical checks of the lessons' cross-references, so a sentence cannot point at something that is not there.

``python -m invattn.course`` (and ``tests/test_course.py`` in ``make test``) reads every stored lesson and reports:

* ``section N`` (or ``§N``) that the lesson has no heading ``## N ·`` for; ``lesson NN's section N``, ``section N
  of lesson NN`` and ``appendix NNa, section N`` are looked up in that notebook;
* ``lesson NN`` or ``appendix NNa`` for a notebook that does not exist;
* ``asserted`` whose code does not hold an ``assert``: ``asserted in section N`` needs an assert in a code cell of
  section N, ``asserted below`` in the code cells that follow the sentence's cell (up to the next markdown cell), and
  any other ``asserted`` (above, under the table) in the code cells just before it; a code cell that writes the
  sentence may also assert itself.

* a timing in prose (``12 s``, ``3.5 min``) that no cell of the lesson prints; a sentence quoting a source
  (a README, a paper) is exempt; the opening's ``about N min to read`` is compared with :func:`reading_stats` (within
  20 % or 3 min) and its ``about T s to run`` with the lesson's printed ``This run took …`` (within a factor 2);
* a number quoted from another lesson (``lesson 02 measured 0.93``: a decimal, a percentage or a factor ``69×`` in
  a sentence saying that lesson NN measured, printed or showed it) that lesson NN's stored outputs do not contain;
* a widget whose stored state disagrees with the static drawing beneath it: every status line a stored widget shows
  (its ``<code>`` text) is printed by a cell of the lesson;
* a lesson whose "Open in Colab" badge or install cell differs from what :mod:`invattn.colab` generates;
* a lesson over its reading budget (:data:`MAX_WORDS` words of prose outside collapsed ``<details>``, about
  :data:`MAX_WORDS_PER_PICTURE` per picture), without a diagram, or without an opening that says how long it takes.

Appendices (``NNa_name.ipynb``, sorting after lesson NN) hold the proofs moved off a lesson's main path: they are
checked for references like the lessons, but have no reading budget.

Each finding is ``(lesson file name, cell index, the text found, what is wrong)``.
"""

from __future__ import annotations

import html
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ._notebooks import WIDGET_STATE, WIDGET_VIEW, lesson_notebooks
from .colab import BADGE, INSTALL_TAG, out_of_date
from .diagrams import DIAGRAMS

__all__ = ["Finding", "ReadingStats", "reading_stats", "check_lessons", "main", "MAX_WORDS", "MAX_WORDS_PER_PICTURE"]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_HEADING = re.compile(r"^##\s+(\d+)\s*·", re.MULTILINE)
_LESSON = re.compile(r"\b(?:lesson|appendix)\s+(\d\d[a-z]?)\b", re.IGNORECASE)
_SECTION = re.compile(
    r"(?:\b(?:lesson|appendix)\s+(?P<before>\d\d[a-z]?)(?:['’]s|,)\s+)?(?:\bsection|§)\s*(?P<number>\d+)"
    r"(?:\s+of\s+(?:lesson|appendix)\s+(?P<after>\d\d[a-z]?))?",
    re.IGNORECASE,
)
_ASSERTED = re.compile(r"\basserted\b(?P<tail>[^.;\n]{0,60})", re.IGNORECASE)
_ASSERT_CODE = re.compile(r"^\s*assert\b|[;:]\s*assert\b", re.MULTILINE)
_DETAILS = re.compile(r"<details>.*?</details>", re.DOTALL | re.IGNORECASE)
_TIMING = re.compile(r"(?<![\w.^{$\\])(\d+(?:\.\d+)?)\s*(ms|s|seconds?|min|minutes?|h|hours?)\b(?!\s*[=^])")
_READ_CLAIM = re.compile(r"about\s+(\d+)\s*min(?:utes)?\s+to\s+read", re.IGNORECASE)
_RUN_CLAIM = re.compile(r"about\s+(\d+(?:\.\d+)?)\s*(s|min)\s+to\s+run", re.IGNORECASE)
_RAN = re.compile(r"This run took (\d+(?:\.\d+)?) (s|min)\.")
_CITES = re.compile(r"README|\breports?\b|the paper|\(\d{4}\)|et al\.", re.IGNORECASE)
_QUOTE = re.compile(
    r"\blesson\s+(\d\d)(?:['’]s)?\b.{0,40}?\b(?:measured|printed|showed|shows|found|reached)\b", re.IGNORECASE
)
_QUOTED_NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+|\d+(?=\s*(?:%|×)))")
_WIDGET_STATUS = re.compile(r"<code>(.*?)</code>", re.DOTALL)
_DIAGRAM_CALL = re.compile(r"draw_diagram\(\s*[\"'](\d\d_diagram_[a-z0-9_]+)[\"']")
MAX_WORDS = 2500
"""Words of prose a lesson's main path (outside collapsed ``<details>``) may hold: about 20 minutes at 130 a minute."""
MAX_WORDS_PER_PICTURE = 425
"""Words of main-path prose per picture (figure or diagram) a lesson may hold: "about 400 or fewer"."""


@dataclass(frozen=True)
class Finding:
    """One broken reference or budget overrun found in a lesson; ``str()`` gives one readable line.

    Arguments:
        lesson: the notebook's file name (``NN_name.ipynb``).
        cell: the index of the cell the problem is in (0 for the whole lesson).
        text: the text found (the reference, the number, the timing).
        problem: what is wrong with it.
    """

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


@dataclass(frozen=True)
class ReadingStats:
    """What a student reads in one lesson, and how long it takes: minutes = words/130 + 5 s per code line + 1 min per
    picture (the issue's reading model; the ``minutes`` property).

    Arguments:
        words: words of prose on the main path (outside collapsed ``<details>``; badges not counted).
        collapsed: words inside collapsed ``<details>``.
        code_lines: non-empty code lines (the install cell not counted).
        pictures: figures in the outputs and images in the text.
        diagrams: how many of the pictures are drawn by :mod:`invattn.diagrams` (``draw_diagram`` calls).
    """

    words: int
    collapsed: int
    code_lines: int
    pictures: int
    diagrams: int

    @property
    def minutes(self) -> float:
        return self.words / 130 + self.code_lines * 5 / 60 + self.pictures


def reading_stats(nb) -> ReadingStats:
    """The :class:`ReadingStats` of a notebook: its words, collapsed words, code lines, pictures and diagrams.

    Arguments:
        nb: the notebook, an ``nbformat`` node (version 4), with its stored outputs.
    Returns:
        its :class:`ReadingStats`.

    >>> from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    >>> nb = new_notebook(cells=[new_markdown_cell("# A lesson\\n\\nProse on the main path."),
    ...                          new_code_cell("x = 1\\n\\nprint(x)")])
    >>> stats = reading_stats(nb)
    >>> stats.words, stats.code_lines, stats.pictures, round(stats.minutes, 2)
    (8, 2, 0, 0.23)
    """
    words = collapsed = code_lines = pictures = diagrams = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            outside = _DETAILS.sub(" ", BADGE.sub(" ", cell.source))
            words += len(outside.split())
            collapsed += sum(len(block.split()) for block in _DETAILS.findall(cell.source))
            pictures += len(re.findall(r"!\[[^\]]*\]\(|<img\b", outside))
        elif cell.cell_type == "code" and INSTALL_TAG not in cell.metadata.get("tags", []):
            code_lines += sum(1 for line in cell.source.splitlines() if line.strip())
            diagrams += len(_DIAGRAM_CALL.findall(cell.source))
            pictures += sum(
                1 for output in cell.get("outputs", []) if {"image/png", "image/svg+xml"} & set(output.get("data", {}))
            )
    return ReadingStats(words, collapsed, code_lines, pictures, diagrams)


def _printed(cell) -> str:
    """Everything a code cell's stored outputs show as text."""
    parts = []
    for output in cell.get("outputs", []):
        text = output.get("text", "")
        parts.append("".join(text) if isinstance(text, list) else text)
        for kind in ("text/plain", "text/markdown", "text/html"):
            value = output.get("data", {}).get(kind, "")
            parts.append("".join(value) if isinstance(value, list) else value)
    return "\n".join(parts)


def _lesson_output(nb) -> str:
    return "\n".join(_printed(cell) for cell in nb.cells if cell.cell_type == "code")


def _sentences(text: str):
    return re.split(r"(?<=[.!?])\s+(?=[A-Z*(])", text)


def _check_prose_numbers(name, key, nb, lessons, findings) -> None:
    """Timings in prose and numbers quoted from other lessons, each against the stored outputs that should hold it."""
    printed = _lesson_output(nb)
    ran = _RAN.search(printed)
    minutes = reading_stats(nb).minutes
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for sentence in _sentences(_DETAILS.sub(" ", cell.source)):
            plain = re.sub(r"\$[^$]*\$", " ", sentence)  # mathematics: h = 10^{-5} s is not a timing
            claims = set()
            for match in _READ_CLAIM.finditer(plain):
                claims.add(match.start(1))
                claimed, actual = int(match.group(1)), minutes
                if abs(claimed - actual) > max(3.0, 0.2 * actual):
                    findings.append(Finding(name, index, match.group(0), f"the lesson reads in {actual:.0f} min"))
            for match in _RUN_CLAIM.finditer(plain):
                claims.add(match.start(1))
                claimed = float(match.group(1)) * (60 if match.group(2) == "min" else 1)
                if not ran:
                    findings.append(
                        Finding(
                            name, index, match.group(0), "no cell prints 'This run took …' (lesson.report_run_time())"
                        )
                    )
                    continue
                took = float(ran.group(1)) * (60 if ran.group(2) == "min" else 1)
                if not took / 2 <= claimed <= took * 2:
                    findings.append(Finding(name, index, match.group(0), f"the stored run took {ran.group(0)[14:-1]}"))
            if not _CITES.search(plain):
                for match in _TIMING.finditer(plain):
                    if match.start(1) in claims:
                        continue
                    if not re.search(rf"(?<![\d.]){re.escape(match.group(1))}\s*{re.escape(match.group(2))}", printed):
                        findings.append(Finding(name, index, match.group(0), "a timing no cell of this lesson prints"))
            for match in _QUOTE.finditer(plain):
                other = match.group(1)
                if other == key or other not in lessons:
                    continue
                source = _lesson_output(lessons[other])
                for number in _QUOTED_NUMBER.findall(plain[match.start() :]):  # the rest of the sentence
                    if not re.search(rf"(?<![\d.]){re.escape(number)}(?![\d])", source):
                        findings.append(
                            Finding(
                                name,
                                index,
                                f"lesson {other} … {number}",
                                f"lesson {other}'s stored outputs do not contain {number}",
                            )
                        )


def _check_widgets(name, nb, findings) -> None:
    """Each status line a stored widget shows is printed by some cell (the static drawing beneath it)."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    printed = _lesson_output(nb)
    for model in state.values():
        value = model.get("state", {}).get("value")
        if model.get("model_name") != "HTMLModel" or not isinstance(value, str):
            continue
        for status in _WIDGET_STATUS.findall(value):
            status = html.unescape(status).strip()
            if status and status not in printed:
                index = next(
                    (
                        i
                        for i, c in enumerate(nb.cells)
                        if any(WIDGET_VIEW in o.get("data", {}) for o in c.get("outputs", []))
                    ),
                    0,
                )
                findings.append(
                    Finding(name, index, status[:60], "the stored widget shows a state that no cell beneath it prints")
                )


def _check_budget(name, nb, findings) -> None:
    """A lesson's reading budget, its diagram and its opening."""
    stats = reading_stats(nb)
    if stats.words > MAX_WORDS:
        findings.append(Finding(name, 0, f"{stats.words} words", f"over {MAX_WORDS} words of prose on the main path"))
    if stats.words > MAX_WORDS_PER_PICTURE * max(stats.pictures, 1):
        findings.append(
            Finding(
                name,
                0,
                f"{stats.words} words, {stats.pictures} pictures",
                f"over {MAX_WORDS_PER_PICTURE} words per picture",
            )
        )
    if not stats.diagrams:
        findings.append(Finding(name, 0, "draw_diagram", "no diagram"))
    opening = BADGE.sub("", next((c.source for c in nb.cells if c.cell_type == "markdown"), "")).strip()
    if not (_READ_CLAIM.search(opening) and _RUN_CLAIM.search(opening)):
        findings.append(
            Finding(name, 0, opening[:40], "the opening does not say 'about N min to read' and 'about T s to run'")
        )


def _asserts(cell) -> bool:
    return cell.cell_type == "code" and bool(_ASSERT_CODE.search(cell.source))


def check_lessons(folder: str | Path = NOTEBOOKS, badges: bool = True) -> list[Finding]:
    """Every broken cross-reference, unprinted number and budget overrun in the lessons of ``folder`` (module doc).

    Arguments:
        folder: the folder of the lessons ``NN_*.ipynb`` and appendices (default: the checkout's ``notebooks/``).
        badges: also report each lesson whose Colab badge or install cell is missing, misplaced or out of date.
    Returns:
        the :class:`Finding` list, empty when everything resolves.
    """
    folder = Path(folder)
    lessons = {path.name.split("_")[0]: nbformat.read(path, as_version=4) for path in lesson_notebooks(folder)}
    numbered = {
        key: {int(n) for cell in nb.cells if cell.cell_type == "markdown" for n in _HEADING.findall(cell.source)}
        for key, nb in lessons.items()
    }
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
                    where = "this lesson" if other == key else f"{'lesson' if other.isdigit() else 'appendix'} {other}"
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
            for diagram in _DIAGRAM_CALL.findall(text) if cell.cell_type == "code" else ():
                if diagram not in _diagram_names():
                    findings.append(Finding(name, index, diagram, "no diagram of that name in invattn.diagrams"))
        _check_prose_numbers(name, key, nb, lessons, findings)
        _check_widgets(name, nb, findings)
        if key.isdigit():  # a lesson, not an appendix
            _check_budget(name, nb, findings)
    findings += (
        []
        if not badges
        else [
            Finding(
                name,
                0,
                "Open in Colab",
                "its badge or install cell is missing, misplaced or "
                "not what pyproject.toml's address gives: run python -m invattn.colab",
            )
            for name in out_of_date(folder)
        ]
    )
    return findings


def _diagram_names() -> set[str]:
    return set(DIAGRAMS)


def main(argv: list[str] | None = None) -> None:
    """``python -m invattn.course [FOLDER] [--reading]``: print the :func:`check_lessons` findings and their count.

    Arguments:
        argv: the command-line arguments (None: ``sys.argv[1:]``): an optional lessons' folder (default
            ``notebooks/``) and ``--reading``, which first prints each lesson's :class:`ReadingStats`.
    Raises:
        SystemExit: with status 1 when there is any finding.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    reading = "--reading" in argv
    argv = [a for a in argv if a != "--reading"]
    folder = Path(argv[0]) if argv else NOTEBOOKS
    if reading:
        print(f"{'notebook':<44}{'words':>7}{'collapsed':>10}{'code':>6}{'pictures':>9}{'diagrams':>9}{'minutes':>8}")
        for path in lesson_notebooks(folder):
            r = reading_stats(nbformat.read(path, as_version=4))
            print(
                f"{path.stem[:43]:<44}{r.words:>7}{r.collapsed:>10}{r.code_lines:>6}{r.pictures:>9}{r.diagrams:>9}"
                f"{r.minutes:>8.0f}"
            )
    findings = check_lessons(folder)
    for finding in findings:
        print(finding)
    print(f"{len(findings)} finding(s) in {folder}")
    if findings:
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
