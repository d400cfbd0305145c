"""The book's pages: each lesson and README's lesson map staged as the site shows them, every link made to resolve
inside the site (see :mod:`invattn.book`)."""

from __future__ import annotations

import copy
import html
import posixpath
import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from .._notebooks import WIDGET_VIEW
from ..colab import BADGE_IMAGE

__all__ = [
    "ROOT",
    "NOTEBOOKS",
    "README",
    "LOCAL_BADGE",
    "DEMO_NOTE",
    "lesson_table",
    "index_page",
    "heading_slug",
    "heading_anchors",
    "cell_source",
    "Links",
    "stage_markdown",
    "stage_notebook",
]

ROOT = Path(__file__).resolve().parent.parent.parent
NOTEBOOKS = ROOT / "notebooks"
README = ROOT / "README.md"
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


def lesson_table(readme: str) -> str:
    """The ``## Lessons`` section of README's text: the lesson map, up to the next heading.

    Arguments:
        readme: README's markdown text.
    Returns:
        the section's body (the table and any text around it), stripped.
    Raises:
        ValueError: when README has no such section or it holds no table.
    """
    match = re.search(r"^## Lessons[ \t]*\n(.*?)(?=^#{1,3} |\Z)", readme, flags=re.MULTILINE | re.DOTALL)
    if not match or not re.search(r"^\|.*\|[ \t]*$", match.group(1), flags=re.MULTILINE):
        raise ValueError("README.md has no '## Lessons' section with a table: the book's index is made from it")
    return match.group(1).strip()


def index_page(readme: str, lesson_names: list[str]) -> str:
    """The book's landing page (MyST markdown) from README's text: title, opening, lesson map and a hidden toctree.

    The opening paragraphs lose their badges; the table of contents follows the map's order.

    Arguments:
        readme: README's markdown text.
        lesson_names: the lessons' file names (``NN_name.ipynb``).
    Returns:
        the page's MyST markdown.
    Raises:
        ValueError: when README has no title or no lesson map, the map links to a lesson that is not in
            ``lesson_names``, or a lesson is missing from the map (the book's contents would differ from README's).
    """
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


def heading_slug(text: str) -> str:
    """The anchor MyST gives a heading (GitHub's slug of its text, inline math left out), as it resolves links.

    Arguments:
        text: the heading's text, without the leading ``#``.
    Returns:
        the anchor (lower case, hyphens for spaces, markup and ``$…$`` removed).
    Raises:
        ModuleNotFoundError: without ``myst_parser`` (the ``book`` extra).
    """
    from myst_parser.slugs import github_slugify  # the book extra's: imported only when a book is staged

    text = re.sub(r"\$[^$]*\$", "", text)
    text = re.sub(r"[*`]|(?<!\w)_|_(?!\w)", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return github_slugify(text)


def heading_anchors(nb: dict) -> dict[str, str]:
    """Each way a reader may link to a heading of ``nb`` (Jupyter's anchor, GitHub's slug, MyST's) → MyST's.

    Arguments:
        nb: a notebook as JSON (a dict with ``cells``).
    Returns:
        a dict from each accepted anchor to MyST's anchor for the same heading (the first heading wins a clash).
    Raises:
        ModuleNotFoundError: without ``myst_parser`` (the ``book`` extra).
    """
    anchors = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for _, text in _HEADING.findall(cell_source(cell)):
            slug = heading_slug(text)
            shown = re.sub(r"[*`]", "", text)  # as Jupyter shows it: math still as TeX, markup gone
            for name in (text.replace(" ", "-"), shown.replace(" ", "-"), slug):
                anchors.setdefault(name, slug)
    return anchors


def cell_source(cell: dict) -> str:
    """A notebook cell's source as one string, whether stored as a string or as a list of lines.

    Arguments:
        cell: a cell as JSON (a dict with ``source``).
    Returns:
        its source text.
    """
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


class Links:
    """Rewrites the link targets of one staged page so that each resolves in the built site (see the module's text).

    Calling it on a link target returns the target to stage: another lesson (and its section) a link between pages,
    a figure a file of the site, README (or its lesson map) the index page, any other file of the repository its
    address there; an address outside the repository is kept. A call raises ``ValueError`` for a link outside the
    repository, to a missing file or figure, or to a heading the lesson lacks.

    Arguments:
        name: the page's file in the repository (a lesson's name, or ``README.md`` for the index).
        folder: the repository folder its relative links start from.
        anchors: each lesson's headings, lesson file name → (:func:`heading_anchors`).
        url: the repository's address, ``https://github.com/OWNER/NAME``.
    """

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


def stage_markdown(text: str, links: Links) -> str:
    """A markdown text with its links made to resolve in the site, the Colab badge image local, ``<summary>`` math
    typesettable; code (fenced blocks and inline spans) is left as typed.

    Arguments:
        text: the markdown text (a cell's source, or the index page).
        links: the page's :class:`Links`.
    Returns:
        the staged markdown text.
    Raises:
        ValueError: for a broken link or an image from outside the book (the site requests nothing outside itself).
    """
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
    """A static copy of a lesson as the book shows it: widgets replaced by :data:`DEMO_NOTE`, links resolved.

    Each widget output is replaced by :data:`DEMO_NOTE`, ``metadata.widgets`` dropped, the Colab badge image made
    local and every markdown cell staged by :func:`stage_markdown`. ``nb`` itself is not changed.

    Arguments:
        nb: the lesson, a notebook as JSON.
        name: its file name (``NN_name.ipynb``).
        anchors: each lesson's headings, lesson file name → (:func:`heading_anchors`).
        url: the repository's address.
    Returns:
        the staged copy, a notebook as JSON.
    Raises:
        ValueError: for a link to a missing file or heading, or an image from outside the book.
    """
    staged = copy.deepcopy(nb)
    staged["metadata"].pop("widgets", None)
    links = Links(name, NOTEBOOKS, anchors, url)
    for cell in staged["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = stage_markdown(cell_source(cell), links)
        for index, output in enumerate(cell.get("outputs", [])):
            if WIDGET_VIEW in output.get("data", {}):
                cell["outputs"][index] = {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {"text/html": DEMO_NOTE},
                }
    return staged
