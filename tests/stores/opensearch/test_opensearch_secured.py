"""The CLI against a secured OpenSearch node (issue 27): `python -m pytest -m opensearch`.

The node (tests/opensearch_secured_node.py) runs the opensearch-security plugin with TLS and
two users: `admin` (all_access) and `reader` (reads, never writes). As a user would, through
the CLI with --url https://... --username --password --ca-certs: `index` the sample, `search`
it, `opensearch status`, and `serve --backend opensearch` answering /search over it. Then what
a user gets wrong: a wrong password, a CA that did not sign the node's certificate, and a user
without write permission running `index` each stop with one `error:` line naming what
happened, no traceback, and an exit code of its own (`serve` with a wrong password as well:
it stops at start); an http:// URL warns that the password
would travel in clear and says to use https://. No password ever appears in what any of
these runs printed or logged (DEBUG logging included), nor the basic-auth header made of it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.opensearch_node import DEFAULT_ANN, remove_assets
from tests.opensearch_secured_node import SecuredNode
from tests.service.test_sidecar_on_nodes import CORPUS, SERVE_CODE, free_port, sidecar
from twinbert_search.cli import main
from twinbert_search.errors import (
    BackendUnavailableError,
    CredentialsRejectedError,
    PermissionDeniedError,
    UntrustedCertificateError,
)
from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore

pytestmark = pytest.mark.opensearch

# the environment a user may have set must not stand in for the flags under test
CLEAN_ENV: dict[str, str | None] = {
    f"OPENSEARCH_{key}": None for key in ("URL", "USERNAME", "PASSWORD", "CA_CERTS", "VERIFY_CERTS")
}
QUERY = "why does the moon always show us the same side"


class Transcript:
    """Everything the runs printed or logged, to search for secrets at the end."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, text: str) -> None:
        self.texts.append(text)

    def leaks(self, node: SecuredNode) -> list[str]:
        """The forms of each password found anywhere: itself, its random core, basic auth."""
        everything = "\n".join(self.texts)
        found = []
        for user, password in zip(("admin", "reader"), node.passwords, strict=True):
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            for form in (password, password[3:19], basic):
                if len(form) >= 6 and form in everything:
                    found.append(f"{user}: {form[:4]}...")
        return found


@pytest.fixture(scope="module")
def transcript() -> Transcript:
    return Transcript()


@pytest.fixture(scope="module")
def alias(secured_opensearch_node: SecuredNode) -> Iterator[str]:
    """An alias for the module's index, removed at the end."""
    name = f"twinbert-sec-{uuid.uuid4().hex[:8]}"
    yield name
    connection = ConnectionOptions(
        secured_opensearch_node.url,
        username="admin",
        password=secured_opensearch_node.admin_password,
        ca_certs=str(secured_opensearch_node.ca_certs),
    )
    with OpenSearchStore(connection, alias=name) as store:
        remove_assets(store)


def run(args: list[Any], transcript: Transcript, caplog: pytest.LogCaptureFixture) -> Result:
    """The CLI in-process, as `twinbert-search ARGS`, with DEBUG logging captured."""
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    result = CliRunner().invoke(main, [str(a) for a in args], env=CLEAN_ENV)
    transcript.add(result.stdout)
    transcript.add(result.stderr)
    transcript.add(caplog.text)
    return result


def ok(result: Result) -> Any:
    assert result.exit_code == 0, (result.exit_code, result.stderr, result.exception)
    return json.loads(result.stdout)


def one_error_line(result: Result) -> str:
    """The single `error:` line of a failed run; warnings aside, nothing else, no traceback."""
    assert result.exit_code not in (0, None), result.stdout
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def test_index_search_status_and_serve_over_https(
    secured_opensearch_node: SecuredNode,
    tiny_model: Path,
    alias: str,
    transcript: Transcript,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    node = secured_opensearch_node
    assert node.url.startswith("https://")
    common = ["--backend", "opensearch", "--alias", alias, "--model", tiny_model]
    indexed = ok(run(["index", CORPUS, *common, *node.flags(), "--ann", DEFAULT_ANN,
                      "--no-progress", "--json"], transcript, caplog))  # fmt: skip
    assert (indexed["seen"], indexed["added"], indexed["backend"]) == (300, 300, "opensearch")

    found = ok(run(["search", QUERY, *common, *node.flags(), "-k", 5, "--json"],
                   transcript, caplog))  # fmt: skip
    ids = [hit["id"] for hit in found["hits"]]
    assert len(ids) == 5
    # the reader may read: the same hits
    read = ok(run(["search", QUERY, *common, *node.flags("reader"), "-k", 5, "--json"],
                  transcript, caplog))  # fmt: skip
    assert [hit["id"] for hit in read["hits"]] == ids

    for user in ("admin", "reader"):
        status = ok(run(["opensearch", "status", "--alias", alias, *node.flags(user)],
                        transcript, caplog))  # fmt: skip
        assert status["url"] == node.url and status["count"] == 300, status
        assert status["cluster"]["status"] in ("green", "yellow"), status

    log = tmp_path / "serve.log"
    try:
        with sidecar([*common, *node.flags("reader")], {**_os_env(), "PYTHONUNBUFFERED": "1"},
                     log) as client:  # fmt: skip
            served = client.post("/search", json={"query": QUERY, "k": 5})
            assert served.status_code == 200, served.text
            assert [hit["id"] for hit in served.json()["hits"]] == ids
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["documents"] == 300, ready.text
    finally:
        transcript.add(log.read_text() if log.exists() else "")
    assert not transcript.leaks(node)


def _os_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}


