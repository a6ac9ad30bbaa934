"""Shared by the ElasticsearchStore tests: a seeded corpus and stores on the fake cluster."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.elasticsearch_spec import SPEC_MISSING
from tests.fake_elasticsearch import FakeElasticsearch
from twinbert_search.documents import Document
from twinbert_search.stores.elasticsearch import BulkOptions, ConnectionOptions, ElasticsearchStore

DIM = 8
FP = "fingerprint-one"


def corpus(n: int = 30, dim: int = DIM, seed: int = 0) -> tuple[list[Document], np.ndarray]:
    rng = np.random.default_rng(seed)
    topics = ["star planet moon orbit", "bread oven flour", "heart blood cell virus"]
    docs = [
        Document(
            id=f"d{i:02d}",
            title=f"doc {i}",
            text=f"{topics[i % 3]} number {i}",
            metadata={"lang": "fr" if i % 5 == 0 else "en", "year": 2000 + i % 4},
        )
        for i in range(n)
    ]
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return docs, vectors


def fake_kwargs(cluster: FakeElasticsearch) -> dict[str, Any]:
    """client_kwargs that send a store's requests to `cluster`."""
    return {"node_class": cluster.node_class()}


def make_store(
    cluster: FakeElasticsearch,
    *,
    sleeps: list[float] | None = None,
    url: str = "http://fake:9200",
    connection: dict[str, Any] | None = None,
    **kwargs: Any,
) -> ElasticsearchStore:
    kwargs.setdefault("alias", None if "index" in kwargs else "docs")
    kwargs.setdefault(
        "bulk", BulkOptions(initial_backoff=0.5, max_backoff=2.0, max_retries=3, chunk_size=8)
    )
    options = ConnectionOptions(
        url, max_retries=0, client_kwargs=fake_kwargs(cluster), **(connection or {})
    )
    sink = sleeps if sleeps is not None else []
    return ElasticsearchStore(options, sleep=sink.append, **kwargs)


def built(
    cluster: FakeElasticsearch, **kwargs: Any
) -> tuple[ElasticsearchStore, list[Document], np.ndarray]:
    store = make_store(cluster, **kwargs)
    docs, vectors = corpus()
    pre = np.arange(len(docs) * 3, dtype=np.float32).reshape(len(docs), 3)
    store.upsert(docs, vectors, model_fingerprint=FP, precomputed=pre)
    store.finalize()
    return store, docs, vectors


def bulk_ids(cluster: FakeElasticsearch) -> list[list[str]]:
    """The document ids of each bulk request, in order."""
    out = []
    for lines in cluster.bodies("bulk"):
        out.append([next(iter(line.values()))["_id"] for line in lines[::2]])
    return out


def spec_or_skip(cluster: FakeElasticsearch) -> None:
    """Skip a test about the specification itself when it could not be fetched."""
    if cluster.spec is None:
        pytest.skip(f"Elasticsearch specification unavailable: {'; '.join(SPEC_MISSING)}")
