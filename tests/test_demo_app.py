"""The demo app as a user meets it: `make demo`'s Voilà server, opened in headless Chromium (driven by Playwright).

One control of each of the six demos is moved by one step with the keyboard, and the numbers the demo shows must
change as the lessons say they do. Screenshots, and the time from each key press to the new summary as the browser
saw it, go to ``test-artifacts/``. The browser has no internet here and in CI: the app must work offline. Without
Chromium the test skips, except under CI, where it fails (as the JupyterLab tests do).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from _browser import ARTIFACTS, ROOT, free_port, require_browser

NUMBER = r"([0-9.]+(?:e[+-]?\d+)?)"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The base URL of a running `make demo` (Voilà on the app notebook), on a free port."""
    require_browser()
    log = tmp_path_factory.mktemp("demo") / "voila.log"
    port = free_port()
    command = ["make", "--no-print-directory", "demo", f"DEMO_PORT={port}"]
    if sys.prefix != sys.base_prefix:
        command.append(f"VENV={sys.prefix}")  # the virtual environment running the tests (make test: .venv)
    server = subprocess.Popen(
        command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )  # its own process group: make, voila and the kernels stop together
    base = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        try:  # the port answers once Voilà listens (a page request would already start a kernel)
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                os.killpg(server.pid, signal.SIGKILL)
                pytest.fail(f"`make demo` did not start: {log.read_text()[-3000:]}")
            time.sleep(0.5)
    assert f"open http://127.0.0.1:{port}/" in log.read_text()  # make demo prints the address
    yield base
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def _numbers(pattern: str, text: str) -> tuple[float, ...]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return tuple(float(group) for group in match.groups())


def _check_banach(before: str, after: str) -> None:
    error_before, steps_before = _numbers(rf"error {NUMBER} after (\d+) steps", before)
    error_after, steps_after = _numbers(rf"error {NUMBER} after (\d+) steps", after)
    assert steps_after == steps_before - 1 and error_after > error_before  # one step fewer: further from x*


def _check_bounds(before: str, after: str) -> None:
    pattern = rf"N = (\d+): raw bound {NUMBER}, certified {NUMBER}"
    n_before, raw_before, certified_before = _numbers(pattern, before)
    n_after, raw_after, certified_after = _numbers(pattern, after)
    assert (n_before, n_after) == (256, 289) and raw_after > raw_before  # l2's raw bound grows with N
    assert certified_after <= 0.9 and "(≤ certified: True)" in after


def _check_map(before: str, after: str) -> None:
    pattern = rf"query \((\d+), (\d+)\): largest weight {NUMBER}"
    row_before, col_before, _ = _numbers(pattern, before)
    row_after, col_after, _ = _numbers(pattern, after)
    assert (row_after, col_after) == (row_before, col_before + 1)
    assert before.split("): ", 1)[1] != after.split("): ", 1)[1]  # the weights moved with the query


def _check_inversion(before: str, after: str) -> None:
    pattern = rf"(\d+) iterations, noise [^:]*: relative error {NUMBER}"
    iterations_before, error_before = _numbers(pattern, before)
    iterations_after, error_after = _numbers(pattern, after)
    assert iterations_after == iterations_before - 1 and error_after > error_before


def _check_sampling(before: str, after: str) -> None:
    pattern = rf"T = {NUMBER}, .* largest re-encoding error {NUMBER}"
    t_before, _ = _numbers(pattern, before)
    t_after, reencoding = _numbers(pattern, after)
    assert t_after == pytest.approx(t_before + 0.05) and reencoding < 1e-4  # samples still decode and re-encode


def _check_two_roads(before: str, after: str) -> None:
    for road in ("i-RevNet", "i-ResNet"):
        (clean,) = _numbers(rf"{road} error {NUMBER}", before)
        (noisy,) = _numbers(rf"{road} error {NUMBER}", after)
        assert noisy > 10 * clean  # noise on Φ comes back in x̂
    assert "noise 0 on Φ" in before and "noise 0.0001 on Φ" in after


# (tab, the control's label, the key that moves it one step, the check of the summaries before and after)
MOVES = [
    ("Banach's iteration", "steps", "ArrowLeft", _check_banach),
    ("Bound explorer", "N", "ArrowRight", _check_bounds),
    ("Attention map", "column", "ArrowRight", _check_map),
    ("Inversion", "iterations", "ArrowLeft", _check_inversion),
    ("Samples and walks", "T", "ArrowRight", _check_sampling),
    ("Two roads", "noise on Φ", "ArrowRight", _check_two_roads),
]

VISIBLE_SUMMARY = """() => {
  const shown = [...document.querySelectorAll('.invattn-summary')].filter(e => e.offsetParent !== null);
  return shown.length ? shown[0].innerText : null;
}"""


def test_every_demo_answers_its_control_in_the_browser(app, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    failed_requests = []
    page.on("requestfailed", lambda request: failed_requests.append(request.url))
    page.goto(app, timeout=120_000)
    page.wait_for_selector(".widget-tab", timeout=300_000)  # Voilà runs the notebook, then shows the widgets
    assert "demo_app(" not in page.inner_text("body")  # no code is shown, only the app
    page.screenshot(path=str(ARTIFACTS / "demo_app.png"))
    times = {}
    for number, (tab, label, key, check) in enumerate(MOVES, start=1):
        page.locator(".lm-TabBar-tab", has_text=tab).first.click()
        page.wait_for_function(VISIBLE_SUMMARY, timeout=60_000)
        before = page.evaluate(VISIBLE_SUMMARY)
        slider = (
            page.locator(".widget-slider:visible")
            .filter(has=page.locator(".widget-label", has_text=re.compile(rf"^{re.escape(label)}$")))
            .first
        )
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        pressed = time.perf_counter()
        handle.press(key)
        page.wait_for_function(
            f"(before) => {{ const now = ({VISIBLE_SUMMARY})(); return now && now !== before; }}",
            arg=before,
            timeout=60_000,
            polling=50,
        )
        times[tab] = round(time.perf_counter() - pressed, 3)
        time.sleep(0.3)  # the figure arrives with the summary; let the browser paint it
        after = page.evaluate(VISIBLE_SUMMARY)
        page.screenshot(path=str(ARTIFACTS / f"demo_app_{number}.png"))
        check(before, after)
    (ARTIFACTS / "demo_app_response_times.json").write_text(json.dumps(times, indent=1))
    local = [url for url in failed_requests if url.startswith(app)]
    assert local == [], local  # everything the app serves itself loads
    # offline, the only outside address the page asks for is Voilà's template's icon font (Font Awesome, from a CDN);
    # the demos show no icons, so nothing they need is missing
    outside = [url for url in failed_requests if not url.startswith(app)]
    assert all("fontawesome" in url for url in outside), outside
    print("key press → new summary in the browser (s):", times, "; unreachable icon-font addresses:", len(outside))
    page.close()
