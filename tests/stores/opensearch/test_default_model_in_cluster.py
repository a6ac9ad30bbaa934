"""The default model's document tower inside OpenSearch (issue 26, item 1), on the real node:
`python -m pytest -m opensearch`.

`opensearch register-model` uploads the default model's document encoder from local files (the
zip in chunks, no URL) into ML Commons and deploys it; `index --encode-in-cluster --model DIR`
finds it by its fingerprint (no --model-id) and the ingest pipeline encodes the 300-document
sample. Every vector the engine stored is the Python encoder's for the same document (cosine
>= 0.999), and search with rerank over that index returns the embedded store's ids, in the
same order, on 20 queries. `test_student_in_cluster.py` does the same for a distilled student.

The default model is built once (`twinbert-search build-default-model`, needs torch and the
`train` extra); without it the test skips saying so. The encoder is undeployed at the end (and
reused by the next run on the same node, by its zip's hash).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.opensearch_ml_helpers import (
    MIN_COSINE,
    InClusterIndex,
    cluster_cosines,
    embedded_index,
    indexed_in_cluster,
    reranked_ids_equal,
)
from tests.opensearch_node import OpenSearchNode
from twinbert_search.errors import ModelError

pytestmark = pytest.mark.opensearch


@pytest.fixture(scope="module")
def default_model() -> Path:
    from twinbert_search.runtime.models import resolve_model

    try:
        return resolve_model(None, build_default=True)
    except ModelError as exc:
        pytest.skip(f"the default model cannot be built here: {exc}")


@pytest.fixture(scope="module")
def in_cluster_index(
    opensearch_node: OpenSearchNode, default_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InClusterIndex]:
    zip_path = tmp_path_factory.mktemp("ml") / "default.zip"
    with indexed_in_cluster(opensearch_node, default_model, zip_path, "dm") as indexed:
        yield indexed


def test_the_default_towers_vectors_from_the_cluster_are_the_encoders(
    in_cluster_index: InClusterIndex,
    opensearch_node: OpenSearchNode,
    default_model: Path,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    alias, registered, report = (
        in_cluster_index.alias,
        in_cluster_index.registered,
        in_cluster_index.report,
    )
    assert registered["state"] == "DEPLOYED" and registered["size_in_bytes"] > 10_000_000
    assert report["added"] == 300 and report["assets"][f"{alias}-embed"] == "created"

    expected = embedded_index(default_model, tmp_path / "ix")
    cosines = cluster_cosines(opensearch_node, alias, default_model, expected)
    record_property("min_cosine", float(cosines.min()))
    assert cosines.min() >= MIN_COSINE, float(cosines.min())

    # search with rerank: the embedded store's ids, in its order, on 20 queries
    equal = reranked_ids_equal(opensearch_node, alias, default_model, tmp_path / "ix")
    record_property("queries_with_equal_ids", sum(same for _, same in equal))
    assert len(equal) == 20 and [q for q, same in equal if not same] == []
