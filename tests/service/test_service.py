"""The HTTP service over a tiny model and the embedded store: each route and each error case.

Failures are injected by wrapping the store or the Searcher (a store whose backend is down, a
rerank that is slow or raises), never by replacing the service code under test.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from twinbert_search.cli import CLI
from twinbert_search.cli.serve import serve
from twinbert_search.errors import BackendUnavailableError
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.ingest.readers import read_corpus
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.search import Searcher
from twinbert_search.service import ServiceConfig, create_app
from twinbert_search.service.schemas import MAX_CANDIDATES, MAX_K, MAX_QUERY_CHARS
from twinbert_search.stores.embedded import EmbeddedStore

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample"
QUERY = "why does the moon show one face"


def build_sample_index(model: Path, index_dir: Path) -> Path:
    """The 300-document sample encoded with `model` into an embedded store."""
    runtime = TwinBertRuntime.load(model)
    with EmbeddedStore.create_or_open(index_dir, dim=runtime.dim) as store:
        index_documents(read_corpus(SAMPLE / "corpus.jsonl"), store, runtime, progress=False)
    return index_dir


def _config(sample_index: Path, tiny_model: Path, **overrides: Any) -> ServiceConfig:
    return ServiceConfig(index_dir=sample_index, model=tiny_model, workers=2, **overrides)


@pytest.fixture(scope="module")
def client(sample_index: Path, tiny_model: Path, searcher: Searcher) -> Iterator[TestClient]:
    app = create_app(_config(sample_index, tiny_model), searcher)
    with TestClient(app) as client:
        yield client


def _serve(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def _error(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["status"] == status and body["error"]["type"] == kind, body
    assert body["error"]["message"]
    return body["error"]


# --- the routes -------------------------------------------------------------------------------


def test_search_returns_both_stages_like_the_library(
    client: TestClient, searcher: Searcher
) -> None:
    response = client.post("/search", json={"query": QUERY, "k": 5, "candidates": 40})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = searcher.search(QUERY, 5, 40)
    assert body["reranked"] is True and body["degraded"] is None and body["candidates"] == 40
    assert [h["id"] for h in body["hits"]] == [h.id for h in expected.hits]
    for hit, want in zip(body["hits"], expected.hits, strict=True):
        assert hit["rank"] == want.rank and hit["recall_rank"] == want.recall_rank
        assert hit["rerank_score"] == pytest.approx(want.rerank_score, rel=1e-5)
        assert hit["recall_score"] == pytest.approx(want.recall_score, rel=1e-5)
        assert hit["score"] == hit["rerank_score"]
        assert set(hit["document"]) == {"title", "text", "metadata"}
    assert set(body["timings_ms"]) == {"encode", "recall", "rerank", "documents", "total"}


def test_search_fuses_bm25_like_the_library(client: TestClient, searcher: Searcher) -> None:
    """A lexical weight (the request's, or a distilled model's tuned one) reorders the same
    candidates as `Searcher.search` does; 0 gives back probabilities."""
    body = {"query": QUERY, "k": 10, "candidates": 40, "hybrid": True, "lexical_weight": 1.0}
    fused = client.post("/search", json=body).json()
    expected = searcher.search(QUERY, 10, 40, hybrid=True, lexical_weight=1.0)
    assert [h["id"] for h in fused["hits"]] == [h.id for h in expected.hits]
    for hit, want in zip(fused["hits"], expected.hits, strict=True):
        assert hit["rerank_score"] == pytest.approx(want.rerank_score, rel=1e-5, abs=1e-6)
    plain = client.post("/search", json={**body, "lexical_weight": 0}).json()
    assert [h["id"] for h in plain["hits"]] != [h["id"] for h in fused["hits"]]
    assert all(0 < h["rerank_score"] < 1 for h in plain["hits"])


def test_search_options(client: TestClient, searcher: Searcher) -> None:
    filtered = client.post(
        "/search",
        json={"query": "music", "k": 10, "candidates": 30, "filters": {"topic": "sports"}},
    ).json()
    assert filtered["hits"]
    assert all(h["document"]["metadata"]["topic"] == "sports" for h in filtered["hits"])
    recall_only = client.post(
        "/search", json={"query": "volcano", "k": 10, "rerank": False, "include_documents": False}
    ).json()
    assert recall_only["reranked"] is False and recall_only["degraded"] is None
    assert [h["recall_rank"] for h in recall_only["hits"]] == list(range(1, 11))
    assert all(h["rerank_score"] is None and h["document"] is None for h in recall_only["hits"])
    sparse = {doc_id for doc_id, _ in searcher.store.recall_bm25("theremin", 5)}
    hybrid = client.post(
        "/search", json={"query": "theremin", "k": 50, "candidates": 50, "hybrid": True}
    ).json()
    assert sparse <= {h["id"] for h in hybrid["hits"]}
    assert hybrid["hybrid_fusion"] == "client" and recall_only["hybrid_fusion"] is None
    # k above candidates raises the recall depth to k, as the library does
    deep = client.post("/search", json={"query": "volcano", "k": 30, "candidates": 5}).json()
    assert deep["candidates"] == 30 and len(deep["hits"]) == 30
    nothing = client.post("/search", json={"query": "x", "filters": {"topic": "none"}}).json()
    assert nothing["hits"] == [] and nothing["candidates"] == 0


def test_rerank_ids_matches_the_library(client: TestClient, searcher: Searcher) -> None:
    ids = ["d010", "d001", "d150", "d299", "d042"]
    response = client.post("/rerank", json={"query": QUERY, "candidates": ids})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = searcher.rerank_ids(QUERY, ids)
    assert body["reranked"] is True
    assert [(r["id"], r["rank"]) for r in body["results"]] == [
        (doc_id, rank) for rank, (doc_id, _) in enumerate(expected, start=1)
    ]
    for result, (doc_id, score) in zip(body["results"], expected, strict=True):
        assert result["score"] == pytest.approx(score, rel=1e-5)
        assert result["input_rank"] == ids.index(doc_id) + 1
    top2 = client.post("/rerank", json={"query": QUERY, "candidates": ids, "k": 2}).json()
    assert [r["id"] for r in top2["results"]] == [doc_id for doc_id, _ in expected[:2]]


def test_rerank_with_vectors_scores_them_as_given(client: TestClient, searcher: Searcher) -> None:
    ids = ["d003", "d100", "d200"]
    found = searcher.store.fetch(ids)
    given = [{"id": i, "vector": v.tolist()} for i, v in zip(ids, found.vectors, strict=True)]
    with_vectors = client.post("/rerank", json={"query": QUERY, "candidates": given}).json()
    by_id = client.post("/rerank", json={"query": QUERY, "candidates": ids}).json()
    assert [r["id"] for r in with_vectors["results"]] == [r["id"] for r in by_id["results"]]
    np.testing.assert_allclose(
        [r["score"] for r in with_vectors["results"]],
        [r["score"] for r in by_id["results"]],
        rtol=1e-5,
    )
    # vectors of ids the store does not hold are fine: the store is not consulted
    given[0]["id"] = "not-in-the-store"
    assert client.post("/rerank", json={"query": QUERY, "candidates": given}).status_code == 200


def test_health_readiness_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["documents"] == 300
    assert ready.json()["backend"] == "embedded" and ready.json()["dim"] == 32
    schema = client.get("/openapi.json").json()
    assert {"/search", "/rerank", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    for name in ("SearchRequest", "RerankRequest", "RerankCandidate"):
        assert schema["components"]["schemas"][name]["additionalProperties"] is False
    k = schema["components"]["schemas"]["SearchRequest"]["properties"]["k"]
    assert (k["minimum"], k["maximum"]) == (1, MAX_K)
    assert "/v2/" in schema["info"]["description"]  # the versioning rule is stated


def test_metrics_count_stages_cache_hits_and_errors(
    sample_index: Path, tiny_model: Path, searcher: Searcher
) -> None:
    with _serve(create_app(_config(sample_index, tiny_model), searcher)) as client:
        for _ in range(3):
            assert client.post("/search", json={"query": "comet orbit"}).status_code == 200
        assert client.post("/rerank", json={"query": "comet orbit", "candidates": ["d001"]})
        client.post("/search", json={"query": ""})
        text = client.get("/metrics").text
    assert "twinbert_query_cache_hits_total 3.0" in text
    assert "twinbert_query_cache_misses_total 1.0" in text
    assert 'twinbert_stage_duration_seconds_count{route="/search",stage="rerank"} 3.0' in text
    assert 'twinbert_stage_duration_seconds_count{route="/search",stage="encode"} 1.0' in text
    assert 'twinbert_stage_duration_seconds_count{route="/rerank",stage="fetch"} 1.0' in text
    assert 'twinbert_candidates_count{route="/search"} 3.0' in text
    assert 'twinbert_errors_total{type="validation_error"} 1.0' in text
    assert 'twinbert_http_requests_total{method="POST",route="/search",status="422"} 1.0' in text
    assert "twinbert_ready 1.0" in text


def test_the_lifespan_loads_model_and_store_once(sample_index: Path, tiny_model: Path) -> None:
    app = create_app(_config(sample_index, tiny_model))
    assert app.state.service is None
    with TestClient(app) as client:
        service = app.state.service
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.post("/search", json={"query": QUERY}).status_code == 200
        assert app.state.service is service
    assert app.state.service is None and service.searcher.store._conn is None  # closed


def test_a_reindex_by_another_process_is_picked_up(
    sample_index: Path, tiny_model: Path, tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(sample_index, index_dir)
    app = create_app(_config(index_dir, tiny_model, refresh_s=0.05))
    with TestClient(app) as client:
        body = {"query": QUERY, "candidates": ["d001", "d002"]}
        assert client.post("/rerank", json=body).status_code == 200
        with EmbeddedStore.open(index_dir, read_only=False) as writer:  # `twinbert-search delete`
            writer.delete(["d001"])
            writer.finalize()
        deadline = time.monotonic() + 5
        while client.post("/rerank", json=body).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _error(client.post("/rerank", json=body), 404, "unknown_document")["ids"] == ["d001"]
        assert client.get("/readyz").json()["documents"] == 299


# --- degradation ------------------------------------------------------------------------------


class SlowRerank(Searcher):
    """A Searcher whose rerank takes `delay` seconds, or raises when `fail` is set."""

    delay = 0.0
    fail = False

    def rerank_scores(self, query_vector: np.ndarray, candidates: Any, **kwargs: Any) -> np.ndarray:
        if self.fail:
            raise RuntimeError("injected rerank failure")
        time.sleep(self.delay)
        return super().rerank_scores(query_vector, candidates, **kwargs)


@pytest.mark.parametrize(
    ("delay", "fail", "reason"), [(0.5, False, "rerank_timeout"), (0, True, "rerank_error")]
)
def test_a_slow_or_failing_rerank_returns_the_recall_order(
    searcher: Searcher, sample_index: Path, tiny_model: Path, delay: float, fail: bool, reason: str
) -> None:
    slow = SlowRerank(searcher.runtime, searcher.store)
    slow.delay, slow.fail = delay, fail
    app = create_app(_config(sample_index, tiny_model, rerank_budget_ms=50), slow)
    with _serve(app) as client:
        started = time.perf_counter()
        body = client.post("/search", json={"query": QUERY, "k": 10, "candidates": 20}).json()
        assert time.perf_counter() - started < 0.45  # answered within the budget, not the delay
        assert body["reranked"] is False and body["degraded"] == reason
        assert [h["recall_rank"] for h in body["hits"]] == list(range(1, 11))
        assert all(h["rerank_score"] is None for h in body["hits"])
        assert body["hits"][0]["score"] == body["hits"][0]["recall_score"]
        ids = ["d005", "d002", "d009"]
        reranked = client.post("/rerank", json={"query": QUERY, "candidates": ids}).json()
        assert reranked["reranked"] is False and reranked["degraded"] == reason
        assert [r["id"] for r in reranked["results"]] == ids  # the caller's order
        assert all(r["score"] is None for r in reranked["results"])
        text = client.get("/metrics").text
    assert f'twinbert_rerank_degraded_total{{reason="{reason}"}} 2.0' in text


def test_blocking_work_runs_off_the_event_loop(
    searcher: Searcher, sample_index: Path, tiny_model: Path
) -> None:
    """While a rerank blocks its worker thread for 0.4 s, the loop still answers at once."""
    slow = SlowRerank(searcher.runtime, searcher.store)
    slow.delay = 0.4
    app = create_app(_config(sample_index, tiny_model, rerank_budget_ms=2000), slow)

    async def scenario() -> tuple[float, float, dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            started = time.perf_counter()
            search = asyncio.create_task(client.post("/search", json={"query": QUERY}))
            await asyncio.sleep(0.1)  # the search is inside its rerank now
            health = await client.get("/healthz")
            health_done = time.perf_counter() - started
            body = (await search).json()
            return health_done, time.perf_counter() - started, body | {"h": health.status_code}

    health_done, search_done, body = asyncio.run(scenario())
    assert body["h"] == 200 and body["reranked"] is True
    assert health_done < 0.35 < search_done


class DownStore:
    """Wraps a store; every read fails as if the backend (OpenSearch) were unreachable."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _down(self, *args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailableError("recall: OpenSearch at https://search:9200 timed out")

    recall = fetch = recall_bm25 = _down

    @property
    def info(self) -> Any:
        self._down()


