"""A real Elasticsearch node for the `elasticsearch` marker: started (or reused), then stopped.

`python -m pytest -m elasticsearch` asks for `elasticsearch_url`. With ELASTICSEARCH_TEST_URL set,
that cluster is used as it is (tests work under their own aliases and remove what they made).
Otherwise scripts/elasticsearch-node.sh starts a single node (fetching the distribution with
Maven the first time), or reuses the one it already runs; a node this fixture started is
stopped at the end of the session, one it found running is left running.

Without Java or Maven the tests are skipped with one line saying so. The default version
(9.2.0) needs Java 21+; where only Java 17 is found, 8.19.21 is started instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "elasticsearch-node.sh"
FALLBACK_VERSION = "8.19.21"  # runs on Java 17
START_TIMEOUT = 420  # a first start downloads the distribution


def _node(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


@pytest.fixture(scope="session")
def elasticsearch_url() -> Iterator[str]:
    """The URL of a running node (the session starts one when none is given)."""
    given = os.environ.get("ELASTICSEARCH_TEST_URL")
    if given:
        yield given
        return
    missing = [tool for tool in ("java", "mvn", "unzip", "curl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"no Elasticsearch node: {', '.join(missing)} not found (scripts/elasticsearch-node.sh "
            "needs Java 17+, Maven, unzip and curl; or set ELASTICSEARCH_TEST_URL)"
        )
    env = dict(os.environ)
    was_running = _node("status", env).returncode == 0
    started = time.monotonic()
    result = _node("start", env)
    if result.returncode != 0 and "needs Java" in result.stderr:
        if "TWINBERT_ELASTICSEARCH_VERSION" not in os.environ:
            env["TWINBERT_ELASTICSEARCH_VERSION"] = FALLBACK_VERSION
            was_running = _node("status", env).returncode == 0
            result = _node("start", env)
        if result.returncode != 0 and "needs Java" in result.stderr:
            pytest.skip(f"no Elasticsearch node: {_last_line(result.stderr)}")
    if result.returncode != 0:
        pytest.fail(f"scripts/elasticsearch-node.sh start failed: {_last_line(result.stderr)}")
    url = result.stdout.strip().splitlines()[-1]
    version = env.get("TWINBERT_ELASTICSEARCH_VERSION", "default")
    print(
        f"\nElasticsearch node {url} (version {version}) ready in {time.monotonic() - started:.1f}s"
    )
    try:
        yield url
    finally:
        if not was_running:
            _node("stop", env)
