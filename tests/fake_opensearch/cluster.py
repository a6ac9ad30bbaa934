"""The fake cluster's state, request dispatch and test controls, and its Connection class.

The real client builds and serialises every request; `FakeConnection.perform_request` hands it
to `FakeCluster.handle`, which validates it against the specification before any handler
(one `_h_<operation group>` method, from the mixins) answers it.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from opensearchpy import Connection

from tests.fake_cluster_common import FakeIndex, FakeUnsupported
from tests.fake_opensearch.common import ERROR_TYPES, ApiError, Request
from tests.fake_opensearch.documents import DocumentsApi
from tests.fake_opensearch.indices import IndicesApi
from tests.fake_opensearch.ml import FakeMLEmbedder, FakeTask, MLApi
from tests.fake_opensearch.search import SearchApi
from tests.opensearch_spec import (
    RAW_BODY_GROUPS,
    OpenSearchSpec,
    load_spec,
    parse_ndjson,
)


class FakeCluster(IndicesApi, DocumentsApi, SearchApi, MLApi):
    """The cluster state plus the request handlers; tests inject failures through it."""

    def __init__(
        self, spec: OpenSearchSpec | None = None, *, task_polls: int = 1, validate: bool = True
    ) -> None:
        self.spec = spec or load_spec()
        self.validate = validate  # off only to see how the fake answers what the spec refuses
        self.indices: dict[str, FakeIndex] = {}
        self.aliases: dict[str, set[str]] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.search_pipelines: dict[str, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self.connections: list[FakeConnection] = []
        self.request_failures: deque[tuple[str, int]] = deque()
        self.denials: deque[tuple[str, str, str]] = deque()
        self.document_failures: dict[str, deque[int]] = {}
        self.document_rejections: dict[str, tuple[str, str]] = {}
        self.neural_search = True
        self.version = "3.1.0"  # what `GET /` reports (neural-search's RRF needs 2.19)
        # what `_nodes` and the k-NN stats report: OpenSearch's own build by default; the
        # Maven-built test node has no bundled JDK and no faiss library
        self.knn_plugin = True
        self.bundled_jdk = True
        self.faiss_loaded = False
        self.ml_allow_local_file = True
        self.ml_allow_url = True
        self.ml_url_content: dict[str, bytes] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.model_chunks: dict[str, dict[int, bytes]] = {}
        self.embedders: dict[str, FakeMLEmbedder] = {}
        self.tasks: dict[str, FakeTask] = {}
        self.task_polls = task_polls
        self._ids = 0

    # -- test controls ------------------------------------------------------------------------

    def fail_requests(self, group: str, status: int, times: int = 1) -> None:
        """The next `times` requests of this operation group fail as a whole with `status`."""
        self.request_failures.extend([(group, status)] * times)

    def deny(self, group: str, user: str, action: str) -> None:
        """The next request of this group is refused as the security plugin refuses a user's
        missing permission: 403 `security_exception` in its words (a HEAD request: no body)."""
        self.denials.append((group, user, action))

    def fail_documents(self, statuses: Mapping[str, Iterable[int]]) -> None:
        """Per document id, the statuses its next bulk attempts get (then it succeeds)."""
        for doc_id, seq in statuses.items():
            self.document_failures.setdefault(doc_id, deque()).extend(seq)

    def reject_documents(self, ids: Iterable[str], kind: str = "mapper_parsing_exception") -> None:
        """These documents fail with 400 until `accept_documents`."""
        for doc_id in ids:
            self.document_rejections[doc_id] = (kind, f"failed to parse document [{doc_id}]")

    def accept_documents(self) -> None:
        self.document_rejections.clear()

    def groups(self) -> list[str]:
        return [r.group for r in self.requests]

    def bodies(self, group: str) -> list[Any]:
        return [r.body for r in self.requests if r.group == group]

    def client(self, **kwargs: Any) -> Any:
        from opensearchpy import OpenSearch

        kwargs.setdefault("max_retries", 0)
        return OpenSearch(
            hosts=[{"host": "fake", "port": 9200}],
            connection_class=FakeConnection,
            cluster=self,
            **kwargs,
        )

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:04d}"

    # -- dispatch -----------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, params: Mapping[str, Any], body: bytes | None
    ) -> tuple[int, dict[str, Any] | str]:
        op = self.spec.find_operation(method, path)
        parsed: Any = None
        if body is not None:
            if op.group in RAW_BODY_GROUPS:
                parsed = bytes(body)
            elif op.group == "bulk":
                parsed = parse_ndjson(body)
            else:
                parsed = json.loads(body)
        if self.validate:
            self.spec.validate_request(method, path, dict(params), parsed)
        self.requests.append(Request(method, path, dict(params), parsed, op.group))
        if self.request_failures and self.request_failures[0][0] == op.group:
            _, status = self.request_failures.popleft()
            return status, ApiError(status, ERROR_TYPES.get(status, "exception"), "injected").body()
        if self.denials and self.denials[0][0] == op.group:
            _, user, action = self.denials.popleft()
            if method == "HEAD":
                return 403, ""
            said = f"no permissions for [{action}] and User [name={user}, backend_roles=[], "
            return 403, ApiError(403, "security_exception", said + "requestedTenant=null]").body()
        handler = getattr(self, "_h_" + op.group.replace(".", "_"), None)
        if handler is None:
            raise FakeUnsupported(f"the fake does not implement {op.group}")
        path_params = self._path_params(op.template, path)
        try:
            return handler(path_params, dict(params), parsed)
        except ApiError as exc:
            return exc.status, exc.body()

    @staticmethod
    def _path_params(template: str, path: str) -> dict[str, str]:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        match = re.match(f"^{regex}/?$", unquote(path.split("?")[0]))
        return match.groupdict() if match else {}


class FakeConnection(Connection):
    """opensearch-py Connection that answers from a FakeCluster (logging like the real one)."""

    def __init__(
        self,
        host: str = "localhost",
        port: int | None = None,
        *,
        cluster: FakeCluster,
        http_auth: Any = None,
        verify_certs: bool = True,
        ca_certs: str | None = None,
        ssl_show_warn: bool = True,
        **kwargs: Any,
    ) -> None:
        for key in (
            "client_cert",
            "client_key",
            "ssl_version",
            "ssl_assert_hostname",
            "ssl_assert_fingerprint",
            "ssl_context",
            "maxsize",
            "pool_maxsize",
        ):
            kwargs.pop(key, None)
        super().__init__(host=host, port=port, **kwargs)
        self.cluster = cluster
        self.http_auth = http_auth
        self.verify_certs = verify_certs
        self.ca_certs = ca_certs
        cluster.connections.append(self)

    def close(self) -> None:
        """Nothing to release (the client calls this on close)."""

    def perform_request(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
        ignore: Iterable[int] = (),
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        start = time.perf_counter()
        full_url = f"{self.host}{self.url_prefix}{url}"
        if isinstance(body, str):
            body = body.encode("utf-8")
        status, payload = self.cluster.handle(method, url, params or {}, body)
        raw = payload if isinstance(payload, str) else json.dumps(payload)
        duration = time.perf_counter() - start
        if not (200 <= status < 300) and status not in tuple(ignore):
            self.log_request_fail(method, full_url, url, body, duration, status, raw)
            self._raise_error(status, raw, "application/json")
        self.log_request_success(method, full_url, url, body, status, raw, duration)
        return status, {"content-type": "application/json"}, raw
