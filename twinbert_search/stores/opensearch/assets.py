"""OpenSearch request bodies for TwinBERT documents, rendered from a model manifest.

This module is the single source of truth for what the OpenSearch backend sends: the index
template and index body (a `knn_vector` field sized from the manifest), the ingest pipelines,
the hybrid search pipeline and the search bodies. The JSON files under `index_templates/` and
`pipelines/` are `render_defaults()` for a 384-dimensional model; a test keeps them equal.

Documents are stored as:

    doc_id        keyword   the document id (also `_id`, so re-indexing is idempotent)
    title, text   text      BM25; both copied into `search_text`, the one field BM25 queries
    metadata      object    strings mapped as keywords, so filters are exact term matches
    content_hash  keyword   what incremental indexing compares
    embedding     knn_vector the unit-length document vector (returned in `_source`, exact)
    precomputed   binary    base64 float32: the crossing layer's document half, never indexed

The index is described by a short string (see `IndexOptions.parse`), recorded in the mapping's
`_meta` beside the model fingerprint, so a store opened later knows how to read its scores.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import ModelManifest

FORMAT = 1
META_KEY = "twinbert_search"

FIELD_ID = "doc_id"
FIELD_TITLE = "title"
FIELD_TEXT = "text"
FIELD_SEARCH = "search_text"
FIELD_METADATA = "metadata"
FIELD_HASH = "content_hash"
FIELD_VECTOR = "embedding"
FIELD_PRECOMPUTED = "precomputed"
FIELD_ENCODING_TEXT = "encoding_text"  # only sent with in-cluster encoding; removed by pipeline
SOURCE_FIELDS = (FIELD_ID, FIELD_TITLE, FIELD_TEXT, FIELD_METADATA, FIELD_VECTOR, FIELD_PRECOMPUTED)

ENGINES = ("faiss", "lucene")
SPACE_TYPES = ("innerproduct", "cosinesimil", "l2")
ENCODINGS = ("fp32", "fp16", "byte")
MAX_DIMENSION = 16000
DEFAULT_BASE = "twinbert"
DEFAULT_HYBRID_WEIGHTS = (0.3, 0.7)  # (BM25, kNN), in the order of the hybrid query's clauses
MODEL_ID_PLACEHOLDER = "<model-id from `twinbert-search opensearch register-model`>"
SQUARED_NORM_TOLERANCE = 1e-3

_INT_TOKEN = re.compile(r"^(hnsw|efc|efs)(\d+)$")


@dataclass(frozen=True)
class IndexOptions:
    """How the `knn_vector` field is indexed; `describe()` and `parse()` round-trip.

    Compact encodings are limited to those that keep recall: Faiss SQfp16 (`fp16`, 2x smaller;
    unit vectors are far inside its range) and Lucene's scalar quantizer (`byte`, 4x smaller,
    int7 with per-segment confidence intervals). Both quantize only the ANN graph's copy:
    `_source` keeps the float32 values, so the rerank reads exact vectors either way.
    """

    engine: str = "faiss"
    space_type: str = "innerproduct"
    m: int = 16
    ef_construction: int = 128
    encoding: str = "fp16"
    ef_search: int = 100  # index default (Faiss); a query may override it
    shards: int = 1
    replicas: int = 1

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigurationError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.space_type not in SPACE_TYPES:
            raise ConfigurationError(
                f"space type must be one of {SPACE_TYPES}, got {self.space_type!r}"
            )
        if self.encoding not in ENCODINGS:
            raise ConfigurationError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.engine == "lucene" and self.encoding == "fp16":
            raise ConfigurationError(
                "fp16 is a Faiss encoding (SQfp16); with lucene use fp32 or byte"
            )
        if self.engine == "faiss" and self.encoding == "byte":
            raise ConfigurationError(
                "byte is Lucene's scalar quantizer; with faiss use fp32 or fp16"
            )
        if not 2 <= self.m <= 100:
            raise ConfigurationError(f"m must be between 2 and 100, got {self.m}")
        if self.ef_construction < 2:
            raise ConfigurationError(
                f"ef_construction must be at least 2, got {self.ef_construction}"
            )
        if self.ef_search < 1:
            raise ConfigurationError(f"ef_search must be positive, got {self.ef_search}")
        if self.shards < 1 or self.replicas < 0:
            raise ConfigurationError("shards must be positive and replicas not negative")

    def describe(self) -> str:
        """The short string recorded in `_meta`: `faiss:hnsw16:efc128:fp16:innerproduct`."""
        hnsw = f"hnsw{self.m}:efc{self.ef_construction}"
        return f"{self.engine}:{hnsw}:{self.encoding}:{self.space_type}"

    @classmethod
    def parse(cls, text: str, **overrides: Any) -> IndexOptions:
        """Parse `describe()` output; tokens in any order, missing ones take the defaults.

        `efs<N>` sets the index-level ef_search; `overrides` (shards, replicas...) apply last.
        """
        values: dict[str, Any] = {}
        for raw in text.strip().lower().split(":"):
            token = raw.strip()
            if not token:
                continue
            match = _INT_TOKEN.match(token)
            if token in ENGINES:
                key, value = "engine", token
            elif token in SPACE_TYPES:
                key, value = "space_type", token
            elif token in ENCODINGS:
                key, value = "encoding", token
            elif match:
                key = {"hnsw": "m", "efc": "ef_construction", "efs": "ef_search"}[match[1]]
                value = int(match[2])
            else:
                raise ConfigurationError(
                    f"cannot parse index description {text!r}: unknown token {token!r} "
                    f"(expected an engine {ENGINES}, hnsw<M>, efc<N>, efs<N>, an encoding "
                    f"{ENCODINGS} or a space type {SPACE_TYPES})"
                )
            if key in values:
                raise ConfigurationError(f"index description {text!r} sets {key} twice")
            values[key] = value
        options = replace(cls(**values), **overrides)
        options.validate()
        return options


@dataclass(frozen=True)
class AssetNames:
    """Names of everything the backend creates for one index family (alias or index name)."""

    base: str = DEFAULT_BASE

    @property
    def template(self) -> str:
        return self.base

    @property
    def index_patterns(self) -> list[str]:
        return [self.base, f"{self.base}-*"]

    @property
    def vector_pipeline(self) -> str:
        return f"{self.base}-vectors"

    @property
    def embed_pipeline(self) -> str:
        return f"{self.base}-embed"

    @property
    def hybrid_pipeline(self) -> str:
        return f"{self.base}-hybrid"


def index_meta(manifest: ModelManifest, options: IndexOptions) -> dict[str, Any]:
    """What the index records about itself: enough to read scores and refuse other models."""
    return {
        META_KEY: {
            "format": FORMAT,
            "model_fingerprint": manifest.fingerprint or None,
            "dim": manifest.dim,
            "normalize": manifest.normalize,
            "ann": options.describe(),
        }
    }


def knn_vector_mapping(dim: int, options: IndexOptions) -> dict[str, Any]:
    """The `knn_vector` field: HNSW with the chosen engine, space type and encoding."""
    options.validate()
    if not 1 <= dim <= MAX_DIMENSION:
        raise ConfigurationError(f"dimension must be between 1 and {MAX_DIMENSION}, got {dim}")
    parameters: dict[str, Any] = {"m": options.m, "ef_construction": options.ef_construction}
    if options.encoding == "fp16":
        parameters["encoder"] = {"name": "sq", "parameters": {"type": "fp16", "clip": False}}
    elif options.encoding == "byte":
        parameters["encoder"] = {"name": "sq"}
    return {
        "type": "knn_vector",
        "dimension": dim,
        "method": {
            "name": "hnsw",
            "engine": options.engine,
            "space_type": options.space_type,
            "parameters": parameters,
        },
    }


def _document_properties() -> dict[str, Any]:
    return {
        FIELD_ID: {"type": "keyword"},
        FIELD_TITLE: {"type": "text", "copy_to": [FIELD_SEARCH]},
        FIELD_TEXT: {"type": "text", "copy_to": [FIELD_SEARCH]},
        FIELD_SEARCH: {"type": "text"},
        FIELD_METADATA: {"type": "object", "dynamic": True},
        FIELD_HASH: {"type": "keyword", "doc_values": False},
        FIELD_PRECOMPUTED: {"type": "binary"},
    }


def _mappings(meta: dict[str, Any], vector: dict[str, Any]) -> dict[str, Any]:
    properties = _document_properties()
    properties[FIELD_VECTOR] = vector
    return {
        "_meta": meta,
        # strict: a misspelt field fails its bulk item instead of growing the mapping
        "dynamic": "strict",
        "dynamic_templates": [
            {
                "metadata_strings": {
                    "path_match": f"{FIELD_METADATA}.*",
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword", "ignore_above": 1024},
                }
            }
        ],
        "properties": dict(sorted(properties.items())),
    }


def index_mappings(manifest: ModelManifest, options: IndexOptions) -> dict[str, Any]:
    return _mappings(index_meta(manifest, options), knn_vector_mapping(manifest.dim, options))


def index_settings(options: IndexOptions, *, building: bool = False) -> dict[str, Any]:
    """Index settings; `building` disables refresh and replicas for a bulk (re)build."""
    index: dict[str, Any] = {
        "knn": True,
        "number_of_shards": options.shards,
        "number_of_replicas": 0 if building else options.replicas,
        "refresh_interval": "-1" if building else "1s",
    }
    if options.engine == "faiss":
        index["knn.algo_param.ef_search"] = options.ef_search
    return {"index": index}


def live_settings(options: IndexOptions) -> dict[str, Any]:
    """The settings a finished (re)build is switched back to before it takes traffic."""
    return {"index": {"number_of_replicas": options.replicas, "refresh_interval": "1s"}}


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
    names = names or AssetNames()
    return {
        "index_patterns": names.index_patterns,
        "priority": 200,
        "template": {
            "settings": index_settings(options),
            "mappings": index_mappings(manifest, options),
        },
        "_meta": index_meta(manifest, options),
    }


def elasticsearch_index_template(
    manifest: ModelManifest, options: IndexOptions, names: AssetNames | None = None
) -> dict[str, Any]:
    """The Elasticsearch variant (`dense_vector`); offered as a file, not used by the store.

    Elasticsearch has no fp16 HNSW: `fp32` maps to `hnsw`, `byte` to `int8_hnsw` (the engine
    option does not apply). Unit vectors make `dot_product` the exact cosine.
    """
    names = names or AssetNames()
    if options.encoding not in ("fp32", "byte"):
        raise ConfigurationError(
            "Elasticsearch has no fp16 HNSW; use fp32 (hnsw) or byte (int8_hnsw)"
        )
    similarity = {"innerproduct": "dot_product", "cosinesimil": "cosine", "l2": "l2_norm"}
    if options.space_type not in similarity:
        raise ConfigurationError(f"unknown space type {options.space_type!r}")
    hnsw = "int8_hnsw" if options.encoding == "byte" else "hnsw"
    vector = {
        "type": "dense_vector",
        "dims": manifest.dim,
        "index": True,
        "similarity": similarity[options.space_type],
        "index_options": {"type": hnsw, "m": options.m, "ef_construction": options.ef_construction},
    }
    meta = index_meta(manifest, options)
    meta[META_KEY]["ann"] = (
        f"elasticsearch:{hnsw}{options.m}:efc{options.ef_construction}:{options.space_type}"
    )
    return {
        "index_patterns": names.index_patterns,
        "priority": 200,
        "template": {
            "settings": {
                "index": {
                    "number_of_shards": options.shards,
                    "number_of_replicas": options.replicas,
                }
            },
            "mappings": _mappings(meta, vector),
        },
        "_meta": meta,
    }


def _check_vector_script(manifest: ModelManifest) -> dict[str, Any]:
    """A painless check that the vector has the index's dimension (and unit length)."""
    source = (
        "def v = ctx[params.field];"
        " if (!(v instanceof List)) {"
        " throw new IllegalArgumentException('[' + params.field + '] must be an array of '"
        " + params.dim + ' numbers'); }"
        " if (v.size() != params.dim) {"
        " throw new IllegalArgumentException('[' + params.field + '] has ' + v.size()"
        " + ' values; the index expects ' + params.dim); }"
        " if (params.unit) { double n = 0; for (def x : v) { n += x * x; }"
        " if (Math.abs(n - 1.0) > params.tolerance) {"
        " throw new IllegalArgumentException('[' + params.field + '] is not unit length"
        " (squared norm ' + n + ')'); } }"
    )
    return {
        "script": {
            "tag": "check-embedding",
            "description": "reject vectors of another dimension (or not unit length)",
            "lang": "painless",
            "source": source,
            "params": {
                "field": FIELD_VECTOR,
                "dim": manifest.dim,
                "unit": manifest.normalize,
                "tolerance": SQUARED_NORM_TOLERANCE,
            },
        }
    }


