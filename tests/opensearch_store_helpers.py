"""Shared by the OpenSearchStore tests: a seeded corpus and stores on the fake cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tests.fake_opensearch import FakeCluster, FakeConnection
from twinbert_search.documents import Document
from twinbert_search.stores.opensearch import BulkOptions, ConnectionOptions, OpenSearchStore

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


def make_store(
    cluster: FakeCluster,
    *,
    sleeps: list[float] | None = None,
    url: str = "http://fake:9200",
    connection: dict[str, Any] | None = None,
    **kwargs: Any,
) -> OpenSearchStore:
    kwargs.setdefault("alias", None if "index" in kwargs else "docs")
    kwargs.setdefault(
        "bulk", BulkOptions(initial_backoff=0.5, max_backoff=2.0, max_retries=3, chunk_size=8)
    )
    options = ConnectionOptions(
        url,
        client_kwargs={"connection_class": FakeConnection, "cluster": cluster},
        **(connection or {}),
    )
    sink = sleeps if sleeps is not None else []
    return OpenSearchStore(options, sleep=sink.append, **kwargs)


def built(
    cluster: FakeCluster, **kwargs: Any
) -> tuple[OpenSearchStore, list[Document], np.ndarray]:
    store = make_store(cluster, **kwargs)
    docs, vectors = corpus()
    pre = np.arange(len(docs) * 3, dtype=np.float32).reshape(len(docs), 3)
    store.upsert(docs, vectors, model_fingerprint=FP, precomputed=pre)
    store.finalize()
    return store, docs, vectors


def bulk_ids(cluster: FakeCluster) -> list[list[str]]:
    """The document ids of each bulk request, in order."""
    out = []
    for lines in cluster.bodies("bulk"):
        out.append([next(iter(line.values()))["_id"] for line in lines[::2]])
    return out


class VectorRuntime:
    """Stands in for TwinBertRuntime in index_documents: vectors from a lookup table."""

    def __init__(self, docs: Sequence[Document], vectors: np.ndarray) -> None:
        self.table = {d.encoding_text: v for d, v in zip(docs, vectors, strict=True)}
        self.fingerprint = FP
        self.dim = vectors.shape[1]
        self.encoded: list[str] = []

    def encode_documents(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> np.ndarray:
        self.encoded += list(texts)
        return np.stack([self.table[t] for t in texts]).astype(np.float32)

    def precompute_documents(self, vectors: np.ndarray) -> np.ndarray | None:
        return vectors[:, :2] * 2
