"""Each lesson's way in without a local install: an "Open in Colab" badge under its title and a first code cell that
installs the course's package only when it is missing, both generated from the one repository address in
``pyproject.toml`` (``[project.urls] Repository``).

The install cell leaves an installed torch alone: the package states lower bounds only (``torch>=…``), so pip keeps
Colab's torch, or a GPU machine's, when it satisfies them. Opened inside a checkout of the repository (a clone in any
Jupyter), the cell installs that checkout (editable) instead of the published address, so a student's clone and its
library agree. Where ``invattn`` is importable already (``make setup``, Colab's second run) the cell does nothing and
prints nothing, so the stored outputs do not depend on it.

``python -m invattn.colab`` rewrites the badges and install cells of every lesson after the address changed (one edit
of ``pyproject.toml`` at publication); :func:`out_of_date` lists the lessons that disagree with it, which
``python -m invattn.course`` reports.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

from ._notebooks import lesson_notebooks

__all__ = ["repository_url", "badge", "install_cell_source", "out_of_date", "update", "main", "INSTALL_TAG"]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
INSTALL_TAG = "install"
"""The tag of each lesson's first code cell, the one that installs the package (not a part of the lesson to read)."""
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)[ \t]*$", re.MULTILINE)
"""A badge line as :func:`badge` writes it (any address): what the reading budget skips and :func:`update` replaces."""


def repository_url(pyproject: str | Path = ROOT / "pyproject.toml") -> str:
    """The repository's address, ``https://github.com/OWNER/NAME``, from ``[project.urls] Repository``.

    Arguments:
        pyproject: the ``pyproject.toml`` to read (default: the checkout's).
    Returns:
        the address, without a trailing slash.
    Raises:
        FileNotFoundError: outside a checkout (no ``pyproject``).
        ValueError: when the entry is missing or not a GitHub repository address (Colab opens notebooks from GitHub).
    """
    path = Path(pyproject)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the badges are generated inside a checkout of the repository")
    # read with a pattern, not tomllib (Python 3.11+): the package supports 3.10
    urls = re.search(r"^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", path.read_text(), re.MULTILINE | re.DOTALL)
    found = re.search(r"^Repository\s*=\s*[\"']([^\"']*)[\"']", urls.group(1), re.MULTILINE) if urls else None
    url = found.group(1) if found else None
    if not isinstance(url, str) or not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url.rstrip("/")):
        raise ValueError(f"[project.urls] Repository in {path} must be https://github.com/OWNER/NAME, got {url!r}")
    return url.rstrip("/")


def badge(notebook: str, url: str) -> str:
    """The markdown line of the "Open in Colab" badge of ``notebook``, opening it from ``url``'s main branch.

    Arguments:
        notebook: the lesson's file name in ``notebooks/`` (e.g. ``"01_invertible_residual_networks.ipynb"``).
        url: the repository's address, ``https://github.com/OWNER/NAME`` (:func:`repository_url`).
    Returns:
        one markdown line: the badge image linking to the notebook on Colab.

    >>> print(badge("01_invertible_residual_networks.ipynb", "https://github.com/invattn/invattn"))
    ... # doctest: +NORMALIZE_WHITESPACE
    [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/invattn/invattn/blob/main/notebooks/01_invertible_residual_networks.ipynb)
    """
    colab = "https://colab.research.google.com/github/" + url.removeprefix("https://github.com/")
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab}/blob/main/notebooks/{notebook})"


INSTALL_FIRST_LINE = (
    "# Colab or any Jupyter without the course installed: install its package first (a torch already there is kept)"
)


def install_cell_source(url: str) -> str:
    """The source of each lesson's first code cell, the one that installs the package where it is missing.

    Where ``invattn`` is not installed it pip-installs it: from the checkout the kernel's working folder lies in (a
    clone: editable), else from ``url`` (Colab), keeping the installed torch. In a checkout its own library then
    comes first on ``sys.path``, whatever else is installed, so a clone always runs the library beside it.

    Arguments:
        url: the repository's address, ``https://github.com/OWNER/NAME`` (:func:`repository_url`).
    Returns:
        the cell's Python source (no trailing newline).
    """
    return f"""\
{INSTALL_FIRST_LINE}
import importlib, subprocess, sys
from importlib import metadata
from pathlib import Path

checkout = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "invattn" / "__init__.py").is_file()), None)
try:
    metadata.version("invattn")
except metadata.PackageNotFoundError:
    source = ["-e", str(checkout)] if checkout else ["git+{url}"]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *source], check=True)
if checkout is not None and str(checkout) not in sys.path:
    sys.path.insert(0, str(checkout))  # this clone's library, not another installed one
importlib.invalidate_caches()"""


def _is_install(cell) -> bool:
    """An install cell: tagged, or an untagged copy of one (its first line)."""
    return cell.cell_type == "code" and (
        INSTALL_TAG in cell.metadata.get("tags", []) or cell.source.startswith(INSTALL_FIRST_LINE)
    )


