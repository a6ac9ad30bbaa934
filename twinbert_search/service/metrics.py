"""Prometheus metrics of one app, in its own registry (so two apps in a process do not clash).

Route labels come from the app's own route table, never from the raw path, so a scan of
random URLs cannot grow the label set.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
CANDIDATE_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)
OTHER_ROUTE = "other"


class ServiceMetrics:
    """Latency per stage, candidate counts, errors, rerank degradations, query-cache use,
    readiness and whether the store's last indexing run completed."""

    def __init__(self, routes: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self.routes = set(routes)
        r = self.registry
        self.requests = Counter(
            "twinbert_http_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "twinbert_http_request_duration_seconds",
            "Time from the request's first byte to the response's last, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "twinbert_stage_duration_seconds",
            "Time per stage (encode: query-cache misses only; recall; fetch; rerank; total).",
            ["route", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.candidates = Histogram(
            "twinbert_candidates",
            "Candidates per request: recalled (/search) or given (/rerank).",
            ["route"],
            buckets=CANDIDATE_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "twinbert_errors",
            "Error responses by type (the `type` field of the error body).",
            ["type"],
            registry=r,
        )
        self.rerank_degraded = Counter(
            "twinbert_rerank_degraded",
            "Requests answered in recall order because the rerank timed out or failed.",
            ["reason"],
            registry=r,
        )
        self.cache_hits = Counter(
            "twinbert_query_cache_hits", "Query embeddings served from the LRU cache.", registry=r
        )
        self.cache_misses = Counter(
            "twinbert_query_cache_misses", "Query embeddings computed by the encoder.", registry=r
        )
        self.cache_entries = Gauge(
            "twinbert_query_cache_entries", "Query embeddings held by the cache.", registry=r
        )
        self.ready = Gauge(
            "twinbert_ready", "1 once the model and store are loaded, else 0.", registry=r
        )
        self.index_incomplete = Gauge(
            "twinbert_index_incomplete",
            "1 while the store records an indexing run that did not complete, else 0.",
            registry=r,
        )

    def route_label(self, path: str) -> str:
        return path if path in self.routes else OTHER_ROUTE

    def observe_request(self, path: str, method: str, status: int, started: float) -> None:
        route = self.route_label(path)
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route).observe(time.perf_counter() - started)

    def observe_stages(self, route: str, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(route, stage).observe(ms / 1e3)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
