"""The rendered OpenSearch assets: committed files, spec validity, index descriptions, scores."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.fake_opensearch import knn_score
from tests.opensearch_checks import check_knn_vector
from tests.opensearch_spec import SpecViolation, load_spec
from twinbert_search.errors import ConfigurationError
from twinbert_search.manifest import ModelManifest
from twinbert_search.search.fusion import RRF_K
from twinbert_search.stores.opensearch import assets
from twinbert_search.stores.opensearch.assets import IndexOptions

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ModelManifest(dim=384, fingerprint="0123456789abcdef0123456789abcdef")
VALID_OPTIONS = [
    "faiss:hnsw16:efc128:fp16:innerproduct",
    "faiss:hnsw32:efc256:fp32:cosinesimil",
    "faiss:hnsw8:efc64:fp16:l2",
    "lucene:hnsw16:efc100:fp32:innerproduct",
    "lucene:hnsw24:efc128:byte:cosinesimil",
    "lucene:hnsw16:efc128:byte:innerproduct",
]


def test_committed_files_equal_the_rendered_defaults() -> None:
    from twinbert_search.stores.elasticsearch import assets as es_assets

    rendered = assets.render_defaults()
    for rel, body in rendered.items():
        path = ROOT / rel
        assert path.is_file(), f"{rel} is missing: run the render shown in its folder's README"
        assert json.loads(path.read_text()) == body, f"{rel} drifted from render_defaults()"
    committed = {
        str(p.relative_to(ROOT))
        for folder in ("index_templates", "pipelines")
        for p in (ROOT / folder).glob("*.json")
    }
    every = set(rendered) | set(es_assets.render_defaults())  # the Elasticsearch template
    assert committed == every, "a committed JSON file is not rendered (or vice versa)"


def test_committed_files_are_rendered_for_384_dims_without_placeholders() -> None:
    template = json.loads((ROOT / "index_templates/twinbert.opensearch.json").read_text())
    vector = template["template"]["mappings"]["properties"]["embedding"]
    assert vector["dimension"] == 384
    pipeline = json.loads((ROOT / "pipelines/twinbert-vectors.ingest.json").read_text())
    assert pipeline["processors"][0]["script"]["params"]["dim"] == 384


@pytest.mark.parametrize("text", VALID_OPTIONS)
def test_index_descriptions_round_trip(text: str) -> None:
    options = IndexOptions.parse(text)
    assert options.describe() == text
    assert IndexOptions.parse(":".join(reversed(text.split(":")))) == options


def test_index_description_defaults_and_overrides() -> None:
    assert IndexOptions.parse("") == IndexOptions()
    assert IndexOptions.parse("lucene:byte").engine == "lucene"
    # `--ann lucene` alone: Lucene's float graph, not the Faiss default fp16 it cannot build
    assert IndexOptions.parse("lucene").encoding == "fp32"
    described = IndexOptions.parse("hnsw32:lucene").describe()
    assert described == "lucene:hnsw32:efc128:fp32:innerproduct"
    options = IndexOptions.parse("faiss:efs256", shards=3, replicas=2)
    assert (options.ef_search, options.shards, options.replicas) == (256, 3, 2)


@pytest.mark.parametrize(
    "text, message",
    [
        ("nmslib", "unknown token"),
        ("lucene:fp16", "fp16 is a Faiss encoding"),
        ("faiss:byte", "Lucene's scalar quantizer"),
        ("hnsw1", "m must be between"),
        ("efc1", "ef_construction"),
        ("faiss:lucene", "sets engine twice"),
    ],
)
def test_invalid_index_descriptions_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        IndexOptions.parse(text)


@pytest.mark.parametrize("text", VALID_OPTIONS)
def test_index_template_and_body_follow_the_spec(text: str) -> None:
    spec = load_spec()
    options = IndexOptions.parse(text)
    names = assets.AssetNames("docs")
    spec.validate_request(
        "PUT", "/_index_template/docs", {}, assets.index_template(MANIFEST, options, names)
    )
    for building in (False, True):
        body = assets.index_body(MANIFEST, options, aliases=["docs"], building=building)
        spec.validate_request("PUT", "/docs-000001", {}, body)
    spec.validate_request("PUT", "/docs-000001/_settings", {}, assets.live_settings(options))


def test_knn_field_encodings() -> None:
    faiss16 = assets.knn_vector_mapping(384, IndexOptions())
    assert faiss16["method"]["parameters"]["encoder"] == {
        "name": "sq",
        "parameters": {"type": "fp16", "clip": False},
    }
    lucene8 = assets.knn_vector_mapping(384, IndexOptions.parse("lucene:byte"))
    assert lucene8["method"]["parameters"]["encoder"] == {"name": "sq"}
    plain = assets.knn_vector_mapping(384, IndexOptions.parse("faiss:fp32"))
    assert "encoder" not in plain["method"]["parameters"]
    for mapping in (faiss16, lucene8, plain):
        assert check_knn_vector("embedding", mapping) == []
    with pytest.raises(ConfigurationError):
        assets.knn_vector_mapping(0, IndexOptions())


def test_mapping_keeps_what_the_rerank_needs_out_of_the_index() -> None:
    props = assets.index_mappings(MANIFEST, IndexOptions())["properties"]
    assert props["precomputed"] == {"type": "binary"}  # stored in _source, never indexed
    assert props["title"]["copy_to"] == props["text"]["copy_to"] == ["search_text"]
    meta = assets.index_mappings(MANIFEST, IndexOptions())["_meta"]["twinbert_search"]
    assert meta["model_fingerprint"] == MANIFEST.fingerprint
    assert meta["ann"] == IndexOptions().describe()


def test_pipelines_follow_the_spec() -> None:
    spec = load_spec()
    spec.validate_request("PUT", "/_ingest/pipeline/p", {}, assets.vector_pipeline(MANIFEST))
    spec.validate_request(
        "PUT", "/_ingest/pipeline/e", {}, assets.embedding_pipeline(MANIFEST, "model-1")
    )
    spec.validate_request("PUT", "/_search/pipeline/h", {}, assets.hybrid_search_pipeline())


def test_the_hybrid_pipeline_fuses_by_the_client_side_formula() -> None:
    """The engine's RRF is the searcher's: the same rank constant, no other processor."""
    (processor,) = assets.hybrid_search_pipeline()["phase_results_processors"]
    combination = processor["score-ranker-processor"]["combination"]
    assert combination == {"technique": "rrf", "rank_constant": RRF_K}
    assert assets.HYBRID_RANK_CONSTANT == RRF_K


def test_search_bodies_follow_the_spec() -> None:
    spec = load_spec()
    vector = np.full(384, 1 / np.sqrt(384), dtype=np.float32)
    filters = {"lang": "en", "year": [2020, 2021]}
    bodies = [
        assets.knn_search_body(vector, 10),
        assets.knn_search_body(vector, 10, filters=filters, ef_search=200),
        assets.bm25_search_body("moon orbit", 10),
        assets.bm25_search_body("moon orbit", 10, filters=filters),
    ]
    for body in bodies:
        spec.validate_request("POST", "/docs/_search", {}, body)
    hybrid = assets.hybrid_search_body("moon", vector, 10, filters=filters)
    spec.validate_request("POST", "/docs/_search", {"search_pipeline": "docs-hybrid"}, hybrid)
    knn = bodies[1]["query"]["knn"]["embedding"]
    assert knn["k"] == 10 and knn["method_parameters"] == {"ef_search": 200}
    assert knn["filter"] == {
        "bool": {
            "filter": [
                {"term": {"metadata.lang": "en"}},
                {"terms": {"metadata.year": [2020, 2021]}},
            ]
        }
    }


@pytest.mark.parametrize("bad", [{"x": None}, {"x": {"nested": 1}}, {"x": []}, {"x": [{"a": 1}]}])
def test_unsupported_filters_are_refused(bad: dict) -> None:
    with pytest.raises(ConfigurationError):
        assets.filter_clauses(bad)


def _documented_score(space: str, sim: float) -> float:
    if space == "innerproduct":
        return 1 + sim if sim >= 0 else 1 / (1 - sim)
    if space == "cosinesimil":
        return (2 - (1 - sim)) / 2
    return 1 / (1 + (2 - 2 * sim))  # l2 between unit vectors: d^2 = 2 - 2 cos


@pytest.mark.parametrize("space", ["innerproduct", "cosinesimil", "l2"])
def test_scores_invert_to_the_cosine(space: str) -> None:
    sims = np.linspace(-0.99, 1.0, 41)
    scores = np.array([_documented_score(space, s) for s in sims])
    np.testing.assert_allclose(assets.score_to_similarity(space, scores), sims, atol=1e-5)
    order = np.argsort(-scores, kind="stable")
    assert list(order) == list(np.argsort(-sims, kind="stable")), "scores keep the cosine order"


@pytest.mark.parametrize("space", ["innerproduct", "cosinesimil", "l2"])
def test_exact_similarity_is_what_the_exact_scores_invert_to(space: str) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = vectors[0]
    scores = np.array([knn_score(space, query, v) for v in vectors])
    np.testing.assert_allclose(
        assets.exact_similarity(space, query, vectors),
        assets.score_to_similarity(space, scores),
        atol=1e-6,
    )
    with pytest.raises(ConfigurationError):
        assets.exact_similarity("hamming", query, vectors)


def test_float_codec_is_exact() -> None:
    values = np.random.default_rng(0).standard_normal(37).astype(np.float32)
    np.testing.assert_array_equal(assets.decode_floats(assets.encode_floats(values)), values)


# The strict checks catch what the specification lets through.


def test_spec_catches_a_wrong_type() -> None:
    body = assets.index_body(MANIFEST, IndexOptions())
    body["mappings"]["properties"]["embedding"]["dimension"] = "384"
    with pytest.raises(SpecViolation, match="violates the OpenSearch API spec"):
        load_spec().validate_request("PUT", "/docs", {}, body)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b["mappings"]["properties"]["embedding"]["method"]["parameters"].update(
            efconstruction=64), "unknown faiss hnsw parameters"),
        (lambda b: b["mappings"]["properties"]["embedding"]["method"].update(engine="nmslib"),
         "engine 'nmslib'"),
        (lambda b: b["mappings"]["properties"]["embedding"]["method"].update(space_type="dot"),
         "space_type 'dot'"),
        (lambda b: b["mappings"]["properties"]["embedding"]["method"]["parameters"].update(
            encoder={"name": "sq", "parameters": {"type": "fp8"}}), "encoder parameter type"),
        (lambda b: b["settings"]["index"].pop("knn"), "index.knn = true"),
        (lambda b: b["mappings"]["properties"]["title"].update(copy_to=["all_text"]),
         "copy_to targets"),
    ],
)  # fmt: skip
def test_strict_checks_on_index_bodies(mutate, message: str) -> None:
    body = assets.index_body(MANIFEST, IndexOptions())
    mutate(body)
    with pytest.raises(SpecViolation, match=message):
        load_spec().validate_request("PUT", "/docs", {}, body)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"size": 3, "qeury": {"match_all": {}}}, "unknown top-level keys"),
        ({"query": {"knnn": {"embedding": {"vector": [1.0], "k": 1}}}}, "unknown query type"),
        ({"query": {"knn": {"embedding": {"vector": [1.0]}}}}, "exactly one of k"),
        ({"query": {"knn": {"embedding": {"vector": [1.0], "k": 1, "filters": {}}}}},
         "unknown keys"),
        ({"query": {"bool": {"filter": [{"trem": {"a": 1}}]}}}, "unknown query type 'trem'"),
        ({"query": {"match_all": {}, "term": {"a": 1}}},
         "too many properties|exactly one query type"),
        ({"size": 20000}, "size must be"),
    ],
)  # fmt: skip
def test_strict_checks_on_search_bodies(body: dict, message: str) -> None:
    with pytest.raises(SpecViolation, match=message):
        load_spec().validate_request("POST", "/docs/_search", {}, body)


def test_strict_checks_on_pipelines_and_params() -> None:
    spec = load_spec()
    pipeline = assets.vector_pipeline(MANIFEST)
    bad = replace_processor(pipeline, {"text_embeddings": {"model_id": "m", "field_map": {}}})
    with pytest.raises(SpecViolation, match="unknown processor 'text_embeddings'"):
        spec.validate_request("PUT", "/_ingest/pipeline/p", {}, bad)
    with pytest.raises(SpecViolation, match="query parameters"):
        spec.validate_request("POST", "/docs/_search", {"search_pipline": "x"}, {"size": 1})
    with pytest.raises(SpecViolation, match="no operation"):
        spec.validate_request("POST", "/docs/_serach/x", {}, {})


def replace_processor(pipeline: dict, processor: dict) -> dict:
    out = json.loads(json.dumps(pipeline))
    out["processors"][0] = processor
    return out


def test_render_for_another_model() -> None:
    manifest = replace(MANIFEST, dim=768)
    rendered = assets.render_defaults(
        manifest, IndexOptions.parse("lucene:byte"), assets.AssetNames("news"), model_id="m-1"
    )
    assert set(rendered) == {
        "index_templates/news.opensearch.json",
        "pipelines/news-vectors.ingest.json",
        "pipelines/news-embed.ingest.json",
        "pipelines/news-hybrid.search.json",
    }
    template = rendered["index_templates/news.opensearch.json"]
    assert template["index_patterns"] == ["news", "news-*"]
    assert template["template"]["mappings"]["properties"]["embedding"]["dimension"] == 768