def _other_ca(folder: Path) -> Path:
    """A CA of the test's own that never signed the node's certificate."""
    key, cert = folder / "other-ca-key.pem", folder / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=not-the-node-ca"],
                   check=True, capture_output=True)  # fmt: skip
    return cert


def test_each_mistake_is_one_line_with_its_own_exit_code(
    secured_opensearch_node: SecuredNode,
    tiny_model: Path,
    alias: str,
    transcript: Transcript,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    node = secured_opensearch_node
    common = ["--backend", "opensearch", "--alias", alias, "--model", tiny_model]
    wrong = f"not-{node.admin_password}"
    denied = run(["search", QUERY, *common, *node.flags("admin", wrong), "--json"],
                 transcript, caplog)  # fmt: skip
    line = one_error_line(denied)
    assert denied.exit_code == CredentialsRejectedError.exit_code
    assert f"authentication failed: OpenSearch at {node.url} rejected the credentials of " \
           "user 'admin'" in line, line  # fmt: skip
    # the sidecar, started as a user starts it, stops at once with the same line and code
    served = subprocess.run(
        [sys.executable, "-c", SERVE_CODE, "serve", *map(str, common), *node.flags("admin", wrong),
         "--port", str(free_port())], env=_os_env(), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    transcript.add(served.stdout + served.stderr)
    assert served.returncode == CredentialsRejectedError.exit_code, served.stderr[-2000:]
    (line,) = [x for x in served.stderr.splitlines() if not x.startswith("warning: ")]
    assert line.startswith("error: ") and "Traceback" not in served.stderr, served.stderr
    assert "authentication failed" in line and "user 'admin'" in line, line
    status = run(["opensearch", "status", "--alias", alias, *node.flags("reader", wrong)],
                 transcript, caplog)  # fmt: skip
    assert status.exit_code == CredentialsRejectedError.exit_code
    assert "rejected the credentials of user 'reader'" in one_error_line(status)

    flags = node.flags()
    flags[flags.index("--ca-certs") + 1] = str(_other_ca(tmp_path))
    untrusted = run(["opensearch", "status", "--alias", alias, *flags], transcript, caplog)
    line = one_error_line(untrusted)
    assert untrusted.exit_code == UntrustedCertificateError.exit_code
    assert f"certificate not trusted: the TLS certificate of OpenSearch at {node.url} failed " \
           "verification" in line and "--ca-certs" in line, line  # fmt: skip

    other = f"twinbert-ro-{uuid.uuid4().hex[:8]}"
    refused = run(["index", CORPUS, "--backend", "opensearch", "--alias", other, "--model",
                   tiny_model, *node.flags("reader"), "--ann", DEFAULT_ANN, "--no-progress"],
                  transcript, caplog)  # fmt: skip
    line = one_error_line(refused)
    assert refused.exit_code == PermissionDeniedError.exit_code
    assert "permission denied for user 'reader' by OpenSearch: the user's roles do not " \
           "grant indices:" in line, line  # fmt: skip
    assert other in line, line  # what it was refused: the index (or its template)

    # http:// to the TLS-only node: the password would travel in clear, and the node hangs up
    flags = node.flags()
    flags[flags.index("--url") + 1] = node.url.replace("https://", "http://")
    plain = run(["opensearch", "status", "--alias", alias, *flags], transcript, caplog)
    line = one_error_line(plain)
    assert plain.exit_code == BackendUnavailableError.exit_code
    assert "closed the connection without an answer" in line and "https:// URL" in line, line
    assert "sending the OpenSearch password over plain http" in caplog.text

    codes = {denied.exit_code, untrusted.exit_code, refused.exit_code}
    assert len(codes) == 3 and 0 not in codes
    assert not transcript.leaks(node)
