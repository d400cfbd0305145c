import os

import matplotlib
import pytest
import torch

from invattn.lesson import HEADLESS_ENV

# The kernels nbval starts (with --nbval-current-env: this Python, not the kernel spec) inherit these: the stored
# lessons' numbers (one CPU thread, the same vector instructions on every x86 machine), text progress bars.
os.environ.update(HEADLESS_ENV)

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the browser tests (tests/_browser.py says when it skips)."""
    from _browser import launch, require_browser

    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()
