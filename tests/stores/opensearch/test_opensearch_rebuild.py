"""OpenSearchStore blue/green rebuilds on the fake cluster: one alias switch, resume, cleanup."""

from __future__ import annotations

import pytest

from tests.fake_opensearch import FakeCluster
from tests.opensearch_store_helpers import FP, built, corpus, make_store
from twinbert_search.errors import StoreError


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


# -- blue/green ---------------------------------------------------------------------------------


def test_rebuild_switches_the_alias_in_one_call(cluster: FakeCluster) -> None:
    store, _, _ = built(cluster)
    new_docs, new_vectors = corpus(10, seed=1)
    assert store.begin_rebuild(delete_old=True) is None  # created with the first write
    store.upsert(new_docs, new_vectors, model_fingerprint="fingerprint-two")
    reader = make_store(cluster)
    assert reader.info.model_fingerprint == FP and reader.info.count == 30, "still the old one"
    before = len(cluster.requests)
    store.finalize()
    after = [r for r in cluster.requests[before:]]
    groups = [r.group for r in after]
    assert groups.count("indices.update_aliases") == 1
    assert groups.index("indices.put_settings") < groups.index("indices.update_aliases")
    switch = next(r for r in after if r.group == "indices.update_aliases")
    assert switch.body == {
        "actions": [
            {"add": {"index": "docs-000002", "alias": "docs"}},
            {"remove": {"index": "docs-000001", "alias": "docs"}},
        ]
    }
    assert set(cluster.indices) == {"docs-000002"}
    assert reader.info.model_fingerprint == "fingerprint-two" and reader.info.count == 10


def test_rebuild_keeps_the_old_index_unless_asked(cluster: FakeCluster) -> None:
    store, docs, vectors = built(cluster)
    store.begin_rebuild()
    store.upsert(docs, vectors, model_fingerprint=FP)
    store.finalize()
    assert set(cluster.indices) == {"docs-000001", "docs-000002"}
    assert cluster.aliases == {"docs": {"docs-000002"}}


def test_an_interrupted_rebuild_is_resumed(cluster: FakeCluster) -> None:
    built(cluster)
    docs, vectors = corpus(20, seed=2)
    first = make_store(cluster)
    first.begin_rebuild(delete_old=True)
    first.upsert(docs[:12], vectors[:12], model_fingerprint=FP)  # ... then the process dies
    assert cluster.aliases == {"docs": {"docs-000001"}}
    second = make_store(cluster)
    assert second.begin_rebuild(delete_old=True) == "docs-000002", "the unfinished generation"
    known = second.content_hashes(d.id for d in docs)
    todo = [i for i, d in enumerate(docs) if known.get(d.id) != d.content_hash]
    assert todo == list(range(12, 20))
    second.upsert([docs[i] for i in todo], vectors[todo], model_fingerprint=FP)
    second.finalize()
    assert cluster.aliases == {"docs": {"docs-000002"}} and set(cluster.indices) == {"docs-000002"}
    assert second.info.count == 20


def test_a_concrete_index_becomes_an_alias(cluster: FakeCluster) -> None:
    built(cluster, index="docs")
    store = make_store(cluster, alias="docs")
    with pytest.raises(StoreError, match="--delete-old"):
        store.begin_rebuild()
    store.begin_rebuild(delete_old=True)
    docs, vectors = corpus(6)
    store.upsert(docs, vectors, model_fingerprint=FP)
    store.finalize()
    switch = cluster.bodies("indices.update_aliases")[-1]
    assert switch["actions"] == [
        {"add": {"index": "docs-000001", "alias": "docs"}},
        {"remove_index": {"index": "docs"}},
    ]
    assert cluster.aliases == {"docs": {"docs-000001"}} and store.info.count == 6


def test_a_long_running_reader_follows_the_switch(cluster: FakeCluster) -> None:
    built(cluster)
    reader = make_store(cluster, read_cache_seconds=0.0)
    assert len(reader.recall(corpus()[1][0], 3)) == 3
    writer = make_store(cluster)
    writer.begin_rebuild(delete_old=True)
    docs16, vectors16 = corpus(10, dim=16, seed=3)
    writer.upsert(docs16, vectors16, model_fingerprint="sixteen")
    writer.finalize()
    found = reader.recall(vectors16[2], 3)
    assert found.ids[0] == "d02" and found.vectors.shape == (3, 16)
