"""The agent page with API keys set, on a service still loading: the key prompt, a read key that can search but
not record decisions, and the busy state (503 + Retry-After) retried until the answer comes."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..demo_rows import generate
from .browser import PageErrors, answered, chromium
from .server import Server

KEYS = "page-reader-key-1:read,page-writer-key-1:write"


@pytest.fixture(scope="module")
def slow_server(trained_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Keys on, and held in its loading state for 8 s after it starts listening."""
    root = tmp_path_factory.mktemp("pagekeys")
    shutil.copytree(trained_index, root / "idx")
    srv = Server(root / "idx", root / "server.log",
                 env={"TICKETSEARCH_API_KEYS": KEYS, "TICKETSEARCH_TEST_START_DELAY_S": "8"}).start(wait_ready=False)
    for _ in range(600):
        try:
            if httpx.get(srv.url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    yield srv
    srv.stop()


def test_the_page_asks_for_a_key_waits_out_loading_and_a_read_key_cannot_record(slow_server: Server) -> None:
    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(60_000)
        errors = page.errors = PageErrors(page, slow_server.url)
        sent: list[str | None] = []
        page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/v1/" in r.url else None)

        page.goto(slow_server.url + "/?q=charged+twice")
        page.wait_for_selector("#keybox[open]")  # no key yet: the prompt, before anything is asked of the API
        page.fill("#key", "not-a-key")
        page.click("#key-ok")
        page.wait_for_selector("#key-error:not([hidden])")
        assert "not accepted" in page.inner_text("#key-error")
        page.fill("#key", "page-reader-key-1")
        page.click("#key-ok")
        page.wait_for_selector("#keybox[open]", state="detached")
        # the service is still loading: the page says so and retries after Retry-After
        page.wait_for_selector("#status[data-kind=busy]")
        assert "retrying in 1 s" in page.inner_text("#status")
        answered(page, slow_server.log)
        assert page.locator("#hits > li.hit").count() == 10
        assert page.evaluate("sessionStorage.getItem('ticketsearch.key')") == "page-reader-key-1"
        assert "page-reader-key-1" not in page.url and all(h in ("Bearer page-reader-key-1", "Bearer not-a-key")
                                                         for h in sent if h) and sent

        tid = next(r["id"] for r in generate(1000, seed=11) if r.get("duplicate_of"))
        page.goto(f"{slow_server.url}/?like={tid}")  # the same tab: the key is still there, no prompt
        answered(page, slow_server.log)
        assert page.locator("#keybox[open]").count() == 0
        first = page.locator("#hits > li.hit").first
        first.get_by_role("button", name="Duplicate", exact=True).click()
        page.wait_for_selector("#hits > li.hit .decision.error")
        assert "needs a key with write scope" in first.locator(".decision").inner_text()
        assert slow_server.client("page-writer-key-1").get(f"/v1/tickets/{tid}/feedback").json() == []
        assert not errors.errors and not errors.foreign
        context.close()
