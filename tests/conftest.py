import matplotlib
import pytest
import torch

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
