"""Issue 19 on the cluster backends: title-only documents, and the unfinished-run mark in `_meta`.

`scenario` runs the same indexing runs on a store and says what it saw; the tests here run
it on both fakes, and tests/stores/test_cluster_input_nodes.py runs it on real nodes and checks the
fakes saw the same (`PUT _mapping` replaces `_meta` whole on both engines, and the fakes
must do as they do).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from tests import elasticsearch_store_helpers as es
from tests import opensearch_store_helpers as os_
from tests.fake_elasticsearch import FakeElasticsearch
from tests.fake_opensearch import FakeCluster
from twinbert_search.documents import Document
from twinbert_search.errors import InputError, StoreError
from twinbert_search.ingest.indexing import IndexReport, run_indexing
from twinbert_search.search.factory import incomplete_warning, require_documents
from twinbert_search.stores.base import VectorStore
from twinbert_search.stores.cluster.runs import RUN_KEY
from twinbert_search.stores.cluster.schema import META_KEY

DIM = 8
FP = "fingerprint-one"
TITLE_ONLY = Document("t1", "", title="Extraction of roots by repeated subtraction")
BODY = [Document(f"b{i}", f"the moon orbit number {i}", title="star") for i in range(3)]


def vector(doc_id: str) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(doc_id.encode())).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def stopped_after(docs: list[Document]) -> Iterator[Document]:
    """The documents, then a malformed record (as the reader raises it)."""
    yield from docs
    raise InputError("malformed JSON", source="corpus.jsonl", line=len(docs) + 1)


def run(store: VectorStore, docs: Iterable[Document]) -> IndexReport:
    def write_chunk(todo: list[Document], advance: Callable[[int], object]) -> None:
        store.upsert(todo, np.stack([vector(d.id) for d in todo]), model_fingerprint=FP)
        advance(len(todo))

    return run_indexing(
        docs, store, write_chunk, model_fingerprint=FP, chunk_size=2, progress=False
    )


def our_meta(store: Any, index: str) -> dict[str, Any]:
    return dict(store.indices.mapping_meta(index).get(META_KEY) or {})


def scenario(make: Callable[[], Any]) -> dict[str, Any]:
    """A run stopped by a bad record, then one that completes; what readers see after each."""
    store, seen = make(), {}
    with pytest.raises(InputError):
        run(store, stopped_after([TITLE_ONLY, BODY[0], BODY[1]]))
    (index,) = store.info.extra["indices"]
    reader = make()  # another process: reads the mark, not the writer's memory
    seen["stopped"] = sorted(reader.unfinished_index_run() or {})
    seen["stopped ids"] = sorted(reader.all_ids())
    seen["warning"] = "is incomplete: an indexing run started" in (incomplete_warning(reader) or "")
    (title_only,) = reader.documents(["t1"])
    seen["title-only"] = (title_only["title"], title_only["text"])
    seen["bm25"] = [doc_id for doc_id, _ in reader.recall_bm25("roots subtraction", 3)]
    before = our_meta(store, index)

    report = run(make(), [TITLE_ONLY, *BODY])
    seen["completed"] = (report.added, report.unchanged, reader.unfinished_index_run())
    after = our_meta(store, index)
    seen["meta restored"] = {k: v for k, v in before.items() if k != RUN_KEY} == after
    seen["meta keys"] = sorted(after)
    return seen


EXPECTED = {
    "stopped": ["started"],
    "stopped ids": ["b0", "b1", "t1"],  # what came before the bad record stays searchable
    "warning": True,
    "title-only": (TITLE_ONLY.title, ""),
    "bm25": ["t1"],
    "completed": (1, 3, None),
    "meta restored": True,
    "meta keys": ["ann", "dim", "format", "model_fingerprint", "normalize"],
}


def test_opensearch_fake() -> None:
    cluster = FakeCluster()
    assert scenario(lambda: os_.make_store(cluster, alias="docs")) == EXPECTED


@pytest.mark.parametrize("ingest_common", [True, False], ids=["pipeline", "processorless"])
def test_elasticsearch_fake(ingest_common: bool) -> None:
    cluster = FakeElasticsearch()
    cluster.ingest_common = ingest_common
    assert scenario(lambda: es.make_store(cluster, alias="docs")) == EXPECTED


def test_a_rebuild_that_fails_leaves_the_live_index_complete() -> None:
    cluster = FakeElasticsearch()
    live = es.make_store(cluster, alias="docs")
    run(live, BODY)
    cluster.reject_documents(["b1"])
    rebuild = es.make_store(cluster, alias="docs")
    rebuild.begin_rebuild(resume=True)
    with pytest.raises(StoreError):  # the bulk failure: no finalize, no alias switch
        run(rebuild, [TITLE_ONLY, *BODY])
    assert cluster.aliases == {"docs": {"docs-000001"}}
    assert es.make_store(cluster, alias="docs").unfinished_index_run() is None
    assert RUN_KEY in our_meta(live, "docs-000002")  # the new generation, not read yet

    cluster.accept_documents()
    resumed = es.make_store(cluster, alias="docs")
    resumed.begin_rebuild(resume=True)
    assert run(resumed, [TITLE_ONLY, *BODY]).added == 1  # it took the unfinished build up
    assert cluster.aliases == {"docs": {"docs-000002"}}
    assert resumed.unfinished_index_run() is None


def test_a_rebuild_stopped_by_a_bad_record_keeps_the_old_index_live() -> None:
    """A stopped rebuild leaves the alias on the complete old index (and deletes nothing, even
    with delete_old); the next run resumes the build and moves the alias when it completes."""
    cluster = FakeElasticsearch()
    run(es.make_store(cluster, alias="docs"), BODY)
    rebuild = es.make_store(cluster, alias="docs")
    rebuild.begin_rebuild(resume=True, delete_old=True)
    with pytest.raises(InputError):
        run(rebuild, stopped_after([TITLE_ONLY]))
    reader = es.make_store(cluster, alias="docs")
    assert cluster.aliases == {"docs": {"docs-000001"}}
    assert sorted(reader.all_ids()) == sorted(d.id for d in BODY)
    assert RUN_KEY in our_meta(reader, "docs-000002")  # the build, marked, not read yet
    resumed = es.make_store(cluster, alias="docs")
    resumed.begin_rebuild(resume=True, delete_old=True)
    run(resumed, [TITLE_ONLY, *BODY])
    assert cluster.aliases == {"docs": {"docs-000002"}} and "docs-000001" not in cluster.indices
    assert es.make_store(cluster, alias="docs").unfinished_index_run() is None


def test_an_index_created_by_the_runs_first_write_is_marked() -> None:
    cluster = FakeCluster()
    store = os_.make_store(cluster, index="plain")
    store.begin_index_run()  # nothing to mark yet: the index does not exist
    assert cluster.bodies("indices.put_mapping") == []
    store.upsert(BODY, np.stack([vector(d.id) for d in BODY]), model_fingerprint=FP)
    assert RUN_KEY in our_meta(store, "plain")
    store.end_index_run()
    assert RUN_KEY not in our_meta(store, "plain")
    assert len(cluster.bodies("indices.put_mapping")) == 2


def test_a_missing_or_empty_target_holds_no_documents() -> None:
    store = es.make_store(FakeElasticsearch(), alias="nothing-yet")
    with pytest.raises(StoreError, match="nothing-yet holds no documents"):
        require_documents(store)
    assert incomplete_warning(store) is None