def test_a_backend_that_is_down_gives_503(
    searcher: Searcher, sample_index: Path, tiny_model: Path
) -> None:
    down = Searcher(searcher.runtime, searcher.store)
    down.store = DownStore(searcher.store)  # type: ignore[assignment]
    with _serve(create_app(_config(sample_index, tiny_model), down)) as client:
        error = _error(client.post("/search", json={"query": QUERY}), 503, "backend_unavailable")
        assert "timed out" in error["message"]
        response = client.post("/rerank", json={"query": QUERY, "candidates": ["d001"]})
        assert _error(response, 503, "backend_unavailable")
        assert response.headers["retry-after"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "backend_unavailable" in ready.json()["message"]
        assert client.get("/healthz").status_code == 200


def test_not_loaded_is_503(sample_index: Path, tiny_model: Path) -> None:
    app = create_app(_config(sample_index, tiny_model))
    client = _serve(app)  # no `with`: the lifespan never ran
    _error(client.post("/search", json={"query": QUERY}), 503, "not_ready")
    assert client.get("/readyz").status_code == 503


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"query": ""}, "query"),
        ({"query": "   \n"}, "query"),
        ({"query": "x" * (MAX_QUERY_CHARS + 1)}, "query"),
        ({}, "query"),
        ({"query": "\ud800 lone surrogate"}, "query"),
        ({"query": "x", "k": 0}, "k"),
        ({"query": "x", "k": MAX_K + 1}, "k"),
        ({"query": "x", "k": "10"}, "k"),
        ({"query": "x", "candidates": 0}, "candidates"),
        ({"query": "x", "candidates": MAX_CANDIDATES + 1}, "candidates"),
        ({"query": "x", "top_k": 5}, "top_k"),
        ({"query": "x", "filters": {"topic": []}}, "filters.topic"),
        ({"query": "x", "filters": {"topic": {"nested": 1}}}, "filters.topic"),
        ({"query": "x", "filters": {"year": float("nan")}}, "filters.year"),
        ({"query": "x", "lexical_weight": -1}, "lexical_weight"),
        ({"query": "x", "lexical_weight": float("inf")}, "lexical_weight"),
        (["query", "x"], "body"),
    ],
)
def test_bad_search_requests_are_422_naming_the_field(
    client: TestClient, body: Any, where: str
) -> None:
    content = json.dumps(body)  # allow_nan: Python's JSON reader accepts NaN, so must we
    response = client.post("/search", content=content, headers={"content-type": "application/json"})
    error = _error(response, 422, "validation_error")
    assert where in error["message"], error["message"]
    assert error["details"]


