"""An in-process fake OpenSearch cluster, plugged in as an opensearch-py Connection class.

The real client builds and serialises every request; `FakeConnection.perform_request` hands it
to `FakeCluster`, which first validates it against the official API specification (and the
project's strict checks, tests/opensearch_spec.py) and only then answers. A request outside
the specification, or one the fake does not implement, fails the test loudly.

Implemented, with the documented semantics the store relies on:
- index templates (matched by pattern and priority, merged under the create body), indices,
  aliases and atomic `_aliases` (add, remove, remove_index), settings, mappings, refresh;
- near-real-time visibility: search and count see documents as of the last refresh, mget is
  realtime;
- strict dynamic mappings, knn_vector dimension checks, copy_to;
- bulk with per-item outcomes, injected whole-request failures (e.g. 429, 500) and per-document
  failures (transient statuses or permanent rejections);
- ingest pipelines (set, trim, remove, the vector check script by its tag, text_embedding);
- queries: match_all, term, terms, ids, exists, bool, match (term-overlap BM25-lite), knn (exact
  search, score per space type, filter applied during the search, Faiss SQfp16 rounding) and
  hybrid (min-max normalisation, weighted arithmetic mean, from the search pipeline);
- sort on keyword fields with search_after, _source includes;
- ML Commons: register_meta + upload_chunk, register by URL, deploy, tasks (RUNNING for a few
  polls), models, model search; deployed models really run (onnxruntime), mirroring ML
  Commons' ONNX text-embedding translator.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import io
import json
import math
import re
import time
import uuid
import zipfile
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import numpy as np
from opensearchpy import Connection

from tests.opensearch_spec import (
    RAW_BODY_GROUPS,
    OpenSearchSpec,
    load_spec,
    parse_ndjson,
)

TOKEN = re.compile(r"\w+", re.UNICODE)
TINY_WORDS = (
    "the a of and to in is star planet moon sun orbit galaxy light comet bread oven flour "
    "heart blood cell virus vaccine brain gene protein computer code data network music "
    "piano song sport ball team game river ocean wave fish rock volcano"
)
ERROR_TYPES = {
    429: "rejected_execution_exception",
    500: "exception",
    502: "bad_gateway",
    503: "unavailable_shards_exception",
    504: "timeout_exception",
}


class FakeUnsupported(AssertionError):
    """The fake was asked for something it does not implement (a test gap, not a server 400)."""


class ApiError(Exception):
    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason

    def body(self) -> dict[str, Any]:
        cause = {"type": self.kind, "reason": self.reason}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    body: Any
    group: str


@dataclass
class FakeIndex:
    name: str
    settings: dict[str, str]
    mappings: dict[str, Any]
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    searchable: dict[str, dict[str, Any]] = field(default_factory=dict)
    refreshes: int = 0

    def refresh(self) -> None:
        self.searchable = {k: json.loads(json.dumps(v)) for k, v in self.docs.items()}
        self.refreshes += 1

    @property
    def properties(self) -> dict[str, Any]:
        return self.mappings.get("properties", {})


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name if name.startswith("index.") else f"index.{name}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return out


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = json.loads(json.dumps(value))
    return out


def _get_path(source: Mapping[str, Any], path: str) -> Any:
    node: Any = source
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _tokens(text: str) -> list[str]:
    return [t.lower() for t in TOKEN.findall(text or "")]


def knn_score(space_type: str, query: np.ndarray, doc: np.ndarray) -> float:
    """The k-NN plugin's documented score for each space type (faiss and lucene agree)."""
    if space_type == "innerproduct":
        ip = float(query @ doc)
        return 1.0 + ip if ip >= 0 else 1.0 / (1.0 - ip)
    if space_type == "cosinesimil":
        cos = float(query @ doc / max(np.linalg.norm(query) * np.linalg.norm(doc), 1e-30))
        return (2.0 - (1.0 - cos)) / 2.0
    if space_type == "l2":
        return 1.0 / (1.0 + float(np.sum((query - doc) ** 2)))
    raise FakeUnsupported(f"space type {space_type}")


class FakeMLEmbedder:
    """A deployed model, run as ML Commons' ONNXSentenceTransformerTextEmbeddingTranslator does.

    One sentence per call; input_ids and attention_mask, plus token_type_ids for bert/albert;
    the first output (a 3-d output loses its batch axis) is pooled per `pooling_mode`, then
    L2-normalised when `normalize_result`.
    """

    def __init__(self, zip_bytes: bytes, model_config: Mapping[str, Any]) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            names = archive.namelist()
            models = [n for n in names if n.endswith((".onnx", ".pt"))]
            if len(models) != 1:
                raise ValueError(f"expected exactly one model file in the zip, found {models}")
            if "/" in models[0]:
                raise ValueError("the model file must be at the root of the zip")
            if "tokenizer.json" not in names:
                raise ValueError("Can't find tokenizer file")
            model_bytes = archive.read(models[0])
            self.tokenizer = Tokenizer.from_str(archive.read("tokenizer.json").decode("utf-8"))
        self.session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        self.config = dict(model_config)

    def embed(self, text: str) -> list[float]:
        enc = self.tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
        }
        if str(self.config.get("model_type", "")).lower() in ("bert", "albert"):
            feeds["token_type_ids"] = np.array([enc.type_ids], dtype=np.int64)
        outputs = self.session.run(None, feeds)
        emb = np.asarray(outputs[0], dtype=np.float32)
        if emb.ndim == 3:
            emb = emb[0]
        mask = np.asarray(enc.attention_mask, dtype=np.float32)
        pooling = str(self.config.get("pooling_mode", "mean")).lower()
        if pooling == "none" and len(outputs) > 1:
            vec = np.asarray(outputs[1], dtype=np.float32).reshape(-1)
        elif pooling == "cls":
            vec = emb[0]
        elif pooling in ("mean", "mean_sqrt_len"):
            total = (emb * mask[:, None]).sum(axis=0)
            count = max(mask.sum(), 1e-9)
            vec = total / (math.sqrt(count) if pooling == "mean_sqrt_len" else count)
        elif pooling == "max":
            vec = np.where(mask[:, None] > 0, emb, -1e9).max(axis=0)
        else:
            raise FakeUnsupported(f"pooling mode {pooling}")
        if self.config.get("normalize_result"):
            vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        return np.asarray(vec, dtype=np.float32).tolist()


