"""`--ann` on OpenSearch: a default the cluster can run, or a refusal before anything exists.

The fake cluster answers `_nodes` and the k-NN stats as OpenSearch's own builds do (a bundled
JDK, so k-NN with its native libraries) unless told it is the Maven-built test node (no JDK,
faiss never loaded), on which a faiss index would stop the node at its first refresh.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click.testing
import pytest
from click.testing import CliRunner

from tests.fake_opensearch import FakeCluster, FakeConnection
from tests.fake_opensearch.onnx_model import build_onnx_model_dir
from twinbert_search.cli.opensearch import opensearch
from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.factory import open_store
from twinbert_search.stores.opensearch import ConnectionOptions
from twinbert_search.stores.opensearch.knn_engines import ClusterEngines

FAISS = "faiss:hnsw16:efc128:fp16:innerproduct"
LUCENE = "lucene:hnsw16:efc128:fp32:innerproduct"
PROBES = {"nodes.info", "knn.stats"}


def maven_node() -> FakeCluster:
    cluster = FakeCluster()
    cluster.bundled_jdk = False
    return cluster


def _open(cluster: FakeCluster, ann: str | None = "auto") -> Any:
    kwargs = {"connection_class": FakeConnection, "cluster": cluster}
    return open_store(
        "opensearch", writable=True, ann=ann, url="http://fake:9200", client_kwargs=kwargs
    )


def _node(jdk: bool | None, *, knn: bool = True) -> dict[str, Any]:
    return {"jvm": {"bundled_jdk": jdk}, "plugins": [{"name": "opensearch-knn"}] if knn else []}


def test_the_evidence_read_from_nodes_and_stats() -> None:
    official = ClusterEngines.read({"nodes": {"a": _node(True), "b": _node(True)}}, {})
    assert official.knn_plugin and official.engines == {"faiss", "lucene"}
    maven = ClusterEngines.read({"nodes": {"a": _node(False)}}, {"nodes": {"a": {}}})
    assert maven.engines == {"lucene"} and "bundled JDK" in maven.why
    loaded = {"nodes": {"a": {"faiss_initialized": True}}}
    assert ClusterEngines.read({"nodes": {"a": _node(False)}}, loaded).engines == {
        "faiss",
        "lucene",
    }
    mixed = ClusterEngines.read(
        {"nodes": {"a": _node(True), "b": {"name": "b2", **_node(None)}}}, {}
    )
    assert mixed.engines == {"lucene"} and "b2" in mixed.why, "every node must run faiss"
    bare = ClusterEngines.read({"nodes": {"a": {"name": "n1", **_node(True, knn=False)}}}, {})
    assert not bare.knn_plugin and "n1" in bare.why


def test_auto_is_faiss_where_the_cluster_runs_it_and_lucene_elsewhere() -> None:
    with _open(FakeCluster()) as store:
        assert store.index_options.describe() == FAISS
    with _open(maven_node()) as store:
        assert store.index_options.describe() == LUCENE
    proven = maven_node()
    proven.faiss_loaded = True  # a faiss index has been used there: the library is present
    with _open(proven, ann=None) as store:
        assert store.index_options.describe() == FAISS
    with _open(maven_node(), ann="lucene:hnsw32:efc256:byte:cosinesimil") as store:
        assert store.index_options.describe() == "lucene:hnsw32:efc256:byte:cosinesimil"


def test_faiss_on_a_cluster_without_its_library_is_refused_before_anything_is_made() -> None:
    cluster = maven_node()
    with pytest.raises(ConfigurationError) as err:
        _open(cluster, ann=FAISS)
    message = str(err.value)
    assert message.startswith(f"--ann {FAISS}: OpenSearch at http://fake:9200 may lack the faiss")
    assert f"Use --ann {LUCENE}" in message
    assert set(cluster.groups()) <= PROBES and not cluster.templates and not cluster.indices


def test_no_knn_plugin_is_refused_and_a_user_who_may_not_look_keeps_the_default() -> None:
    bare = FakeCluster()
    bare.knn_plugin = False
    with pytest.raises(ConfigurationError, match="cannot index vectors: no k-NN plugin on"):
        _open(bare)
    assert set(bare.groups()) <= PROBES
    restricted = maven_node()
    restricted.fail_requests("nodes.info", 403)
    with _open(restricted) as store:
        assert store.index_options.describe() == FAISS


@pytest.fixture
def maven_cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """Every client the CLI builds talks to a fake of the Maven-built node."""
    fake = maven_node()
    original = ConnectionOptions.client

    def client(self: ConnectionOptions) -> Any:
        kwargs = {"connection_class": FakeConnection, "cluster": fake}
        return original(dataclasses.replace(self, client_kwargs=kwargs))

    monkeypatch.setattr(ConnectionOptions, "client", client)
    return fake


def _run(args: list[str]) -> click.testing.Result:
    env = {"OPENSEARCH_URL": "http://fake:9200"}
    return CliRunner().invoke(opensearch, args, env=env, catch_exceptions=True)


def test_put_templates_fits_the_cluster(maven_cluster: FakeCluster, tmp_path: Path) -> None:
    model = build_onnx_model_dir(tmp_path / "model")
    result = _run(["put-templates", "--model", str(model), "--alias", "news", "--replicas", "0"])
    assert result.exit_code == 0, result.output
    template = maven_cluster.templates["news"]
    assert template["_meta"]["twinbert_search"]["ann"] == LUCENE, template["_meta"]
    assert template["template"]["settings"]["index"]["number_of_replicas"] == 0
    refused = _run(["put-templates", "--model", str(model), "--alias", "other", "--ann", FAISS])
    assert isinstance(refused.exception, ConfigurationError), refused.output
    assert "other" not in maven_cluster.templates
