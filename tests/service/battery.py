"""The congruence battery: good and bad search requests every door must answer alike (test_congruence.py: the
library, the CLI, the client, a sharded collection; test_ray_congruence.py: Ray Serve)."""

from __future__ import annotations

from typing import Any

from ticketsearch.errors import NotFoundError, QueryError
from ticketsearch.requests import MAX_K


def battery(rows: list[dict]) -> tuple[list[dict], list[tuple[dict, type[Exception]]]]:
    """(good searches, (bad search, the error class every door must give)) as SearchRequest options."""
    a, b = rows[11], rows[40]
    good = [
        {"text": "customers were charged twice for their subscription", "k": 5},
        {"text": a["body"], "title": a["title"], "k": 8, "fields": {"product": a["fields"]["product"]}},
        {"text": "login fails after password reset", "k": 10, "method": "bm25"},
        {"text": "export to csv times out", "k": 7, "method": "dense", "filters": {"channel": ["chat", "email"]}},
        {"text": "app crashes", "k": 6, "method": "title", "after": "2024-03-01"},
        {"text": b["title"], "k": MAX_K, "rerank": False},
        {"like": a["id"], "k": 5},
        {"text": "refund missing", "k": 4, "snippets": True, "before": "2025-01-01"},
    ]
    bad: list[tuple[dict, type[Exception]]] = [
        ({"text": "x", "k": MAX_K + 1}, QueryError),
        ({"text": "   "}, QueryError),
        ({"text": "x", "fields": {"colour": "red"}}, QueryError),
        ({"text": "x", "filters": {"affected_count": ["many"]}}, QueryError),
        ({"text": "x", "method": "magic"}, QueryError),
        ({"text": "x", "before": "last tuesday"}, QueryError),
        ({"text": "x", "like": a["id"]}, QueryError),
        ({"like": "NOPE-404"}, NotFoundError),
        ({"text": "x", "k": 21, "explain": True}, QueryError),  # explain covers at most 20 hits
    ]
    return good, bad


def cli_args(opts: dict) -> list[str]:
    """The CLI's spelling of a request's options."""
    args = [opts["text"]] if "text" in opts else []
    for name, flag in (("like", "--like"), ("title", "--title"), ("method", "--method"), ("before", "--before"),
                       ("after", "--after")):
        if name in opts:
            args += [flag, str(opts[name])]
    args += ["-k", str(opts.get("k", 10))]
    for name, value in opts.get("fields", {}).items():
        args += ["--field", f"{name}={value}"]
    for name, values in opts.get("filters", {}).items():
        args += ["--filter", f"{name}={','.join(map(str, values))}"]
    if opts.get("rerank") is False:
        args.append("--no-rerank")
    if opts.get("snippets"):
        args.append("--snippets")
    if opts.get("explain"):
        args.append("--explain")
    return args


def hits(res: Any) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in res.hits]


def same(a: list[tuple[str, float]], b: list[tuple[str, float]], what: str) -> None:
    assert [i for i, _ in a] == [i for i, _ in b], what
    assert all(abs(x - y) <= 1e-6 for (_, x), (_, y) in zip(a, b)), (what, [(p, q) for p, q in zip(a, b)])
