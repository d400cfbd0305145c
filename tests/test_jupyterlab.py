"""The lessons as users meet them: JupyterLab in headless Chromium (Debian's browser, driven by Playwright).

A JupyterLab server is started from this environment on a free port with a token, over a scratch copy of the
notebooks (JupyterLab saves what it runs; the stored lessons are not touched). Screenshots go to
``test-artifacts/``. Without Chromium the tests skip, except under CI (``CI`` set), where they fail: CI
installs Chromium (``.ci/run``) so that this always runs there.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from _browser import ARTIFACTS, ROOT, free_port, require_browser

from invattn._notebooks import lesson_notebooks

LESSONS = lesson_notebooks(ROOT / "notebooks")
DEMO = "04_inversion_error.ipynb"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, token, folder) of a running JupyterLab serving a scratch copy of notebooks/."""
    require_browser()
    scratch = tmp_path_factory.mktemp("lab")
    folder = scratch / "notebooks"
    shutil.copytree(ROOT / "notebooks", folder, ignore=shutil.ignore_patterns("runs"))
    settings = scratch / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell in the DOM (no virtual scrolling), so the test can see all outputs
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    news = scratch / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(scratch / "settings"),
        "INVATTN_FIGURES": str(scratch / "figures"),
        "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"),
    }
    env.pop("INVATTN_PLAIN_PROGRESS", None)  # widgets as a user sees them
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={folder}",
            "--LabApp.expose_app_in_browser=True",
            f"--LabApp.workspaces_dir={scratch / 'workspaces'}",
            "--allow-root",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(scratch / "lab.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {(scratch / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield base, token, folder
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def open_lesson(browser, lab, name: str):
    base, token, _ = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")  # a fresh layout with just this lesson
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="attached", timeout=60_000)
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
        timeout=60_000,
    )
    return page


CELL_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  return {
    status: panel.sessionContext.session.kernel.status,
    counts: cells.map(c => c.model.executionCount),
    errors: cells.flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                                       .map(o => o.ename + ': ' + o.evalue)),
  };
}"""


def test_demo_lesson_runs_and_its_slider_changes_the_error(browser, lab):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_lesson(browser, lab, DEMO)
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'", timeout=60_000
    )
    # fresh state: clear the stored outputs, then run every cell as a user would (Run > Run All Cells)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        f"() => {{ const s = ({CELL_STATE})(); return s.status === 'idle' && s.counts.every(c => c !== null); }}",
        timeout=600_000,
        polling=1000,
    )
    state = page.evaluate(CELL_STATE)
    assert state["errors"] == [], state["errors"]
    summary = page.locator(".widget-html", has_text="relative error").first
    summary.wait_for(timeout=120_000)  # the widget view renders once its model has arrived
    summary.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "jupyterlab_demo_before.png"))
    before = summary.inner_text()
    iterations_before = int(re.search(r"(\d+) iterations", before).group(1))
    error_before = float(re.search(r"relative error ([0-9.e+-]+)", before).group(1))

    # move the iteration slider down by keyboard (the way a user nudges it); it acts when released
    slider = page.locator(".widget-hslider", has_text="iterations").locator(".noUi-handle").first
    slider.focus()
    for _ in range(6):
        slider.press("ArrowLeft")
    target = f"{iterations_before - 6} iterations"
    page.wait_for_function(
        "(target) => [...document.querySelectorAll('.widget-html')].some(e => e.innerText.includes('relative error')"
        " && e.innerText.includes(target))",
        arg=target,
        timeout=120_000,
    )
    after = summary.inner_text()
    page.screenshot(path=str(ARTIFACTS / "jupyterlab_demo_after.png"))
    iterations_after = int(re.search(r"(\d+) iterations", after).group(1))
    error_after = float(re.search(r"relative error ([0-9.e+-]+)", after).group(1))
    assert iterations_after == iterations_before - 6
    assert error_after > error_before  # fewer iterations, a larger reconstruction error
    page.close()


@pytest.mark.parametrize("lesson", [p.name for p in LESSONS])
def test_every_lesson_opens_and_renders(browser, lab, lesson):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_lesson(browser, lab, lesson)
    heading = page.locator(".jp-MarkdownOutput h1").first
    heading.wait_for(timeout=60_000)
    number = lesson.split("_")[0]  # "02", or "02a" for an appendix
    assert heading.inner_text().startswith(f"{number} ·")
    assert page.locator(".jp-Cell").count() > 5
    assert page.locator(".jp-RenderedImage img, .jp-RenderedText").count() > 0  # stored outputs render
    page.screenshot(path=str(ARTIFACTS / f"jupyterlab_lesson_{number}.png"))
    page.close()
