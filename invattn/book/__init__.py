"""The lessons as a static book: ``python -m invattn.book [--output DIR]`` (``make book``).

The book is built from the lessons' STORED outputs (nothing is executed) with Sphinx, MyST-NB and the Sphinx Book
Theme, from the sources in ``book/`` (``conf.py``, the theme's static files, the local "Open in Colab" badge). Before
the build, :func:`stage` writes a copy of everything the book shows into ``DIR/source``:

* ``index.md``: README's title and opening, and its lesson map (the ``## Lessons`` table) as the book's landing page
  and table of contents, generated at every build so that the two cannot drift;
* every lesson, with each widget output (a demo, which needs a running kernel) replaced by a note saying how to run
  it and that the figure below it is its static state, the widget state in the metadata dropped, the "Open in
  Colab" badge image replaced by the book's own copy (the link kept), ``$…$`` in a ``<summary>`` made a math element,
  and every link made to resolve inside the site: another lesson and its sections stay links between pages, a
  figure stays a file of the site, README's lesson map is the index page, and any other file of the repository
  (``../invattn/…``) becomes its address in the repository (``[project.urls] Repository``);
* the figures.

The HTML goes to ``DIR/html`` (``index.html`` first); MathJax is copied into the site, so a page asks for nothing
outside it. A staged file is rewritten only when its text changes, so a second build re-reads only what changed.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .._notebooks import WIDGET_VIEW, lesson_notebooks
from ..colab import repository_url
from .pages import (
    DEMO_NOTE,
    LOCAL_BADGE,
    NOTEBOOKS,
    README,
    ROOT,
    Links,
    heading_anchors,
    index_page,
    lesson_table,
    stage_markdown,
    stage_notebook,
)

__all__ = [
    "BookBuild",
    "DEMO_NOTE",
    "LOCAL_BADGE",
    "WIDGET_VIEW",
    "Links",
    "heading_anchors",
    "lessons",
    "lesson_table",
    "index_page",
    "stage_markdown",
    "stage_notebook",
    "stage",
    "build",
    "main",
]

BOOK = ROOT / "book"
FIGURES = ROOT / "figures"
DEFAULT_OUTPUT = BOOK / "_build"
BOOK_SOURCES = ["conf.py", "_static", "_templates"]
"""What ``book/`` holds for the build (the configuration, static files, templates where there are any)."""
BUILDER_PACKAGES = {
    "sphinx": "sphinx",
    "myst_nb": "myst-nb",
    "sphinx_book_theme": "sphinx-book-theme",
    "mathjax": "django-static-mathjax",
}
"""The modules the build imports and the PyPI packages that provide them (the ``book`` extra)."""


@dataclass(frozen=True)
class BookBuild:
    """What :func:`build` made (frozen).

    Arguments:
        index: the built site's index page, ``DIR/html/index.html``.
        pages: the number of pages (the index and one per lesson).
        seconds: the seconds the staging and the build took together.
    """

    index: Path
    pages: int
    seconds: float


MARKER = ".invattn-book"
"""The file that marks a folder as the book's output (see :func:`stage`)."""


def lessons(folder: str | Path = NOTEBOOKS) -> list[Path]:
    """The lessons of ``folder``, ``NN…_name.ipynb`` in order.

    Arguments:
        folder: the lessons' folder (default: the checkout's ``notebooks/``).
    Returns:
        their paths, sorted.
    Raises:
        FileNotFoundError: when there are none.
    """
    found = lesson_notebooks(folder)
    if not found:
        raise FileNotFoundError(f"no lessons (NN_name.ipynb) found in {Path(folder).resolve()}: nothing to build")
    return found


def _write_if_changed(path: Path, content: bytes) -> None:
    if not path.is_file() or path.read_bytes() != content:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _sync(source: Path, target: Path) -> set[Path]:
    """Copy the file ``source``, or the files of the folder ``source``, to ``target`` (only those whose bytes
    differ); return the paths written to."""
    pairs = (
        [(source, target)]
        if source.is_file()
        else [(file, target / file.relative_to(source)) for file in sorted(source.rglob("*")) if file.is_file()]
    )
    for file, destination in pairs:
        _write_if_changed(destination, file.read_bytes())
    return {destination for _, destination in pairs}


