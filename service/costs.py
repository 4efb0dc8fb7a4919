"""Costly requests, bounded: a search that costs several ordinary ones (`SearchRequest.costly`: explained, a very
long query, snippets of many hits) runs only while its key has fewer than `costly_per_key` of them in progress
and the service fewer than `costly_total`; otherwise it is answered 429 with `Retry-After` at once, before it
takes a worker. Ordinary searches never wait for this: they keep the workers the costly ones may not take.

Who a caller is: its API key (by a digest, never the key itself), or, with keys off, its address."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ticketsearch.requests import COSTLY_KINDS

from .gate import ApiError
from .metrics import Metrics


class CostlyRequests:
    """Counts on the event loop only (no lock: every change happens between awaits)."""

    def __init__(self, per_key: int, total: int, retry_after_s: int, metrics: Metrics | None = None) -> None:
        self.per_key, self.total, self.retry_after = per_key, total, str(retry_after_s)
        self.metrics = metrics
        self.by_caller: Counter[str] = Counter()
        self.running = 0

    @asynccontextmanager
    async def hold(self, caller: str, costly: bool) -> AsyncIterator[None]:
        if not costly:
            yield
            return
        if self.by_caller[caller] >= self.per_key:
            self._refuse(f"this key has {self.by_caller[caller]} costly requests ({COSTLY_KINDS}) in progress, the "
                         "most it may: retry later")
        if self.running >= self.total:
            self._refuse(f"{self.running} costly requests ({COSTLY_KINDS}) are in progress, the most the service "
                         "runs at once: retry later, or ask without them")
        self.by_caller[caller] += 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self.by_caller[caller] -= 1
            if not self.by_caller[caller]:
                del self.by_caller[caller]

    def _refuse(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.limited.inc()
        raise ApiError(429, "service", reason, {"Retry-After": self.retry_after}, "rate_limited")
