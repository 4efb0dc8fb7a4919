"""Prometheus metrics: requests and latency per route, and latency per search stage, labelled by collection."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
STAGES = ("encode", "retrieve", "rerank", "fetch")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ticketsearch_requests_total", "HTTP requests by route, method, status and collection ('' for a route "
            "about no one collection, or a request refused before its collection was known).",
            ["route", "method", "status", "collection"], registry=self.registry,
        )
        self.latency = Histogram(
            "ticketsearch_request_seconds", "HTTP request latency by route and collection.", ["route", "collection"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.stage = Histogram(
            "ticketsearch_stage_seconds", "Search latency by stage (encode, retrieve, rerank, fetch) and collection.",
            ["stage", "collection"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.shed = Counter(
            "ticketsearch_shed_total", "Requests refused with 503 because the service was at capacity.",
            registry=self.registry,
        )
        self.limited = Counter(
            "ticketsearch_limited_total", "Costly requests refused with 429 (a key's or the service's bound).",
            registry=self.registry,
        )
        self.in_flight = Gauge("ticketsearch_in_flight", "Admitted requests doing model or index work.",
                               registry=self.registry)
        self.open_collections = Gauge("ticketsearch_open_collections", "Collections loaded in memory now.",
                                      registry=self.registry)
        self.encode_batch = Histogram(
            "ticketsearch_encode_batch_requests", "Requests merged into one encoder pass.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=self.registry,
        )

    def observe_stages(self, timings_ms: dict[str, float], collection: str) -> None:
        for name in STAGES:
            if name in timings_ms:
                self.stage.labels(name, collection).observe(timings_ms[name] / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
