"""What the Elasticsearch backend sends, rendered from a manifest and checked against the official
specification of both majors it serves (8.x and 9.x); the committed template is the rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.elasticsearch_spec import SPEC_MISSING, SpecViolation, load_spec
from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.cluster import queries
from twinbert_search.stores.elasticsearch import assets
from twinbert_search.stores.elasticsearch.index_options import (
    IndexOptions,
    dense_vector_mapping,
    num_candidates,
)

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ModelManifest(dim=384, fingerprint="abc123")
VECTOR = np.full(384, 1 / np.sqrt(384), dtype=np.float32)
BULK = [
    {"index": {"_index": "twinbert-000001", "_id": "a"}},
    {"doc_id": "a"},
    {"delete": {"_index": "twinbert-000001", "_id": "b"}},
]
SWITCH = [
    {"add": {"index": "twinbert-000001", "alias": "twinbert"}},
    {"remove_index": {"index": "twinbert"}},
]


def test_the_committed_template_is_the_rendering() -> None:
    for rel, body in assets.render_defaults().items():
        assert json.loads((ROOT / rel).read_text()) == body, f"{rel} drifted; re-render it"
    template = assets.render_defaults()["index_templates/twinbert.elasticsearch.json"]
    mapping = template["template"]["mappings"]
    assert mapping["properties"]["embedding"]["similarity"] == "dot_product"
    assert "knn" not in template["template"]["settings"]["index"], "OpenSearch's setting only"


def test_mappings_follow_the_index_options() -> None:
    assert dense_vector_mapping(384, IndexOptions.parse("bbq_hnsw:efc100"))["index_options"] == {
        "type": "bbq_hnsw", "m": 16, "ef_construction": 100,
    }  # fmt: skip
    assert dense_vector_mapping(8, IndexOptions.parse("int8_flat"))["index_options"] == {
        "type": "int8_flat"
    }
    with pytest.raises(ConfigurationError, match="at least 64"):
        dense_vector_mapping(32, IndexOptions.parse("bbq_hnsw"))
    with pytest.raises(ConfigurationError, match="even dimension"):
        dense_vector_mapping(33, IndexOptions.parse("int4_hnsw"))
    unnormalized = ModelManifest(dim=8, normalize=False)
    mapping = assets.index_mappings(unnormalized, IndexOptions())
    assert mapping["properties"]["embedding"]["similarity"] == "max_inner_product"
    assert num_candidates(10, IndexOptions()) == 100
    assert num_candidates(1000, IndexOptions()) == 4000
    with pytest.raises(ConfigurationError, match="10000 candidates"):
        num_candidates(6000, IndexOptions())


def bodies() -> list[tuple[str, str, dict[str, Any], Any]]:
    """(method, path, params, body) of every kind of request the store sends."""
    options = IndexOptions()
    name = "twinbert-000001"
    return [
        ("PUT", "/_index_template/twinbert", {}, assets.index_template(MANIFEST, options)),
        ("PUT", f"/{name}", {}, assets.index_body(MANIFEST, options, building=True)),
        ("PUT", f"/{name}", {}, assets.index_body(MANIFEST, IndexOptions.parse("bbq_hnsw"))),
        ("PUT", "/_ingest/pipeline/twinbert-vectors", {}, assets.vector_pipeline(MANIFEST)),
        ("PUT", f"/{name}/_settings", {}, assets.live_settings(options)),
        ("POST", "/twinbert/_search", {}, assets.knn_search_body(VECTOR, 10, options)),
        (
            "POST",
            "/twinbert/_search",
            {},
            assets.knn_search_body(VECTOR, 10, options, filters={"lang": ["en"], "year": 2001}),
        ),
        (
            "POST",
            "/twinbert/_search",
            {},
            assets.rrf_search_body("moon", VECTOR, 10, options, filters={"lang": "en"}),
        ),
        ("POST", "/twinbert/_search", {}, assets.bm25_search_body("moon", 10)),
        ("POST", "/twinbert/_search", {}, assets.bm25_scores_body("moon", ["a", "b"])),
        ("POST", f"/{name}/_search", {}, queries.id_page_body(1000, ["d001"])),
        ("POST", "/twinbert/_mget", {"_source_includes": "doc_id,embedding"}, {"ids": ["a"]}),
        ("PUT", "/_bulk", {"pipeline": "twinbert-vectors"}, BULK),
        ("POST", "/_aliases", {}, {"actions": SWITCH}),
        ("GET", f"/{name}/_settings", {"flat_settings": "true"}, None),
    ]


@pytest.mark.parametrize("version", ["8.19.1", "9.2.0"])
def test_every_request_body_follows_the_specification(version: str) -> None:
    spec = load_spec(version)
    if spec is None:
        pytest.skip(f"Elasticsearch specification {version} unavailable: {'; '.join(SPEC_MISSING)}")
    for method, path, params, body in bodies():
        spec.validate_request(method, path, params, body)


def test_the_specification_check_is_not_vacuous() -> None:
    spec = load_spec()
    if spec is None:
        pytest.skip(f"Elasticsearch specification unavailable: {'; '.join(SPEC_MISSING)}")
    wrong = [
        ("POST", "/t/_search", {}, {"knn": {"field": "e", "query_vector": [1], "k": "ten"}}),
        ("POST", "/t/_search", {}, {"query": {"term": {"a": 1}, "match_all": {}}}),
        ("POST", "/t/_search", {"knn_k": "1"}, None),
        (
            "PUT",
            "/i",
            {},
            {"mappings": {"properties": {"e": {"type": "dense_vector", "dims": ""}}}},
        ),
        ("PUT", "/i", {}, {"mapping": {}}),
        ("PUT", "/_ingest/pipeline/p", {}, {"processors": [{"set": {"value": 1}}]}),
        ("POST", "/_aliases", {}, {"actions": [{"add": {"index": "a", "alias": "b"}, "x": {}}]}),
    ]
    for request in wrong:
        with pytest.raises(SpecViolation):
            spec.validate_request(*request)
