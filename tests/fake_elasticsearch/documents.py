"""Document handlers of the fake cluster: bulk, ingest pipelines, mapping checks, mget.

Bulk answers per item (injected transient or permanent failures included); documents pass
their ingest pipeline (set, trim, remove, and the vector check script by its tag) and then
the strict mapping, with Elasticsearch's own refusals: a `dense_vector` of another dimension,
and a vector that is not unit length under `dot_product`.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from tests.fake_cluster_common import (
    FakeIndex,
    FakeUnsupported,
    as_list,
    project_source,
    without_unnamed_vectors,
)
from tests.fake_elasticsearch.common import ERROR_TYPES, ApiError

UNIT_TOLERANCE = 1e-4  # Elasticsearch's check: |squared magnitude - 1| within a float error


class DocumentsApi:
    """A mixin of FakeElasticsearch, which holds the state and `resolve`/`write_index`."""

    indices: dict[str, FakeIndex]
    pipelines: dict[str, dict[str, Any]]
    document_failures: dict[str, deque[int]]
    document_rejections: dict[str, tuple[str, str]]

    def _h_bulk(
        self, pp: dict[str, str], params: dict[str, Any], lines: list[Any]
    ) -> tuple[int, Any]:
        items: list[dict[str, Any]] = []
        touched: set[str] = set()
        i = 0
        while i < len(lines):
            ((kind, meta),) = lines[i].items()
            source = lines[i + 1] if kind != "delete" else None
            i += 1 if kind == "delete" else 2
            name = meta.get("_index", pp.get("index"))
            doc_id = meta.get("_id") or uuid.uuid4().hex
            try:
                index = self.write_index(name)  # type: ignore[attr-defined]
                touched.add(index.name)
                if kind == "delete":
                    existed = index.docs.pop(doc_id, None) is not None
                    items.append({"delete": {
                        "_index": index.name, "_id": doc_id,
                        "result": "deleted" if existed else "not_found",
                        "status": 200 if existed else 404,
                    }})  # fmt: skip
                    continue
                if kind != "index":
                    raise FakeUnsupported(f"bulk action {kind}")
                pipeline = meta.get("pipeline", params.get("pipeline"))
                items.append({"index": self._index_document(index, doc_id, source, pipeline)})
            except ApiError as exc:
                error = {"type": exc.kind, "reason": exc.reason}
                items.append(
                    {kind: {"_index": name, "_id": doc_id, "status": exc.status, "error": error}}
                )
        if params.get("refresh") in ("true", "wait_for", ""):
            for name in touched:
                self.indices[name].refresh()
        errors = any("error" in next(iter(it.values())) for it in items)
        return 200, {"took": 1, "errors": errors, "items": items}

    def _h_index(self, pp: dict[str, str], params: dict[str, Any], body: Any) -> tuple[int, Any]:
        index = self.write_index(pp["index"])  # type: ignore[attr-defined]
        item = self._index_document(index, pp["id"], body, params.get("pipeline"))
        if params.get("refresh") in ("true", "wait_for", ""):
            index.refresh()
        return item.pop("status"), item

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
        self._check_document(index, doc_id, source)
        created = doc_id not in index.docs
        index.docs[doc_id] = source
        index.written(doc_id)
        return {
            "_index": index.name,
            "_id": doc_id,
            "_version": index.versions[doc_id],
            "result": "created" if created else "updated",
            "status": 201 if created else 200,
        }

    def _check_document(self, index: FakeIndex, doc_id: str, source: Mapping[str, Any]) -> None:
        strict = str(index.mappings.get("dynamic", "true")) == "strict"
        for name, value in source.items():
            prop = index.properties.get(name)
            if prop is None:
                if strict:
                    raise ApiError(
                        400,
                        "strict_dynamic_mapping_exception",
                        f"[1:2] mapping set to strict, dynamic introduction of [{name}] within "
                        "[_doc] is not allowed",
                    )
                continue
            if value is not None:
                self._check_field(name, prop, value, doc_id)

    @staticmethod
    def _check_field(name: str, prop: Mapping[str, Any], value: Any, doc_id: str) -> None:
        kind = prop.get("type", "object")
        if kind == "dense_vector":
            if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
                raise ApiError(
                    400,
                    "document_parsing_exception",
                    f"[1:2] failed to parse field [{name}] of type [dense_vector] in document "
                    f"with id '{doc_id}'",
                )
            if len(value) != prop["dims"]:
                raise ApiError(
                    400,
                    "document_parsing_exception",
                    f"[1:2] failed to parse: The [dense_vector] field [{name}] in doc [document "
                    f"with id '{doc_id}'] has a different number of dimensions [{len(value)}] "
                    f"than defined in the mapping [{prop['dims']}]",
                )
            squared = sum(float(v) * float(v) for v in value)
            if prop.get("similarity") == "dot_product" and abs(squared - 1.0) > UNIT_TOLERANCE:
                preview = ", ".join(f"{v:.8g}" for v in value[:5])
                raise ApiError(
                    400,
                    "document_parsing_exception",
                    "[1:2] failed to parse: The [dot_product] similarity can only be used with "
                    f"unit-length vectors. Preview of invalid vector: [{preview}, ...]",
                )
            if not all(math.isfinite(float(v)) for v in value):
                raise ApiError(
                    400,
                    "document_parsing_exception",
                    "[1:2] failed to parse: vector values must be finite",
                )
        elif kind in ("text", "keyword") and not all(
            isinstance(v, (str, int, float, bool)) for v in as_list(value)
        ):
            raise ApiError(
                400,
                "document_parsing_exception",
                f"[1:2] failed to parse field [{name}] of type [{kind}]",
            )
        elif kind == "binary":
            try:
                base64.b64decode(value, validate=True)
            except (ValueError, TypeError) as exc:
                raise ApiError(
                    400,
                    "document_parsing_exception",
                    f"[1:2] failed to parse field [{name}] of type [binary]",
                ) from exc
        elif kind == "object" and not isinstance(value, Mapping):
            raise ApiError(
                400,
                "document_parsing_exception",
                f"[1:2] object mapping for [{name}] tried to parse field [{name}] as object, "
                "but found a concrete value",
            )

    def _run_pipeline(self, pipeline: Mapping[str, Any], source: dict[str, Any]) -> dict[str, Any]:
        for proc in pipeline["processors"]:
            ((kind, cfg),) = proc.items()
            name = cfg.get("field")
            if kind == "set":
                if cfg.get("override", True) or source.get(name) in (None, ""):
                    source[name] = json.loads(json.dumps(cfg["value"]))
            elif kind in ("trim", "remove"):
                if name not in source:
                    if not cfg.get("ignore_missing"):
                        raise ApiError(
                            400,
                            "illegal_argument_exception",
                            f"field [{name}] not present as part of path [{name}]",
                        )
                elif kind == "trim":
                    source[name] = str(source[name]).strip()
                else:
                    del source[name]
            elif kind == "script" and cfg.get("tag") == "check-embedding":
                self._check_embedding_script(cfg["params"], source)
            else:
                raise FakeUnsupported(f"ingest processor {kind} (tag {cfg.get('tag')})")
        return source

    @staticmethod
    def _check_embedding_script(params: Mapping[str, Any], source: Mapping[str, Any]) -> None:
        """Python twin of the Painless check in stores/cluster/pipelines.py."""
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
        for doc_id in body.get("ids", []):
            names = self.resolve(pp["index"])  # type: ignore[attr-defined]
            if len(names) != 1:
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"alias [{pp['index']}] has more than one index associated with it, "
                    "can't execute a single index op",
                )
            index = self.indices[names[0]]
            source = index.docs.get(doc_id)
            if source is None:
                docs.append({"_index": index.name, "_id": doc_id, "found": False})
            else:
                docs.append({
                    "_index": index.name, "_id": doc_id, "_version": index.versions[doc_id],
                    **index.doc_seq(doc_id), "found": True, "_source": without_unnamed_vectors(
                        project_source(source, includes), index.mappings, includes
                    ),
                })  # fmt: skip
        return 200, {"docs": docs}
