"""The service's hand-offs: what runs on the event loop and what goes to a thread pool.

Each hand-off costs a thread wake-up and a loop turn, more than a cosine over 100 candidates;
BENCHMARKS.md ("The sidecar on OpenSearch") measures what they add to a request.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.test_service import QUERY
from twinbert_search.manifest import CrossingConfig
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.runtime.crossing import CosineCrossing
from twinbert_search.search import Searcher
from twinbert_search.service import ServiceConfig, create_app, load_searcher


def test_a_cosine_rerank_runs_on_the_loop_and_a_crossing_layer_in_its_pool(
    searcher: Searcher, sample_index: Path, tiny_model: Path
) -> None:
    """The cosine alone is one matrix-vector product, cheaper than the hand-off to the rerank
    pool; a crossing layer still goes to the pool, where the budget can give up on it. Nor
    does the framework hand the request to its own thread pool (a sync dependency would)."""
    rt = searcher.runtime
    cosine_runtime = TwinBertRuntime(
        rt.model_dir,
        replace(rt.manifest, crossing=CrossingConfig("cosine")),
        rt.query_encoder,
        rt.document_encoder,
        CosineCrossing(1.0, 0.0),
        document_graph=rt.document_graph,
    )
    cosine = Searcher(cosine_runtime, searcher.store)
    bodies = []
    # the cosine's probabilities, the cosine model's served fusion (the recall order), and the
    # tiny model's residual crossing layer
    runs = ((cosine, 0, 0), (cosine, None, 0), (searcher, None, 1))
    for served, lexical_weight, handed_to_pool in runs:
        config = ServiceConfig(index_dir=sample_index, model=tiny_model, workers=2)
        app = create_app(config, served)
        request = {"query": QUERY, "k": 5, "candidates": 20, "lexical_weight": lexical_weight}
        with TestClient(app, raise_server_exceptions=False) as client:
            pool = app.state.service._rerank
            handed: list[Any] = []
            submit = pool.submit
            pool.submit = lambda *a, handed=handed, submit=submit, **k: (  # type: ignore[method-assign]
                handed.append(a) or submit(*a, **k)
            )
            framework: list[Any] = []
            run_sync = anyio.to_thread.run_sync
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(
                    anyio.to_thread,
                    "run_sync",
                    lambda *a, framework=framework, run_sync=run_sync, **k: (
                        framework.append(a) or run_sync(*a, **k)
                    ),
                )
                body = client.post("/search", json=request).json()
        assert framework == []
        assert body["reranked"] is True and body["degraded"] is None, body
        assert len(handed) == handed_to_pool
        bodies.append(body)
    hits = bodies[0]["hits"]  # the cosine's: its probabilities, best first
    stored = searcher.store.fetch([h["id"] for h in hits])
    expected = cosine_runtime.score(cosine_runtime.encode_query(QUERY), stored.vectors)
    np.testing.assert_allclose([h["rerank_score"] for h in hits], expected, rtol=1e-5)
    assert [h["rerank_score"] for h in hits] == sorted(expected.tolist(), reverse=True)
    assert [h["rank"] for h in bodies[1]["hits"]] == [h["recall_rank"] for h in bodies[1]["hits"]]


@pytest.mark.parametrize("spinning", [False, True])
def test_the_encoder_spins_after_a_run_only_when_asked(
    spinning: bool,
    sample_index: Path,
    tiny_model: Path,
    searcher: Searcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spinning ONNX Runtime threads burn a core after every encode; the service asks for
    them only with --ort-spinning."""
    seen: dict[str, Any] = {}

    def open_searcher(backend: str, **kwargs: Any) -> Searcher:
        seen.update(kwargs)
        return searcher

    monkeypatch.setattr("twinbert_search.service.app.open_searcher", open_searcher)
    config = ServiceConfig(index_dir=sample_index, model=tiny_model)
    if spinning:
        config = replace(config, spinning=True)
    assert load_searcher(config) is searcher
    assert seen["spinning"] is spinning
