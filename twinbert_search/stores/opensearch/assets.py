"""OpenSearch request bodies for TwinBERT documents, rendered from a model manifest.

This module is the single source of truth for what the OpenSearch backend sends: the index
template and index body (a `knn_vector` field sized from the manifest), the ingest pipelines,
the hybrid search pipeline and the search bodies. The JSON files under `index_templates/` and
`pipelines/` are `render_defaults()` for a 384-dimensional model; a test keeps them equal.

The document's fields, the filters and the BM25 bodies are the same on every cluster engine
(`stores/cluster/schema.py`, `queries.py`) and re-exported here; what is OpenSearch's own is
the `knn_vector` mapping (`index_options.py`), the `knn` and `hybrid` queries, the
ML Commons `text_embedding` pipeline and the hybrid search pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.cluster import assets as cluster_assets
from twinbert_search.stores.cluster import schema
from twinbert_search.stores.cluster.assets import live_settings
from twinbert_search.stores.cluster.lifecycle import DEFAULT_BASE
from twinbert_search.stores.cluster.pipelines import (
    check_vector_processor,
    normalise_processors,
    pipeline_description,
    vector_pipeline,
)
from twinbert_search.stores.cluster.queries import (
    bm25_scores_body,
    bm25_search_body,
    filter_clauses,
    filter_query,
    filtered_match,
    match_query,
    source_includes,
)
from twinbert_search.stores.cluster.schema import (
    FIELD_ENCODING_TEXT,
    FIELD_HASH,
    FIELD_ID,
    FIELD_METADATA,
    FIELD_PRECOMPUTED,
    FIELD_SEARCH,
    FIELD_TEXT,
    FIELD_TITLE,
    FIELD_VECTOR,
    FORMAT,
    META_KEY,
    SOURCE_FIELDS,
    SQUARED_NORM_TOLERANCE,
    decode_floats,
    encode_floats,
    vector_to_list,
)
from twinbert_search.stores.opensearch.index_options import (
    ENCODINGS,
    ENGINES,
    MAX_DIMENSION,
    SPACE_TYPES,
    IndexOptions,
    exact_similarity,
    knn_vector_mapping,
    score_to_similarity,
)

__all__ = [
    "DEFAULT_BASE",
    "ENCODINGS",
    "ENGINES",
    "FIELD_ENCODING_TEXT",
    "FIELD_HASH",
    "FIELD_ID",
    "FIELD_METADATA",
    "FIELD_PRECOMPUTED",
    "FIELD_SEARCH",
    "FIELD_TEXT",
    "FIELD_TITLE",
    "FIELD_VECTOR",
    "FORMAT",
    "HYBRID_RANK_CONSTANT",
    "MAX_DIMENSION",
    "META_KEY",
    "MODEL_ID_PLACEHOLDER",
    "SOURCE_FIELDS",
    "SPACE_TYPES",
    "SQUARED_NORM_TOLERANCE",
    "AssetNames",
    "IndexOptions",
    "bm25_scores_body",
    "bm25_search_body",
    "decode_floats",
    "embedding_pipeline",
    "encode_floats",
    "exact_similarity",
    "filter_clauses",
    "hybrid_search_body",
    "hybrid_search_pipeline",
    "index_body",
    "index_mappings",
    "index_meta",
    "index_settings",
    "index_template",
    "knn_query",
    "knn_search_body",
    "knn_vector_mapping",
    "live_settings",
    "match_query",
    "pipeline_description",
    "raw_hybrid_hits",
    "render_defaults",
    "score_to_similarity",
    "vector_pipeline",
    "vector_to_list",
]

# reciprocal rank fusion's k: `search.fusion.RRF_K`, a test keeps them equal
HYBRID_RANK_CONSTANT = 60
MODEL_ID_PLACEHOLDER = "<model-id from `twinbert-search opensearch register-model`>"


@dataclass(frozen=True)
class AssetNames(cluster_assets.AssetNames):
    """The shared names plus OpenSearch's in-cluster encoding and hybrid search pipelines."""

    @property
    def embed_pipeline(self) -> str:
        return f"{self.base}-embed"

    @property
    def hybrid_pipeline(self) -> str:
        return f"{self.base}-hybrid"


def index_meta(manifest: ModelManifest, options: IndexOptions) -> dict[str, Any]:
    """What the index records about itself: enough to read scores and refuse other models."""
    return schema.index_meta(manifest, options.describe())


def index_mappings(manifest: ModelManifest, options: IndexOptions) -> dict[str, Any]:
    return schema.mappings(index_meta(manifest, options), knn_vector_mapping(manifest.dim, options))


def index_settings(options: IndexOptions, *, building: bool = False) -> dict[str, Any]:
    """Index settings; `building` disables refresh for a bulk (re)build.

    Replicas stay on while building: on a cluster of several nodes a bulk acknowledged by a
    primary alone would be lost with its node, and the build would stall until that node came
    back (a single node leaves the replicas unassigned, at no cost).
    """
    index: dict[str, Any] = {
        "knn": True,
        "number_of_shards": options.shards,
        "number_of_replicas": options.replicas,
        "refresh_interval": "-1" if building else "1s",
    }
    if options.engine == "faiss":
        index["knn.algo_param.ef_search"] = options.ef_search
    return {"index": index}


def index_body(
    manifest: ModelManifest,
    options: IndexOptions,
    *,
    aliases: Sequence[str] = (),
    building: bool = False,
) -> dict[str, Any]:
    """PUT /{index}: explicit settings and mappings, so a stale template cannot change them."""
    body: dict[str, Any] = {
        "settings": index_settings(options, building=building),
        "mappings": index_mappings(manifest, options),
    }
    if aliases:
        body["aliases"] = {name: {} for name in aliases}
    return body


