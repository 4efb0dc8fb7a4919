"""Headless Chromium for the page tests: Playwright for Python driving Debian's `chromium` (Playwright's own
browser download is not reachable here; `.ci/run` installs the package)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


def chromium_path() -> str:
    """The browser to drive: TICKETSEARCH_CHROMIUM, else `chromium` on the PATH. Missing, the page tests are
    skipped with the reason, except under CI, where they fail (CI installs it)."""
    found = os.environ.get("TICKETSEARCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        why = "no chromium to drive (apt-get install chromium, or set TICKETSEARCH_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return found


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless browser."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (the dev extra)")
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


class PageErrors:
    """What a page reported: uncaught script errors, dialogs opened (alert/confirm), requests that left the
    service's origin."""

    def __init__(self, page: Any, origin: str) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: None if r.url.startswith(origin) or r.url.startswith("data:")
                else self.foreign.append(r.url))
