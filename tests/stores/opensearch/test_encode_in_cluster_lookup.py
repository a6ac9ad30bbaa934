"""`index --encode-in-cluster --model DIR` without `--model-id` (issue 26): the registered model
is found by the fingerprint of the vectors it computes, on the fake cluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import build_tiny_model
from tests.fake_opensearch import FakeCluster
from tests.stores.test_backends import cluster, invoke, sample_lines, write_corpus  # noqa: F401
from twinbert_search.ingest.readers import read_corpus
from twinbert_search.manifest import ModelManifest
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.stores.factory import open_store
from twinbert_search.stores.opensearch import ml


def index_in_cluster(corpus: Path, model: Path, *extra: str) -> object:
    return invoke(
        ["index", corpus, "--backend", "opensearch", "--model", model, "--alias", "sample",
         "--encode-in-cluster", "--no-progress", "--json", *extra]
    )  # fmt: skip


def test_the_registered_model_is_found_by_its_fingerprint(
    cluster: FakeCluster,  # noqa: F811
    tiny_model: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    other = build_tiny_model(tiny_checkpoint, tmp_path / "other", pooling="cls")
    client = cluster.client()
    for model in (other, tiny_model):  # another model's encoder is registered too
        package = ml.build_model_package(model, tmp_path / f"{model.name}.zip")
        ml.register_and_deploy(client, package, sleep=lambda s: None)
    ours = ml.find_model_of(client, ModelManifest.load(tiny_model))
    assert ours is not None and ours["model_state"] == "DEPLOYED"
    theirs = ml.find_model_of(client, ModelManifest.load(other))
    assert theirs is not None and theirs["model_id"] != ours["model_id"]
    assert ml.find_model_of(client, ModelManifest.load(tiny_model), quantized=True) is None

    corpus = write_corpus(tmp_path / "some.jsonl", sample_lines()[:12])
    result = index_in_cluster(corpus, tiny_model)
    assert result.exit_code == 0, result.output
    assert f"ML Commons model {ours['model_id']}" in result.stderr
    assert json.loads(result.stdout)["added"] == 12
    runtime = TwinBertRuntime.load(tiny_model)
    docs = list(read_corpus(corpus))
    with open_store("opensearch", writable=False, url="http://fake:9200", alias="sample") as store:
        fetched = store.fetch([d.id for d in docs])
        assert store.info.model_fingerprint == runtime.fingerprint
    expected = runtime.encode_documents([d.encoding_text for d in docs], 8)
    np.testing.assert_allclose(fetched.vectors, expected, atol=1e-5)


def test_no_registered_model_is_one_line_naming_the_command(
    cluster: FakeCluster,  # noqa: F811
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    corpus = write_corpus(tmp_path / "some.jsonl", sample_lines()[:3])
    result = index_in_cluster(corpus, tiny_model)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: no ML Commons model on https://fake:9200")
    assert f"twinbert-search opensearch register-model --model {tiny_model}" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not cluster.indices, "nothing was created"

    package = ml.build_model_package(tiny_model, tmp_path / "tiny.zip")
    ml.register_and_deploy(cluster.client(), package, deploy=False, sleep=lambda s: None)
    undeployed = index_in_cluster(corpus, tiny_model)
    assert undeployed.exit_code == 2, undeployed.output
    assert "REGISTERED, not deployed" in undeployed.stderr and "deploys it" in undeployed.stderr


def test_a_model_id_still_needs_encode_in_cluster(tiny_model: Path, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "some.jsonl", sample_lines()[:3])
    result = invoke(["index", corpus, "--backend", "opensearch", "--url", "http://fake:9200",
                     "--model", tiny_model, "--model-id", "m-1"])  # fmt: skip
    assert result.exit_code == 2 and "--encode-in-cluster and --model-id go together" in (
        result.stderr
    )


@pytest.mark.parametrize("quantized", [False, True])
def test_registrations_without_the_vector_fingerprint_are_found_by_name(
    tiny_model: Path, quantized: bool
) -> None:
    """Models registered before all_config named the vectors: the model fingerprint, and the
    default name's `-int8` for the int8 encoder."""
    manifest = ModelManifest.load(tiny_model)
    config = {"twinbert_search": {"model_fingerprint": manifest.fingerprint}}
    source = {
        "name": ml.default_model_name(manifest, quantized),
        "model_config": {"all_config": json.dumps(config)},
    }
    assert ml._computes(source, manifest, quantized)
    assert not ml._computes(source, manifest, not quantized)
    assert not ml._computes({**source, "model_config": {"all_config": "nope"}}, manifest, False)
