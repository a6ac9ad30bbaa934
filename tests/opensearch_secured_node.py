"""A secured OpenSearch node for `python -m pytest -m opensearch` (issue 27), started once.

The session fixture `secured_opensearch_node` starts `scripts/opensearch-node.sh` with
TWINBERT_OPENSEARCH_PLUGINS=knn,security: the opensearch-security plugin from Maven Central,
TLS on HTTP and transport with a CA, node and admin certificates the script makes with
`openssl`, and two internal users, `admin` (all_access) and `reader` (reads, never writes).
It runs beside the plain node of tests/opensearch_node.py, in a directory of its own, on the
first free HTTP port from 9270 (the plain node takes the first free one from 9250);
TWINBERT_OPENSEARCH_SECURED_PORT picks another. The users' passwords are made for the session
unless TWINBERT_OPENSEARCH_ADMIN_PASSWORD and TWINBERT_OPENSEARCH_READER_PASSWORD are set; a
secured node that already runs is reused (and left running) only with those two set, since
its passwords cannot be known otherwise. The node the fixture started is stopped at the end.

It runs for OpenSearch 2.x (2.19.1, the default) only: with TWINBERT_OPENSEARCH_VERSION=3.x
(the CI run that checks k-NN on 3.5.0) the tests skip, saying so, as they do without Java,
Maven or openssl.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.opensearch_node import MISSING, SCRIPT, _report

PLUGINS = "knn,security"
FIRST_PORT = 9270  # the plain node scans from 9250
HEAP = "512m"  # the secured node holds a few hundred documents
PASSWORD_ENVS = ("TWINBERT_OPENSEARCH_ADMIN_PASSWORD", "TWINBERT_OPENSEARCH_READER_PASSWORD")


@dataclass(frozen=True)
class SecuredNode:
    """Where the secured node is, the CA that signed its certificate, and its two users."""

    url: str
    version: str
    cert_dir: Path
    admin_password: str = field(repr=False)
    reader_password: str = field(repr=False)

    @property
    def ca_certs(self) -> Path:
        return self.cert_dir / "root-ca.pem"

    @property
    def passwords(self) -> tuple[str, str]:
        return self.admin_password, self.reader_password

    def flags(self, user: str = "admin", password: str | None = None) -> list[str]:
        """The CLI's connection flags for `user` (its own password unless one is given)."""
        if password is None:
            password = self.admin_password if user == "admin" else self.reader_password
        return ["--url", self.url, "--username", user, "--password", password,
                "--ca-certs", str(self.ca_certs)]  # fmt: skip


def _script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, check=False
    )


def _free_port(first: int) -> int:
    for port in range(first, first + 30):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    pytest.fail(f"no free port in {first}..{first + 29} for the secured node", pytrace=False)


def _password() -> str:
    # quotes, a backslash and a dollar: the script must carry any password intact
    return f"Tb-{secrets.token_urlsafe(12)}\"$'\\!"


@pytest.fixture(scope="session")
def secured_opensearch_node(request: pytest.FixtureRequest) -> Iterator[SecuredNode]:
    """The secured node for the session: started here (stopped at the end) or reused."""
    version = os.environ.get("TWINBERT_OPENSEARCH_VERSION") or "2.19.1"
    if int(version.split(".")[0]) >= 3:
        plugins = os.environ.get("TWINBERT_OPENSEARCH_PLUGINS") or "unset"
        pytest.skip(
            f"the secured node (opensearch-security) is tested on OpenSearch 2.x only: this "
            f"run asks for TWINBERT_OPENSEARCH_VERSION={version} "
            f"(TWINBERT_OPENSEARCH_PLUGINS={plugins}); run with 2.19.1, the default"
        )
    given = all(os.environ.get(name) for name in PASSWORD_ENVS)
    passwords = (
        tuple(os.environ[name] for name in PASSWORD_ENVS) if given else (_password(), _password())
    )
    env = {**os.environ, "TWINBERT_OPENSEARCH_VERSION": version,
           "TWINBERT_OPENSEARCH_PLUGINS": PLUGINS,
           "TWINBERT_OPENSEARCH_HEAP": os.environ.get("TWINBERT_OPENSEARCH_HEAP") or HEAP,
           **dict(zip(PASSWORD_ENVS, passwords, strict=True))}  # fmt: skip
    env.pop("TWINBERT_OPENSEARCH_KEEP_DATA", None)  # the users load from a fresh data/
    running = _script("url", env)
    if running.returncode == 0:
        url = running.stdout.strip()
        if not given:
            pytest.fail(
                f"a secured node already runs at {url} (scripts/opensearch-node.sh with "
                f"TWINBERT_OPENSEARCH_PLUGINS={PLUGINS}): set {' and '.join(PASSWORD_ENVS)} to "
                "the passwords it was started with, or stop it",
                pytrace=False,
            )
        _report(request.config, f"opensearch: reusing the secured node at {url} (left running)")
        yield SecuredNode(url, version, Path(_script("certs", env).stdout.strip()), *passwords)
        return
    checked = _script("check", env)
    if checked.returncode == MISSING:
        pytest.skip(f"no secured OpenSearch node: {checked.stderr.strip()}")
    port = os.environ.get("TWINBERT_OPENSEARCH_SECURED_PORT") or str(_free_port(FIRST_PORT))
    env["TWINBERT_OPENSEARCH_PORT"] = port
    started_at = time.monotonic()
    started = _script("start", env)
    if started.returncode != 0:
        log = "\n".join(started.stderr.strip().splitlines()[-30:])
        pytest.fail(f"scripts/opensearch-node.sh start (secured) failed:\n{log}", pytrace=False)
    url = started.stdout.strip().splitlines()[-1]
    try:
        _report(
            request.config,
            f"opensearch: started the secured node {version} (knn, security) at {url} in "
            f"{time.monotonic() - started_at:.0f} s",
        )
        yield SecuredNode(url, version, Path(_script("certs", env).stdout.strip()), *passwords)
    finally:
        stopped = _script("stop", env)
        if stopped.returncode != 0:
            _report(
                request.config, f"opensearch: stopping the secured node failed: {stopped.stderr}"
            )
