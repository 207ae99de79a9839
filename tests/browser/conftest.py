"""Browser tests drive Debian's Chromium through Playwright (no browser download)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import unavailable

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if shutil.which(CHROMIUM) is None:
        unavailable("Debian chromium is missing: run 'make deps' as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
