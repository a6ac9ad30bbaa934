"""What `twinbert-search serve` is configured with; checked once, before anything loads."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.factory import check_options

DEFAULT_HOST = "127.0.0.1"  # loopback: exposing the service is an explicit choice
DEFAULT_PORT = 8080
DEFAULT_RERANK_BUDGET_MS = 250.0
DEFAULT_CACHE_SIZE = 4096
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB
DEFAULT_REFRESH_S = 30.0
# Memory for the cluster documents recalls have fetched (stores.cluster.vector_cache): about
# 80k documents of 384-d with 1.5 KB of text each.
DEFAULT_VECTOR_CACHE_MB = 256.0
# Threads besides the workers that may read a cluster at the same moment: /readyz, /metrics,
# the startup check, and one spare.
PROBE_CONNECTIONS = 4
# A served request waits for a cluster at most this long per attempt, with one retry (on
# another node where there are several): past that a caller is better off with a 503.
SERVE_CLUSTER_TIMEOUT_S = 5.0
SERVE_CLUSTER_RETRIES = 1


def default_workers() -> int:
    """Threads for encode + recall: one per core, so queries do not queue behind each other."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class ServiceConfig:
    """Settings of one service process.

    `threads` bounds ONNX Runtime's intra-op threads per session; `workers` is the number of
    requests that encode and recall at once (a thread pool), and the rerank has a pool of the
    same size so its time budget measures the rerank, not the queue behind slow encodes.
    `refresh_s` is how often an embedded store looks for a snapshot that another process
    (`twinbert-search index`) finalized, so a long-running service picks up re-indexing
    (0: never). `cluster` holds a cluster backend's connection flags (OpenSearch or
    Elasticsearch); it and `api_key` may hold secrets and are left out of `repr`.
    """

    index_dir: Path | None = None
    model: Path | None = None
    int8: bool = False
    threads: int | None = None
    # ONNX Runtime's threads spin-wait after a run unless told not to: a lone query encodes
    # faster, but a core's worth of CPU burns after every request, taken from the recall,
    # the other requests and a node on the same host (BENCHMARKS.md, the sidecar).
    spinning: bool = False
    workers: int = field(default_factory=default_workers)
    backend: str = "embedded"
    cluster: Mapping[str, Any] = field(default_factory=dict, repr=False)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = field(default=None, repr=False)
    rerank_budget_ms: float = DEFAULT_RERANK_BUDGET_MS
    cache_size: int = DEFAULT_CACHE_SIZE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    refresh_s: float = DEFAULT_REFRESH_S
    vector_cache_mb: float = DEFAULT_VECTOR_CACHE_MB

    def __post_init__(self) -> None:
        # A served request waits for a cluster at most SERVE_CLUSTER_TIMEOUT_S per attempt,
        # with SERVE_CLUSTER_RETRIES retry, unless `cluster` says otherwise: the clients'
        # own defaults (30 s, 3 retries) suit bulk indexing, two minutes on a hung node.
        if self.backend == "embedded":
            return
        cluster = dict(self.cluster)
        if cluster.get("timeout") is None:
            cluster["timeout"] = SERVE_CLUSTER_TIMEOUT_S
        if cluster.get("vector_cache_mb") is None:
            cluster["vector_cache_mb"] = self.vector_cache_mb
        cluster["client_kwargs"] = {
            "max_retries": SERVE_CLUSTER_RETRIES,
            **(cluster.get("client_kwargs") or {}),
        }
        object.__setattr__(self, "cluster", cluster)

    @property
    def pool_size(self) -> int:
        """Connections the cluster client keeps: one per worker thread (each may be recalling
        or fetching at once) plus the probes'. The rerank pool never reads the store."""
        return self.workers + PROBE_CONNECTIONS

    def validate(self) -> ServiceConfig:
        """Raise ConfigurationError naming the first bad setting; returns self for chaining."""
        check_options(self.backend, index_dir=self.index_dir, **self.cluster)
        if self.threads is not None and self.threads < 1:
            raise ConfigurationError(f"--threads must be positive, got {self.threads}")
        if self.workers < 1:
            raise ConfigurationError(f"--workers must be positive, got {self.workers}")
        if not self.rerank_budget_ms > 0:
            raise ConfigurationError(
                f"--rerank-budget-ms must be positive, got {self.rerank_budget_ms}"
            )
        if self.cache_size < 0:
            raise ConfigurationError(f"--cache-size must be 0 (off) or more, got {self.cache_size}")
        if not self.vector_cache_mb >= 0:
            raise ConfigurationError(
                f"--vector-cache-mb must be 0 (off) or more, got {self.vector_cache_mb}"
            )
        if self.max_body_bytes < 1024:
            raise ConfigurationError(
                f"--max-body-bytes must be at least 1024, got {self.max_body_bytes}"
            )
        if not self.refresh_s >= 0:
            raise ConfigurationError(f"--refresh-s must be 0 (off) or more, got {self.refresh_s}")
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"--port must be 0-65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigurationError("--api-key (TWINBERT_API_KEY) is set but empty")
        return self
