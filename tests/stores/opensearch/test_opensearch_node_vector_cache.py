"""The vector cache on a real node: lean recalls (`_source: false`, `seq_no_primary_term`)
return what full ones do, and a document written again is read again."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.opensearch_node import NEURAL, OpenSearchNode
from tests.opensearch_store_helpers import FP, corpus
from twinbert_search.documents import Document
from twinbert_search.stores.opensearch import OpenSearchStore

pytestmark = pytest.mark.opensearch


def test_lean_recalls_match_full_ones_and_see_rewrites(
    node_stores: Callable[..., OpenSearchStore], opensearch_node: OpenSearchNode
) -> None:
    plain = node_stores()
    docs, vectors = corpus(40)
    pre = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    plain.upsert(docs, vectors, model_fingerprint=FP, precomputed=pre)
    plain.finalize()
    cached = OpenSearchStore(
        opensearch_node.connection, alias=plain.alias, vector_cache_mb=1, ef_search=400
    )
    plain.ef_search = 400  # every document visited: both see the exact top 10
    query = vectors[3] + vectors[17]
    query /= np.linalg.norm(query)
    expected = plain.recall(query, 10)
    for _ in range(2):  # fetched, then from memory
        found = cached.recall(query, 10)
        assert list(found.ids) == list(expected.ids)
        np.testing.assert_array_equal(found.vectors, expected.vectors)
        np.testing.assert_array_equal(found.precomputed, expected.precomputed)
        np.testing.assert_array_equal(found.recall_scores, expected.recall_scores)
        assert found.documents == expected.documents
    assert cached.vector_cache.stats()["hits"] == 10

    moved = vectors[3].copy()
    moved[:4] = -moved[:4]
    moved /= np.linalg.norm(moved)
    again = Document(id=docs[3].id, title="again", text="written again", metadata={})
    plain.upsert([again], moved[None, :], model_fingerprint=FP, precomputed=pre[:1] + 1)
    plain.finalize()
    found = cached.recall(moved, 5)
    assert found.ids[0] == docs[3].id
    np.testing.assert_array_equal(found.vectors[0], moved)
    assert found.documents[0]["text"] == "written again"

    if NEURAL in opensearch_node.plugins:  # fused in the engine, lean as well
        fused, lean = plain.recall_fused("bread flour", query, 10), None
        for _ in range(2):
            lean = cached.recall_fused("bread flour", query, 10)
        assert lean is not None and fused is not None
        assert list(lean.ids) == list(fused.ids)
        np.testing.assert_array_equal(lean.vectors, fused.vectors)
    cached.close()
