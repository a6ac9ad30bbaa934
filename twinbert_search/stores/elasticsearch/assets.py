"""Elasticsearch request bodies for TwinBERT documents, rendered from a model manifest.

The single source of truth for what the Elasticsearch backend sends: the index template and
index body (a `dense_vector` field sized from the manifest), the ingest pipeline for documents
with precomputed vectors, and the search bodies (top-level `knn` with its filter inside the
ANN search, BM25, and the `rrf` retriever that fuses them in one request).
`index_templates/twinbert.elasticsearch.json` is `render_defaults()` for a 384-dimensional
model; a test keeps them equal.

The document, filters and BM25 queries are the same on every cluster engine
(`stores/cluster/`); what is Elasticsearch's own is the `dense_vector` mapping
(`index_options.py`), the kNN and retriever clauses, and index settings without OpenSearch's
`index.knn`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.cluster import pipelines, schema
from twinbert_search.stores.cluster.assets import AssetNames, live_settings
from twinbert_search.stores.cluster.assets import index_template as index_template_body
from twinbert_search.stores.cluster.lifecycle import DEFAULT_BASE
from twinbert_search.stores.cluster.queries import (
    bm25_scores_body,
    bm25_search_body,
    filter_query,
    filtered_match,
    source_fields,
)
from twinbert_search.stores.elasticsearch.index_options import (
    IndexOptions,
    dense_vector_mapping,
    num_candidates,
)

__all__ = [
    "DEFAULT_BASE",
    "RRF_RANK_CONSTANT",
    "AssetNames",
    "IndexOptions",
    "bm25_scores_body",
    "bm25_search_body",
    "index_body",
    "index_mappings",
    "index_settings",
    "index_template",
    "knn_clause",
    "knn_search_body",
    "live_settings",
    "render_defaults",
    "rrf_search_body",
    "vector_pipeline",
]

RRF_RANK_CONSTANT = 60  # the searcher's client-side fusion uses the same k (search/pipeline.py)


def index_mappings(
    manifest: ModelManifest, options: IndexOptions, *, unit: bool | None = None
) -> dict[str, Any]:
    """Mappings with the `dense_vector` field; `unit` defaults to the manifest's normalize."""
    unit = manifest.normalize if unit is None else unit
    vector = dense_vector_mapping(manifest.dim, options, unit=unit)
    return schema.mappings(schema.index_meta(manifest, options.describe()), vector)


def index_settings(options: IndexOptions, *, building: bool = False) -> dict[str, Any]:
    """Index settings; `building` disables refresh for a bulk (re)build (replicas stay on,
    as OpenSearch's do: `stores/opensearch/assets.py` says why)."""
    index: dict[str, Any] = {
        "number_of_shards": options.shards,
        "number_of_replicas": options.replicas,
    }
    if building:
        index["refresh_interval"] = "-1"
    return {"index": index}


def index_body(
    manifest: ModelManifest,
    options: IndexOptions,
    *,
    building: bool = False,
    unit: bool | None = None,
) -> dict[str, Any]:
    """PUT /{index}: explicit settings and mappings, so a stale template cannot change them."""
    return {
        "settings": index_settings(options, building=building),
        "mappings": index_mappings(manifest, options, unit=unit),
    }


def index_template(
    manifest: ModelManifest, options: IndexOptions, names: AssetNames | None = None
) -> dict[str, Any]:
    """PUT /_index_template/{names.template}: the same body, for indices created elsewhere."""
    settings, mappings = index_settings(options), index_mappings(manifest, options)
    meta = schema.index_meta(manifest, options.describe())
    return index_template_body(names or AssetNames(), settings, mappings, meta)


def vector_pipeline(manifest: ModelManifest) -> dict[str, Any]:
    """Ingest pipeline (a), as OpenSearch has it (`stores/cluster/pipelines.py`)."""
    return pipelines.vector_pipeline(manifest)


def knn_clause(
    vector: np.ndarray,
    k: int,
    options: IndexOptions,
    *,
    filters: Mapping[str, Any] | None = None,
    candidates: int | None = None,
) -> dict[str, Any]:
    """A kNN clause; filters run inside the ANN search, quantized kinds rescore with floats."""
    clause: dict[str, Any] = {
        "field": schema.FIELD_VECTOR,
        "query_vector": schema.vector_to_list(vector),
        "k": int(k),
        "num_candidates": int(candidates or num_candidates(k, options)),
    }
    restrict = filter_query(filters)
    if restrict is not None:
        clause["filter"] = restrict
    oversample = options.rescore_oversample
    if oversample:
        clause["rescore_vector"] = {"oversample": float(oversample)}
    return clause


def knn_search_body(
    vector: np.ndarray,
    n: int,
    options: IndexOptions,
    *,
    filters: Mapping[str, Any] | None = None,
    candidates: int | None = None,
    include_text: bool = True,
) -> dict[str, Any]:
    """kNN recall: the n nearest with what the rerank needs, in one round trip."""
    return {
        "size": int(n),
        "knn": knn_clause(vector, n, options, filters=filters, candidates=candidates),
        "_source": source_fields(include_text),
    }


def rrf_search_body(
    text: str,
    vector: np.ndarray,
    n: int,
    options: IndexOptions,
    *,
    filters: Mapping[str, Any] | None = None,
    candidates: int | None = None,
    include_text: bool = True,
) -> dict[str, Any]:
    """BM25 and kNN fused by reciprocal rank in the cluster (the `rrf` retriever), each
    retriever's top n, rank constant 60: the fusion the searcher otherwise does itself."""
    knn = knn_clause(vector, n, options, filters=filters, candidates=candidates)
    return {
        "size": int(n),
        "retriever": {
            "rrf": {
                "retrievers": [
                    {"standard": {"query": filtered_match(text, filters)}},
                    {"knn": knn},
                ],
                "rank_window_size": int(n),
                "rank_constant": RRF_RANK_CONSTANT,
            }
        },
        "_source": source_fields(include_text),
    }


def render_defaults(
    manifest: ModelManifest | None = None,
    options: IndexOptions | None = None,
    names: AssetNames | None = None,
) -> dict[str, dict[str, Any]]:
    """The committed Elasticsearch asset, keyed by its path relative to the repository root.

    Without arguments: a 384-d model with no fingerprint yet, the default index options and
    the base name `twinbert`. The ingest pipeline is OpenSearch's (`pipelines/`), unchanged.
    """
    manifest = manifest or ModelManifest(dim=384)
    options = options or IndexOptions()
    names = names or AssetNames()
    return {
        f"index_templates/{names.template}.elasticsearch.json": index_template(
            manifest, options, names
        )
    }
