"""The `opensearch` command group and the shared connection options (fake cluster)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.fake_opensearch import FakeCluster, FakeConnection, build_onnx_model_dir
from twinbert_search.cli.opensearch import opensearch
from twinbert_search.cli.options import opensearch_options
from twinbert_search.errors import ConfigurationError, StoreError
from twinbert_search.manifest import ModelManifest
from twinbert_search.stores.opensearch import ConnectionOptions, assets
from twinbert_search.stores.opensearch.connection import OPTION_NAMES, store_from_options

SECRET = "cli-Pa55word-never-shown"


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """Every client the CLI builds talks to this fake (the flags are still parsed for real)."""
    fake = FakeCluster()
    original = ConnectionOptions.client

    def client(self: ConnectionOptions):  # type: ignore[no-untyped-def]
        kwargs = {"connection_class": FakeConnection, "cluster": fake}
        return original(dataclasses.replace(self, client_kwargs=kwargs))

    monkeypatch.setattr(ConnectionOptions, "client", client)
    return fake


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx_model_dir(tmp_path_factory.mktemp("cli-model") / "model")


ENV = {
    "OPENSEARCH_URL": "https://fake:9200",
    "OPENSEARCH_USERNAME": "admin",
    "OPENSEARCH_PASSWORD": SECRET,
}


def run(args: list[str], env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(opensearch, args, env={**ENV, **(env or {})}, catch_exceptions=True)


def test_help_never_shows_the_password() -> None:
    for command in ([], ["put-templates"], ["register-model"], ["status"]):
        result = run([*command, "--help"])
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
    assert "OPENSEARCH_PASSWORD" in run(["status", "--help"]).output


def test_put_templates_then_status(
    cluster: FakeCluster, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = run(["put-templates", "--model", str(model_dir), "--alias", "news", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "template": "created",
        "news-vectors": "created",
        "news-hybrid": "created",
    }
    manifest = ModelManifest.load(model_dir)
    assert cluster.templates["news"] == assets.index_template(
        manifest, assets.IndexOptions(), assets.AssetNames("news")
    )
    assert cluster.connections[-1].http_auth == ("admin", SECRET)
    again = run(["put-templates", "--model", str(model_dir), "--alias", "news", "--json"])
    assert json.loads(again.output)["template"] == "kept"
    status = run(["status", "--alias", "news"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert report["template"] == "news" and report["indices"] == []
    assert report["hybrid_fusion"] == "engine"
    assert report["url"] == "https://fake:9200"
    for text in (result.output, again.output, status.output, caplog.text):
        assert SECRET not in text


def test_put_templates_renders_files_for_another_model(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    ann = "lucene:hnsw24:efc256:byte:cosinesimil"
    result = run(
        ["put-templates", "--model", str(model_dir), "--alias", "news", "--ann", ann,
         "--model-id", "m-1", "--render-to", str(out)],
        env={"OPENSEARCH_URL": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = assets.render_defaults(
        ModelManifest.load(model_dir),
        assets.IndexOptions.parse(ann),
        assets.AssetNames("news"),
        model_id="m-1",
    )
    for rel, body in expected.items():
        assert json.loads((out / rel).read_text()) == body


def test_register_model(cluster: FakeCluster, model_dir: Path, tmp_path: Path) -> None:
    zip_path = tmp_path / "encoder.zip"
    result = run(
        ["register-model", "--model", str(model_dir), "--zip", str(zip_path), "--json",
         "--wait-timeout", "5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["state"] == "DEPLOYED" and out["model_id"] in cluster.models
    assert out["zip"] == str(zip_path) and zip_path.is_file()
    assert SECRET not in result.output
    only = run(["register-model", "--model", str(model_dir), "--package-only", "--json"])
    assert json.loads(only.output)["sha256"] == out["sha256"]


def test_register_model_explains_a_refusal(cluster: FakeCluster, model_dir: Path) -> None:
    cluster.ml_allow_local_file = False
    result = run(["register-model", "--model", str(model_dir)])
    assert isinstance(result.exception, StoreError)
    assert "allow_registering_model_via_local_file" in str(result.exception)


def test_a_missing_url_is_a_configuration_error(model_dir: Path) -> None:
    result = run(["status"], env={"OPENSEARCH_URL": ""})
    assert isinstance(result.exception, ConfigurationError)
    assert "OPENSEARCH_URL" in str(result.exception)


def test_the_options_decorator_and_store_factory(cluster: FakeCluster) -> None:
    seen: dict = {}

    @click.command()
    @opensearch_options
    @click.option("--top-k", type=int, default=10)
    def command(**kwargs: object) -> None:
        seen.update(kwargs)
        store = store_from_options(**kwargs)
        seen["store"] = store

    result = CliRunner().invoke(
        command, ["--url", "https://u:p@fake:9200", "--no-verify-certs", "--timeout", "5"]
    )
    assert result.exit_code == 0, result.output
    assert set(OPTION_NAMES) <= set(seen)
    store = seen["store"]
    assert store.alias == assets.DEFAULT_BASE and store.index is None
    assert store.options.url == "https://fake:9200" and store.options.timeout == 5.0
    assert store.options.verify_certs is False
    assert (store.options.username, store.options.password) == ("u", "p")
