"""The agent page, measured in the browser: how long after the API's own answer the hits appear, what the page's
assets weigh, whether a second visit fetches them again; and the screenshots in docs/.

    python scripts/bench_page.py --index demo/index --queries 40 --out docs/bench_page.json --shots docs

A real `ticketsearch serve --index DIR` and headless Chromium (Debian's `chromium`, driven by Playwright). For
each query (the titles of generated tickets of another seed, as an agent would type them) the script types it
into the search box and presses Enter; the page records, per answer (`window.tsTimings`), `api_ms` (from the
request to the parsed JSON: the API's own time as the browser sees it) and `shown_ms` (from the request until
the hits are in the page and a frame has been painted). The overhead of the page is `shown_ms - api_ms`.
Queries alternate between a plain search (`/?q=`) and a similar-ticket answer (`/?like=ID`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service.server import Server  # noqa: E402  (the same real-server helper the tests use)
from ticketsearch.index_data.demo import generate  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, required=True, help="An index directory (copied: the run writes nothing "
                    "into it).")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shots", type=Path, default=None,
                    help="Folder for page.png (a similar-ticket answer, wide) and page_narrow.png (a typed search "
                    "on a phone-sized screen).")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-page-"))
    shutil.copytree(args.index, tmp / "idx")
    srv = Server(tmp / "idx", tmp / "server.log").start()
    try:
        c = srv.client()
        ids = [h["id"] for h in c.post("/v1/search", json={"text": "refund", "k": 50}).json()["hits"]]
        titles = [r["title"] for r in generate(args.queries, seed=97)]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            first = page.goto(srv.url + "/")
            page.wait_for_selector("body[data-ready=true]")
            assets = page.evaluate("performance.getEntriesByType('resource').filter(e => e.name.includes('/static/'))"
                                   ".map(e => ({name: e.name.split('/static/')[1].split('?')[0], "
                                   "bytes: e.encodedBodySize, transferred: e.transferSize}))")
            html_bytes = len(first.body())
            timings = []
            for i, q in enumerate(titles):  # a typed search, then a similar-ticket answer (a deep link), in turn
                if i % 2 == 0:
                    n = page.evaluate("window.tsTimings.length")
                    page.fill("#q", q)
                    page.press("#q", "Enter")
                    page.wait_for_function(f"() => window.tsTimings.length > {n}")
                    timings.append({**page.evaluate("window.tsTimings[window.tsTimings.length - 1]"), "kind": "q"})
                else:
                    page.goto(f"{srv.url}/?like={ids[i % len(ids)]}")
                    page.wait_for_function("() => window.tsTimings.length >= 1")
                    timings.append({**page.evaluate("window.tsTimings[0]"), "kind": "like"})
            again = page.evaluate("performance.getEntriesByType('resource').filter(e => e.name.includes('/static/'))"
                                  ".map(e => e.transferSize)")  # after a navigation: 0 = served from the cache
            if args.shots:
                args.shots.mkdir(parents=True, exist_ok=True)
                page.goto(f"{srv.url}/?like={ids[0]}")
                page.wait_for_selector("#answer[data-state=done]")
                page.screenshot(path=str(args.shots / "page.png"))
                page.set_viewport_size({"width": 390, "height": 844})
                page.goto(f"{srv.url}/?q=customers+were+charged+twice+for+their+subscription")
                page.wait_for_selector("#answer[data-state=done]")
                page.screenshot(path=str(args.shots / "page_narrow.png"))
            browser.close()
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    api = [t["api_ms"] for t in timings]
    shown = [t["shown_ms"] for t in timings]
    over = [s - a for s, a in zip(shown, api)]
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "index": str(args.index), "answers": len(timings),
        "api_ms": {"p50": pct(api, 0.5), "p90": pct(api, 0.9), "max": round(max(api), 2)},
        "shown_ms": {"p50": pct(shown, 0.5), "p90": pct(shown, 0.9), "max": round(max(shown), 2)},
        "page_overhead_ms": {"p50": pct(over, 0.5), "p90": pct(over, 0.9), "max": round(max(over), 2),
                             "mean": round(statistics.mean(over), 2)},
        "html_bytes": html_bytes, "assets": assets,
        "static_transfer_bytes_on_later_visits": again,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
