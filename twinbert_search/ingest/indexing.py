"""The indexing job: documents in, TwinBERT vectors stored, incrementally and resumably.

Documents are read as a stream and handled in chunks. Each chunk asks the store which ids it
already holds with the same content hash (skipped), encodes the rest in length-sorted
batches, and writes them in one store transaction. A job killed midway therefore loses at
most the chunk in flight; re-running it skips everything already stored. A bad record stops
the job only after the good records before it are written (or is skipped and reported).

The store records each run when it begins and clears the record only when the run completes
(`VectorStore.begin_index_run`), so a run that was killed or stopped leaves the store marked
incomplete for `search`, `eval` and `serve` until a later run finishes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from twinbert_search.documents import Document
from twinbert_search.errors import EmptyDocumentError, InputError
from twinbert_search.runtime.model import TwinBertRuntime
from twinbert_search.stores.base import VectorStore

if TYPE_CHECKING:
    from twinbert_search.stores.opensearch import OpenSearchStore


RESEND_KINDS = ("throttled", "rejected", "unreachable")  # stores/cluster/bulk.py retry_kind


@dataclass
class IndexReport:
    """What one indexing run did; docs_per_s counts only documents actually encoded.

    `errors` holds the records the reader skipped: empty documents (`EmptyDocumentError`)
    and, with skip mode, malformed ones; `empty` and `malformed` count each kind. `resent`
    counts the documents a cluster store sent again, by why (`throttled` by 429, `rejected`
    with 5xx, `unreachable`): back-pressure the run absorbed.
    """

    seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    errors: list[InputError] = field(default_factory=list)
    encode_seconds: float = 0.0
    seconds: float = 0.0
    resent: dict[str, int] = field(default_factory=dict)

    @property
    def encoded(self) -> int:
        return self.added + self.updated

    @property
    def docs_per_s(self) -> float:
        return self.encoded / self.encode_seconds if self.encode_seconds > 0 else 0.0

    @property
    def empty(self) -> int:
        return sum(isinstance(e, EmptyDocumentError) for e in self.errors)

    @property
    def malformed(self) -> int:
        return len(self.errors) - self.empty

    def skipped(self) -> str:
        """For the summary: `0 skipped`, `2 skipped: empty`, `3 skipped: 2 empty, 1 malformed`."""
        counts = ((self.empty, "empty"), (self.malformed, "malformed"))
        kinds = [(n, name) for n, name in counts if n]
        if len(kinds) == 1:
            return f"{kinds[0][0]} skipped: {kinds[0][1]}"
        detail = ", ".join(f"{n} {name}" for n, name in kinds)
        return f"{len(self.errors)} skipped" + (f": {detail}" if detail else "")

    def to_dict(self) -> dict:
        return {
            "seen": self.seen,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "skipped": {"empty": self.empty, "malformed": self.malformed},
            "errors": [str(e) for e in self.errors if not isinstance(e, EmptyDocumentError)],
            "empty": [str(e) for e in self.errors if isinstance(e, EmptyDocumentError)],
            "resent": {kind: self.resent.get(kind, 0) for kind in RESEND_KINDS},
            "docs_per_s": round(self.docs_per_s, 1),
            "seconds": round(self.seconds, 2),
        }


def _chunks(
    documents: Iterable[Document], size: int, pending_error: list[InputError]
) -> Iterator[list[Document]]:
    """Chunks of documents; a reader error ends the stream after yielding what came before."""
    chunk: list[Document] = []
    iterator = iter(documents)
    while True:
        try:
            doc = next(iterator)
        except StopIteration:
            break
        except InputError as exc:
            pending_error.append(exc)
            break
        chunk.append(doc)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


ChunkWriter = Callable[[list[Document], Callable[[int], object]], None]


def run_indexing(
    documents: Iterable[Document],
    store: VectorStore,
    write_chunk: ChunkWriter,
    *,
    model_fingerprint: str,
    chunk_size: int = 512,
    prune: bool = False,
    progress: bool = True,
    total: int | None = None,
    desc: str = "indexing",
) -> IndexReport:
    """The indexing loop shared by every way of encoding: chunk, skip unchanged, write, prune.

    `write_chunk(documents, advance)` stores one chunk of new or changed documents (calling
    `advance(n)` as it goes); its time is what docs/s counts. Raises the first reader
    `InputError` after writing every good chunk before it, and `ModelMismatchError` before
    writing anything if the store holds another model's vectors. The store is marked as
    being indexed until the run completes (`VectorStore.begin_index_run`).
    """
    store.ensure_model(model_fingerprint)
    store.begin_index_run()
    report = IndexReport()
    start = time.perf_counter()
    seen_ids: set[str] = set()
    reader_error: list[InputError] = []
    bar = tqdm(total=total, unit="doc", desc=desc, disable=not progress, smoothing=0.1)
    try:
        for chunk in _chunks(documents, chunk_size, reader_error):
            report.seen += len(chunk)
            seen_ids.update(d.id for d in chunk)
            known = store.content_hashes([d.id for d in chunk])
            todo = [d for d in chunk if known.get(d.id) != d.content_hash]
            report.unchanged += len(chunk) - len(todo)
            bar.update(len(chunk) - len(todo))
            if not todo:
                continue
            t0 = time.perf_counter()
            write_chunk(todo, bar.update)
            report.encode_seconds += time.perf_counter() - t0
            updated = sum(1 for d in todo if d.id in known)
            report.updated += updated
            report.added += len(todo) - updated
            bar.set_postfix(docs_per_s=f"{report.docs_per_s:.0f}", refresh=False)
        if prune and not reader_error:
            stale = [doc_id for doc_id in store.all_ids() if doc_id not in seen_ids]
            report.deleted = store.delete(stale) if stale else 0
        if reader_error:  # what was written stays searchable (a rebuild keeps the old index)
            store.finalize_partial()
            raise reader_error[0]  # the store stays marked incomplete
        store.finalize()
        store.end_index_run()
    finally:
        bar.close()
        report.seconds = time.perf_counter() - start
        report.resent = store.bulk_resends()
    return report


def index_documents(
    documents: Iterable[Document],
    store: VectorStore,
    runtime: TwinBertRuntime,
    *,
    batch_size: int = 32,
    chunk_size: int = 512,
    prune: bool = False,
    sort_by_length: bool = True,
    progress: bool = True,
    total: int | None = None,
) -> IndexReport:
    """Encode documents with the TwinBERT document encoder and store them.

    `prune` deletes stored ids absent from this corpus; see `run_indexing` for the contract.
    """

    def write_chunk(todo: list[Document], advance: Callable[[int], object]) -> None:
        vectors = runtime.encode_documents(
            [d.encoding_text for d in todo],
            batch_size,
            sort_by_length=sort_by_length,
            progress=advance,
        )
        store.upsert(
            todo,
            vectors,
            model_fingerprint=runtime.fingerprint,
            precomputed=runtime.precompute_documents(vectors),
        )

    return run_indexing(
        documents,
        store,
        write_chunk,
        model_fingerprint=runtime.fingerprint,
        chunk_size=chunk_size,
        prune=prune,
        progress=progress,
        total=total,
    )


def index_in_cluster(
    documents: Iterable[Document],
    store: OpenSearchStore,
    *,
    model_fingerprint: str,
    model_id: str,
    chunk_size: int = 512,
    prune: bool = False,
    progress: bool = True,
) -> IndexReport:
    """`index_documents` for `--encode-in-cluster`: the cluster's ingest pipeline encodes.

    The same loop and contract (`indexing.run_indexing`); only the chunk writer differs.
    """

    def write_chunk(todo: list[Document], advance: Callable[[int], object]) -> None:
        store.index_texts(todo, model_fingerprint=model_fingerprint, model_id=model_id)
        advance(len(todo))

    return run_indexing(
        documents,
        store,
        write_chunk,
        model_fingerprint=model_fingerprint,
        chunk_size=chunk_size,
        prune=prune,
        progress=progress,
        desc="indexing in the cluster",
    )
