"""The ML Commons package, registration and in-cluster encoding (fake cluster, real ONNX)."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.fake_opensearch import (
    FakeCluster,
    FakeConnection,
    FakeMLEmbedder,
    build_onnx_model_dir,
    encode_with_onnx,
)
from tests.opensearch_checks import MAX_CHUNK_BYTES
from twinbert_search.documents import Document
from twinbert_search.errors import BackendUnavailableError, ModelError, StoreError
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore, ml

TEXTS = [
    "the star and the planet orbit the sun",
    "bread flour oven " * 20,  # longer than max_doc_length: truncated like the sidecar
    "a virus in the blood cell",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx_model_dir(tmp_path_factory.mktemp("tiny-onnx") / "model")


@pytest.fixture
def package(model_dir: Path, tmp_path: Path) -> ml.ModelPackage:
    return ml.build_model_package(model_dir, tmp_path / "model.zip")


def no_sleep(seconds: float) -> None:
    return None


def test_the_zip_is_what_ml_commons_loads(package: ml.ModelPackage, model_dir: Path) -> None:
    with zipfile.ZipFile(package.path) as archive:
        names = archive.namelist()
        tokenizer = json.loads(archive.read("tokenizer.json"))
    assert names == [f"{package.name}.onnx", "tokenizer.json"], "one model file, at the root"
    manifest = ModelManifest.load(model_dir)
    assert tokenizer["truncation"]["max_length"] == manifest.max_doc_length
    assert tokenizer["padding"] is None
    data = package.path.read_bytes()
    assert package.sha256 == hashlib.sha256(data).hexdigest()
    assert package.size_in_bytes == len(data)
    assert package.model_config["embedding_dimension"] == manifest.dim
    assert package.model_config["model_type"] == "bert"
    assert package.model_config["pooling_mode"] == "cls"
    assert json.loads(package.model_config["all_config"])["twinbert_search"]["dim"] == 8
    assert package.vector_fingerprint == manifest.fingerprint


def test_the_zip_is_reproducible(model_dir: Path, tmp_path: Path) -> None:
    first = ml.build_model_package(model_dir, tmp_path / "a.zip")
    second = ml.build_model_package(model_dir, tmp_path / "b.zip")
    assert first.sha256 == second.sha256


def test_the_adapted_graph_repeats_the_sentence_vector(
    package: ml.ModelPackage, model_dir: Path
) -> None:
    with zipfile.ZipFile(package.path) as archive:
        graph = archive.read(f"{package.name}.onnx")
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["token_embeddings", "sentence_embedding"]
    ids = np.array([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]], dtype=np.int64)
    mask = (ids > 0).astype(np.int64)
    tokens, sentence = session.run(
        None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    )
    assert tokens.shape == (2, 5, 8)
    np.testing.assert_array_equal(tokens, np.repeat(sentence[:, None, :], 5, axis=1))


def test_ml_commons_pooling_gives_the_sidecar_vectors(
    package: ml.ModelPackage, model_dir: Path
) -> None:
    embedder = FakeMLEmbedder(package.path.read_bytes(), package.model_config)
    got = np.array([embedder.embed(t) for t in TEXTS])
    np.testing.assert_allclose(got, encode_with_onnx(model_dir, TEXTS), atol=1e-6)


def test_a_model_without_an_onnx_export_is_refused(tmp_path: Path) -> None:
    ModelManifest(dim=4).save(tmp_path)
    with pytest.raises(ModelError, match="export the model to ONNX"):
        ml.build_model_package(tmp_path)


def test_deploy_waits_until_the_model_reads_deployed(package: ml.ModelPackage) -> None:
    """The real node completes the deploy task before the model's record says DEPLOYED."""
    cluster = FakeCluster(task_polls=1)
    lag = {"reads": 2}
    read_model = cluster._h_ml_get_model

    def lagging(pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        status, model = read_model(pp, params, body)
        if model["model_state"] == "DEPLOYED" and lag["reads"] > 0:
            lag["reads"] -= 1
            return status, {**model, "model_state": "DEPLOYING"}
        return status, model

    cluster._h_ml_get_model = lagging  # type: ignore[method-assign]
    result = ml.register_and_deploy(cluster.client(), package, sleep=no_sleep)
    assert result.state == "DEPLOYED" and lag["reads"] == 0


def test_a_model_with_a_document_prefix_is_refused(model_dir: Path, tmp_path: Path) -> None:
    """ML Commons would encode the text without the prefix (e5's "passage: "): wrong vectors."""
    prefixed = tmp_path / "prefixed"
    shutil.copytree(model_dir, prefixed)
    manifest = json.loads((prefixed / "manifest.json").read_text())
    (prefixed / "manifest.json").write_text(
        json.dumps({**manifest, "document_prefix": "passage: "})
    )
    with pytest.raises(ModelError, match="'passage: ', which ML Commons cannot add") as refused:
        ml.build_model_package(prefixed, tmp_path / "model.zip")
    assert "\n" not in str(refused.value), "one line"
    assert not (tmp_path / "model.zip").exists(), "nothing is written"


def test_register_by_chunks_then_deploy(package: ml.ModelPackage) -> None:
    cluster = FakeCluster(task_polls=2)
    client = cluster.client()
    chunk = 1500
    result = ml.register_and_deploy(client, package, chunk_size=chunk, sleep=no_sleep)
    assert result.state == "DEPLOYED" and not result.reused
    meta = cluster.bodies("ml.register_model_meta")[0]
    assert meta["total_chunks"] == package.total_chunks(chunk) > 1
    assert meta["model_content_hash_value"] == package.sha256
    assert meta["model_content_size_in_bytes"] == package.size_in_bytes
    assert meta["model_format"] == "ONNX" and meta["function_name"] == "TEXT_EMBEDDING"
    chunks = cluster.bodies("ml.upload_chunk")
    assert all(isinstance(c, bytes) and len(c) <= chunk for c in chunks)
    assert b"".join(chunks) == package.path.read_bytes()
    assert cluster.groups().count("ml.get_task") == 3, "polled while RUNNING"
    assert package.total_chunks() == 1 and MAX_CHUNK_BYTES == ml.CHUNK_SIZE


def test_registering_the_same_zip_again_reuses_the_model(package: ml.ModelPackage) -> None:
    cluster = FakeCluster()
    first = ml.register_and_deploy(cluster.client(), package, sleep=no_sleep)
    second = ml.register_and_deploy(cluster.client(), package, sleep=no_sleep)
    assert second.model_id == first.model_id and second.reused
    assert cluster.groups().count("ml.register_model_meta") == 1
    forced = ml.register_and_deploy(cluster.client(), package, reuse=False, sleep=no_sleep)
    assert forced.model_id != first.model_id


def test_an_interrupted_upload_is_not_reused(package: ml.ModelPackage) -> None:
    cluster = FakeCluster()
    client = cluster.client()
    client.plugins.ml.register_model_meta(body=package.register_meta_body(chunk_size=1500))
    result = ml.register_and_deploy(client, package, chunk_size=1500, sleep=no_sleep)
    assert not result.reused and result.state == "DEPLOYED"
    assert cluster.groups().count("ml.register_model_meta") == 2


def test_register_by_url(package: ml.ModelPackage) -> None:
    cluster = FakeCluster()
    url = "https://models.example.com/twinbert.zip"
    cluster.ml_url_content[url] = package.path.read_bytes()
    result = ml.register_and_deploy(cluster.client(), package, url=url, sleep=no_sleep)
    assert result.state == "DEPLOYED"
    body = cluster.bodies("ml.register_model")[0]
    assert body["url"] == url and body["model_content_hash_value"] == package.sha256
    assert "ml.upload_chunk" not in cluster.groups()


def test_a_corrupt_download_fails_the_task(package: ml.ModelPackage) -> None:
    cluster = FakeCluster()
    url = "https://models.example.com/broken.zip"
    cluster.ml_url_content[url] = b"not the zip"
    with pytest.raises(StoreError, match="ended FAILED: model content hash"):
        ml.register_and_deploy(cluster.client(), package, url=url, sleep=no_sleep)


def test_a_failed_deploy_is_reported(package: ml.ModelPackage, tmp_path: Path) -> None:
    bad_zip = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad_zip, "w") as archive:
        archive.writestr("model.onnx", b"garbage")
    data = bad_zip.read_bytes()
    bad = replace(
        package, path=bad_zip, sha256=hashlib.sha256(data).hexdigest(), size_in_bytes=len(data)
    )
    with pytest.raises(StoreError, match=r"DEPLOY_MODEL.*ended FAILED.*tokenizer"):
        ml.register_and_deploy(FakeCluster().client(), bad, sleep=no_sleep)


