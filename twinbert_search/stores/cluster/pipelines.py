"""The ingest pipeline for documents that arrive with their vectors, for any cluster engine.

Elasticsearch and OpenSearch run the same processors (ingest-common's `set`/`trim`, and a
Painless `script` that rejects a vector of the wrong dimension or length), so the body is
written once here. A node without ingest-common or Painless (Elasticsearch's integ-test
distribution) refuses those processors: `processorless_pipeline` is then put under the same
name, so bulk requests still name a pipeline, and the index mapping alone checks the vectors
(`dense_vector` refuses another dimension, and non-unit vectors under `dot_product`).
"""

from __future__ import annotations

from typing import Any

from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.cluster.schema import (
    FIELD_METADATA,
    FIELD_TEXT,
    FIELD_TITLE,
    FIELD_VECTOR,
    FORMAT,
    META_KEY,
    SQUARED_NORM_TOLERANCE,
)

CHECK_TAG = "check-embedding"


def check_vector_processor(manifest: ModelManifest) -> dict[str, Any]:
    """A Painless check that the vector has the index's dimension (and unit length)."""
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
            "tag": CHECK_TAG,
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


def normalise_processors() -> list[dict[str, Any]]:
    """Default an absent title and metadata, trim the text fields."""
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


def pipeline_description(what: str, manifest: ModelManifest) -> str:
    """A pipeline's description, naming the model it was rendered for.

    The description is where a pipeline records that: OpenSearch (2.19, 3.5) refuses `_meta`
    on ingest pipelines, although its API specification lists it; Elasticsearch takes either.
    The stores compare description and processors to decide whether to put it again.
    """
    model = manifest.fingerprint or "unversioned"
    return f"{what} ({META_KEY} format {FORMAT}, {manifest.dim}-d, model {model})"


def vector_pipeline(manifest: ModelManifest) -> dict[str, Any]:
    """Ingest pipeline (a): documents that arrive with precomputed vectors."""
    return {
        "description": pipeline_description(
            "TwinBERT documents with precomputed vectors: check the vector, normalise the "
            "text fields",
            manifest,
        ),
        "processors": [check_vector_processor(manifest), *normalise_processors()],
    }


def processorless_pipeline(manifest: ModelManifest, why: str) -> dict[str, Any]:
    """Pipeline (a) without processors, for a node that lacks them; `why` says which."""
    return {
        "description": pipeline_description(
            f"TwinBERT documents with precomputed vectors, without processors ({why}): the "
            "index mapping alone checks the vectors",
            manifest,
        ),
        "processors": [],
    }
