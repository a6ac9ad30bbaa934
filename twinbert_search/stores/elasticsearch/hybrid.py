"""Elasticsearch's hybrid recall, one path per store, chosen once from what the cluster has.

`hybrid_fusion` reads every node's version and modules and the licence, once, the
first time the store is asked (before any hybrid query is sent): "engine" where the `rrf`
retriever can run (Elasticsearch 8.14 or later, the rank-rrf module on every node, and an
active enterprise or trial licence, which the retriever needs), else "client", with the reason
logged once; the searcher then fuses the kNN and BM25 hits itself by the same reciprocal-rank
formula (k=60). A query's outcome never changes the choice, so `--explain`, `/search` and
`status` report one path for the store's lifetime. A mixin of `ElasticsearchStore`, which
supplies the client, `_errors`, `_search`, `_read_setup`, `_query_vector`, `_candidates` and
`_safe_url`.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

import numpy as np

from twinbert_search.errors import StoreError
from twinbert_search.stores.base import Candidates, Filters
from twinbert_search.stores.cluster import reads
from twinbert_search.stores.cluster.connection import version_numbers
from twinbert_search.stores.cluster.errors import reason
from twinbert_search.stores.elasticsearch import assets

__all__ = ["RRF_LICENCES", "RRF_MODULE", "RRF_SINCE", "RrfHybridRecall"]

logger = logging.getLogger(__name__)

RRF_MODULE = "rank-rrf"
RRF_SINCE = (8, 14)  # the `rrf` retriever's first release
RRF_LICENCES = frozenset({"enterprise", "trial"})  # RRF is an enterprise feature
# each node's version from _nodes: `GET /` is the rest-root module, which some nodes lack
NODES_FILTER = "nodes.*.version,nodes.*.modules.name,nodes.*.plugins.name"
UNREADABLE = (401, 403, 404)  # the user may not read _nodes or _license, or x-pack is absent


class RrfHybridRecall:
    """Hybrid recall fused by the `rrf` retriever where the cluster can run it."""

    client: Any
    _safe_url: str
    _errors: Any
    _search: Any
    _read_setup: Any
    _query_vector: Any
    _candidates: Any

    @cached_property
    def hybrid_fusion(self) -> str:
        """Who fuses hybrid recall with this store: "engine" (the `rrf` retriever) or
        "client" (the searcher), decided once from the cluster's version, modules and
        licence."""
        why = self._rrf_unavailable()
        if why is None:
            return "engine"
        logger.warning("hybrid recall fuses in the client at %s: %s", self._safe_url, why)
        return "client"

    def _rrf_unavailable(self) -> str | None:
        """Why the cluster cannot run the `rrf` retriever, or None where it can."""
        from elasticsearch import ApiError

        with self._errors("read the cluster's version, modules and licence"):
            try:
                found = self.client.nodes.info(metric="plugins", filter_path=NODES_FILTER)
                nodes = list(found.body.get("nodes", {}).values())
                licence = self.client.license.get().body.get("license") or {}
            except ApiError as exc:
                if exc.status_code not in UNREADABLE:
                    raise
                return f"the cluster's modules and licence could not be read ({reason(exc)})"
        if not nodes or any(RRF_MODULE not in _extensions(node) for node in nodes):
            return f"the {RRF_MODULE} module is not on every node"
        oldest = min((str(node.get("version") or "0") for node in nodes), key=version_numbers)
        if version_numbers(oldest) < RRF_SINCE:
            return f"Elasticsearch {oldest} predates the rrf retriever (8.14)"
        kind, status = licence.get("type"), licence.get("status")
        if kind not in RRF_LICENCES or status != "active":
            return (
                f"the rrf retriever needs an active enterprise or trial licence "
                f"(the cluster's: {kind or 'none'}, {status or 'unknown'})"
            )
        return None

    def recall_fused(
        self,
        query: str,
        query_vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None = None,
    ) -> Candidates | None:
        """BM25 and kNN fused by the `rrf` retriever in one request; None where this store
        fuses in the client (`hybrid_fusion`), so the searcher fuses instead."""
        if self.hybrid_fusion != "engine":
            return None
        from elasticsearch import ApiError

        dim, (_, options) = self._read_setup()
        vector = self._query_vector(query_vector, dim)
        if n <= 0:
            return Candidates.empty(dim)
        body = self._lean(
            assets.rrf_search_body(
                query, vector, n, options, filters=filters, candidates=self._candidates(n)
            )
        )
        try:
            response = self._search(body, "hybrid recall (rrf retriever)")
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiError) and cause.status_code in (400, 403):
                raise StoreError(
                    f"hybrid recall: {self._safe_url} refused the rrf retriever "
                    f"({reason(cause)}), although its modules and licence allowed it when "
                    "this store connected; reconnect (restart the sidecar) to fuse in the "
                    "client"
                ) from cause
            raise
        return reads.candidates_from_hits(self._with_sources(response["hits"]["hits"]), dim)


def _extensions(node: dict[str, Any]) -> set[str]:
    """The names of a node's modules and plugins (from `_nodes/plugins`)."""
    return {m.get("name") for m in (node.get("modules") or []) + (node.get("plugins") or [])}
