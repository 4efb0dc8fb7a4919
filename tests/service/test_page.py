"""The agent page (`/`), in headless Chromium against a real `ticketsearch serve` on a trained demo index."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from ticketsearch.requests import MAX_BODY, MAX_QUERY, MAX_TITLE

from ..demo_rows import generate
from .browser import PageErrors, answered, chromium
from .server import Server

QUERY = "customers were charged twice for their subscription"
PAYLOAD_TITLE = "<img src=x onerror=alert(1)> Printer <b>jams</b> on every label"
PAYLOAD_BODY = "<script>window.pwned = 1; alert('body')</script> The zebra label printer jams every roll."


@pytest.fixture(scope="module")
def server(trained_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("page")
    shutil.copytree(trained_index, root / "idx")
    srv = Server(root / "idx", root / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(60_000)  # a slow CI machine (answers wait longer: `answered`)
    pg.errors = PageErrors(pg, server.url)
    yield pg
    assert not pg.errors.errors, pg.errors.errors
    assert not pg.errors.foreign, pg.errors.foreign
    context.close()


def linked_ticket() -> str:
    """A ticket of the trained index (generate(1000, seed=11)) that has an earlier duplicate."""
    return next(r["id"] for r in generate(1000, seed=11) if r.get("duplicate_of"))


def hit_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#hits > li.hit", "els => els.map(e => e.dataset.id)")


def test_a_typed_query_shows_the_api_hits_in_order_with_badges(page: Any, server: Server, tmp_path: Path) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")  # the page's own search, not the form's plain GET
    page.fill("#q", QUERY)
    page.press("#q", "Enter")
    answered(page, server.log)
    api = server.client().post("/v1/search", json={"text": QUERY, "k": 10, "snippets": True}).json()
    assert hit_ids(page) == [h["id"] for h in api["hits"]] and len(api["hits"]) == 10
    assert "q=customers+were+charged" in page.url  # the answer has its own deep link
    assert api["threshold"] is not None
    badges = page.eval_on_selector_all("#hits .badge",
                                       "els => els.map(e => [e.textContent, e.classList.contains('dup'), e.title])")
    for (text, dup, title), h in zip(badges, api["hits"]):
        likely = h["probability"] >= api["threshold"]
        # the duplicate probability is shown as a percentage only where it is a verdict (at or above the
        # threshold); below it the badge says "similar" and the probability stays in the tooltip, never read as
        # a similarity
        assert dup == likely and text == (f"likely duplicate · {round(h['probability'] * 100)}%" if likely
                                          else "similar"), (text, h)
        assert f"duplicate probability {h['probability']:.3f}" in title
    marks = page.eval_on_selector_all("#hits mark", "els => els.map(e => e.textContent.toLowerCase())")
    assert "charged" in marks and "twice" in marks
    first = page.locator("#hits > li.hit").first
    assert first.locator(".snippet").inner_text() == api["hits"][0]["snippet"]
    assert first.locator(".hit-link").get_attribute("href").startswith(f"/tickets/{api['hits'][0]['id']}")
    assert page.inner_text("#status") == "10 tickets."
    shot = tmp_path / "answer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_deep_links_open_the_answer(page: Any, server: Server) -> None:
    c = server.client()
    page.goto(server.url + "/?q=" + quote_plus(QUERY))
    answered(page, server.log)
    assert page.input_value("#q") == QUERY
    assert hit_ids(page) == [h["id"] for h in c.post("/v1/search", json={"text": QUERY, "k": 10}).json()["hits"]]

    tid = linked_ticket()
    page.goto(f"{server.url}/?collection=default&like={tid}")
    answered(page, server.log)
    assert hit_ids(page) == [h["id"] for h in c.get(f"/v1/tickets/{tid}/similar?k=10").json()["hits"]]
    assert tid in page.inner_text("#answer-title")
    assert page.locator("#hits .fb").count() == 20  # the query is a ticket: feedback buttons on every hit

    page.goto(f"{server.url}/tickets/{tid}")
    answered(page, server.log)
    ticket = c.get(f"/v1/tickets/{tid}").json()
    assert page.inner_text("#ticket-title") == ticket["title"]
    assert page.inner_text("#ticket-body") == ticket["body"]
    assert hit_ids(page) == [h["id"] for h in c.get(f"/v1/tickets/{tid}/similar?k=10").json()["hits"]]

    page.goto(f"{server.url}/?like=NO-SUCH-TICKET")
    page.wait_for_selector("#status.error")
    line = page.inner_text("#status")
    assert line.startswith("Error 404") and "NO-SUCH-TICKET" in line and "\n" not in line
    page.goto(f"{server.url}/?q=printer&collection=nope")  # an unknown collection: the one there is
    answered(page, server.log)
    assert page.input_value("#collection") == "default" and page.locator("#hits > li.hit").count() == 10


def test_feedback_buttons_record_a_decision_that_a_reload_shows(page: Any, server: Server) -> None:
    tid = linked_ticket()
    page.goto(f"{server.url}/?like={tid}")
    answered(page, server.log)
    second = page.locator("#hits > li.hit").nth(1)
    cand = second.get_attribute("data-id")
    second.get_by_role("button", name="Not a duplicate").click()
    page.wait_for_function("el => el.textContent.startsWith('Recorded')",
                           arg=second.locator(".decision").element_handle())
    assert second.locator(".decision").inner_text().startswith("Recorded: not a duplicate")
    stored = server.client().get(f"/v1/tickets/{tid}/feedback").json()
    assert {(d["ticket_id"], d["candidate_id"], d["label"]) for d in stored} >= {(tid, cand, "not_duplicate")}

    page.reload()
    answered(page, server.log)
    again = page.locator(f"#hits > li.hit[data-id='{cand}']")
    assert again.locator(".decision").inner_text().startswith("Recorded: not a duplicate")
    assert again.get_by_role("button", name="Not a duplicate").get_attribute("aria-pressed") == "true"
    assert again.get_by_role("button", name="Duplicate", exact=True).get_attribute("aria-pressed") == "false"


def test_a_ticket_holding_html_and_script_renders_as_text(page: Any, server: Server) -> None:
    r = server.client().post("/v1/tickets", json={"id": "XSS-1", "title": PAYLOAD_TITLE, "body": PAYLOAD_BODY,
                                                  "created": "2025-06-01T10:00:00",
                                                  "fields": {"product": "Mobile App"}})
    assert r.status_code == 200, r.text
    resp = page.goto(server.url + "/?q=zebra+label+printer+jams")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    answered(page, server.log)
    hit = page.locator("#hits > li.hit[data-id='XSS-1']")
    assert hit.locator(".hit-link").inner_text() == PAYLOAD_TITLE
    assert hit.locator(".snippet").inner_text() == PAYLOAD_BODY
    assert page.locator("#hits img, #hits script, #hits b").count() == 0
    page.goto(server.url + "/tickets/XSS-1")
    answered(page, server.log)
    assert page.inner_text("#ticket-title") == PAYLOAD_TITLE and page.inner_text("#ticket-body") == PAYLOAD_BODY
    assert page.locator("main img, main script").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("window.pwned") is None and not page.errors.dialogs


def test_keyboard_alone_reaches_the_box_the_results_and_the_buttons(page: Any, server: Server) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "q":
            break
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("charged twice")
    page.keyboard.press("Enter")
    answered(page, server.log)
    reached: list[str] = []
    for _ in range(8):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.className"))
    assert "hit-link" in reached

    tid = linked_ticket()
    page.goto(f"{server.url}/?like={tid}")
    answered(page, server.log)
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.label") == "duplicate":
            break
    focused = page.evaluate_handle("document.activeElement")
    assert page.evaluate("document.activeElement.textContent") == "Duplicate"
    page.keyboard.press("Enter")
    page.wait_for_function("el => el.closest('li').querySelector('.decision').textContent.startsWith('Recorded')",
                           arg=focused)


def test_a_pasted_ticket_with_fields_gets_the_duplicate_check(page: Any, server: Server) -> None:
    c = server.client()
    src = c.get(f"/v1/tickets/{linked_ticket()}").json()
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.click("#paste summary")
    limits = [page.eval_on_selector(sel, "e => e.maxLength") for sel in ("#q", "#t-title", "#t-body")]
    # the API's own, in UTF-16 units (an emoji is two): a ticket pasted whole is checked whole, never cut
    assert limits == [2 * MAX_QUERY, 2 * MAX_TITLE, 2 * MAX_BODY]
    product = page.locator("#t-fields input[name=product]")
    options = page.eval_on_selector_all("#values-product option", "els => els.map(e => e.value)")
    assert src["fields"]["product"] in options  # the schema's known values are offered
    page.fill("#t-title", src["title"])
    page.fill("#t-body", src["body"])
    product.fill(src["fields"]["product"])
    page.click("#check")
    answered(page, server.log)
    api = c.post("/v1/duplicates", json={"title": src["title"], "body": src["body"], "k": 10,
                                         "fields": {"product": src["fields"]["product"]}}).json()
    assert hit_ids(page) == [h["id"] for h in api["candidates"]]
    verdict = page.inner_text("#verdict")
    assert api["near_copy"] and api["is_duplicate"]  # the ticket pasted word for word
    assert verdict == f"A near copy of {src['id']}: a duplicate.", verdict
    assert page.inner_text("#hits > li.hit .badge >> nth=0") == "near copy"
    assert page.locator("#hits .badge", has_text="near copy").count() == 1
    assert page.locator("#hits .fb").count() == 0  # a pasted ticket is not in the index: nothing to pair with
    page.fill("#t-title", "xyzzy plover quasar lantern")  # no near copy: the verdict names the collection's target
    page.fill("#t-body", "")
    page.click("#check")
    for _ in range(300):  # (the page's CSP refuses a wait_for_function's eval)
        verdict = page.inner_text("#verdict")
        if "near copy" not in verdict:
            break
        page.wait_for_timeout(100)
    assert "this collection's for 90% precision" in verdict, verdict


def test_the_api_document_works_offline_under_its_csp(page: Any, server: Server) -> None:
    """/docs loads Swagger UI from the service itself (no request leaves its origin: the page fixture fails on
    one), renders the routes, and sends a Content-Security-Policy that its own script passes (a violation would
    be a console error). Assets outside the fixed list are 404, a path never reaches the disk."""
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    r = page.goto(server.url + "/docs")
    assert r.status == 200 and "script-src 'self' 'sha256-" in r.headers["content-security-policy"]
    page.wait_for_selector(".opblock-summary-path[data-path=\"/v1/search\"]")
    assert page.locator(".swagger-ui .info .title").inner_text().startswith("ticketsearch")
    assert not violations, violations
    with server.client() as c:
        assert c.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
        for name in ("index.html", "..%2F__init__.py", "redoc.standalone.js", "swagger-ui.js.map"):
            assert c.get(f"/docs/assets/{name}").status_code == 404, name
        assert c.get("/redoc").status_code == 404


def test_the_page_and_its_assets_carry_their_headers(server: Server) -> None:
    """The page: its CSP, no-referrer (a deep link's query text stays on this origin), nosniff, no-cache; each
    asset it links is cached for a year under its version (immutable), revalidated by ETag without it, and a
    revalidation of an unchanged asset is a 304 with no body."""
    import re

    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as c:
        for path in ("/", "/tickets/SUP-1"):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert r.headers["referrer-policy"] == "no-referrer" and r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["cache-control"] == "no-cache"
            assert "script-src 'self'" in r.headers["content-security-policy"]
        links = re.findall(r'/static/([\w.]+)\?v=(\w+)', c.get("/").text)
        assert {name for name, _ in links} == {"page.css", "page.js", "icon.svg"}, links
        for name, version in links:
            fresh = c.get(f"/static/{name}", params={"v": version})
            assert fresh.status_code == 200 and fresh.content
            assert fresh.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert fresh.headers["x-content-type-options"] == "nosniff" and fresh.headers["etag"]
            for params in ({}, {"v": "stale"}):  # unversioned or an old version: revalidate every time
                assert c.get(f"/static/{name}", params=params).headers["cache-control"] == "no-cache"
            again = c.get(f"/static/{name}", headers={"If-None-Match": fresh.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
            assert c.get(f"/static/{name}", headers={"If-None-Match": '"other"'}).status_code == 200
        missing = c.get("/static/nope.js")
        assert missing.status_code == 404 and missing.json()["detail"][0]["type"] == "not_found"