def _normalise_fields() -> list[dict[str, Any]]:
    return [
        {"set": {"tag": "default-title", "field": FIELD_TITLE, "value": "", "override": False}},
        {"trim": {"tag": "trim-title", "field": FIELD_TITLE, "ignore_missing": True}},
        {"trim": {"tag": "trim-text", "field": FIELD_TEXT}},
        {
            "set": {
                "tag": "default-metadata",
                "field": FIELD_METADATA,
                "value": {},
                "override": False,
            }
        },
    ]


def vector_pipeline(manifest: ModelManifest) -> dict[str, Any]:
    """Ingest pipeline (a): documents that arrive with precomputed vectors."""
    return {
        "description": (
            f"TwinBERT documents with precomputed {manifest.dim}-d vectors: "
            "check the vector, normalise the text fields"
        ),
        "_meta": {
            META_KEY: {
                "format": FORMAT,
                "dim": manifest.dim,
                "model_fingerprint": manifest.fingerprint or None,
            }
        },
        "processors": [_check_vector_script(manifest), *_normalise_fields()],
    }


def embedding_pipeline(manifest: ModelManifest, model_id: str) -> dict[str, Any]:
    """Ingest pipeline (b): ML Commons encodes `encoding_text` (title + text) in the cluster."""
    return {
        "description": (
            f"TwinBERT documents encoded in the cluster ({manifest.dim}-d) by the ML Commons "
            "model of the text_embedding processor; the vector is checked like pipeline (a)"
        ),
        "_meta": {
            META_KEY: {
                "format": FORMAT,
                "dim": manifest.dim,
                "model_fingerprint": manifest.fingerprint or None,
            }
        },
        "processors": [
            *_normalise_fields(),
            {
                "text_embedding": {
                    "tag": "encode-document",
                    "model_id": model_id,
                    "field_map": {FIELD_ENCODING_TEXT: FIELD_VECTOR},
                }
            },
            {"remove": {"tag": "drop-encoding-text", "field": FIELD_ENCODING_TEXT}},
            _check_vector_script(manifest),
        ],
    }