@pytest.mark.parametrize(
    ("candidates", "where"),
    [
        ([], "candidates"),
        (["d001", {"id": "d002", "vector": [0.1]}], "candidates"),
        ([{"id": "d001", "vector": [1e9] * 32}], "candidates"),
        ([{"id": "d001", "vector": [0.1] * 32, "norm": 1}], "norm"),
        (["x"] * (MAX_CANDIDATES + 1), "candidates"),
    ],
)
def test_bad_rerank_requests_are_422(client: TestClient, candidates: Any, where: str) -> None:
    response = client.post("/rerank", json={"query": QUERY, "candidates": candidates})
    assert where in _error(response, 422, "validation_error")["message"]


def test_rerank_vectors_of_the_wrong_dimension_are_422(client: TestClient) -> None:
    given = [{"id": "d001", "vector": [0.1] * 32}, {"id": "d002", "vector": [0.1] * 31}]
    error = _error(
        client.post("/rerank", json={"query": QUERY, "candidates": given}), 422, "invalid_input"
    )
    assert "candidates[1].vector" in error["message"] and "31" in error["message"]
    assert "32" in error["message"]


def test_unknown_ids_are_404_naming_them(client: TestClient) -> None:
    response = client.post("/rerank", json={"query": QUERY, "candidates": ["d001", "nope", "d002"]})
    error = _error(response, 404, "unknown_document")
    assert error["ids"] == ["nope"] and "'nope'" in error["message"]


