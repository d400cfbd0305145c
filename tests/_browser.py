"""What the browser tests share (tests/test_jupyterlab.py, tests/test_demo_app.py): Debian's Chromium driven by
Playwright (no browser download), a free port, and where screenshots go. Without Chromium a browser test skips,
except under CI (``CI`` set), where it fails: CI installs Chromium (``.ci/run``) so that these always run there."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)


def require_browser() -> None:
    if CHROMIUM is None:
        message = "Chromium is not installed (Debian: apt-get install chromium); the browser tests need it"
        if os.environ.get("CI"):
            pytest.fail(message + ". CI must install it: see .ci/run.")
        pytest.skip(message)
    pytest.importorskip("playwright.sync_api", reason="playwright is installed by `make setup` ([test] extra)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(playwright):
    """Headless Chromium (``--no-sandbox``: CI machines run as root)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
