"""Document handlers of the fake cluster: bulk, ingest pipelines, mapping checks, mget.

Bulk answers per item (injected transient or permanent failures included); documents pass
their ingest pipeline (set, trim, remove, the vector check script by its tag,
text_embedding) and then the strict mapping (knn_vector dimensions, objects), failing with
the engine's error types, reasons and causes.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from tests.fake_cluster_common import FakeIndex, FakeUnsupported, as_list, project_source
from tests.fake_opensearch.common import ERROR_TYPES, ApiError
from tests.fake_opensearch.ml import FakeMLEmbedder


def field_error(name: str, kind: str, doc_id: str, value: Any, cause: tuple[str, str]) -> ApiError:
    """The engine's mapper_parsing_exception for a value its field cannot take."""
    preview = value if isinstance(value, str) else "null"
    return ApiError(
        400,
        "mapper_parsing_exception",
        f"failed to parse field [{name}] of type [{kind}] in document with id '{doc_id}'. "
        f"Preview of field's value: '{preview}'",
        cause,
    )


class DocumentsApi:
    """`bulk` and `mget`, and what a document goes through on its way in.

    A mixin of FakeCluster, which holds the state and `resolve`/`write_index` (IndicesApi).
    """

    indices: dict[str, FakeIndex]
    pipelines: dict[str, dict[str, Any]]
    models: dict[str, dict[str, Any]]
    embedders: dict[str, FakeMLEmbedder]
    document_failures: dict[str, deque[int]]
    document_rejections: dict[str, tuple[str, str]]

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
                            "error": exc.error(),
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
        """The strict mapping, with the engine's (2.19.1) error types and wording."""
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

            def unparsable(cause: tuple[str, str], kind: str = kind, name: str = name) -> ApiError:
                return field_error(name, kind, doc_id, source[name], cause)

            if kind == "knn_vector":
                dim = prop["dimension"]
                given = value if isinstance(value, list) else []
                if not all(isinstance(v, (int, float)) for v in given):
                    raise unparsable(
                        ("illegal_argument_exception", "vector values must be numbers")
                    )
                if len(given) != dim:
                    raise unparsable(
                        (
                            "illegal_argument_exception",
                            f"Vector dimension mismatch. Expected: {dim}, Given: {len(given)}",
                        )
                    )
            elif kind in ("text", "keyword") and not all(
                isinstance(v, (str, int, float, bool)) for v in as_list(value)
            ):
                raise unparsable(("illegal_state_exception", "Can't get text on a START_OBJECT"))
            elif kind == "object" and not isinstance(value, Mapping):
                raise ApiError(
                    400,
                    "mapper_parsing_exception",
                    f"object mapping for [{name}] tried to parse field [{name}] as object, but "
                    "found a concrete value",
                )
            # `binary` without doc_values is not decoded at index time: any string is kept

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
        """Python twin of the painless check in stores/opensearch/assets.py.

        Painless reports a thrown exception as `script_exception: runtime error`, with the
        message in `caused_by`.
        """

        def thrown(message: str) -> ApiError:
            return ApiError(
                400, "script_exception", "runtime error", ("illegal_argument_exception", message)
            )

        field, dim = params["field"], params["dim"]
        value = source.get(field)
        if not isinstance(value, list):
            raise thrown(f"[{field}] must be an array of {dim} numbers")
        if len(value) != dim:
            raise thrown(f"[{field}] has {len(value)} values; the index expects {dim}")
        if params["unit"]:
            norm = sum(float(x) * float(x) for x in value)
            if abs(norm - 1.0) > params["tolerance"]:
                raise thrown(f"[{field}] is not unit length (squared norm {norm})")

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
                        **index.doc_seq(req["_id"]),
                        "found": True,
                        "_source": project_source(source, includes),
                    }
                )
        return 200, {"docs": docs}