def test_malformed_json_and_wrong_media_type(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    error = _error(
        client.post("/search", content=b'{"query": ', headers=headers), 400, "malformed_json"
    )
    assert "malformed JSON" in error["message"]
    text = client.post("/search", content=b"query=x", headers={"content-type": "text/plain"})
    _error(text, 422, "validation_error")
    _error(client.get("/search"), 405, "method_not_allowed")
    _error(client.get("/nowhere"), 404, "not_found")


def test_request_size_limit_is_413_declared_or_streamed(
    sample_index: Path, tiny_model: Path, searcher: Searcher
) -> None:
    app = create_app(_config(sample_index, tiny_model, max_body_bytes=4096), searcher)
    with _serve(app) as client:
        big = json.dumps({"query": "x" * 5000}).encode()
        declared = client.post("/search", content=big, headers={"content-type": "application/json"})
        error = _error(declared, 413, "payload_too_large")
        assert "4096" in error["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
            yield b'{"query": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}'

        streamed = client.post(
            "/search", content=chunks(), headers={"content-type": "application/json"}
        )
        _error(streamed, 413, "payload_too_large")
        small = client.post("/search", json={"query": "x" * 100})
        assert small.status_code == 200
        assert 'twinbert_errors_total{type="payload_too_large"} 2.0' in client.get("/metrics").text


# --- API key ------------------------------------------------------------------------------------


def test_api_key_guards_search_and_rerank_only(
    sample_index: Path, tiny_model: Path, searcher: Searcher
) -> None:
    config = _config(sample_index, tiny_model, api_key="s3cret-key")
    assert "s3cret-key" not in repr(config)
    with _serve(create_app(config, searcher)) as client:
        missing = client.post("/search", json={"query": QUERY})
        _error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"]
        _error(
            client.post(
                "/rerank",
                json={"query": QUERY, "candidates": ["d001"]},
                headers={"X-API-Key": "nope"},
            ),
            401,
            "unauthorized",
        )
        ok = {"X-API-Key": "s3cret-key"}
        assert client.post("/search", json={"query": QUERY}, headers=ok).status_code == 200
        bearer = {"Authorization": "Bearer s3cret-key"}
        assert client.post("/search", json={"query": QUERY}, headers=bearer).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
        assert {"APIKeyHeader", "HTTPBearer"} <= set(schemes)


# --- packaging and the command ------------------------------------------------------------------


def test_the_service_does_not_import_torch() -> None:
    code = (
        "import sys, twinbert_search.service.app, twinbert_search.cli.serve; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _cli() -> click.Group:
    @click.group(cls=CLI)
    def root() -> None:
        """The main CLI registers `serve` the same way."""

    root.add_command(serve)
    return root


def test_serve_command_builds_the_app_and_keeps_the_key_secret(
    sample_index: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: dict[str, Any] = {}

    def fake_run(app: FastAPI, **kwargs: Any) -> None:
        started.update(kwargs, app=app)
        with TestClient(app) as client:  # what uvicorn would serve
            started["search"] = client.post(
                "/search", json={"query": QUERY}, headers={"X-API-Key": "k3y-from-env"}
            ).status_code

    monkeypatch.setattr("uvicorn.run", fake_run)
    monkeypatch.setenv("TWINBERT_API_KEY", "k3y-from-env")
    args = ["serve", "--index-dir", str(sample_index), "--model", str(tiny_model), "--port", "0",
            "--rerank-budget-ms", "100", "--cache-size", "8", "--threads", "1",
            "--ort-spinning"]  # fmt: skip
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert started["host"] == "127.0.0.1" and started["port"] == 0 and started["search"] == 200
    config = started["app"].state.config
    assert config.rerank_budget_ms == 100 and config.cache_size == 8 and config.threads == 1
    assert config.spinning is True  # off unless asked (ServiceConfig)
    assert config.api_key == "k3y-from-env"
    assert "k3y-from-env" not in result.output


def test_serve_command_errors_exit_with_the_cli_codes(tmp_path: Path, tiny_model: Path) -> None:
    no_dir = CliRunner().invoke(_cli(), ["serve", "--model", str(tiny_model)])
    assert no_dir.exit_code == 2 and "--index-dir" in no_dir.output
    missing = CliRunner().invoke(
        _cli(), ["serve", "--index-dir", str(tmp_path / "none"), "--model", str(tiny_model)]
    )
    assert missing.exit_code == 4 and missing.output.startswith("error:")
    bad_budget = CliRunner().invoke(
        _cli(), ["serve", "--index-dir", "x", "--rerank-budget-ms", "0"]
    )
    assert bad_budget.exit_code == 2 and "--rerank-budget-ms" in bad_budget.output


def test_load_test_harness_against_a_real_server(
    sample_index: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """The benchmark script end to end, scaled down: uvicorn subprocess, 4 clients, 2 s."""
    queries = tmp_path / "queries.txt"
    queries.write_text("moon orbit\nbread oven\nvolcano river\n")
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\nOther sections stay.\n")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "load_test.py"
    result = subprocess.run(
        [sys.executable, str(script), "--index-dir", str(sample_index), "--model", str(tiny_model),
         "--queries", str(queries), "--concurrency", "4", "--duration", "2", "--warmup", "0.5",
         "--threads", "1", "--json-out", str(tmp_path / "report.json"), "--write", str(benchmarks)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == 0 and report["requests"] > 0 and report["rps"] > 0
    assert report["p50_ms"] <= report["p99_ms"]
    text = benchmarks.read_text()
    assert "Other sections stay." in text and "<!-- BEGIN search-api-load -->" in text
    result2 = subprocess.run(
        [sys.executable, str(script), "--render-only", str(tmp_path / "report.json"),
         "--write", str(benchmarks)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result2.returncode == 0, result2.stderr
    assert benchmarks.read_text().count("<!-- BEGIN search-api-load -->") == 1
