"""Headless Chromium for the page tests: Playwright for Python driving Debian's `chromium` (Playwright's own
browser download is not reachable here; `.ci/run` installs the package)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
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
    service's origin; and, for a failure's message, the API's answers and the requests that got none."""

    def __init__(self, page: Any, origin: str) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        self.traffic: list[str] = []  # "METHOD PATH -> STATUS" of each API call, "-> failed: why" without an answer
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: None if r.url.startswith(origin) or r.url.startswith("data:")
                else self.foreign.append(r.url))
        api = origin + "/v1/"
        page.on("response", lambda r: self.traffic.append(f"{r.request.method} {r.url[len(origin):]} -> {r.status}")
                if r.url.startswith(api) else None)
        page.on("requestfailed", lambda r: self.traffic.append(f"{r.method} {r.url[len(origin):]} -> failed: "
                                                               f"{r.failure}") if r.url.startswith(api) else None)


ANSWERED = "#answer[data-state=done], #answer[data-state=error]"


def answered(page: Any, server_log: Callable[[], str], timeout_ms: float = 90_000) -> None:
    """Wait until the page has answered, and fail unless the answer is done: an error answer fails at once, and
    either failure says what the page showed, what the API answered it, and the end of the server's log (a
    bare timeout said none of it)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    t0 = time.monotonic()
    try:
        page.wait_for_selector(ANSWERED, state="attached", timeout=timeout_ms)  # an error hides the section
        state = page.get_attribute("#answer", "data-state")
    except PlaywrightTimeout:
        state = f"still {page.get_attribute('#answer', 'data-state')!r} after {time.monotonic() - t0:.0f} s"
    if state == "done":
        return
    traffic = getattr(getattr(page, "errors", None), "traffic", [])
    log = "\n".join(server_log().splitlines()[-40:])
    pytest.fail(f"the page did not answer: {state}; status line {page.inner_text('#status')!r}; url {page.url}\n"
                f"API calls: {traffic}\nserver log (end):\n{log}")
