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
import copy
import html
import io
import json
import posixpath
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from ._notebooks import WIDGET_VIEW, lesson_notebooks
from .colab import BADGE_IMAGE, repository_url

__all__ = ["BookBuild", "lessons", "lesson_table", "index_page", "stage_notebook", "stage", "build", "main"]

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"
FIGURES = ROOT / "figures"
README = ROOT / "README.md"
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

LOCAL_BADGE = "_static/open-in-colab.svg"
"""The book's own badge image, relative to the staged sources (and to ``book/``)."""
DEMO_NOTE = (
    '<div class="admonition note invattn-static-demo">\n'
    '<p class="admonition-title">Interactive demo: needs a running kernel</p>\n'
    "<p>The controls of this demo need Python behind them, which a static page does not have. Run the lesson in "
    "JupyterLab (<code>python -m jupyterlab notebooks</code>, or <code>make lab</code>) or open the course's demo "
    "app (<code>make demo</code>, or <code>python -m voila app/demos.ipynb</code>) to move them. The figure below "
    "is the demo's static state, drawn by the same function.</p>\n"
    "</div>\n"
)
_TARGET = re.compile(r"(\]\(\s*)(<[^>]*>|[^)\s]+)")  # the target of a markdown link or image: `](target`
_HTML_TARGET = re.compile(r"""(\b(?:href|src)\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE)
_REMOTE_IMAGE = re.compile(
    r"""!\[[^\]]*\]\(\s*<?(?:https?:)?//|<img\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE
)
_SUMMARY = re.compile(r"(<summary\b[^>]*>)(.*?)(</summary>)", re.IGNORECASE | re.DOTALL)
_INLINE_MATH = re.compile(r"(?<![\\$])\$([^$\n]+?)\$(?!\$)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
_CODE = re.compile(r"(^```.*?^```[ \t]*$|`[^`\n]+`)", re.MULTILINE | re.DOTALL)  # fenced blocks, inline spans


@dataclass(frozen=True)
class BookBuild:
    """What :func:`build` made: the index page, the number of pages (the index and one per lesson) and the seconds
    the staging and the build took together."""

    index: Path
    pages: int
    seconds: float


MARKER = ".invattn-book"
"""The file that marks a folder as the book's output (see :func:`stage`)."""


def lessons(folder: str | Path = NOTEBOOKS) -> list[Path]:
    """The lessons of ``folder``, ``NN…_name.ipynb`` in order. Raises ``FileNotFoundError`` when there are none."""
    found = lesson_notebooks(folder)
    if not found:
        raise FileNotFoundError(f"no lessons (NN_name.ipynb) found in {Path(folder).resolve()}: nothing to build")
    return found


def lesson_table(readme: str) -> str:
    """The ``## Lessons`` section of README's text ``readme``: the lesson map, up to the next heading.
    Raises ``ValueError`` when README has no such section or it holds no table."""
    match = re.search(r"^## Lessons[ \t]*\n(.*?)(?=^#{1,3} |\Z)", readme, flags=re.MULTILINE | re.DOTALL)
    if not match or not re.search(r"^\|.*\|[ \t]*$", match.group(1), flags=re.MULTILINE):
        raise ValueError("README.md has no '## Lessons' section with a table: the book's index is made from it")
    return match.group(1).strip()


def index_page(readme: str, lesson_names: list[str]) -> str:
    """The book's landing page (MyST markdown) from README's text ``readme``: its title and opening paragraphs, its
    lesson map, and a hidden table of contents in the map's order. ``lesson_names`` are the lessons' file names.

    Raises ``ValueError`` when README has no lesson map, the map links to a lesson that is not in ``lesson_names``,
    or a lesson is missing from the map (the book's contents would differ from README's)."""
    title = re.search(r"^# (.+)$", readme, flags=re.MULTILINE)
    if not title:
        raise ValueError("README.md has no title ('# …' line): the book's index needs one")
    opening = readme[title.end() :].split("\n## ", 1)[0]
    # badges describe the repository (its CI, Colab), not the book, and would be pictures from outside it
    opening = re.sub(r"^[ \t]*\[?!\[.*$\n?", "", opening, flags=re.MULTILINE).strip()
    table = lesson_table(readme)
    linked = re.findall(r"\]\(notebooks/([^)#\s]+\.ipynb)\)", table)
    unknown = [name for name in linked if name not in lesson_names]
    if unknown:
        raise ValueError(f"README's lesson map links to {', '.join(unknown)}, not found in notebooks/")
    missing = [name for name in lesson_names if name not in linked]
    if missing:
        raise ValueError(f"README's lesson map has no row for {', '.join(missing)}: add it to the '## Lessons' table")
    order = list(dict.fromkeys(linked))
    toctree = "\n".join(
        ["```{toctree}", ":hidden:", ":maxdepth: 1", "", *(f"notebooks/{Path(n).stem}" for n in order), "```"]
    )
    note = (
        "This book shows every lesson with its stored outputs. The demos need a running kernel: here each shows "
        "its static state; run them in JupyterLab (`make lab`) or as the demo app (`make demo`)."
    )
    return f"# {title.group(1).strip()}\n\n{opening}\n\n{note}\n\n## Lessons\n\n{table}\n\n{toctree}\n"


def _heading_slug(text: str) -> str:
    """The anchor MyST gives a heading (GitHub's slug of its text, inline math left out), as it resolves links."""
    from myst_parser.slugs import github_slugify

    text = re.sub(r"\$[^$]*\$", "", text)
    text = re.sub(r"[*`]|(?<!\w)_|_(?!\w)", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return github_slugify(text)


def _anchors(nb: dict) -> dict[str, str]:
    """Each way a reader may link to a heading of ``nb`` (Jupyter's anchor, GitHub's slug, MyST's) -> MyST's."""
    anchors = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for _, text in _HEADING.findall(_source(cell)):
            slug = _heading_slug(text)
            shown = re.sub(r"[*`]", "", text)  # as Jupyter shows it: math still as TeX, markup gone
            for name in (text.replace(" ", "-"), shown.replace(" ", "-"), slug):
                anchors.setdefault(name, slug)
    return anchors


def _source(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


class _Links:
    """Rewrites the link targets of one staged page so that each resolves in the built site (see the module's text).

    ``name`` is the page's file in the repository (a lesson's name, or ``README.md`` for the index), ``folder`` the
    repository folder its relative links start from, ``anchors`` each lesson's headings (from :func:`_anchors`),
    ``url`` the repository's address."""

    def __init__(self, name: str, folder: Path, anchors: dict[str, dict[str, str]], url: str):
        self.name, self.folder, self.anchors, self.url = name, folder, anchors, url
        self.start = folder.relative_to(ROOT).as_posix()  # the staged page's folder in the site: "notebooks" or "."

    def __call__(self, target: str) -> str:
        bare = target.strip("<>")
        if re.match(r"^[a-z][a-z0-9+.-]*:", bare, flags=re.IGNORECASE) or bare.startswith("//"):
            return target  # an address outside the repository: a link the reader may follow
        path, _, fragment = bare.partition("#")
        if not path:
            if self.name == README.name:
                return self._readme(fragment)
            return "#" + self._section(self.name, fragment)
        resolved = (self.folder / unquote(path)).resolve()
        try:
            relative = resolved.relative_to(ROOT).as_posix()
        except ValueError:
            raise ValueError(f"{self.name}: the link {target!r} points outside the repository") from None
        if PurePosixPath(relative).parent == PurePosixPath("notebooks") and resolved.name in self.anchors:
            return self._relative(relative) + ("#" + self._section(resolved.name, fragment) if fragment else "")
        if relative.startswith("figures/"):
            if not resolved.is_file():
                raise ValueError(f"{self.name}: the link {target!r} points at a missing figure")
            return self._relative(relative)
        if not resolved.exists():
            raise ValueError(f"{self.name}: the link {target!r} points at {relative}, which does not exist")
        if relative == README.name:
            return self._readme(fragment)
        kind = "tree" if resolved.is_dir() else "blob"
        return f"{self.url}/{kind}/main/{relative}" + (f"#{fragment}" if fragment else "")

    def _relative(self, relative: str) -> str:
        """``relative`` (a path in the repository, and so in the staged site) as seen from the staged page."""
        return posixpath.relpath(relative, self.start)

    def _readme(self, fragment: str) -> str:
        """README itself, or its lesson map, is the index page; any other part of it is README in the repository."""
        if fragment in ("", "lessons"):
            return self._relative("index.md") + ("#lessons" if fragment else "")
        return f"{self.url}/blob/main/README.md#{fragment}"

    def _section(self, name: str, fragment: str) -> str:
        anchors = self.anchors[name]
        if fragment not in anchors:
            raise ValueError(
                f"{self.name}: the link to '#{fragment}' of {name} names no heading of it "
                f"(its headings: {', '.join(sorted(set(anchors.values())))})"
            )
        return anchors[fragment]


def _summary_math(match: re.Match) -> str:
    """``$…$`` in a ``<summary>`` (raw HTML, which MyST does not parse) as the math element MathJax typesets."""
    body = _INLINE_MATH.sub(
        lambda m: f'<span class="math notranslate nohighlight">\\({html.escape(html.unescape(m.group(1)))}\\)</span>',
        match.group(2),
    )
    return match.group(1) + body + match.group(3)


def _outside_code(text: str, pattern: re.Pattern, replace) -> str:
    """``pattern.sub(replace, text)`` except inside code (fenced blocks and inline spans), which is shown as typed."""
    parts = _CODE.split(text)
    return "".join(part if index % 2 else pattern.sub(replace, part) for index, part in enumerate(parts))


def _stage_markdown(text: str, links: _Links) -> str:
    """A markdown text with its links made to resolve in the site, the Colab badge image made local and math in a
    ``<summary>`` made typesettable. Raises ``ValueError`` for a broken link or an image from outside the book."""
    text = _outside_code(text, _TARGET, lambda m: m.group(1) + links(m.group(2)))
    text = _outside_code(
        text,
        _HTML_TARGET,
        lambda m: m.group(1) + m.group(2) + html.escape(links(html.unescape(m.group(3)))) + m.group(2),
    )
    # the badge's link still goes to Colab; only its picture comes from the book
    text = text.replace(f"]({BADGE_IMAGE})", f"]({links._relative(LOCAL_BADGE)})")
    remote = _REMOTE_IMAGE.search(_CODE.sub("", text))
    if remote:
        raise ValueError(
            f"{links.name}: an image from outside the book ({remote.group(0)}…): the built site must "
            "not request anything outside itself; save it under figures/"
        )
    return _SUMMARY.sub(_summary_math, text)


def stage_notebook(nb: dict, name: str, anchors: dict[str, dict[str, str]], url: str) -> dict:
    """A static copy of the lesson ``nb`` (a notebook as JSON, named ``name``), as the book shows it: each widget
    output replaced by :data:`DEMO_NOTE`, ``metadata.widgets`` dropped, the Colab badge image made local, links
    made to resolve in the site (``anchors``: each lesson's headings, from :func:`_anchors`; ``url``: the
    repository's address). ``nb`` itself is not changed.

    Raises ``ValueError`` for a link to a missing file or heading, or an image from outside the book."""
    staged = copy.deepcopy(nb)
    staged["metadata"].pop("widgets", None)
    links = _Links(name, NOTEBOOKS, anchors, url)
    for cell in staged["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = _stage_markdown(_source(cell), links)
        for index, output in enumerate(cell.get("outputs", [])):
            if WIDGET_VIEW in output.get("data", {}):
                cell["outputs"][index] = {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {"text/html": DEMO_NOTE},
                }
    return staged


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
    """Write the book's sources into ``output/source`` (see the module's text) and return that folder. Files left
    there from an earlier build that this one does not write are removed.

    Raises ``FileNotFoundError`` when there are no lessons or no README, and ``ValueError`` (from
    :func:`index_page` and :func:`stage_notebook`) when README's lesson map or a lesson's link is wrong, and
    ``FileExistsError`` when ``output`` holds files that no build wrote (a build removes its own leftovers, so it
    refuses to work in a folder it did not make: :data:`MARKER` marks the ones it did)."""
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
    anchors = {name: _anchors(nb) for name, nb in books.items()}
    written = _sync(FIGURES, source / "figures")
    for name in BOOK_SOURCES:
        if (BOOK / name).exists():
            written |= _sync(BOOK / name, source / name)
    index = source / "index.md"
    page = index_page(readme.read_text(encoding="utf-8"), list(books))
    _write_if_changed(index, _stage_markdown(page, _Links(README.name, ROOT, anchors, url)).encode())
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
    import importlib.util

    missing = [package for module, package in BUILDER_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ModuleNotFoundError(
            f"the book needs {', '.join(missing)} (missing here): "
            "pip install -e '.[book]' installs them (on Python 3.11 or newer)"
        )


def build(
    output: str | Path = DEFAULT_OUTPUT, notebooks: str | Path = NOTEBOOKS, readme: str | Path = README
) -> BookBuild:
    """Stage the book's sources (:func:`stage`, from ``notebooks`` and ``readme``) into ``output/source`` and build
    the HTML into ``output/html``.

    Raises ``ModuleNotFoundError`` when a package of the ``book`` extra is missing, what :func:`stage` raises, and
    ``RuntimeError`` listing Sphinx's warnings when there are any (a warning is a broken page: fix its cause)."""
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
    """``python -m invattn.book [--output DIR]``: build the book, print its index page, page count and build time."""
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


if __name__ == "__main__":
    main(sys.argv[1:])