def stage(output: str | Path = DEFAULT_OUTPUT, notebooks: str | Path = NOTEBOOKS, readme: str | Path = README) -> Path:
    """Write the book's sources into ``output/source`` (see the module's text); nothing is executed.

    Files left there from an earlier build that this one does not write are removed; a file is rewritten only when
    its text changes.

    Arguments:
        output: the build folder (default ``book/_build``); created if missing, marked with :data:`MARKER`.
        notebooks: the lessons' folder.
        readme: the README whose title, opening and lesson map make the index page.
    Returns:
        the staged sources' folder, ``output/source``.
    Raises:
        FileNotFoundError: when there are no lessons or no README, or outside a checkout (no ``pyproject.toml``).
        ValueError: (from :func:`index_page` and :func:`stage_notebook`) when README's lesson map or a lesson's
            link is wrong, or pyproject's repository address is.
        FileExistsError: when ``output`` holds files that no build wrote (a build removes its own leftovers, so it
            refuses to work in a folder it did not make: :data:`MARKER` marks the ones it did).
    """
    output = Path(output)
    if output.is_dir() and any(output.iterdir()) and not (output / MARKER).is_file():
        raise FileExistsError(
            f"{output} holds files the book did not write; choose an empty or new folder for --output"
        )
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("built by python -m invattn.book: its files are replaced at each build\n")
    source = output / "source"
    paths = lessons(notebooks)
    readme = Path(readme)
    if not readme.is_file():
        raise FileNotFoundError(f"{readme} not found: the book's index is made from README's lesson map")
    url = repository_url()
    books = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in paths}
    anchors = {name: heading_anchors(nb) for name, nb in books.items()}
    written = _sync(FIGURES, source / "figures")
    for name in BOOK_SOURCES:
        if (BOOK / name).exists():
            written |= _sync(BOOK / name, source / name)
    index = source / "index.md"
    page = index_page(readme.read_text(encoding="utf-8"), list(books))
    _write_if_changed(index, stage_markdown(page, Links(README.name, ROOT, anchors, url)).encode())
    written.add(index)
    for name, nb in books.items():
        staged = stage_notebook(nb, name, anchors, url)
        target = source / "notebooks" / name
        _write_if_changed(target, (json.dumps(staged, indent=1, ensure_ascii=False) + "\n").encode())
        written.add(target)
    for file in list(source.rglob("*")):
        if file.is_file() and file not in written:
            file.unlink()
    return source


def _require_builder() -> None:
    """Raises ``ModuleNotFoundError`` naming the missing packages of the ``book`` extra."""
    missing = [package for module, package in BUILDER_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ModuleNotFoundError(
            f"the book needs {', '.join(missing)} (missing here): "
            "pip install -e '.[book]' installs them (on Python 3.11 or newer)"
        )


def build(
    output: str | Path = DEFAULT_OUTPUT, notebooks: str | Path = NOTEBOOKS, readme: str | Path = README
) -> BookBuild:
    """Stage the book's sources (:func:`stage`) into ``output/source`` and build the HTML into ``output/html``.

    Arguments:
        output: the build folder (default ``book/_build``).
        notebooks: the lessons' folder.
        readme: the README whose lesson map makes the index page.
    Returns:
        a :class:`BookBuild`: the index page, the page count and the seconds taken.
    Raises:
        ModuleNotFoundError: when a package of the ``book`` extra is missing (the message names them).
        RuntimeError: listing Sphinx's warnings when there are any (a warning is a broken page: fix its cause).
        FileNotFoundError, ValueError, FileExistsError: what :func:`stage` raises.
    """
    _require_builder()
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    started = time.perf_counter()
    output = Path(output).resolve()
    source = stage(output, notebooks, readme)
    warnings = io.StringIO()
    with patch_docutils(source), docutils_namespace():
        app = Sphinx(
            str(source),
            str(source),
            str(output / "html"),
            str(output / "doctrees"),
            "html",
            confoverrides={"html_theme_options.repository_url": repository_url()},
            status=None,
            warning=warnings,
        )
        app.build()
    if warnings.getvalue().strip():
        # a page Sphinx warned about is read again by the next build (an unchanged page would not be), which says so
        shutil.rmtree(output / "doctrees", ignore_errors=True)
        raise RuntimeError(
            f"Sphinx warned while building the book (fix the cause in the lesson or in "
            f"invattn.book's staging):\n{warnings.getvalue()}"
        )
    pages = len(app.env.found_docs)
    return BookBuild(index=output / "html" / "index.html", pages=pages, seconds=time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    """``python -m invattn.book [--output DIR]``: build the book, print its index page, page count and build time.

    Arguments:
        argv: the command-line arguments (None: ``sys.argv[1:]``): ``--output DIR``, the build folder (default
            ``book/_build``).
    Raises:
        SystemExit: with status 1 and the cause when the build fails (what :func:`build` raises).
    """
    parser = argparse.ArgumentParser(prog="python -m invattn.book", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="build folder: sources staged in DIR/source, the site in DIR/html (default book/_build)",
    )
    args = parser.parse_args(argv)
    try:
        result = build(args.output)
    except (FileNotFoundError, ModuleNotFoundError, ValueError, RuntimeError) as error:
        parser.exit(1, f"invattn.book: {error}\n")
    print(f"book: {result.index} ({result.pages} pages, built in {result.seconds:.1f} s)")
    print(f"open it in a browser, or serve it: python -m http.server -d {result.index.parent}")