def index_template(
    manifest: ModelManifest, options: IndexOptions, names: AssetNames | None = None
) -> dict[str, Any]:
    """PUT /_index_template/{names.template}: the same body, for indices created elsewhere."""
    settings, mappings = index_settings(options), index_mappings(manifest, options)
    meta = index_meta(manifest, options)
    return cluster_assets.index_template(names or AssetNames(), settings, mappings, meta)


def embedding_pipeline(manifest: ModelManifest, model_id: str) -> dict[str, Any]:
    """Ingest pipeline (b): ML Commons encodes `encoding_text` (title + text) in the cluster."""
    return {
        "description": pipeline_description(
            "TwinBERT documents encoded in the cluster by the ML Commons model of the "
            "text_embedding processor; the vector is checked like pipeline (a)",
            manifest,
        ),
        "processors": [
            *normalise_processors(),
            {
                "text_embedding": {
                    "tag": "encode-document",
                    "model_id": model_id,
                    "field_map": {FIELD_ENCODING_TEXT: FIELD_VECTOR},
                }
            },
            {"remove": {"tag": "drop-encoding-text", "field": FIELD_ENCODING_TEXT}},
            check_vector_processor(manifest),
        ],
    }


def hybrid_search_pipeline(rank_constant: int = HYBRID_RANK_CONSTANT) -> dict[str, Any]:
    """Search pipeline (c): fuses a hybrid query's BM25 and kNN lists by reciprocal rank.

    neural-search's `score-ranker-processor` (2.19 and later) scores a document
    sum 1 / (rank_constant + rank) over the sub-query lists it appears in, the formula of the
    client-side RRF (`search.fusion.reciprocal_rank_fusion`, k=60), so an RRF hybrid recall
    is the same whichever side runs it (a model fused by z-scores gets the engine's RRF here,
    and its own fusion where the searcher fuses). The rerank runs in the sidecar (it needs the query
    vector and the crossing layer); this pipeline only serves hybrid recall.
    """
    return {
        "description": "TwinBERT hybrid recall: BM25 and kNN fused by reciprocal rank "
        f"(k={int(rank_constant)})",
        "phase_results_processors": [
            {
                "score-ranker-processor": {
                    "combination": {"technique": "rrf", "rank_constant": int(rank_constant)}
                }
            }
        ],
    }


def raw_hybrid_hits(hits: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a hybrid query's hits are neural-search's raw sub-query lists.

    Without a score-ranker (or normalization) processor the engine (2.19.1) answers 200, not
    an error: each sub-query's hits between marker hits scored about -9.5e9 and -4.4e9,
    duplicates included. Fused scores (RRF: at most 2 / (k + 1)) and raw BM25 and k-NN scores
    are positive, so a marker is plain.
    """
    return any(float(hit.get("_score") or 0.0) < -1e9 for hit in hits)


def knn_query(
    vector: np.ndarray,
    k: int,
    *,
    filters: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
) -> dict[str, Any]:
    """A `knn` query clause; filters run inside the ANN search (efficient filtering)."""
    clause: dict[str, Any] = {"vector": vector_to_list(vector), "k": int(k)}
    restrict = filter_query(filters)
    if restrict is not None:
        clause["filter"] = restrict
    if ef_search is not None:
        clause["method_parameters"] = {"ef_search": int(ef_search)}
    return {"knn": {FIELD_VECTOR: clause}}


def knn_search_body(
    vector: np.ndarray,
    n: int,
    *,
    filters: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    include_text: bool = True,
) -> dict[str, Any]:
    """kNN recall: the n nearest with what the rerank needs, in one round trip."""
    return {
        "size": int(n),
        "query": knn_query(vector, n, filters=filters, ef_search=ef_search),
        "_source": source_includes(include_text),
    }


def hybrid_search_body(
    text: str,
    vector: np.ndarray,
    n: int,
    *,
    filters: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    include_text: bool = True,
) -> dict[str, Any]:
    """A `hybrid` query (BM25 clause first, then kNN), run with the hybrid search pipeline."""
    bm25 = filtered_match(text, filters)
    return {
        "size": int(n),
        "query": {
            "hybrid": {
                "queries": [bm25, knn_query(vector, n, filters=filters, ef_search=ef_search)]
            }
        },
        "_source": source_includes(include_text),
    }


def render_defaults(
    manifest: ModelManifest | None = None,
    options: IndexOptions | None = None,
    names: AssetNames | None = None,
    *,
    model_id: str = MODEL_ID_PLACEHOLDER,
) -> dict[str, dict[str, Any]]:
    """Every committed asset, keyed by its path relative to the repository root.

    Without arguments this is what `index_templates/` and `pipelines/` hold: a 384-d model
    with no fingerprint yet, the default index options and the base name `twinbert`.
    """
    manifest = manifest or ModelManifest(dim=384)
    options = options or IndexOptions()
    names = names or AssetNames()
    return {
        f"index_templates/{names.template}.opensearch.json": index_template(
            manifest, options, names
        ),
        f"pipelines/{names.vector_pipeline}.ingest.json": vector_pipeline(manifest),
        f"pipelines/{names.embed_pipeline}.ingest.json": embedding_pipeline(manifest, model_id),
        f"pipelines/{names.hybrid_pipeline}.search.json": hybrid_search_pipeline(),
    }