def test_waiting_gives_up_after_the_timeout(package: ml.ModelPackage) -> None:
    cluster = FakeCluster(task_polls=1000)
    with pytest.raises(BackendUnavailableError, match="still RUNNING"):
        ml.register_and_deploy(cluster.client(), package, timeout=0.0, sleep=no_sleep)


def test_documents_encoded_in_the_cluster(package: ml.ModelPackage, model_dir: Path) -> None:
    cluster = FakeCluster()
    model = ml.register_and_deploy(cluster.client(), package, sleep=no_sleep)
    manifest = ModelManifest.load(model_dir)
    store = OpenSearchStore(
        ConnectionOptions(
            "http://fake:9200",
            client_kwargs={"connection_class": FakeConnection, "cluster": cluster},
        ),
        alias="docs",
        manifest=manifest,
    )
    docs = [Document(id=f"t{i}", title=f"title {i}", text=t) for i, t in enumerate(TEXTS)]
    store.index_texts(
        docs[:2], model_fingerprint=package.vector_fingerprint, model_id=model.model_id
    )
    store.index_texts(
        docs[2:], model_fingerprint=package.vector_fingerprint, model_id=model.model_id
    )
    store.finalize()
    assert cluster.groups().count("indices.get_index_template") == 2, "assets checked once each"
    assert cluster.pipelines["docs-embed"]["processors"][4]["text_embedding"]["model_id"] == (
        model.model_id
    )
    assert all(
        r.params.get("pipeline") == "docs-embed" for r in cluster.requests if r.group == "bulk"
    )
    fetched = store.fetch([d.id for d in docs])
    expected = encode_with_onnx(model_dir, [d.encoding_text for d in docs])
    np.testing.assert_allclose(fetched.vectors, expected, atol=1e-6)
    assert fetched.precomputed is None
    assert "encoding_text" not in cluster.indices["docs-000001"].docs["t0"]
    assert store.recall(expected[1], 1).ids == ["t1"]
    assert store.info.model_fingerprint == manifest.fingerprint


def test_the_int8_graph_is_recorded_as_another_vector_fingerprint(model_dir: Path) -> None:
    manifest = ModelManifest.load(model_dir)
    assert ml.vector_fingerprint(manifest, quantized=True) == f"{manifest.fingerprint}:int8"
    assert ml.default_model_name(manifest, quantized=True).endswith("-int8")


def test_the_exported_twinbert_encoder_matches_in_the_cluster(
    tiny_model: Path, tmp_path: Path
) -> None:
    """The real exporter's graph, packaged, pooled as ML Commons does: the sidecar's vectors."""
    from twinbert_search.runtime import TwinBertRuntime

    runtime = TwinBertRuntime.load(tiny_model)
    package = ml.build_model_package(tiny_model, tmp_path / "tiny.zip")
    embedder = FakeMLEmbedder(package.path.read_bytes(), package.model_config)
    texts = ["moon orbit and the sun", "heart blood " * 40]
    expected = runtime.encode_documents(texts, 8)
    got = np.array([embedder.embed(t) for t in texts], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert package.vector_fingerprint == runtime.fingerprint
