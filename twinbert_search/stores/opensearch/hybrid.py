"""OpenSearch's hybrid recall, one path per cluster, chosen once.

`hybrid_fusion` reads the nodes' plugins and version: where every node has neural-search 2.19
or later, the engine fuses (a `hybrid` query through the search pipeline whose RRF
score-ranker processor computes the client-side fusion's formula, k=60); elsewhere
`recall_fused` answers None and the searcher fuses the kNN and BM25 hits itself, by the
model's hybrid fusion (`search.fusion.HybridFusion`: RRF or z-scores). A searcher asked for a
fusion by name fuses it itself even here. A mixin of `OpenSearchStore`, which supplies the
client, the asset names and the search call.
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
from twinbert_search.stores.opensearch import assets

__all__ = ["NEURAL_SEARCH", "RRF_SINCE", "EngineHybridRecall"]

logger = logging.getLogger(__name__)

NEURAL_SEARCH = "opensearch-neural-search"
RRF_SINCE = (2, 19)  # neural-search's score-ranker-processor (RRF) first shipped in 2.19


class EngineHybridRecall:
    """Hybrid recall fused in the engine where it can; the store gives `client`, `names`,
    `ef_search`, `_errors`, `_search`, `_read_setup` and `_safe_url`."""

    client: Any
    names: Any
    ef_search: int | None
    _safe_url: str
    _hybrid_pipeline_checked = False  # set once the pipeline is known to be in place

    def _put_hybrid_pipeline(self) -> str:
        """The RRF search pipeline, where the engine fuses; "unavailable" elsewhere."""
        if self.hybrid_fusion != "engine":
            return "unavailable"
        name = self.names.hybrid_pipeline
        body = assets.hybrid_search_pipeline()
        with self._errors(f"put the search pipeline {name}"):
            existing = self.client.search_pipeline.get(id=name, ignore=404)
            self._hybrid_pipeline_checked = True
            if existing.get(name) == body:
                return "kept"
            self.client.search_pipeline.put(id=name, body=body)
        return "created" if name not in existing else "updated"

    @cached_property
    def hybrid_fusion(self) -> str:
        """Who fuses hybrid recall on this cluster, read once from its nodes: "engine" where
        every node has neural-search and the version has its RRF score-ranker (2.19), else
        "client" (the searcher fuses, by the model's fusion; the reason is logged once)."""
        with self._errors("read the cluster's plugins"):
            version = self.client.info().get("version", {}).get("number") or "0"
            nodes = self.client.nodes.info(
                metric="plugins", filter_path="nodes.*.plugins.name"
            ).get("nodes", {})
        missing = [
            node
            for node, info in nodes.items()
            if NEURAL_SEARCH not in {p.get("name") for p in info.get("plugins") or ()}
        ]
        if not nodes or missing:
            why = f"{NEURAL_SEARCH} is not installed on every node"
        elif version_numbers(version) < RRF_SINCE:
            why = f"OpenSearch {version} predates the RRF score-ranker processor (2.19)"
        else:
            return "engine"
        logger.warning("hybrid recall fuses in the client at %s: %s", self._safe_url, why)
        return "client"

    def recall_fused(
        self,
        query: str,
        query_vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None = None,
    ) -> Candidates | None:
        """BM25 and kNN fused by reciprocal rank in one `hybrid` query through the RRF search
        pipeline; None where the engine does not fuse (`hybrid_fusion`), so the searcher does.
        Recall scores are the engine's RRF scores."""
        if self.hybrid_fusion != "engine":
            return None
        dim, _ = self._read_setup()
        if n <= 0:
            return Candidates.empty(dim)
        if not self._hybrid_pipeline_checked:  # an index built before the pipeline existed
            self._put_hybrid_pipeline()
        vector = np.asarray(query_vector, dtype=np.float32)
        body = self._lean(
            assets.hybrid_search_body(query, vector, n, filters=filters, ef_search=self.ef_search)
        )
        pipeline = self.names.hybrid_pipeline
        hits = self._search(body, "hybrid recall", search_pipeline=pipeline)["hits"]["hits"]
        if assets.raw_hybrid_hits(hits):
            raise StoreError(
                f"hybrid recall: the search pipeline {pipeline} at {self._safe_url} has no "
                "score-ranker processor, so the scores came back unfused; put the assets "
                "again (`twinbert-search opensearch put-templates`)"
            )
        return reads.candidates_from_hits(self._with_sources(hits), dim)
