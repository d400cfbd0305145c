"""The lessons' static book (`python -m invattn.book`, `make book`).

Without a browser: the staging of the lessons (widget outputs replaced by a note, widget state dropped, the Colab
badge made local, links made to resolve in the site or refused) and the index generated from README's lesson map.

In headless Chromium (driven by Playwright, as tests/test_demo_app.py): the book built once into a temporary folder,
served by a local HTTP server, every page opened. On every page MathJax has typeset every math element and no text
still reads as TeX (``$…$``, ``\\(…\\)``), every image loaded, no request failed or went outside the local server,
the console has no error, and every link inside the site answers 200 and lands on an element that exists. A
screenshot of each page goes to ``test-artifacts/book_*.png``. Without Chromium the browser test skips, except
under CI, where it fails.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin

import pytest
from _browser import ARTIFACTS, ROOT, free_port

from invattn import book
from invattn.colab import BADGE_IMAGE, repository_url

LESSONS = book.lessons()
WIDGET_LESSONS = [path for path in LESSONS if book.WIDGET_VIEW in path.read_text(encoding="utf-8")]


def _require_book_extra() -> None:
    """Skip without the [book] extra (Sphinx, MyST-NB, the theme, MathJax), except under CI, which installs it."""
    missing = [package for module, package in book.BUILDER_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        message = f"the book's builder is the [book] extra; missing here: {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _nb(*markdown: str, outputs: list | None = None) -> dict:
    """A small notebook: one markdown cell per text, then a code cell with ``outputs``."""
    cells = [{"cell_type": "markdown", "metadata": {}, "source": text} for text in markdown]
    cells.append(
        {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": "x = 1", "outputs": outputs or []}
    )
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _stage_markdown(text: str, name: str = "01_invertible_residual_networks.ipynb") -> str:
    """``text`` as a markdown cell of lesson ``name`` is staged (links checked against the real lessons)."""
    _require_book_extra()
    nbs = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in LESSONS}
    anchors = {lesson: book.heading_anchors(nb) for lesson, nb in nbs.items()}
    staged = book.stage_notebook(_nb(text), name, anchors, repository_url())
    return staged["cells"][0]["source"]


# --- the staging, without a browser --------------------------------------------------------------------------


def test_index_is_readme_lesson_map_with_every_lesson_in_its_order():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    names = [path.name for path in LESSONS]
    page = book.index_page(readme, names)
    assert book.lesson_table(readme) in page  # the map itself, word for word
    toctree = re.search(r"```\{toctree\}\n(.*?)```", page, flags=re.DOTALL).group(1)
    listed = [line for line in toctree.splitlines() if line.startswith("notebooks/")]
    order = list(dict.fromkeys(re.findall(r"\]\(notebooks/([^)]+)\.ipynb\)", book.lesson_table(readme))))
    assert listed == [f"notebooks/{stem}" for stem in order]
    assert sorted(listed) == sorted(f"notebooks/{Path(name).stem}" for name in names)
    assert "\nInteractive lessons" in readme  # README's opening, which the index shows without the badges above it
    badged = readme.replace(
        "\nInteractive lessons", "\n[![CI](https://ci.example/badge.svg)](https://ci.example)\n\nInteractive lessons", 1
    )
    assert "ci.example" not in book.index_page(badged, names) and "Interactive lessons" in page


def test_index_refuses_a_lesson_missing_from_readme_and_a_row_without_lesson():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    names = [path.name for path in LESSONS]
    with pytest.raises(ValueError, match="no row for 10_new_lesson.ipynb"):
        book.index_page(readme, [*names, "10_new_lesson.ipynb"])
    with pytest.raises(ValueError, match=f"links to {names[0]}, not found"):
        book.index_page(readme, names[1:])
    with pytest.raises(ValueError, match="no '## Lessons' section"):
        book.index_page(readme.replace("## Lessons", "## Chapters"), names)


def test_widget_output_becomes_the_note_and_widget_state_is_dropped():
    _require_book_extra()
    assert WIDGET_LESSONS, "no lesson stores a widget: this test checks nothing"
    for path in WIDGET_LESSONS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        anchors = {path.name: book.heading_anchors(nb)}
        staged = book.stage_notebook(nb, path.name, anchors, repository_url())
        text = json.dumps(staged)
        assert book.WIDGET_VIEW not in text and "widget-state" not in text and "widgets" not in staged["metadata"]
        notes = [
            i
            for i, cell in enumerate(staged["cells"])
            for output in cell.get("outputs", [])
            if output.get("data", {}).get("text/html") == book.DEMO_NOTE
        ]
        assert len(notes) == text.count("invattn-static-demo") >= 1
        following = [cell for cell in staged["cells"][notes[0] + 1 :] if cell["cell_type"] == "code"][0]
        assert any("image/png" in output.get("data", {}) for output in following["outputs"])  # the static state
        assert "widgets" in nb["metadata"]  # the lesson itself is left as it was
    for words in ("python -m jupyterlab notebooks", "make demo", "python -m voila app/demos.ipynb", "figure below"):
        assert words in book.DEMO_NOTE


def test_colab_badge_image_is_made_local_and_its_link_kept():
    colab = "https://colab.research.google.com/github/invattn/invattn/blob/main/notebooks/01_x.ipynb"
    staged = _stage_markdown(f"# 01 · Title\n\n[![Open In Colab]({BADGE_IMAGE})]({colab})\n")
    assert staged == f"# 01 · Title\n\n[![Open In Colab](../{book.LOCAL_BADGE})]({colab})\n"
    assert (ROOT / "book" / book.LOCAL_BADGE).read_text().startswith("<svg")
    with pytest.raises(ValueError, match="outside the book"):
        _stage_markdown("![a picture](https://example.org/a.png)")
    with pytest.raises(ValueError, match="outside the book"):
        _stage_markdown('<img src="https://example.org/a.png">')


def test_links_resolve_in_the_site_or_are_refused():
    url = repository_url()
    staged = _stage_markdown(
        "[lesson 03](03_building_invertible_attention.ipynb), [its section 1](03_building_invertible_attention.ipynb"
        "#1-·-From-a-photograph-to-$N$-positions), "
        "[section 3](03_building_invertible_attention.ipynb#3-·-concat,-by-hand), "
        "[a figure](../figures/01_fixed_point_error.png), "
        "[the map](../README.md#lessons), [training](../README.md#training-the-density-model), "
        "[the solvers](../invattn/solvers.py), [bench](../invattn/bench), [a paper](https://arxiv.org/abs/2107.0), "
        '<a href="../invattn/logdet.py">logdet</a>'
    )
    assert staged == (
        "[lesson 03](03_building_invertible_attention.ipynb), [its section 1](03_building_invertible_attention.ipynb"
        "#1--from-a-photograph-to--positions), [section 3](03_building_invertible_attention.ipynb#3--concat-by-hand), "
        "[a figure](../figures/01_fixed_point_error.png), "
        f"[the map](../index.md#lessons), [training]({url}/blob/main/README.md#training-the-density-model), "
        f"[the solvers]({url}/blob/main/invattn/solvers.py), [bench]({url}/tree/main/invattn/bench), "
        f'[a paper](https://arxiv.org/abs/2107.0), <a href="{url}/blob/main/invattn/logdet.py">logdet</a>'
    )
    code = "`model[0](x)` and\n```python\nf = layers[1](y)\n```\n"
    assert _stage_markdown(code) == code  # code is shown as typed, not read as links
    nbs = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in LESSONS}
    index_links = book.Links("README.md", ROOT, {name: book.heading_anchors(nb) for name, nb in nbs.items()}, url)
    assert book.stage_markdown(
        "[03](notebooks/03_building_invertible_attention.ipynb#3-·-concat,-by-hand), [make](#two-commands), "
        "[map](#lessons), ![fig](figures/01_fixed_point_error.png), [solvers](invattn/solvers.py)",
        index_links,
    ) == (
        "[03](notebooks/03_building_invertible_attention.ipynb#3--concat-by-hand), "
        f"[make]({url}/blob/main/README.md#two-commands), [map](index.md#lessons), "
        f"![fig](figures/01_fixed_point_error.png), [solvers]({url}/blob/main/invattn/solvers.py)"
    )
    for broken, message in [
        ("[x](11_no_such_lesson.ipynb)", "does not exist"),
        ("[x](../figures/no_such_figure.png)", "missing figure"),
        ("[x](03_building_invertible_attention.ipynb#no-such-section)", "names no heading"),
        ("[x](#no-such-section)", "names no heading"),
        ("[x](../../outside.txt)", "outside the repository"),
    ]:
        with pytest.raises(ValueError, match=message):
            _stage_markdown(broken)


def test_math_in_a_summary_becomes_a_math_element():
    staged = _stage_markdown("<details><summary>Why $L^2 < 1 - p$ and $x$</summary>\n\nBody $y$.\n\n</details>")
    assert staged == (
        '<details><summary>Why <span class="math notranslate nohighlight">\\(L^2 &lt; 1 - p\\)</span>'
        ' and <span class="math notranslate nohighlight">\\(x\\)</span></summary>\n\nBody $y$.\n\n'
        "</details>"
    )


def test_bad_input_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no lessons"):
        book.stage(tmp_path / "out", notebooks=tmp_path)
    monkeypatch.setitem(book.BUILDER_PACKAGES, "no_such_module_for_the_book", "no-such-package")
    with pytest.raises(ModuleNotFoundError, match="no-such-package"):
        book.build(tmp_path / "out")


def test_a_sphinx_warning_fails_the_build(tmp_path):
    """A page Sphinx warns about is a broken page: the build says so instead of shipping it."""
    _require_book_extra()
    lesson = LESSONS[0]
    nb = json.loads(lesson.read_text(encoding="utf-8"))
    nb["cells"].insert(1, {"cell_type": "markdown", "metadata": {}, "source": "#### A heading three levels down"})
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / lesson.name).write_text(json.dumps(nb), encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(f"# A course\n\n## Lessons\n\n| lesson |\n|---|\n| [01](notebooks/{lesson.name}) |\n")
    for _ in range(2):  # the second build, with nothing changed, reads the page again and warns again
        with pytest.raises(RuntimeError, match="Non-consecutive header level"):
            book.build(tmp_path / "out", notebooks=tmp_path / "notebooks", readme=readme)


def test_the_command_prints_the_index_page_pages_and_time_or_the_cause(tmp_path, monkeypatch, capsys):
    built = book.BookBuild(index=tmp_path / "html" / "index.html", pages=11, seconds=4.26)
    monkeypatch.setattr(book, "build", lambda output: built if output == tmp_path else None)
    book.main(["--output", str(tmp_path)])
    assert f"book: {built.index} (11 pages, built in 4.3 s)" in capsys.readouterr().out

    def refuse(output):
        raise FileNotFoundError("no lessons (NN_name.ipynb) found in /nowhere: nothing to build")

    monkeypatch.setattr(book, "build", refuse)
    with pytest.raises(SystemExit) as stopped:
        book.main([])
    assert stopped.value.code == 1 and "invattn.book: no lessons" in capsys.readouterr().err


# --- the built site, in a browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The book built into a temporary folder and served on a free local port: (base URL, build result)."""
    _require_book_extra()
    result = book.build(tmp_path_factory.mktemp("book"))
    handler = functools.partial(_QuietHandler, directory=str(result.index.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", result
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


TYPESET = """async () => {
  if (!window.MathJax) return {math: document.querySelectorAll('.math').length, mathjax: false};
  await MathJax.startup.promise;
  const math = [...document.querySelectorAll('.math')];
  return {math: math.length, mathjax: true,
          untypeset: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80)),
          errors: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')].map(e => e.textContent.slice(0, 80))};
}"""

RAW_TEX = r"""() => {
  const skip = 'script, style, pre, code, kbd, samp, textarea, mjx-container, .highlight';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const found = [];
  const tex = /\$[^$\s][^$]*\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\\frac|\\mathrm/;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.parentElement.closest(skip) && tex.test(node.textContent)) found.push(node.textContent.slice(0, 120));
  }
  return found;
}"""

IMAGES = """async () => {
  const images = [...document.images];
  images.forEach(i => { i.loading = 'eager'; });
  await Promise.all(images.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return images.map(i => ({src: i.getAttribute('src'), width: i.naturalWidth}));
}"""


def _pages(index: Path) -> list[str]:
    """Every page of the site (the theme's template snippets it copies into ``_static`` are not pages)."""
    return sorted(
        path.relative_to(index.parent).as_posix()
        for path in index.parent.rglob("*.html")
        if not path.relative_to(index.parent).parts[0].startswith("_")
    )


def _check_link(link: str, checked: dict) -> str | None:
    """None when ``link`` (inside the site) answers 200 and its fragment names an element of the page, else why."""
    address, fragment = urldefrag(link)
    if address not in checked:
        try:
            with urllib.request.urlopen(address, timeout=10) as response:
                checked[address] = (response.status, response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as error:
            checked[address] = (error.code, "")
    status, text = checked[address]
    if status != 200:
        return f"{link}: HTTP {status}"
    if (
        fragment
        and address.endswith(".html")
        and not re.search(rf"""\bid=["']{re.escape(unquote(fragment))}["']""", text)
    ):
        return f"{link}: no element with id {fragment!r}"
    return None


def test_every_page_renders_offline_with_math_images_and_links(site, browser):
    base, result = site
    pages = _pages(result.index)
    lesson_pages = [f"notebooks/{path.stem}.html" for path in LESSONS]
    assert result.pages == len(LESSONS) + 1 and set(lesson_pages) | {"index.html"} <= set(pages)
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests, failed, errors = [], [], []
    page.on("request", lambda request: requests.append(request.url))
    # Chromium drops a page's favicon fetch when the next page is opened (ERR_ABORTED): not a failure of the site,
    # whose favicon is checked to be served below
    page.on(
        "requestfailed",
        lambda request: (
            None
            if request.url.endswith("favicon.svg") and "ERR_ABORTED" in str(request.failure)
            else failed.append(f"{request.url}: {request.failure}")
        ),
    )
    assert urllib.request.urlopen(urljoin(base, "_static/favicon.svg")).status == 200
    page.on(
        "response",
        lambda response: failed.append(f"{response.url}: HTTP {response.status}") if response.status >= 400 else None,
    )
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    links, checked, problems = set(), {}, []
    for name in pages:
        page.goto(urljoin(base, name), wait_until="networkidle")  # the favicon too, which loads after the page
        typeset = page.evaluate(TYPESET)
        if name in lesson_pages or name == "index.html":
            assert typeset["mathjax"] and typeset["math"] > 0, f"{name}: no math typeset by MathJax"
        if typeset["mathjax"]:
            assert not typeset["untypeset"], f"{name}: math left untypeset: {typeset['untypeset'][:5]}"
            assert not typeset["errors"], f"{name}: TeX errors: {typeset['errors'][:5]}"
        raw = page.evaluate(RAW_TEX)
        assert not raw, f"{name}: text still reads as TeX (not typeset): {raw[:5]}"
        images = page.evaluate(IMAGES)
        assert all(image["width"] > 0 for image in images), f"{name}: images not loaded: " + str(
            [image["src"] for image in images if image["width"] == 0]
        )
        if name in lesson_pages:
            assert any(image["src"].endswith("open-in-colab.svg") for image in images), f"{name}: no local badge"
            assert sum(image["src"].startswith("../_images/") for image in images) >= 1, f"{name}: no figure"
        text = page.inner_text("body")
        assert "VBox(" not in text and "HBox(" not in text, f"{name}: a widget's text representation is shown"
        shot = ARTIFACTS / f"book_{Path(name).with_suffix('').as_posix().replace('/', '_')}.png"
        page.screenshot(path=str(shot))
        if name in lesson_pages:  # the first figure with the text above it (README's picture of the book is one)
            page.locator(".cell_output img").first.scroll_into_view_if_needed()
            page.evaluate("() => window.scrollBy(0, 250)")
            page.screenshot(path=str(shot.with_name(shot.stem + "_figure.png")))
        for href in page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
            if href.startswith(base):
                links.add(href)
    for path in LESSONS:  # every heading a lesson may link to has the anchor the staging rewrites links to
        page.goto(
            urljoin(base, f"notebooks/{path.stem}.html"), wait_until="networkidle"
        )  # the favicon too, which loads after the page
        ids = set(page.eval_on_selector_all("[id]", "elements => elements.map(e => e.id)"))
        slugs = set(book.heading_anchors(json.loads(path.read_text(encoding="utf-8"))).values())
        assert slugs <= ids, f"{path.name}: headings without the anchor links are rewritten to: {slugs - ids}"
    for name in (path.name for path in WIDGET_LESSONS):
        page.goto(
            urljoin(base, f"notebooks/{Path(name).stem}.html"), wait_until="networkidle"
        )  # the favicon too, which loads after the page
        assert "needs a running kernel" in page.inner_text("body"), f"{name}: no note where its demo was"
    page.close()
    outside = [url for url in requests if not url.startswith(base) and not url.startswith(("data:", "blob:"))]
    assert not outside, f"requests outside the site: {sorted(set(outside))[:10]}"
    assert not failed, f"failed requests: {failed[:10]}"
    assert not errors, f"console errors: {errors[:10]}"
    for lesson in lesson_pages:
        assert urljoin(base, lesson) in {urldefrag(link)[0] for link in links}, f"nothing links to {lesson}"
    problems = [problem for link in sorted(links) if (problem := _check_link(link, checked))]
    assert not problems, f"links that do not resolve: {problems[:10]}"


def test_the_book_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "source" / "mine").mkdir(parents=True)
    (tmp_path / "source" / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(FileExistsError, match="did not write"):
        book.stage(tmp_path)
    assert (tmp_path / "source" / "mine" / "thesis.tex").read_text() == "x"
