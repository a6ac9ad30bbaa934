"""docker/README.md's `twinbert-search` commands, run as written against the real nodes
(issue 26): `python -m pytest -m opensearch` and `-m elasticsearch`.

Nothing runs Docker here: `docker compose up` is the one step left out. What the compose file
would provide is put in its place: the test node's URL in `OPENSEARCH_URL` /
`ELASTICSEARCH_URL` (the README's `export` lines name the compose cluster), a tiny exported
model (64-d, so `bbq_hnsw` takes it) at `docker/models/current` in a scratch working folder
that also holds `examples/`, and a fresh alias in place of `twinbert`, so that the commands
never touch a user's own `twinbert` on a cluster given by OPENSEARCH_URL. Every other word of
each command is the README's; a command the README gains is run too, so it cannot drift.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import build_tiny_model
from tests.opensearch_node import ML, NEURAL, OpenSearchNode, remove_assets
from twinbert_search.cli import main
from twinbert_search.ingest.readers import read_corpus
from twinbert_search.runtime import TwinBertRuntime

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "docker" / "README.md"
MODEL = "docker/models/current"
ELASTICSEARCH_HEADING = "## On Elasticsearch"


def readme_commands(section: str) -> list[list[str]]:
    """The `twinbert-search` commands of the README's ```sh blocks in one section
    ("opensearch": before the Elasticsearch heading; "elasticsearch": from it), as argv."""
    text = README.read_text()
    opensearch, elasticsearch = text.split(ELASTICSEARCH_HEADING, 1)
    part = opensearch if section == "opensearch" else elasticsearch
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", part, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "twinbert-search":
                commands.append(argv)
    return commands


def test_the_readme_has_the_commands_this_file_checks() -> None:
    """No node needed: the parse finds each section's commands (so a reworded README that
    this file no longer reads fails here, in the unit tests)."""
    opensearch = [argv[1:3] for argv in readme_commands("opensearch")]
    assert opensearch == [["opensearch", "put-templates"], ["index", "examples/sample"],
                          ["opensearch", "status"], ["opensearch", "register-model"],
                          ["index", "examples/sample"]]  # fmt: skip
    elasticsearch = [argv[1] for argv in readme_commands("elasticsearch")]
    assert elasticsearch == ["index", "search", "index"]
    in_cluster = readme_commands("opensearch")[-1]
    assert "--encode-in-cluster" in in_cluster and "--model" in in_cluster


def substitute(argv: list[str], alias: str) -> list[str]:
    """The argv for CliRunner: the program name dropped, `--alias twinbert` made `alias`."""
    args = list(argv[1:])
    for i, arg in enumerate(args[:-1]):
        if arg == "--alias":
            assert args[i + 1] == "twinbert", argv
            args[i + 1] = alias
    return args


@pytest.fixture
def workdir(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A working folder with `examples/` and the model at docker/models/current."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "examples").symlink_to(ROOT / "examples")
    build_tiny_model(tiny_checkpoint, folder / MODEL, projection_dim=64)
    monkeypatch.chdir(folder)
    yield folder
    shutil.rmtree(folder / MODEL, ignore_errors=True)


def run(args: list[str], env: dict[str, str | None]) -> Any:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, (args, result.output)
    return result


def local_vectors(model: Path) -> tuple[list[str], np.ndarray]:
    docs = list(read_corpus(ROOT / "examples" / "sample"))
    runtime = TwinBertRuntime.load(model)
    return [d.id for d in docs], runtime.encode_documents([d.encoding_text for d in docs], 32)


@pytest.mark.opensearch
def test_the_opensearch_commands_as_written(opensearch_node: OpenSearchNode, workdir: Path) -> None:
    from twinbert_search.stores.opensearch import OpenSearchStore

    c = opensearch_node.connection
    env: dict[str, str | None] = {
        "OPENSEARCH_URL": c.url,
        "OPENSEARCH_USERNAME": c.username or None,
        "OPENSEARCH_PASSWORD": c.password or None,
        "OPENSEARCH_CA_CERTS": c.ca_certs or None,
        "OPENSEARCH_VERIFY_CERTS": str(c.verify_certs).lower(),
    }
    alias = f"twinbert-rd-{uuid.uuid4().hex[:8]}"
    commands = readme_commands("opensearch")
    ml_commands = [argv for argv in commands if "register-model" in argv or
                   "--encode-in-cluster" in argv]  # fmt: skip
    try:
        for argv in commands:
            if argv in ml_commands:
                opensearch_node.require(ML, "docker/README.md's register-model")
                opensearch_node.require(NEURAL, "docker/README.md's --encode-in-cluster")
            result = run(substitute(argv, alias), env)
            if argv[1:3] == ["opensearch", "status"]:
                status = json.loads(result.stdout)
                assert status["count"] == 300 and status["target"] == alias
            if "register-model" in argv:
                assert "state: DEPLOYED" in result.stdout
        with OpenSearchStore(c, alias=alias) as store:  # what the last index run left
            ids, expected = local_vectors(workdir / MODEL)
            assert store.info.count == 300
            assert len(store.info.extra["indices"]) == 1  # --rebuild --delete-old
            stored = store.fetch(ids).vectors
        cosines = np.sum(stored * expected, axis=1) / np.linalg.norm(stored, axis=1)
        assert cosines.min() >= 0.999, (ids[int(np.argmin(cosines))], cosines.min())
    finally:
        with OpenSearchStore(c, alias=alias) as store:
            remove_assets(store)
            if ML in opensearch_node.plugins:  # a k-NN-only node skips at register-model
                forget_model(store.client, workdir / MODEL)


def forget_model(client: Any, model: Path) -> None:
    """Undeploy the encoder register-model uploaded for this (fresh) model, then delete it
    (which the 2.x integ-test node cannot do: it lacks the reindex module's delete-by-query)."""
    from opensearchpy import TransportError

    from twinbert_search.manifest import ModelManifest
    from twinbert_search.stores.opensearch import ml

    found = ml.find_model_of(client, ModelManifest.load(model))
    if found is not None:
        client.plugins.ml.undeploy_model(model_id=found["model_id"])
        with contextlib.suppress(TransportError):
            client.plugins.ml.delete_model(model_id=found["model_id"])


@pytest.mark.elasticsearch
def test_the_elasticsearch_commands_as_written(elasticsearch_url: str, workdir: Path) -> None:
    from tests.stores.elasticsearch.test_elasticsearch_node import cleanup
    from twinbert_search.stores.elasticsearch import ConnectionOptions, ElasticsearchStore

    env: dict[str, str | None] = {"ELASTICSEARCH_URL": elasticsearch_url,
                                  "ELASTICSEARCH_USERNAME": None, "ELASTICSEARCH_PASSWORD": None,
                                  "ELASTICSEARCH_API_KEY": None}  # fmt: skip
    alias = f"twinbert-rd-{uuid.uuid4().hex[:8]}"
    client = ConnectionOptions(elasticsearch_url).client()
    try:
        for argv in readme_commands("elasticsearch"):
            result = run(substitute(argv, alias), env)
            if argv[1] == "search":
                assert "how do vaccines work" in argv
                assert len([ln for ln in result.stdout.splitlines() if ln.strip()]) >= 5
        with ElasticsearchStore(ConnectionOptions(elasticsearch_url), alias=alias) as store:
            assert store.info.count == 300
            assert store.info.extra["indices"] == [f"{alias}-000002"]  # the rebuild, old gone
            assert "bbq_hnsw" in store.info.ann
            ids, expected = local_vectors(workdir / MODEL)
            np.testing.assert_allclose(store.fetch(ids).vectors, expected, atol=1e-5)
    finally:
        cleanup(client, alias)
        client.close()
