"""How a TwinBERT document is stored in a search cluster, whatever the engine.

OpenSearch and Elasticsearch keep the same document (only the vector field's type differs:
`knn_vector` or `dense_vector`), so both backends read and write these fields:

    doc_id        keyword   the document id (also `_id`, so re-indexing is idempotent)
    title, text   text      BM25; both copied into `search_text`, the one field BM25 queries
    metadata      object    strings mapped as keywords, so filters are exact term matches
    content_hash  keyword   what incremental indexing compares
    embedding     vector    the unit-length document vector (returned in `_source`, exact)
    precomputed   binary    base64 float32: the crossing layer's document half, never indexed

The mapping's `_meta` records the model fingerprint, the dimension and the index description,
so a store opened later refuses other models and knows how to read its scores.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from twinbert_search.documents import Document
from twinbert_search.errors import InputError
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

MAX_ID_BYTES = 512  # the longest `_id` both engines accept
SQUARED_NORM_TOLERANCE = 1e-3


def index_meta(manifest: ModelManifest, ann: str) -> dict[str, Any]:
    """What the index records about itself: enough to read scores and refuse other models."""
    return {
        META_KEY: {
            "format": FORMAT,
            "model_fingerprint": manifest.fingerprint or None,
            "dim": manifest.dim,
            "normalize": manifest.normalize,
            "ann": ann,
        }
    }


def recorded_meta(mappings: Mapping[str, Any], dim_key: str) -> dict[str, Any]:
    """`index_meta` read back from an index's mappings; `dim` falls back to the vector field's
    `dim_key` (`dimension` for knn_vector, `dims` for dense_vector)."""
    meta = dict((mappings.get("_meta") or {}).get(META_KEY) or {})
    vector = mappings.get("properties", {}).get(FIELD_VECTOR, {})
    meta.setdefault("dim", vector.get(dim_key))
    return meta


def document_properties() -> dict[str, Any]:
    """Every field but the vector, whose mapping is the engine's."""
    return {
        FIELD_ID: {"type": "keyword"},
        FIELD_TITLE: {"type": "text", "copy_to": [FIELD_SEARCH]},
        FIELD_TEXT: {"type": "text", "copy_to": [FIELD_SEARCH]},
        FIELD_SEARCH: {"type": "text"},
        FIELD_METADATA: {"type": "object", "dynamic": True},
        FIELD_HASH: {"type": "keyword", "doc_values": False},
        FIELD_PRECOMPUTED: {"type": "binary"},
    }


def mappings(meta: dict[str, Any], vector: dict[str, Any]) -> dict[str, Any]:
    """The index mappings around the engine's vector field mapping."""
    properties = document_properties()
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


def vector_to_list(vector: np.ndarray) -> list[float]:
    """A vector as the JSON array the vector field takes: each float32 as the double nearest
    its shortest round-tripping decimal (`0.032526217`, not `0.03252621740102768`).

    Any JSON writer prints those doubles with at most 9 significant digits, so `_source` and
    every answer that carries it are about 40% smaller, and a reader that parses the digits
    and rounds to float32 (Python, the engines) gets the very same float32 bits back.
    """
    values = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
    # orjson prints numpy float32 with the shortest digits that round-trip (Ryu, f32)
    return orjson.loads(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY))


def encode_floats(values: np.ndarray) -> str:
    """float32 little-endian, base64: exact and about a third of a JSON float array."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")


def decode_floats(text: str) -> np.ndarray:
    """The inverse of `encode_floats`."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def all_unit(vectors: np.ndarray) -> bool:
    """Whether every row is unit length (then the index may insist on it)."""
    squared = np.einsum("ij,ij->i", vectors, vectors)
    return bool(np.all(np.abs(squared - 1.0) <= SQUARED_NORM_TOLERANCE))


def index_action(
    index: str, doc: Document, extra: Mapping[str, Any], *, engine: str
) -> dict[str, Any]:
    """A bulk `index` action for `doc`: `_id` is the document id, `extra` its vector fields."""
    if not doc.id or len(doc.id.encode("utf-8")) > MAX_ID_BYTES:
        raise InputError(
            f"document ids must be 1 to {MAX_ID_BYTES} bytes (an {engine} _id)",
            record_id=doc.id[:80],
        )
    source = {
        FIELD_ID: doc.id,
        FIELD_TITLE: doc.title,
        FIELD_TEXT: doc.text,
        FIELD_METADATA: doc.metadata,
        FIELD_HASH: doc.content_hash,
        **extra,
    }
    return {"_op_type": "index", "_index": index, "_id": doc.id, "_source": source}