def _expected(nb, name: str, url: str):
    """``nb`` with exactly one badge, under its title, and exactly one install cell, its first code cell, as generated
    from ``url`` (a modified copy; the input is unchanged)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a deep copy
    for cell in nb.cells:  # badges anywhere else are stale copies
        if cell.cell_type == "markdown" and BADGE.search(cell.source):
            cell.source = re.sub(r"\n{3,}", "\n\n", BADGE.sub("", cell.source)).strip("\n")
    title = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if title is None:  # a notebook without text: the badge opens it
        title = nbformat.v4.new_markdown_cell("")
        nb.cells.insert(0, title)
    lines = title.source.split("\n")
    heading = next((i + 1 for i, text in enumerate(lines) if text.startswith("# ")), 0)
    title.source = "\n".join(lines[:heading] + ([""] if heading else []) + [badge(name, url), ""] + lines[heading:])
    title.source = re.sub(r"\n{3,}", "\n\n", title.source).rstrip()
    old = [c for c in nb.cells if _is_install(c)]
    nb.cells = [c for c in nb.cells if not _is_install(c)]
    cell = nbformat.v4.new_code_cell(install_cell_source(url), metadata={"tags": [INSTALL_TAG]})
    cell["id"] = old[0].get("id") if old and old[0].get("id") else f"install-{name[:3].rstrip('_')}"
    if old:
        cell.execution_count, cell.outputs = old[0].get("execution_count"), old[0].get("outputs", [])
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    nb.cells.insert(first_code, cell)
    return nb


def _comparable(nb):
    """Where the badges and install cells of ``nb`` are and what they say: what :func:`update` writes."""
    badges = [
        (i, line) for i, c in enumerate(nb.cells) if c.cell_type == "markdown" for line in BADGE.findall(c.source)
    ]
    code = [c for c in nb.cells if c.cell_type == "code"]
    installs = [(i, c.source, tuple(c.metadata.get("tags", []))) for i, c in enumerate(code) if _is_install(c)]
    return badges, installs


def _drifted(folder: str | Path, url: str):
    """(path, the notebook as :func:`update` would write it) for each lesson in ``folder`` whose badge or install
    cell is missing, misplaced, doubled or not what ``url`` gives."""
    for path in lesson_notebooks(folder):
        nb = nbformat.read(path, as_version=4)
        expected = _expected(nb, path.name, url)
        if _comparable(nb) != _comparable(expected):
            yield path, expected


def out_of_date(folder: str | Path = NOTEBOOKS, url: str | None = None) -> list[str]:
    """The lessons in ``folder`` whose badge or install cell differs from what :func:`update` would write.

    Arguments:
        folder: the lessons' folder (default: the checkout's ``notebooks/``).
        url: the repository's address (None: :func:`repository_url`).
    Returns:
        the file names of the lessons whose badge or install cell is missing, misplaced, doubled or out of date.
    Raises:
        FileNotFoundError: when ``url`` is None outside a checkout.
        ValueError: when ``url`` is None and pyproject's Repository entry is missing or not a GitHub address.
    """
    return [path.name for path, _ in _drifted(folder, url or repository_url())]


def update(folder: str | Path = NOTEBOOKS, url: str | None = None) -> list[str]:
    """Write the badge and install cell of every lesson in ``folder`` from ``url``; only out-of-date lessons change.

    A new install cell has no output: the next run of the lesson stores its (empty) output.

    Arguments:
        folder: the lessons' folder (default: the checkout's ``notebooks/``).
        url: the repository's address (None: :func:`repository_url`).
    Returns:
        the file names of the lessons it rewrote.
    Raises:
        FileNotFoundError: when ``url`` is None outside a checkout.
        ValueError: when ``url`` is None and pyproject's Repository entry is missing or not a GitHub address.
    """
    changed = []
    for path, expected in _drifted(folder, url or repository_url()):
        nbformat.write(expected, path)
        changed.append(path.name)
    return changed


def main(argv: list[str] | None = None) -> None:
    """``python -m invattn.colab [FOLDER]``: rewrite the lessons' badges and install cells from pyproject.toml.

    Arguments:
        argv: the command-line arguments (None: ``sys.argv[1:]``): an optional lessons' folder (default
            ``notebooks/``).
    Raises:
        SystemExit: (argparse) when the folder holds no lessons (``NN_name.ipynb``).
    """
    parser = argparse.ArgumentParser(prog="python -m invattn.colab", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=NOTEBOOKS, help="the lessons' folder (notebooks/)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not lesson_notebooks(args.folder):
        parser.error(f"no lessons (NN_name.ipynb) in {args.folder}")
    changed = update(args.folder)
    print(f"{len(changed)} lesson(s) updated from {repository_url()}: {', '.join(changed) or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1:])