def hybrid_search_pipeline(
    weights: Sequence[float] = DEFAULT_HYBRID_WEIGHTS,
) -> dict[str, Any]:
    """Search pipeline (c): normalises and combines the BM25 and kNN scores of a hybrid query.

    The rerank itself runs in the sidecar (it needs the query vector and the crossing layer),
    so no search pipeline takes part in it; this one only serves hybrid recall.
    """
    if len(weights) != 2 or min(weights) < 0 or sum(weights) <= 0:
        raise ConfigurationError(f"hybrid weights must be two non-negative numbers, got {weights}")
    return {
        "description": "TwinBERT hybrid recall: min-max normalised BM25 and kNN, weighted mean",
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "normalization": {"technique": "min_max"},
                    "combination": {
                        "technique": "arithmetic_mean",
                        "parameters": {"weights": [float(w) for w in weights]},
                    },
                }
            }
        ],
    }


def filter_clauses(filters: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """`{field: value}` or `{field: [values]}` on metadata, as exact term filters."""
    clauses: list[dict[str, Any]] = []
    for name, value in sorted((filters or {}).items()):
        field = f"{FIELD_METADATA}.{name}"
        if isinstance(value, (list, tuple, set, frozenset)):
            values = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
            if not values or not all(_is_scalar(v) for v in values):
                raise ConfigurationError(
                    f"filter {name!r} must list strings, numbers or booleans, got {value!r}"
                )
            clauses.append({"terms": {field: values}})
        elif _is_scalar(value):
            clauses.append({"term": {field: value}})
        else:
            raise ConfigurationError(
                f"filter {name!r} must be a string, number, boolean or a list of them, "
                f"got {type(value).__name__}"
            )
    return clauses


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and value is not None


def _filter_query(filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    clauses = filter_clauses(filters)
    return {"bool": {"filter": clauses}} if clauses else None


def vector_to_list(vector: np.ndarray) -> list[float]:
    return np.asarray(vector, dtype=np.float32).reshape(-1).tolist()


def knn_query(
    vector: np.ndarray,
    k: int,
    *,
    filters: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
) -> dict[str, Any]:
    """A `knn` query clause; filters run inside the ANN search (efficient filtering)."""
    clause: dict[str, Any] = {"vector": vector_to_list(vector), "k": int(k)}
    filter_query = _filter_query(filters)
    if filter_query is not None:
        clause["filter"] = filter_query
    if ef_search is not None:
        clause["method_parameters"] = {"ef_search": int(ef_search)}
    return {"knn": {FIELD_VECTOR: clause}}


def _source(include_text: bool) -> dict[str, Any]:
    fields = list(SOURCE_FIELDS) if include_text else [FIELD_ID, FIELD_VECTOR, FIELD_PRECOMPUTED]
    return {"includes": fields}


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
        "_source": _source(include_text),
    }


def match_query(text: str) -> dict[str, Any]:
    return {"match": {FIELD_SEARCH: {"query": text}}}


def bm25_search_body(
    text: str, n: int, *, filters: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """BM25 over title and text (one `match` on the field both are copied to)."""
    query: dict[str, Any] = match_query(text)
    clauses = filter_clauses(filters)
    if clauses:
        query = {"bool": {"must": [query], "filter": clauses}}
    return {"size": int(n), "query": query, "_source": False}


def bm25_scores_body(text: str, ids: Sequence[str]) -> dict[str, Any]:
    """The BM25 recall's `match`, restricted to given documents: their scores for a rerank
    that fuses BM25 (documents the query does not match come back without a hit)."""
    query = {"bool": {"must": [match_query(text)], "filter": [{"ids": {"values": list(ids)}}]}}
    return {"size": len(ids), "query": query, "_source": False}


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
    bm25: dict[str, Any] = match_query(text)
    clauses = filter_clauses(filters)
    if clauses:
        bm25 = {"bool": {"must": [bm25], "filter": clauses}}
    return {
        "size": int(n),
        "query": {
            "hybrid": {
                "queries": [bm25, knn_query(vector, n, filters=filters, ef_search=ef_search)]
            }
        },
        "_source": _source(include_text),
    }


def score_to_similarity(space_type: str, scores: np.ndarray) -> np.ndarray:
    """Invert the k-NN plugin's score so recall scores are the cosine of unit vectors.

    Documented scores: innerproduct `1 + ip` when ip >= 0 else `1 / (1 - ip)`; cosinesimil
    `(2 - (1 - cos)) / 2`; l2 `1 / (1 + d^2)` (and for unit vectors cos = 1 - d^2 / 2).
    """
    s = np.asarray(scores, dtype=np.float64)
    if space_type == "innerproduct":
        sim = np.where(s >= 1.0, s - 1.0, 1.0 - 1.0 / np.maximum(s, 1e-30))
    elif space_type == "cosinesimil":
        sim = 2.0 * s - 1.0
    elif space_type == "l2":
        sim = 1.0 - (1.0 / np.maximum(s, 1e-30) - 1.0) / 2.0
    else:
        raise ConfigurationError(f"unknown space type {space_type!r}")
    return sim.astype(np.float32)


def encode_floats(values: np.ndarray) -> str:
    """float32 little-endian, base64: exact and about a third of a JSON float array."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")


def decode_floats(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def render_defaults(
    manifest: ModelManifest | None = None,
    options: IndexOptions | None = None,
    names: AssetNames | None = None,
    *,
    model_id: str = MODEL_ID_PLACEHOLDER,
    hybrid_weights: Sequence[float] = DEFAULT_HYBRID_WEIGHTS,
) -> dict[str, dict[str, Any]]:
    """Every committed asset, keyed by its path relative to the repository root.

    Without arguments this is what `index_templates/` and `pipelines/` hold: a 384-d model
    with no fingerprint yet, the default index options and the base name `twinbert`.
    """
    manifest = manifest or ModelManifest(dim=384)
    options = options or IndexOptions()
    names = names or AssetNames()
    # Elasticsearch has no fp16: the compact default there is int8_hnsw
    es_options = replace(options, encoding="fp32" if options.encoding == "fp32" else "byte")
    return {
        f"index_templates/{names.template}.opensearch.json": index_template(
            manifest, options, names
        ),
        f"index_templates/{names.template}.elasticsearch.json": elasticsearch_index_template(
            manifest, es_options, names
        ),
        f"pipelines/{names.vector_pipeline}.ingest.json": vector_pipeline(manifest),
        f"pipelines/{names.embed_pipeline}.ingest.json": embedding_pipeline(manifest, model_id),
        f"pipelines/{names.hybrid_pipeline}.search.json": hybrid_search_pipeline(hybrid_weights),
    }
