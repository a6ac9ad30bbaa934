"""The fake cluster's state, routing and test controls, and the node class the client uses.

The official client builds and serialises every request; `FakeNode.perform_request` hands it
to `FakeElasticsearch.handle`, which validates it against the official specification (when
`tests/elasticsearch_spec.py` could load it), checks the credentials, and only then lets a
handler (`_h_<endpoint>`, from the mixins) answer it. A request the fake does not route fails
the test loudly (FakeUnsupported).
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from elastic_transport import ApiResponseMeta, BaseNode, HttpHeaders, NodeConfig
from elastic_transport._node._base import NodeApiResponse

from tests.elasticsearch_spec import ElasticsearchSpec, load_spec
from tests.fake_cluster_common import FakeIndex, FakeUnsupported
from tests.fake_elasticsearch.common import ERROR_TYPES, ApiError, Request
from tests.fake_elasticsearch.documents import DocumentsApi
from tests.fake_elasticsearch.indices import IndicesApi
from tests.fake_elasticsearch.search import SearchApi

NAME = r"(?P<{}>[^/_][^/]*)"
ROUTES: list[tuple[str, str, str]] = [
    ("GET", r"/_nodes/(?P<metric>[^/]+)", "nodes.info"),
    ("GET", r"/_license", "license.get"),
    ("GET", r"/_cluster/health", "cluster.health"),
    ("POST", r"/_aliases", "indices.update_aliases"),
    ("HEAD", r"/_alias/(?P<name>[^/]+)", "indices.exists_alias"),
    ("GET", r"/_alias/(?P<name>[^/]+)", "indices.get_alias"),
    ("PUT", r"/_index_template/(?P<name>[^/]+)", "indices.put_index_template"),
    ("GET", r"/_index_template/(?P<name>[^/]+)", "indices.get_index_template"),
    ("HEAD", r"/_index_template/(?P<name>[^/]+)", "indices.exists_index_template"),
    ("DELETE", r"/_index_template/(?P<name>[^/]+)", "indices.delete_index_template"),
    ("PUT", r"/_ingest/pipeline/(?P<id>[^/]+)", "ingest.put_pipeline"),
    ("GET", r"/_ingest/pipeline/(?P<id>[^/]+)", "ingest.get_pipeline"),
    ("DELETE", r"/_ingest/pipeline/(?P<id>[^/]+)", "ingest.delete_pipeline"),
    ("PUT|POST", r"/_bulk", "bulk"),
    ("PUT|POST", rf"/{NAME.format('index')}/_bulk", "bulk"),
    ("PUT|POST", rf"/{NAME.format('index')}/_doc/(?P<id>[^/]+)", "index"),
    ("GET|POST", rf"/{NAME.format('index')}/_mget", "mget"),
    ("GET|POST", rf"/{NAME.format('index')}/_search", "search"),
    ("GET|POST", rf"/{NAME.format('index')}/_count", "count"),
    ("GET|POST", rf"/{NAME.format('index')}/_refresh", "indices.refresh"),
    ("GET", rf"/{NAME.format('index')}/_settings", "indices.get_settings"),
    ("PUT", rf"/{NAME.format('index')}/_settings", "indices.put_settings"),
    ("GET", rf"/{NAME.format('index')}/_mapping", "indices.get_mapping"),
    ("PUT|POST", rf"/{NAME.format('index')}/_mapping", "indices.put_mapping"),
    ("PUT", rf"/{NAME.format('index')}", "indices.create"),
    ("HEAD", rf"/{NAME.format('index')}", "indices.exists"),
    ("GET", rf"/{NAME.format('index')}", "indices.get"),
    ("DELETE", rf"/{NAME.format('index')}", "indices.delete"),
]
_COMPILED = [(m.split("|"), re.compile(f"^{p}$"), name) for m, p, name in ROUTES]


class FakeElasticsearch(IndicesApi, DocumentsApi, SearchApi):
    """The cluster state plus the request handlers; tests configure and inject failures here.

    `ingest_common` and `rrf` say which modules the node has (False: like the integ-test
    distribution of scripts/elasticsearch-node.sh; `_nodes/plugins` lists them); `rrf_licensed`
    False answers the rrf retriever as a basic licence does (`_license` reads "basic", else
    "trial"); `version` is the node's in `_nodes`.
    """

    def __init__(self, spec: ElasticsearchSpec | bool | None = True) -> None:
        self.spec = load_spec() if spec is True else (spec or None)
        self.indices: dict[str, FakeIndex] = {}
        self.aliases: dict[str, set[str]] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self.nodes: list[FakeNode] = []
        self.request_failures: deque[tuple[str, int]] = deque()
        self.document_failures: dict[str, deque[int]] = {}
        self.document_rejections: dict[str, tuple[str, str]] = {}
        self.ingest_common = True
        self.rrf = True
        self.rrf_licensed = True
        self.version = "9.2.0"
        self.accepted_auth: set[str] | None = None  # authorization headers let in (None: any)

    # -- test controls ------------------------------------------------------------------------

    def fail_requests(self, endpoint: str, status: int, times: int = 1) -> None:
        """The next `times` requests to this endpoint fail as a whole with `status`."""
        self.request_failures.extend([(endpoint, status)] * times)

    def fail_documents(self, statuses: Mapping[str, Iterable[int]]) -> None:
        """Per document id, the statuses its next bulk attempts get (then it succeeds)."""
        for doc_id, seq in statuses.items():
            self.document_failures.setdefault(doc_id, deque()).extend(seq)

    def reject_documents(
        self, ids: Iterable[str], kind: str = "document_parsing_exception"
    ) -> None:
        """These documents fail with 400 until `accept_documents`."""
        for doc_id in ids:
            self.document_rejections[doc_id] = (kind, f"failed to parse document [{doc_id}]")

    def accept_documents(self) -> None:
        self.document_rejections.clear()

    def endpoints(self) -> list[str]:
        return [r.endpoint for r in self.requests]

    def bodies(self, endpoint: str) -> list[Any]:
        return [r.body for r in self.requests if r.endpoint == endpoint]

    def node_class(self) -> type[FakeNode]:
        """A node class bound to this cluster, for the client's `node_class`."""
        return type("BoundFakeNode", (FakeNode,), {"cluster": self})

    def client(self, **kwargs: Any) -> Any:
        from elasticsearch import Elasticsearch

        kwargs.setdefault("max_retries", 0)
        return Elasticsearch("http://fake:9200", node_class=self.node_class(), **kwargs)

    # -- the node -------------------------------------------------------------------------------

    def _h_nodes_info(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        modules = ["transport-netty4", "x-pack-core"]
        modules += ["ingest-common"] if self.ingest_common else []
        modules += ["rank-rrf"] if self.rrf else []
        node = {"version": self.version, "modules": [{"name": m} for m in modules], "plugins": []}
        return 200, {"cluster_name": "fake", "nodes": {"fake-node-id": node}}

    def _h_license_get(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        kind = "trial" if self.rrf_licensed else "basic"
        return 200, {"license": {"status": "active", "type": kind, "uid": "fake"}}

    # -- dispatch -----------------------------------------------------------------------------

    @staticmethod
    def route(method: str, path: str) -> tuple[str, dict[str, str]]:
        for methods, regex, name in _COMPILED:
            match = regex.match(path)
            if match and method in methods:
                return name, {k: unquote(v) for k, v in match.groupdict().items()}
        raise FakeUnsupported(f"the fake does not route {method} {path}")

    def handle(
        self, method: str, target: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, Any]:
        parts = urlsplit(target)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        name, path_params = self.route(method, parts.path)
        parsed: Any = None
        if body:
            text = body.decode("utf-8")
            if name == "bulk":
                parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                parsed = json.loads(text)
        if self.spec is not None:
            self.spec.validate_request(method, parts.path, params, parsed)
        lowered = {k.lower(): v for k, v in headers.items()}
        self.requests.append(Request(method, parts.path, params, parsed, name, lowered))
        if (
            self.accepted_auth is not None
            and lowered.get("authorization") not in self.accepted_auth
        ):
            reason = "unable to authenticate user for REST request [" + parts.path + "]"
            return 401, ApiError(401, "security_exception", reason).body()
        if self.request_failures and self.request_failures[0][0] == name:
            _, status = self.request_failures.popleft()
            return status, ApiError(status, ERROR_TYPES.get(status, "exception"), "injected").body()
        handler = getattr(self, "_h_" + name.replace(".", "_"))
        try:
            return handler(path_params, params, parsed)
        except ApiError as exc:
            return exc.status, exc.body()


class FakeNode(BaseNode):
    """An elastic-transport node that answers from a FakeElasticsearch (logging like a real one)."""

    cluster: FakeElasticsearch
    _CLIENT_META_HTTP_CLIENT = ("fk", "1.0")

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.cluster.nodes.append(self)

    def perform_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: Any = None,
    ) -> NodeApiResponse:
        start = time.perf_counter()
        merged = HttpHeaders(self.headers)
        merged.update(headers or {})
        status, payload = self.cluster.handle(method, target, body, merged)
        raw = b"" if method == "HEAD" else json.dumps(payload).encode("utf-8")
        meta = ApiResponseMeta(
            node=self.config,
            duration=time.perf_counter() - start,
            http_version="1.1",
            status=status,
            headers=HttpHeaders(
                {"content-type": "application/json", "x-elastic-product": "Elasticsearch"}
            ),
        )
        self._log_request(method, target, merged, body, meta=meta, response=raw)
        return NodeApiResponse(meta, raw)

    def close(self) -> None:
        """Nothing to release."""
