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

import json
import re
import sys
import tomllib
from pathlib import Path

import nbformat

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

    Raises ``FileNotFoundError`` outside a checkout and ``ValueError`` when the entry is missing or not a GitHub
    repository address (Colab opens notebooks from GitHub)."""
    path = Path(pyproject)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the badges are generated inside a checkout of the repository")
    url = tomllib.loads(path.read_text())["project"].get("urls", {}).get("Repository")
    if not isinstance(url, str) or not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url.rstrip("/")):
        raise ValueError(f"[project.urls] Repository in {path} must be https://github.com/OWNER/NAME, got {url!r}")
    return url.rstrip("/")


def badge(notebook: str, url: str) -> str:
    """The markdown line of the "Open in Colab" badge of ``notebook`` (a file name in ``notebooks/``)."""
    colab = "https://colab.research.google.com/github/" + url.removeprefix("https://github.com/")
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab}/blob/main/notebooks/{notebook})"


def install_cell_source(url: str) -> str:
    """The source of each lesson's first code cell: install ``invattn`` if it cannot be imported, from the checkout
    the notebook sits in when there is one (editable), else from ``url`` with pip (keeping the installed torch)."""
    return f'''\
# Colab or any Jupyter without the course installed: install its package first (a torch already there is kept)
import importlib, importlib.util, subprocess, sys
from pathlib import Path

if importlib.util.find_spec("invattn") is None:
    checkout = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "invattn" / "__init__.py").is_file()), None)
    source = ["-e", str(checkout)] if checkout else ["git+{url}"]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *source], check=True)
    sys.path[:0] = [str(checkout)] if checkout else []  # an editable install is seen by the next kernel only
    importlib.invalidate_caches()'''


def _lessons(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("[0-9][0-9]*_*.ipynb"))


def _expected(nb, name: str, url: str):
    """``nb`` with its badge and install cell as generated from ``url`` (a modified copy; the input is unchanged)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a deep copy
    title = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if title is None:  # a notebook without text: the badge opens it
        title = nbformat.v4.new_markdown_cell("")
        nb.cells.insert(0, title)
    line = badge(name, url)
    if BADGE.search(title.source):
        title.source = BADGE.sub(lambda _: line, title.source)
    else:  # under the title (``# …``), else first
        lines = title.source.split("\n")
        heading = next((i + 1 for i, text in enumerate(lines) if text.startswith("# ")), 0)
        title.source = "\n".join(lines[:heading] + ([""] if heading else []) + [line, ""] + lines[heading:]).rstrip()
        title.source = re.sub(r"\n{3,}", "\n\n", title.source)
    installs = [c for c in nb.cells if c.cell_type == "code" and INSTALL_TAG in c.metadata.get("tags", [])]
    if installs:
        installs[0].source = install_cell_source(url)
        nb.cells = [c for c in nb.cells if c is installs[0] or not any(c is other for other in installs)]
    else:
        first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
        cell = nbformat.v4.new_code_cell(install_cell_source(url), metadata={"tags": [INSTALL_TAG]})
        cell["id"] = f"install-{name[:3].rstrip('_')}"
        nb.cells.insert(first_code, cell)
    return nb


def _comparable(nb):
    """The badge line and install cell of ``nb``: what :func:`update` writes."""
    title = next((c for c in nb.cells if c.cell_type == "markdown"), nbformat.v4.new_markdown_cell(""))
    install = [c.source for c in nb.cells if c.cell_type == "code" and INSTALL_TAG in c.metadata.get("tags", [])]
    return BADGE.findall(title.source), install


def out_of_date(folder: str | Path = NOTEBOOKS, url: str | None = None) -> list[str]:
    """The lessons in ``folder`` whose badge or install cell differs from what :func:`update` would write."""
    url = url or repository_url()
    stale = []
    for path in _lessons(Path(folder)):
        nb = nbformat.read(path, as_version=4)
        if _comparable(nb) != _comparable(_expected(nb, path.name, url)):
            stale.append(path.name)
    return stale


def update(folder: str | Path = NOTEBOOKS, url: str | None = None) -> list[str]:
    """Write the badge and install cell of every lesson in ``folder`` from ``url`` (default: :func:`repository_url`);
    returns the names of the lessons it changed. A new install cell has no output: the next run of the lesson stores
    its (empty) output."""
    url = url or repository_url()
    changed = []
    for path in _lessons(Path(folder)):
        nb = nbformat.read(path, as_version=4)
        expected = _expected(nb, path.name, url)
        if _comparable(nb) != _comparable(expected):
            nbformat.write(expected, path)
            changed.append(path.name)
    return changed


def main(argv: list[str] | None = None) -> None:
    """``python -m invattn.colab [FOLDER]``: rewrite the lessons' badges and install cells from pyproject.toml."""
    argv = list(sys.argv[1:] if argv is None else argv)
    folder = Path(argv[0]) if argv else NOTEBOOKS
    changed = update(folder)
    print(f"{len(changed)} lesson(s) updated from {repository_url()}: {', '.join(changed) or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1:])