@dataclass
class FakeTask:
    task_id: str
    task_type: str
    model_id: str | None
    state: str
    error: str | None = None
    polls_left: int = 0


class FakeCluster:
    """The cluster state plus the request handlers; tests inject failures through it."""

    def __init__(self, spec: OpenSearchSpec | None = None, *, task_polls: int = 1) -> None:
        self.spec = spec or load_spec()
        self.indices: dict[str, FakeIndex] = {}
        self.aliases: dict[str, set[str]] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.search_pipelines: dict[str, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self.connections: list[FakeConnection] = []
        self.request_failures: deque[tuple[str, int]] = deque()
        self.document_failures: dict[str, deque[int]] = {}
        self.document_rejections: dict[str, tuple[str, str]] = {}
        self.neural_search = True
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
        self.spec.validate_request(method, path, dict(params), parsed)
        self.requests.append(Request(method, path, dict(params), parsed, op.group))
        if self.request_failures and self.request_failures[0][0] == op.group:
            _, status = self.request_failures.popleft()
            return status, ApiError(status, ERROR_TYPES.get(status, "exception"), "injected").body()
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

    # -- names --------------------------------------------------------------------------------

    def resolve(self, expression: str, *, allow_missing: bool = False) -> list[str]:
        """Concrete indices for an expression of indices, aliases and wildcards."""
        found: list[str] = []
        for part in expression.split(","):
            if "*" in part:
                found += [n for n in self.indices if fnmatch.fnmatch(n, part)]
                for alias, members in self.aliases.items():
                    if fnmatch.fnmatch(alias, part):
                        found += sorted(members)
            elif part in self.indices:
                found.append(part)
            elif part in self.aliases:
                found += sorted(self.aliases[part])
            elif not allow_missing:
                raise ApiError(404, "index_not_found_exception", f"no such index [{part}]")
        return list(dict.fromkeys(found))

    def write_index(self, name: str) -> FakeIndex:
        if name in self.aliases:
            members = self.aliases[name]
            if len(members) != 1:
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"no write index is defined for alias [{name}]",
                )
            return self.indices[next(iter(members))]
        if name not in self.indices:
            self._create_index(name, {})
        return self.indices[name]

    def _check_index_name(self, name: str) -> None:
        if (
            name != name.lower()
            or name.startswith(("_", "-", "+"))
            or re.search(r'[\\/*?"<>| ,#:]', name)
        ):
            raise ApiError(400, "invalid_index_name_exception", f"Invalid index name [{name}]")
        if name in self.indices:
            raise ApiError(
                400, "resource_already_exists_exception", f"index [{name}] already exists"
            )
        if name in self.aliases:
            raise ApiError(400, "invalid_index_name_exception", f"[{name}] is an alias")

    def _create_index(self, name: str, body: Mapping[str, Any]) -> FakeIndex:
        self._check_index_name(name)
        matching = [
            t
            for t in self.templates.values()
            if any(fnmatch.fnmatch(name, p) for p in _values(t.get("index_patterns")))
        ]
        template = max(matching, key=lambda t: t.get("priority", 0), default={}).get("template", {})
        settings = _flatten(template.get("settings", {}))
        settings.update(_flatten(body.get("settings", {})))
        mappings = _deep_merge(template.get("mappings", {}), body.get("mappings", {}))
        index = FakeIndex(name=name, settings=settings, mappings=mappings)
        for prop_name, prop in index.properties.items():
            if prop.get("type") == "knn_vector" and settings.get("index.knn") != "true":
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"[{prop_name}] knn_vector needs index.knn=true",
                )
        self.indices[name] = index
        for alias in {**template.get("aliases", {}), **body.get("aliases", {})}:
            self.aliases.setdefault(alias, set()).add(name)
        return index

    # -- cluster ------------------------------------------------------------------------------

    def _h_info(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        return 200, {
            "cluster_name": "fake",
            "version": {"distribution": "opensearch", "number": "3.1.0"},
        }

    def _h_cluster_health(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        return 200, {"cluster_name": "fake", "status": "green", "number_of_nodes": 2}

    # -- indices ------------------------------------------------------------------------------

    def _h_indices_exists(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        try:
            return (200 if self.resolve(pp["index"]) else 404), ""
        except ApiError:
            return 404, ""

    def _h_indices_create(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        self._create_index(pp["index"], body or {})
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": pp["index"]}

    def _h_indices_get(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        names = self.resolve(pp["index"])
        return 200, {
            n: {
                "aliases": {a: {} for a, m in self.aliases.items() if n in m},
                "mappings": self.indices[n].mappings,
                "settings": self.indices[n].settings,
            }
            for n in names
        }

    def _h_indices_delete(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        for name in pp["index"].split(","):
            if name in self.aliases:
                raise ApiError(
                    400, "illegal_argument_exception", f"[{name}] is an alias, not an index"
                )
        for name in self.resolve(pp["index"]):
            self._delete_index(name)
        return 200, {"acknowledged": True}

    def _delete_index(self, name: str) -> None:
        del self.indices[name]
        for alias in list(self.aliases):
            self.aliases[alias].discard(name)
            if not self.aliases[alias]:
                del self.aliases[alias]

    def _h_indices_get_mapping(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        return 200, {n: {"mappings": self.indices[n].mappings} for n in self.resolve(pp["index"])}

    def _h_indices_put_settings(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        for name in self.resolve(pp["index"]):
            self.indices[name].settings.update(_flatten(body))
        return 200, {"acknowledged": True}

    def _h_indices_get_settings(
        self, pp: dict[str, str], params: dict[str, Any], body: Any
    ) -> tuple[int, Any]:
        if params.get("flat_settings") != "true":
            raise FakeUnsupported("nested settings output")
        return 200, {
            n: {"settings": dict(self.indices[n].settings)} for n in self.resolve(pp["index"])
        }

    def _h_indices_refresh(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        names = self.resolve(pp["index"])
        for name in names:
            self.indices[name].refresh()
        return 200, {"_shards": {"total": len(names), "successful": len(names), "failed": 0}}

    def _h_indices_exists_alias(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        return (200 if pp["name"] in self.aliases else 404), ""

    def _h_indices_get_alias(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        name = pp["name"]
        if name not in self.aliases:
            raise ApiError(404, "aliases_not_found_exception", f"alias [{name}] missing")
        return 200, {i: {"aliases": {name: {}}} for i in sorted(self.aliases[name])}

    def _h_indices_update_aliases(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        aliases = {k: set(v) for k, v in self.aliases.items()}
        # validated as a whole: an index removed in this call frees its name for an alias
        removed = [a["remove_index"]["index"] for a in body["actions"] if "remove_index" in a]
        for action in body["actions"]:
            ((kind, cfg),) = action.items()
            if kind == "remove_index":
                name = cfg["index"]
                if name not in self.indices:
                    raise ApiError(404, "index_not_found_exception", f"no such index [{name}]")
                continue
            index, alias = cfg["index"], cfg["alias"]
            if index not in self.indices:
                raise ApiError(404, "index_not_found_exception", f"no such index [{index}]")
            if kind == "add":
                if alias in self.indices and alias not in removed:
                    raise ApiError(
                        400,
                        "invalid_alias_name_exception",
                        f"an index exists with the same name as the alias [{alias}]",
                    )
                aliases.setdefault(alias, set()).add(index)
            else:
                if index not in aliases.get(alias, set()):
                    raise ApiError(404, "aliases_not_found_exception", f"aliases [{alias}] missing")
                aliases[alias].discard(index)
        for name in removed:
            del self.indices[name]
            for members in aliases.values():
                members.discard(name)
        self.aliases = {k: v for k, v in aliases.items() if v}
        return 200, {"acknowledged": True}

    # -- templates and pipelines --------------------------------------------------------------

    def _h_indices_put_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        self.templates[pp["name"]] = body
        return 200, {"acknowledged": True}

    def _h_indices_get_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        names = [n for n in self.templates if fnmatch.fnmatch(n, pp["name"])]
        if not names:
            raise ApiError(
                404,
                "resource_not_found_exception",
                f"index template matching [{pp['name']}] not found",
            )
        return 200, {
            "index_templates": [{"name": n, "index_template": self.templates[n]} for n in names]
        }

    def _h_indices_exists_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        return (200 if pp["name"] in self.templates else 404), ""

    def _h_indices_delete_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        if self.templates.pop(pp["name"], None) is None:
            raise ApiError(404, "index_template_missing_exception", f"[{pp['name']}] missing")
        return 200, {"acknowledged": True}

    def _h_ingest_delete_pipeline(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        if self.pipelines.pop(pp["id"], None) is None:
            raise ApiError(404, "resource_not_found_exception", f"pipeline [{pp['id']}] is missing")
        return 200, {"acknowledged": True}

    def _h_search_pipeline_delete(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        if self.search_pipelines.pop(pp["id"], None) is None:
            raise ApiError(404, "resource_not_found_exception", f"pipeline [{pp['id']}] is missing")
        return 200, {"acknowledged": True}

    def _h_ingest_put_pipeline(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        for proc in body["processors"]:
            ((kind, cfg),) = proc.items()
            if kind == "text_embedding" and cfg["model_id"] not in self.models:
                raise ApiError(
                    400, "illegal_argument_exception", f"model [{cfg['model_id']}] not found"
                )
        self.pipelines[pp["id"]] = body
        return 200, {"acknowledged": True}

    def _h_ingest_get_pipeline(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        found = {i: self.pipelines[i] for i in pp["id"].split(",") if i in self.pipelines}
        return (200 if found else 404), found

    def _h_search_pipeline_put(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        for proc in body.get("phase_results_processors", []):
            if not self.neural_search and "normalization-processor" in proc:
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    "Invalid processor type normalization-processor",
                )
        self.search_pipelines[pp["id"]] = body
        return 200, {"acknowledged": True}

    def _h_search_pipeline_get(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        found = {
            i: self.search_pipelines[i] for i in pp["id"].split(",") if i in self.search_pipelines
        }
        if not found:
            raise ApiError(404, "resource_not_found_exception", f"pipeline [{pp['id']}] not found")
        return 200, found

    # -- documents ----------------------------------------------------------------------------

    def _h_bulk(
        self, pp: dict[str, str], params: dict[str, Any], lines: list[Any]
    ) -> tuple[int, Any]:
        items: list[dict[str, Any]] = []
        refresh = params.get("refresh") in ("true", "wait_for", "")
        default_index = pp.get("index")
        i = 0
        touched: set[str] = set()
        while i < len(lines):
            ((kind, meta),) = lines[i].items()
            source = lines[i + 1] if kind != "delete" else None
            i += 1 if kind == "delete" else 2
            name = meta.get("_index", default_index)
            doc_id = meta.get("_id") or uuid.uuid4().hex
            try:
                index = self.write_index(name)
                touched.add(index.name)
                if kind == "delete":
                    existed = index.docs.pop(doc_id, None) is not None
                    items.append(
                        {
                            "delete": {
                                "_index": index.name,
                                "_id": doc_id,
                                "result": "deleted" if existed else "not_found",
                                "status": 200 if existed else 404,
                            }
                        }
                    )
                    continue
                if kind != "index":
                    raise FakeUnsupported(f"bulk action {kind}")
                item = self._index_document(
                    index, doc_id, source, meta.get("pipeline", params.get("pipeline"))
                )
                items.append({"index": item})
            except ApiError as exc:
                items.append(
                    {
                        kind: {
                            "_index": name,
                            "_id": doc_id,
                            "status": exc.status,
                            "error": {"type": exc.kind, "reason": exc.reason},
                        }
                    }
                )
        if refresh:
            for name in touched:
                self.indices[name].refresh()
        errors = any(
            next(iter(it.values()))["status"] >= 300 and "error" in next(iter(it.values()))
            for it in items
        )
        return 200, {"took": 1, "errors": errors, "items": items}

    def _index_document(
        self, index: FakeIndex, doc_id: str, source: dict[str, Any], pipeline: str | None
    ) -> dict[str, Any]:
        statuses = self.document_failures.get(doc_id)
        if statuses:
            status = statuses.popleft()
            raise ApiError(status, ERROR_TYPES.get(status, "exception"), "injected failure")
        if doc_id in self.document_rejections:
            kind, reason = self.document_rejections[doc_id]
            raise ApiError(400, kind, reason)
        source = json.loads(json.dumps(source))
        if pipeline and pipeline != "_none":
            if pipeline not in self.pipelines:
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"pipeline with id [{pipeline}] does not exist",
                )
            source = self._run_pipeline(self.pipelines[pipeline], source)
        self._check_document(index, source)
        created = doc_id not in index.docs
        index.docs[doc_id] = source
        index.versions[doc_id] = index.versions.get(doc_id, 0) + 1
        return {
            "_index": index.name,
            "_id": doc_id,
            "_version": index.versions[doc_id],
            "result": "created" if created else "updated",
            "status": 201 if created else 200,
        }

    def _check_document(self, index: FakeIndex, source: Mapping[str, Any]) -> None:
        props = index.properties
        strict = str(index.mappings.get("dynamic", "true")) == "strict"
        for name, value in source.items():
            prop = props.get(name)
            if prop is None:
                if strict:
                    raise ApiError(
                        400,
                        "strict_dynamic_mapping_exception",
                        f"mapping set to strict, dynamic introduction of [{name}] within [_doc] "
                        "is not allowed",
                    )
                continue
            kind = prop.get("type", "object")
            if value is None:
                continue
            if kind == "knn_vector":
                dim = prop["dimension"]
                if not isinstance(value, list) or not all(
                    isinstance(v, (int, float)) for v in value
                ):
                    raise ApiError(
                        400,
                        "mapper_parsing_exception",
                        f"failed to parse field [{name}] of type [knn_vector]",
                    )
                if len(value) != dim:
                    raise ApiError(
                        400,
                        "mapper_parsing_exception",
                        f"Vector dimension mismatch. Expected: {dim}, Given: {len(value)}",
                    )
            elif kind in ("text", "keyword") and not all(
                isinstance(v, (str, int, float, bool)) for v in _values(value)
            ):
                raise ApiError(
                    400,
                    "mapper_parsing_exception",
                    f"failed to parse field [{name}] of type [{kind}]",
                )
            elif kind == "binary":
                try:
                    base64.b64decode(value, validate=True)
                except (ValueError, TypeError) as exc:
                    raise ApiError(
                        400,
                        "mapper_parsing_exception",
                        f"failed to parse field [{name}] of type [binary]",
                    ) from exc
            elif kind == "object" and not isinstance(value, Mapping):
                raise ApiError(
                    400,
                    "mapper_parsing_exception",
                    f"object mapping for [{name}] tried to parse a value",
                )

    def _run_pipeline(self, pipeline: Mapping[str, Any], source: dict[str, Any]) -> dict[str, Any]:
        for proc in pipeline["processors"]:
            ((kind, cfg),) = proc.items()
            if "if" in cfg:
                raise FakeUnsupported("conditional processors")
            name = cfg.get("field")
            if kind == "set":
                if cfg.get("override", True) or source.get(name) in (None, ""):
                    source[name] = json.loads(json.dumps(cfg["value"]))
            elif kind == "trim":
                if name not in source:
                    if not cfg.get("ignore_missing"):
                        raise ApiError(
                            400,
                            "illegal_argument_exception",
                            f"field [{name}] not present as part of path [{name}]",
                        )
                    continue
                source[name] = str(source[name]).strip()
            elif kind == "remove":
                if name in source:
                    del source[name]
                elif not cfg.get("ignore_missing"):
                    raise ApiError(
                        400,
                        "illegal_argument_exception",
                        f"field [{name}] not present as part of path [{name}]",
                    )
            elif kind == "script" and cfg.get("tag") == "check-embedding":
                self._check_embedding_script(cfg["params"], source)
            elif kind == "text_embedding":
                model_id = cfg["model_id"]
                if self.models.get(model_id, {}).get("model_state") != "DEPLOYED":
                    raise ApiError(
                        400,
                        "illegal_argument_exception",
                        f"Model not ready yet. Please deploy the model first: {model_id}",
                    )
                for src, dst in cfg["field_map"].items():
                    if isinstance(source.get(src), str):
                        source[dst] = self.embedders[model_id].embed(source[src])
            else:
                raise FakeUnsupported(f"ingest processor {kind} (tag {cfg.get('tag')})")
        return source

    @staticmethod
    def _check_embedding_script(params: Mapping[str, Any], source: Mapping[str, Any]) -> None:
        """Python twin of the painless check in opensearch_assets._check_vector_script."""
        value = source.get(params["field"])
        if not isinstance(value, list):
            raise ApiError(
                400,
                "script_exception",
                f"[{params['field']}] must be an array of {params['dim']} numbers",
            )
        if len(value) != params["dim"]:
            raise ApiError(
                400,
                "script_exception",
                f"[{params['field']}] has {len(value)} values; the index expects {params['dim']}",
            )
        if params["unit"]:
            norm = sum(float(x) * float(x) for x in value)
            if abs(norm - 1.0) > params["tolerance"]:
                raise ApiError(
                    400,
                    "script_exception",
                    f"[{params['field']}] is not unit length (squared norm {norm})",
                )

    def _h_mget(self, pp: dict[str, str], params: dict[str, Any], body: Any) -> tuple[int, Any]:
        includes = [f for f in str(params.get("_source_includes", "")).split(",") if f]
        docs = []
        requests = [{"_index": pp.get("index"), "_id": i} for i in body.get("ids", [])]
        requests += body.get("docs", [])
        for req in requests:
            names = self.resolve(req["_index"])
            if len(names) != 1:
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"alias [{req['_index']}] has more than one index",
                )
            index = self.indices[names[0]]
            source = index.docs.get(req["_id"])
            if source is None:
                docs.append({"_index": index.name, "_id": req["_id"], "found": False})
            else:
                docs.append(
                    {
                        "_index": index.name,
                        "_id": req["_id"],
                        "_version": index.versions[req["_id"]],
                        "found": True,
                        "_source": _project(source, includes),
                    }
                )
        return 200, {"docs": docs}

    # -- search -------------------------------------------------------------------------------

    def _h_count(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        count = 0
        for name in self.resolve(pp.get("index", "*")):
            index = self.indices[name]
            count += len(
                self._evaluate(
                    (body or {}).get("query", {"match_all": {}}), index, index.searchable
                )
            )
        return 200, {"count": count}

    def _h_search(self, pp: dict[str, str], params: dict[str, Any], body: Any) -> tuple[int, Any]:
        body = body or {}
        query = body.get("query", {"match_all": {}})
        size = body.get("size", 10)
        hits: list[dict[str, Any]] = []
        for name in self.resolve(pp.get("index", "*")):
            index = self.indices[name]
            if "hybrid" in query:
                scores = self._hybrid(query["hybrid"], index, size, params.get("search_pipeline"))
            else:
                scores = self._evaluate(query, index, index.searchable)
            hits += [
                {"_index": name, "_id": i, "_score": s, "_source": index.searchable[i]}
                for i, s in scores.items()
            ]
        sort = body.get("sort")
        if sort:
            first = sort[0] if isinstance(sort, list) else sort
            ((field_name, order),) = (
                first if isinstance(first, Mapping) else {first: "asc"}
            ).items()
            reverse = (order if isinstance(order, str) else order.get("order", "asc")) == "desc"
            hits = [h for h in hits if _get_path(h["_source"], field_name) is not None]
            hits.sort(key=lambda h: _get_path(h["_source"], field_name), reverse=reverse)
            for h in hits:
                h["sort"] = [_get_path(h["_source"], field_name)]
                h["_score"] = None
            if "search_after" in body:
                after = body["search_after"][0]
                hits = [
                    h for h in hits if (h["sort"][0] < after if reverse else h["sort"][0] > after)
                ]
        else:
            hits.sort(key=lambda h: (-h["_score"], h["_id"]))
        total = len(hits)
        start = body.get("from", 0)
        hits = hits[start : start + size]
        source_spec = body.get("_source", True)
        for h in hits:
            if source_spec is False:
                del h["_source"]
            elif isinstance(source_spec, Mapping):
                h["_source"] = _project(h["_source"], source_spec.get("includes", []))
            elif isinstance(source_spec, list):
                h["_source"] = _project(h["_source"], source_spec)
            else:
                h["_source"] = json.loads(json.dumps(h["_source"]))
        scores = [h["_score"] for h in hits if h["_score"] is not None]
        return 200, {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {
                "total": {"value": total, "relation": "eq"},
                "max_score": max(scores) if scores else None,
                "hits": hits,
            },
        }

    def _evaluate(
        self, query: Mapping[str, Any], index: FakeIndex, docs: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, float]:
        """Matching document ids with their scores."""
        ((kind, spec),) = query.items()
        if kind == "match_all":
            return dict.fromkeys(docs, 1.0)
        if kind in ("term", "terms"):
            ((fname, wanted),) = ((k, v) for k, v in spec.items() if k not in ("boost", "_name"))
            if kind == "term" and isinstance(wanted, Mapping):
                wanted = wanted["value"]
            wanted_set = set(_values(wanted)) if kind == "terms" else {wanted}
            return {
                i: 1.0
                for i, src in docs.items()
                if wanted_set & set(map(_hashable, _values(_get_path(src, fname))))
            }
        if kind == "ids":
            return {i: 1.0 for i in spec["values"] if i in docs}
        if kind == "exists":
            return {i: 1.0 for i, src in docs.items() if _get_path(src, spec["field"]) is not None}
        if kind == "bool":
            return self._bool(spec, index, docs)
        if kind == "match":
            ((fname, value),) = spec.items()
            text = value["query"] if isinstance(value, Mapping) else value
            return self._match(index, docs, fname, str(text))
        if kind == "knn":
            ((fname, clause),) = spec.items()
            return self._knn(index, docs, fname, clause)
        raise FakeUnsupported(f"query type {kind}")

    def _bool(
        self, spec: Mapping[str, Any], index: FakeIndex, docs: Mapping[str, Any]
    ) -> dict[str, float]:
        candidates = dict.fromkeys(docs, 0.0)
        for clause in _values(spec.get("filter")):
            matched = self._evaluate(clause, index, docs)
            candidates = {i: s for i, s in candidates.items() if i in matched}
        for clause in _values(spec.get("must")):
            matched = self._evaluate(clause, index, docs)
            candidates = {i: s + matched[i] for i, s in candidates.items() if i in matched}
        for clause in _values(spec.get("must_not")):
            matched = self._evaluate(clause, index, docs)
            candidates = {i: s for i, s in candidates.items() if i not in matched}
        should = _values(spec.get("should"))
        if should:
            hits: Counter[str] = Counter()
            scores: dict[str, float] = {}
            for clause in should:
                for i, s in self._evaluate(clause, index, docs).items():
                    hits[i] += 1
                    scores[i] = scores.get(i, 0.0) + s
            required = spec.get(
                "minimum_should_match", 0 if (spec.get("must") or spec.get("filter")) else 1
            )
            candidates = {
                i: s + scores.get(i, 0.0) for i, s in candidates.items() if hits[i] >= int(required)
            }
        if not spec.get("must") and not should:
            candidates = dict.fromkeys(candidates, 0.0)
        return candidates

    def _field_text(self, index: FakeIndex, source: Mapping[str, Any], fname: str) -> str:
        sources = [n for n, p in index.properties.items() if fname in _values(p.get("copy_to"))]
        parts = (
            [str(_get_path(source, n) or "") for n in sources]
            if sources
            else [str(_get_path(source, fname) or "")]
        )
        return " ".join(parts)

    def _match(
        self, index: FakeIndex, docs: Mapping[str, Any], fname: str, text: str
    ) -> dict[str, float]:
        terms = set(_tokens(text))
        tokenised = {
            i: Counter(_tokens(self._field_text(index, src, fname))) for i, src in docs.items()
        }
        n = max(len(tokenised), 1)
        df = Counter(t for counts in tokenised.values() for t in counts if t in terms)
        out: dict[str, float] = {}
        for i, counts in tokenised.items():
            score = sum(
                math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                * counts[t]
                * 2.2
                / (counts[t] + 1.2)
                for t in terms
                if counts[t]
            )
            if score > 0:
                out[i] = score
        return out

    def _knn(
        self, index: FakeIndex, docs: Mapping[str, Any], fname: str, clause: Mapping[str, Any]
    ) -> dict[str, float]:
        prop = index.properties.get(fname)
        if prop is None or prop.get("type") != "knn_vector":
            raise ApiError(400, "query_shard_exception", f"field [{fname}] is not a knn_vector")
        method = prop.get("method", {})
        space = method.get("space_type", prop.get("space_type", "l2"))
        vector = np.asarray(clause["vector"], dtype=np.float32)
        if vector.shape[0] != prop["dimension"]:
            raise ApiError(
                400,
                "illegal_argument_exception",
                f"Query vector has invalid dimension: {vector.shape[0]}. "
                f"Dimension should be: {prop['dimension']}",
            )
        encoder = method.get("parameters", {}).get("encoder", {})
        fp16 = encoder.get("name") == "sq" and method.get("engine") == "faiss"
        allowed = self._evaluate(clause["filter"], index, docs) if "filter" in clause else docs
        scores = {}
        for i in allowed:
            stored = _get_path(docs[i], fname)
            if stored is None:
                continue
            doc = np.asarray(stored, dtype=np.float32)
            if fp16:  # SQfp16 stores the graph's vectors as half floats
                doc = doc.astype(np.float16).astype(np.float32)
            scores[i] = knn_score(space, vector, doc)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: int(clause["k"])]
        return dict(ranked)

    def _hybrid(
        self, spec: Mapping[str, Any], index: FakeIndex, size: int, pipeline: str | None
    ) -> dict[str, float]:
        processor = None
        for proc in self.search_pipelines.get(pipeline or "", {}).get(
            "phase_results_processors", []
        ):
            processor = proc.get("normalization-processor")
        if processor is None:
            raise ApiError(
                400,
                "illegal_argument_exception",
                "hybrid query must be used with a search pipeline that has a normalization "
                "processor",
            )
        if (
            processor["normalization"]["technique"] != "min_max"
            or processor["combination"]["technique"] != "arithmetic_mean"
        ):
            raise FakeUnsupported("only min_max + arithmetic_mean")
        queries = spec["queries"]
        weights = processor["combination"].get("parameters", {}).get("weights") or [1.0] * len(
            queries
        )
        per_query = []
        for sub in queries:
            scores = self._evaluate(sub, index, index.searchable)
            top = dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:size])
            if top:
                lo, hi = min(top.values()), max(top.values())
                top = {
                    i: (1.0 if hi == lo else max((s - lo) / (hi - lo), 0.001))
                    for i, s in top.items()
                }
            per_query.append(top)
        ids = set().union(*per_query)
        return {
            i: sum(w * q.get(i, 0.0) for w, q in zip(weights, per_query, strict=True))
            / sum(weights)
            for i in ids
        }

    # -- ML Commons ---------------------------------------------------------------------------

    def _task(self, task_type: str, model_id: str | None, error: str | None = None) -> FakeTask:
        task = FakeTask(
            task_id=self._next_id("task-"),
            task_type=task_type,
            model_id=model_id,
            state="FAILED" if error else "COMPLETED",
            error=error,
            polls_left=self.task_polls,
        )
        self.tasks[task.task_id] = task
        return task

    def _new_model(self, body: Mapping[str, Any]) -> str:
        model_id = self._next_id("model-")
        self.models[model_id] = {
            "model_id": model_id,
            "name": body["name"],
            "model_version": body["version"],
            "model_format": body["model_format"],
            "model_config": body["model_config"],
            "model_content_hash_value": body["model_content_hash_value"],
            "model_content_size_in_bytes": body.get("model_content_size_in_bytes"),
            "total_chunks": body.get("total_chunks"),
            "model_state": "REGISTERING",
            "algorithm": "TEXT_EMBEDDING",
        }
        return model_id

    def _finish_registration(self, model_id: str, content: bytes) -> str | None:
        model = self.models[model_id]
        if hashlib.sha256(content).hexdigest() != model["model_content_hash_value"]:
            model["model_state"] = "REGISTER_FAILED"
            return "model content hash can't match original hash value"
        model["model_state"] = "REGISTERED"
        model["model_content_size_in_bytes"] = len(content)
        self.model_chunks[model_id] = {0: content}
        return None

    def _h_ml_register_model_meta(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        model_id = self._new_model(body)
        self.model_chunks[model_id] = {}
        return 200, {"model_id": model_id, "status": "CREATED"}

    def _h_ml_upload_chunk(self, pp: dict[str, str], params: Any, body: bytes) -> tuple[int, Any]:
        if not self.ml_allow_local_file:
            raise ApiError(
                400,
                "illegal_argument_exception",
                "To upload custom model from local file, user needs to enable "
                "allow_registering_model_via_local_file settings.",
            )
        model_id = pp["model_id"]
        if model_id not in self.models:
            raise ApiError(404, "status_exception", f"Failed to find model {model_id}")
        chunks = self.model_chunks[model_id]
        chunks[int(pp["chunk_number"])] = body
        total = self.models[model_id]["total_chunks"]
        if len(chunks) == total:
            content = b"".join(chunks[i] for i in range(total))
            self._finish_registration(model_id, content)
        return 200, {"status": "Uploaded"}

    def _h_ml_register_model(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        if not self.ml_allow_url:
            raise ApiError(
                400,
                "illegal_argument_exception",
                "To upload custom model user needs to enable "
                "allow_registering_model_via_url settings.",
            )
        model_id = self._new_model(body)
        content = self.ml_url_content.get(body["url"])
        error = (
            "cannot download the model"
            if content is None
            else self._finish_registration(model_id, content)
        )
        task = self._task("REGISTER_MODEL", model_id, error)
        return 200, {"task_id": task.task_id, "status": "CREATED"}

    def _h_ml_deploy_model(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        model_id = pp["model_id"]
        model = self.models.get(model_id)
        if model is None:
            raise ApiError(404, "status_exception", f"Failed to find model {model_id}")
        if model["model_state"] not in ("REGISTERED", "DEPLOYED", "DEPLOY_FAILED"):
            raise ApiError(
                400, "illegal_argument_exception", f"model {model_id} is {model['model_state']}"
            )
        error = None
        try:
            self.embedders[model_id] = FakeMLEmbedder(
                self.model_chunks[model_id][0], model["model_config"]
            )
            model["model_state"] = "DEPLOYED"
        except Exception as exc:  # what ML Commons reports on the task
            error = f"{type(exc).__name__}: {exc}"
            model["model_state"] = "DEPLOY_FAILED"
        task = self._task("DEPLOY_MODEL", model_id, error)
        return 200, {"task_id": task.task_id, "task_type": "DEPLOY_MODEL", "status": "CREATED"}

    def _h_ml_get_task(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        task = self.tasks.get(pp["task_id"])
        if task is None:
            raise ApiError(404, "status_exception", "Failed to find task")
        state = task.state
        if task.polls_left > 0:
            task.polls_left -= 1
            state = "RUNNING"
        out = {
            "task_id": task.task_id,
            "model_id": task.model_id,
            "task_type": task.task_type,
            "function_name": "TEXT_EMBEDDING",
            "state": state,
            "is_async": True,
        }
        if task.error and state == "FAILED":
            out["error"] = task.error
        return 200, out

    def _h_ml_get_model(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        model = self.models.get(pp["model_id"])
        if model is None:
            raise ApiError(404, "status_exception", "Failed to find model")
        return 200, dict(model)

    def _h_ml_search_models(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        docs = {i: m for i, m in self.models.items()}
        index = FakeIndex("ml-models", {}, {"properties": {}})
        scores = self._evaluate(body.get("query", {"match_all": {}}), index, docs)
        hits = [
            {"_index": ".plugins-ml-model", "_id": i, "_score": s, "_source": docs[i]}
            for i, s in sorted(scores.items())
        ]
        return 200, {
            "hits": {
                "total": {"value": len(hits), "relation": "eq"},
                "hits": hits[: body.get("size", 10)],
            }
        }


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def _project(source: Mapping[str, Any], includes: list[str]) -> dict[str, Any]:
    if not includes:
        return json.loads(json.dumps(source))
    return {
        k: json.loads(json.dumps(v))
        for k, v in source.items()
        if any(fnmatch.fnmatch(k, p) for p in includes)
    }


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


def build_onnx_model_dir(
    folder: Any, *, dim: int = 8, max_doc_length: int = 16, seed: int = 0
) -> Any:
    """A model directory without torch: manifest.json, tokenizer.json, a tiny ONNX encoder.

    The encoder follows the exporter's contract (inputs input_ids, attention_mask,
    token_type_ids; output `embedding` [batch, dim], mean-pooled and L2-normalised).
    """
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from tokenizers.processors import TemplateProcessing

    from twinbert_search.manifest import ModelManifest

    folder = Path(folder)
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    words = TINY_WORDS.split()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {
        t: i
        for i, t in enumerate(
            dict.fromkeys(specials + words + letters + [f"##{c}" for c in letters])
        )
    }
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = BertNormalizer(lowercase=True)
    tok.pre_tokenizer = BertPreTokenizer()
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.save(str(folder / "tokenizer.json"))

    rng = np.random.default_rng(seed)
    table = rng.standard_normal((len(vocab), dim)).astype(np.float32)
    types = rng.standard_normal((2, dim)).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tok"]),
        helper.make_node("Gather", ["types", "token_type_ids"], ["typ"]),
        helper.make_node("Add", ["tok", "typ"], ["x"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["x", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("Mul", ["mean", "mean"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axis1"], ["sqsum"], keepdims=1),
        helper.make_node("Sqrt", ["sqsum"], ["norm"]),
        helper.make_node("Max", ["norm", "eps"], ["safe"]),
        helper.make_node("Div", ["mean", "safe"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-document-encoder",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(types, "types"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "eps"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "onnx" / "document_encoder.onnx"))
    ModelManifest(
        dim=dim,
        fingerprint=hashlib.sha256(table.tobytes()).hexdigest()[:32],
        max_doc_length=max_doc_length,
        onnx={"document_encoder": "onnx/document_encoder.onnx"},
    ).save(folder)
    return folder


def encode_with_onnx(model_dir: Any, texts: list[str]) -> np.ndarray:
    """Reference document vectors: the original encoder, one text at a time, truncated."""
    from pathlib import Path

    import onnxruntime as ort
    from tokenizers import Tokenizer

    from twinbert_search.manifest import ModelManifest

    model_dir = Path(model_dir)
    manifest = ModelManifest.load(model_dir)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=manifest.max_doc_length)
    session = ort.InferenceSession(
        str(model_dir / manifest.onnx["document_encoder"]), providers=["CPUExecutionProvider"]
    )
    out = []
    for text in texts:
        enc = tok.encode(text)
        feeds = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
        }
        out.append(session.run(["embedding"], feeds)[0][0])
    return np.asarray(out, dtype=np.float32)
