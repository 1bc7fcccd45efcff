"""Fixtures ``browser`` and ``page`` (a plugin of ``tests/conftest.py``): Debian's Chromium driven by
Playwright, for every browser test (browsers are never downloaded:
``apt-get install -y chromium``; ``scripts/test.sh`` installs it when it runs as root)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
#: How long a run may take to show its end in a page: a worker subprocess, real RQ jobs.
LIVE_TIMEOUT_MS = 30_000

# Every expectation waits as long as a run may take (Playwright's default is 5 s).
expect.set_options(timeout=LIVE_TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Never skipped: a browser test that did not run proves nothing.
    assert Path(CHROMIUM).exists(), f"Chromium is needed at {CHROMIUM}: apt-get install -y chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(LIVE_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()
