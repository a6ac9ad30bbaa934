"""The store interface every backend implements.

Recall returns the candidates' stored vectors along with their ids, because the rerank needs
them and a remote backend (OpenSearch) can return them in the same round trip as the kNN hits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, ModelMismatchError

if TYPE_CHECKING:
    from twinbert_search.manifest import ModelManifest

# A filter is {metadata_field: value} or {metadata_field: [allowed values]}; all must hold.
Filters = Mapping[str, Any]


class RowIds(Sequence[str]):
    """The ids of some rows of a table of ids, looked up when read.

    Recall returns 1,000 candidates, of which a search reads the ids of ten; building the
    list of 1,000 touches 1,000 string objects scattered over a 1M-entry list (cache misses,
    about 0.15 ms at 1M documents). A view defers that to the ids actually read.
    """

    __slots__ = ("_rows", "_table")

    def __init__(self, table: Sequence[str], rows: np.ndarray) -> None:
        self._table = table
        self._rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int | slice) -> str | RowIds:  # type: ignore[override]
        if isinstance(index, slice):
            return RowIds(self._table, self._rows[index])
        return self._table[int(self._rows[index])]

    def __iter__(self) -> Iterator[str]:
        table = self._table
        return (table[row] for row in self._rows.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowIds | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"RowIds({list(self)!r})"

    def take(self, order: Sequence[int] | np.ndarray) -> RowIds:
        return RowIds(self._table, self._rows[np.asarray(order, dtype=np.int64)])


def take_ids(ids: Sequence[str], order: Sequence[int] | np.ndarray) -> Sequence[str]:
    """ids[i] for i in order: a view for `RowIds`, else a list."""
    if isinstance(ids, RowIds):
        return ids.take(order)
    return [ids[i] for i in np.asarray(order, dtype=np.int64).tolist()]


@dataclass
class Candidates:
    """Recall output (or fetched documents), aligned by position."""

    ids: Sequence[str]  # a list, or a `RowIds` view
    recall_scores: np.ndarray  # float32 (n,), higher is better; zeros for fetch()
    vectors: np.ndarray  # float32 (n, dim), decoded from the stored codec
    precomputed: np.ndarray | None = None  # float32 (n, h): document half of the crossing layer
    documents: list[dict[str, Any]] | None = None  # stored fields (title, text, metadata)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, dim: int) -> Candidates:
        return cls(
            ids=[], recall_scores=np.zeros(0, np.float32), vectors=np.zeros((0, dim), np.float32)
        )

    def take(self, order: Sequence[int] | np.ndarray) -> Candidates:
        """The candidates at the given positions, in that order."""
        idx = np.asarray(order, dtype=np.int64)
        return Candidates(
            ids=take_ids(self.ids, idx),
            recall_scores=self.recall_scores[idx],
            vectors=self.vectors[idx],
            precomputed=None if self.precomputed is None else self.precomputed[idx],
            documents=None if self.documents is None else [self.documents[i] for i in idx],
        )


@dataclass
class StoreInfo:
    """What a store records about itself (its manifest)."""

    backend: str
    model_fingerprint: str | None
    dim: int | None
    count: int
    codec: str = "float32"
    ann: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def short_fingerprint(fingerprint: str) -> str:
    """A model fingerprint for messages: the hash's first 12 characters, and the document
    graph when it is not fp32 (fingerprints of two graphs of one model differ only there)."""
    digest, _, graph = fingerprint.partition(":")
    return f"{digest[:12]} ({graph} document graph)" if graph else digest[:12]


class VectorStore(ABC):
    """Documents with their TwinBERT vectors, searchable by kNN (and optionally BM25)."""

    @property
    @abstractmethod
    def info(self) -> StoreInfo: ...

    def ensure_model(self, fingerprint: str) -> None:
        """Refuse to mix vectors from two models in one store."""
        recorded = self.info.model_fingerprint
        if recorded is not None and recorded != fingerprint:
            raise ModelMismatchError(
                f"the store was built with model {short_fingerprint(recorded)}, not "
                f"{short_fingerprint(fingerprint)}; use the same --model (and document graph) "
                "or a new index",
                expected=recorded,
                actual=fingerprint,
            )

    def prepare_index(
        self,
        manifest: ModelManifest,
        *,
        rebuild: bool = False,
        delete_old: bool = False,
        model_id: str | None = None,
    ) -> dict[str, Any]:
        """Ready the store for an indexing run of `manifest`'s model; returns what it did.

        The embedded store needs nothing (its writer checks the model per write). Cluster
        stores override this to refuse another model, put their index template and pipelines,
        and start a blue/green rebuild; `rebuild`, `delete_old` and `model_id` (the
        in-cluster encoder) exist only there.
        """
        used = [f for f, v in (("rebuild", rebuild), ("delete_old", delete_old)) if v]
        if model_id:
            used.append("model_id")
        if used:
            raise ConfigurationError(
                f"{', '.join(used)} needs a cluster backend, not {self.info.backend}"
            )
        return {}

    def location(self) -> dict[str, Any]:
        """Where this store writes and reads, for summaries: `where` is one readable line."""
        return {"where": self.info.backend}

    def begin_index_run(self) -> None:
        """Record that an indexing run started, so readers can tell if it never completes.

        `end_index_run` clears the record; a run killed, crashed or stopped by a bad record
        leaves it, and `unfinished_index_run` reports it until a later run completes. The
        embedded store keeps it in `store.json`, cluster stores in the write index's `_meta`;
        a store that cannot record it does nothing.
        """
        return None

    def end_index_run(self) -> None:
        """The indexing run completed: clear what `begin_index_run` recorded."""
        return None

    def bulk_resends(self) -> dict[str, int]:
        """Documents the store sent again since it was opened, by why: `throttled` (the
        cluster answered 429), `rejected` (5xx), `unreachable` (no answer). Only cluster
        stores resend; the others report nothing."""
        return {}

    def unfinished_index_run(self) -> dict[str, Any] | None:
        """What the store recorded of an indexing run that never completed (`started`, an
        ISO time), read afresh so a long-running reader sees a later run complete it."""
        return None

    @abstractmethod
    def recall(
        self, query_vector: np.ndarray, n: int, *, filters: Filters | None = None
    ) -> Candidates:
        """The n nearest documents by inner product of unit vectors (cosine)."""

    def recall_bm25(
        self, query: str, n: int, *, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        """BM25 hits as (id, score); backends without a text index raise NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} has no BM25 index")

    def recall_fused(
        self,
        query: str,
        query_vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None = None,
    ) -> Candidates | None:
        """kNN and BM25 fused by reciprocal rank (k=60) in one request, where the backend can
        (Elasticsearch's `rrf` retriever, OpenSearch's RRF search pipeline); None, the
        default, leaves the fusion to the searcher.
        """
        return None

    @property
    def hybrid_fusion(self) -> str:
        """Who fuses hybrid recall: "engine" where `recall_fused` answers (one request), else
        "client" (the searcher fuses the kNN and BM25 lists, by the model's hybrid fusion)."""
        return "client"

    def bm25_scores(self, query: str, ids: Sequence[str]) -> np.ndarray:
        """BM25 scores of these ids, for a rerank that fuses them; NotImplementedError without."""
        raise NotImplementedError(f"{type(self).__name__} has no BM25 scores for given ids")

    @abstractmethod
    def fetch(self, ids: Sequence[str]) -> Candidates:
        """Stored vectors and fields of the given ids, in order; unknown ids raise StoreError."""

    def documents(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Stored fields (title, text, metadata) of the given ids, in order.

        The searcher asks for these only for the hits it returns, so recall can skip text.
        """
        found = self.fetch(ids)
        return found.documents if found.documents is not None else [{} for _ in ids]

    @abstractmethod
    def content_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        """Recorded content hash of each known id among `ids` (for incremental indexing)."""

    @abstractmethod
    def upsert(
        self,
        documents: Sequence[Document],
        vectors: np.ndarray,
        *,
        model_fingerprint: str,
        precomputed: np.ndarray | None = None,
    ) -> None:
        """Insert or replace documents with their float32 vectors, atomically per call.

        `precomputed` (n, h) is the query-independent document half of the crossing layer,
        computed at ingest so query time does less per candidate; stores keep and return it.
        """

    @abstractmethod
    def delete(self, ids: Iterable[str]) -> int:
        """Remove documents; returns how many existed."""

    @abstractmethod
    def all_ids(self) -> list[str]: ...

    def finalize(self) -> None:
        """Make written documents searchable (build or refresh indexes). Idempotent."""
        return None

    def finalize_partial(self) -> None:
        """`finalize` after a run that stopped before the end (a bad record).

        What was written becomes searchable, except where a complete copy is live: a cluster
        store's blue/green rebuild leaves its alias on the old index until a run completes.
        """
        self.finalize()

    def close(self) -> None:
        """Release files or connections."""
        return None

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
