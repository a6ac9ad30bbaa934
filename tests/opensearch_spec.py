"""Validate request bodies against the official OpenSearch API specification, then stricter.

The specification (../shared/opensearch-api-spec, OpenAPI 3.1 YAML) is loaded with PyYAML and
its `$ref`s between files are resolved with `referencing`; a (method, path, params, body) is
matched to its operation and the body validated against that operation's request body schema.

The specification is permissive where our mistakes would hide (unknown query types and
processors pass, misspelt top-level keys pass, `knn_vector.method.parameters` is any object),
so `strict_errors` adds the project's own checks on top. Two places where the specification
disagrees with the server are listed in SPEC_GAPS with the server code that decides.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_ROOT = Path(
    os.environ.get(
        "OPENSEARCH_API_SPEC",
        Path(__file__).resolve().parents[2] / "shared" / "opensearch-api-spec",
    )
)
SPEC_DIR = SPEC_ROOT / "spec"

# Where the specification and the server disagree; each entry names the server code that wins.
SPEC_GAPS: dict[str, str] = {
    "ml.upload_chunk": (
        "the spec describes a JSON body {chunk: string}; ml-commons "
        "RestMLUploadModelChunkAction reads the raw request bytes (request.content()), as "
        "opensearch-py-ml's ModelUploader sends them; checked project-side instead"
    ),
    "ml.register_model_meta.model_content_size_in_bytes": (
        "absent from the spec's register_model_meta body; ml-commons MLRegisterModelMetaInput "
        "parses it and opensearch-py-ml sends it"
    ),
}
RAW_BODY_GROUPS = frozenset({"ml.upload_chunk"})
EXTRA_TOP_LEVEL_KEYS = {"ml.register_model_meta": {"model_content_size_in_bytes"}}
MAX_CHUNK_BYTES = 10_000_000

KNN_ENGINES = {"faiss": {"hnsw"}, "lucene": {"hnsw"}}
KNN_SPACES = {
    "faiss": {"l2", "innerproduct", "cosinesimil", "hamming"},
    "lucene": {"l2", "innerproduct", "cosinesimil"},
}
KNN_METHOD_PARAMETERS = {
    "faiss": {"m", "ef_construction", "ef_search", "encoder"},
    "lucene": {"m", "ef_construction", "encoder"},
}
KNN_ENCODERS = {"faiss": {"flat", "sq", "pq"}, "lucene": {"sq"}}
KNN_ENCODER_PARAMETERS = {
    ("faiss", "sq"): {"type": {"fp16", "bf16"}, "clip": {True, False}},
    ("lucene", "sq"): {"confidence_interval": None, "bits": {4, 7}},
    ("faiss", "flat"): {},
}
KNN_DATA_TYPES = {"float", "byte", "binary"}
KNN_QUERY_KEYS = {
    "vector", "k", "min_score", "max_distance", "filter", "method_parameters", "rescore",
    "expand_nested_docs", "boost", "_name",
}  # fmt: skip
BOOL_KEYS = {"must", "filter", "should", "must_not", "minimum_should_match", "boost", "_name"}
FRAMEWORK_TYPES = {"sentence_transformers", "huggingface_transformers",
                   "huggingface_transformers_neuron"}  # fmt: skip
POOLING_MODES = {"mean", "mean_sqrt_len", "max", "weightedmean", "cls", "lasttoken", "none"}
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SpecViolation(AssertionError):
    """A request the specification (or the project's stricter checks) rejects."""


@dataclass(frozen=True)
class Operation:
    group: str  # x-operation-group, e.g. "indices.create"
    operation_id: str
    method: str
    template: str
    namespace: str
    pointer: str  # JSON pointer to the operation object in its namespace file
    query_params: frozenset[str]
    request_body: Mapping[str, Any] | None  # the resolved requestBody object
    body_pointer: str | None  # JSON pointer to the resolved requestBody in its file
    body_file: str | None


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _load_yaml(path: Path) -> Any:
    with path.open("rb") as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


class OpenSearchSpec:
    """The specification, indexed by path template for request matching."""

    def __init__(self, spec_dir: Path = SPEC_DIR) -> None:
        if not (spec_dir / "namespaces").is_dir():
            # Like the SciFact tests: skip cleanly, and say why, where shared/ is absent.
            pytest.skip(
                f"OpenSearch API specification not found at {spec_dir}; it is expected at "
                "../shared/opensearch-api-spec (or set OPENSEARCH_API_SPEC)"
            )
        self.spec_dir = spec_dir.resolve()
        self._docs: dict[str, Any] = {}
        self.registry: Registry = Registry(retrieve=self._retrieve)  # type: ignore[call-arg]
        self._routes: list[tuple[int, int, re.Pattern[str], str, str, str]] = []
        self._global_params = set(
            _load_yaml(self.spec_dir / "_global_parameters.yaml")["components"]["parameters"]
        )
        for path in sorted((self.spec_dir / "namespaces").glob("*.yaml")):
            doc = self.document(path.as_uri())
            for template, item in (doc.get("paths") or {}).items():
                segments = [s for s in template.split("/") if s]
                literal = sum(1 for s in segments if not s.startswith("{"))
                regex = "^/" + "/".join(
                    "[^/]+" if s.startswith("{") else re.escape(s) for s in segments
                )
                for method in item:
                    if method in ("get", "put", "post", "delete", "head", "patch"):
                        self._routes.append(
                            (literal, -len(segments), re.compile(regex + "/?$"), template,
                             method.upper(), path.as_uri())
                        )  # fmt: skip

    def document(self, uri: str) -> Any:
        uri = uri.split("#", 1)[0]
        if uri not in self._docs:
            self._docs[uri] = _load_yaml(Path(unquote(uri.removeprefix("file://"))))
        return self._docs[uri]

    def _retrieve(self, uri: str) -> Resource:
        return Resource.from_contents(self.document(uri), default_specification=DRAFT202012)

    def _resolve_ref(self, base_uri: str, node: Mapping[str, Any]) -> tuple[str, str, Any]:
        """Follow `$ref`s from `node`; returns (file uri, pointer, target object)."""
        uri, pointer = base_uri, ""
        while isinstance(node, Mapping) and "$ref" in node:
            ref = node["$ref"]
            file_part, _, fragment = ref.partition("#")
            if file_part:
                uri = (Path(unquote(uri.removeprefix("file://"))).parent / file_part).resolve()
                uri = uri.as_uri()
            pointer = fragment
            node = self.document(uri)
            for token in pointer.strip("/").split("/"):
                if token:
                    node = node[token.replace("~1", "/").replace("~0", "~")]
        return uri, pointer, node

    def find_operation(self, method: str, path: str) -> Operation:
        path = "/" + unquote(path.split("?", 1)[0]).strip("/")
        candidates = [r for r in self._routes if r[4] == method.upper() and r[2].match(path)]
        if not candidates:
            raise SpecViolation(f"no operation in the OpenSearch API spec for {method} {path}")
        *_, template, verb, file_uri = max(candidates, key=lambda r: (r[0], r[1]))
        doc = self.document(file_uri)
        op = doc["paths"][template][verb.lower()]
        pointer = f"/paths/{_escape(template)}/{verb.lower()}"
        params: set[str] = set(self._global_params)
        for param in op.get("parameters", []):
            _, _, resolved = self._resolve_ref(file_uri, param)
            if resolved.get("in") == "query":
                params.add(resolved["name"])
        body = op.get("requestBody")
        body_file = body_pointer = None
        if body is not None:
            if "$ref" in body:
                body_file, body_pointer, body = self._resolve_ref(file_uri, body)
            else:
                body_file, body_pointer = file_uri, pointer + "/requestBody"
        return Operation(
            group=op.get("x-operation-group", op["operationId"]),
            operation_id=op["operationId"],
            method=verb,
            template=template,
            namespace=Path(unquote(file_uri.removeprefix("file://"))).stem,
            pointer=pointer,
            query_params=frozenset(params),
            request_body=body,
            body_pointer=body_pointer,
            body_file=body_file,
        )

    def body_schema(self, op: Operation) -> tuple[str, str, Mapping[str, Any]]:
        """(content type, schema URI, schema) of the operation's request body."""
        if op.request_body is None:
            raise SpecViolation(f"{op.group} ({op.method} {op.template}) takes no request body")
        content = op.request_body["content"]
        content_type = next(iter(content))
        uri = f"{op.body_file}#{op.body_pointer}/content/{_escape(content_type)}/schema"
        _, _, schema = self._resolve_ref(
            op.body_file or "",
            {"$ref": f"#{op.body_pointer}/content/{_escape(content_type)}/schema"},
        )
        return content_type, uri, schema

    def validate_schema(self, schema_uri: str, instance: Any, *, what: str) -> None:
        validator = Draft202012Validator({"$ref": schema_uri}, registry=self.registry)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        if errors:
            lines = [
                f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
                for e in errors[:8]
            ]
            raise SpecViolation(f"{what} violates the OpenSearch API spec:\n" + "\n".join(lines))

    def component_properties(self, file: str, pointer: str) -> set[str]:
        """The property names a schema declares (following $ref and allOf)."""
        uri = (self.spec_dir / file).as_uri()
        _, _, node = self._resolve_ref(uri, {"$ref": f"#{pointer}"})
        return set(self._properties(uri, node))

    def _properties(self, uri: str, node: Mapping[str, Any]) -> Iterable[str]:
        if "$ref" in node:
            uri, _, node = self._resolve_ref(uri, node)
        yield from (node.get("properties") or {})
        for part in node.get("allOf", []):
            yield from self._properties(uri, part)

    def validate_request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Operation:
        """Check one request; raises SpecViolation. `body` is parsed JSON (a list for NDJSON)."""
        op = self.find_operation(method, path)
        unknown = set(params or {}) - op.query_params
        if unknown:
            raise SpecViolation(
                f"{op.group}: query parameters {sorted(unknown)} are not in the spec "
                f"(known: {sorted(op.query_params - self._global_params)})"
            )
        if body is None:
            if op.request_body is not None and op.request_body.get("required"):
                raise SpecViolation(f"{op.group} requires a request body")
            return op
        if op.group in RAW_BODY_GROUPS:
            errors = strict_errors(op.group, body, self)
        else:
            _, uri, schema = self.body_schema(op)
            self.validate_schema(uri, body, what=f"{op.group} ({method} {path}) body")
            errors = strict_errors(op.group, body, self)
            errors += _unknown_top_level(op.group, body, schema, self, uri)
        if errors:
            raise SpecViolation(f"{op.group} ({method} {path}): " + "; ".join(errors))
        return op


@cache
def load_spec() -> OpenSearchSpec:
    """One parsed specification per test session."""
    return OpenSearchSpec()


def parse_ndjson(body: str | bytes) -> list[Any]:
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if not text.endswith("\n"):
        raise SpecViolation("NDJSON bodies must end with a newline")
    return [json.loads(line) for line in text.split("\n") if line.strip()]


# ---------------------------------------------------------------------------------------------
# Project-side strict checks


def _unknown_top_level(
    group: str, body: Any, schema: Mapping[str, Any], spec: OpenSearchSpec, uri: str
) -> list[str]:
    """Top-level keys the body schema does not declare (the spec lets them pass silently)."""
    if not isinstance(body, Mapping) or schema.get("type") != "object":
        return []
    declared = set(spec._properties(uri.split("#")[0], schema))
    if not declared:
        return []
    unknown = set(body) - declared - EXTRA_TOP_LEVEL_KEYS.get(group, set())
    return [f"unknown top-level keys {sorted(unknown)}"] if unknown else []


def strict_errors(group: str, body: Any, spec: OpenSearchSpec) -> list[str]:
    checks = {
        "search": _check_search_body,
        "count": _check_search_body,
        "ml.search_models": _check_search_body,
        "indices.create": _check_index_body,
        "indices.put_index_template": _check_template_body,
        "ingest.put_pipeline": _check_pipeline,
        "ingest.simulate": lambda b, s: _check_pipeline(b.get("pipeline", {}), s),
        "bulk": _check_bulk,
        "ml.register_model": _check_ml_register,
        "ml.register_model_meta": _check_ml_register,
        "ml.upload_chunk": _check_chunk,
        "indices.update_aliases": _check_aliases,
    }
    check = checks.get(group)
    return check(body, spec) if check else []


@cache
def _query_types() -> frozenset[str]:
    return frozenset(
        load_spec().component_properties(
            "schemas/_common.query_dsl.yaml", "/components/schemas/QueryContainer"
        )
    )


@cache
def _processor_types() -> frozenset[str]:
    names = load_spec().component_properties(
        "schemas/ingest._common.yaml", "/components/schemas/ProcessorContainer"
    )
    return frozenset(names - {"description", "if", "ignore_failure", "on_failure", "tag"})


def check_query(query: Any, where: str = "query") -> list[str]:
    """Every query object has exactly one known query type; compound clauses recursively."""
    if not isinstance(query, Mapping) or len(query) != 1:
        return [f"{where}: a query must be an object with exactly one query type, got {query!r}"]
    ((kind, inner),) = query.items()
    if kind not in _query_types():
        return [f"{where}: unknown query type {kind!r}"]
    errors: list[str] = []
    here = f"{where}.{kind}"
    if kind == "bool":
        unknown = set(inner) - BOOL_KEYS
        if unknown:
            errors.append(f"{here}: unknown keys {sorted(unknown)}")
        for clause in ("must", "filter", "should", "must_not"):
            value = inner.get(clause)
            for i, sub in enumerate(
                value if isinstance(value, list) else [value] * (value is not None)
            ):
                errors += check_query(sub, f"{here}.{clause}[{i}]")
    elif kind == "knn":
        if len(inner) != 1:
            errors.append(f"{here}: exactly one vector field per knn query")
        for field, clause in inner.items():
            unknown = set(clause) - KNN_QUERY_KEYS
            if unknown:
                errors.append(f"{here}.{field}: unknown keys {sorted(unknown)}")
            limits = [k for k in ("k", "min_score", "max_distance") if k in clause]
            if len(limits) != 1:
                errors.append(f"{here}.{field}: exactly one of k, min_score, max_distance")
            if "k" in clause and not (isinstance(clause["k"], int) and clause["k"] >= 1):
                errors.append(f"{here}.{field}: k must be a positive integer")
            if "filter" in clause:
                errors += check_query(clause["filter"], f"{here}.{field}.filter")
    elif kind == "hybrid":
        queries = inner.get("queries") or []
        if not 1 <= len(queries) <= 5:
            errors.append(f"{here}: a hybrid query takes 1 to 5 sub-queries")
        for i, sub in enumerate(queries):
            errors += check_query(sub, f"{here}.queries[{i}]")
    elif kind in ("term", "terms", "match", "match_phrase"):
        fields = [k for k in inner if k not in ("boost", "_name")]
        if len(fields) != 1:
            errors.append(f"{here}: exactly one field, got {fields}")
    elif kind in ("constant_score",):
        errors += check_query(inner.get("filter"), f"{here}.filter")
    return errors


def _check_search_body(body: Any, spec: OpenSearchSpec) -> list[str]:
    errors: list[str] = []
    if "query" in body:
        errors += check_query(body["query"])
    if "post_filter" in body:
        errors += check_query(body["post_filter"], "post_filter")
    size = body.get("size")
    if size is not None and not (isinstance(size, int) and 0 <= size <= 10000):
        errors.append(f"size must be an integer in [0, 10000], got {size!r}")
    return errors


def check_knn_vector(field: str, prop: Mapping[str, Any]) -> list[str]:
    """What the k-NN plugin accepts for a method-defined knn_vector field."""
    errors: list[str] = []
    dim = prop.get("dimension")
    if not (isinstance(dim, int) and 1 <= dim <= 16000):
        errors.append(f"{field}: dimension must be an integer in [1, 16000], got {dim!r}")
    if prop.get("data_type", "float") not in KNN_DATA_TYPES:
        errors.append(f"{field}: unknown data_type {prop.get('data_type')!r}")
    method = prop.get("method")
    if method is None:
        if "model_id" not in prop:
            errors.append(f"{field}: a knn_vector field needs a method (or a model_id)")
        return errors
    engine = method.get("engine", "faiss")
    if engine not in KNN_ENGINES:
        errors.append(f"{field}: engine {engine!r} is not supported (faiss or lucene)")
        return errors
    if method.get("name") not in KNN_ENGINES[engine]:
        errors.append(f"{field}: method {method.get('name')!r} is not supported by {engine}")
    space = method.get("space_type", prop.get("space_type", "l2"))
    if space not in KNN_SPACES[engine]:
        errors.append(f"{field}: space_type {space!r} is not supported by {engine}")
    if (
        "space_type" in method
        and "space_type" in prop
        and method["space_type"] != prop["space_type"]
    ):
        errors.append(f"{field}: conflicting space_type on the field and its method")
    params = method.get("parameters") or {}
    unknown = set(params) - KNN_METHOD_PARAMETERS[engine]
    if unknown:
        errors.append(f"{field}: unknown {engine} hnsw parameters {sorted(unknown)}")
    m = params.get("m", 16)
    if not (isinstance(m, int) and 2 <= m <= 100):
        errors.append(f"{field}: m must be an integer in [2, 100], got {m!r}")
    efc = params.get("ef_construction", 100)
    if not (isinstance(efc, int) and efc >= 2):
        errors.append(f"{field}: ef_construction must be an integer >= 2, got {efc!r}")
    encoder = params.get("encoder")
    if encoder is not None:
        name = encoder.get("name")
        if name not in KNN_ENCODERS[engine]:
            errors.append(f"{field}: encoder {name!r} is not available with {engine}")
        allowed = KNN_ENCODER_PARAMETERS.get((engine, name), {})
        for key, value in (encoder.get("parameters") or {}).items():
            if key not in allowed:
                errors.append(f"{field}: unknown {engine} {name} encoder parameter {key!r}")
            elif allowed[key] is not None and value not in allowed[key]:
                errors.append(f"{field}: encoder parameter {key}={value!r} is not allowed")
        if name == "sq" and engine == "faiss" and space == "cosinesimil":
            pass  # supported since 2.16 (vectors normalised before quantization)
    return errors


def _walk_properties(properties: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for name, prop in properties.items():
        yield prefix + name, prop
        if isinstance(prop, Mapping) and "properties" in prop:
            yield from _walk_properties(prop["properties"], f"{prefix}{name}.")


def check_mappings(mappings: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    copy_targets: set[str] = set()
    props = dict(_walk_properties(mappings.get("properties") or {}))
    for name, prop in props.items():
        if prop.get("type") == "knn_vector":
            errors += check_knn_vector(name, prop)
        targets = prop.get("copy_to") or []
        copy_targets.update([targets] if isinstance(targets, str) else targets)
    missing = copy_targets - set(props)
    if missing:
        errors.append(f"copy_to targets {sorted(missing)} are not mapped")
    return errors


def _check_index_body(body: Any, spec: OpenSearchSpec) -> list[str]:
    errors = check_mappings(body.get("mappings") or {})
    if _has_knn(body.get("mappings") or {}) and not _knn_enabled(body.get("settings") or {}):
        errors.append("an index with knn_vector fields needs settings.index.knn = true")
    return errors


def _check_template_body(body: Any, spec: OpenSearchSpec) -> list[str]:
    template = body.get("template") or {}
    errors = check_mappings(template.get("mappings") or {})
    if _has_knn(template.get("mappings") or {}) and not _knn_enabled(
        template.get("settings") or {}
    ):
        errors.append("a template with knn_vector fields needs settings.index.knn = true")
    if not body.get("index_patterns"):
        errors.append("an index template needs index_patterns")
    return errors


def _has_knn(mappings: Mapping[str, Any]) -> bool:
    return any(
        p.get("type") == "knn_vector" for _, p in _walk_properties(mappings.get("properties") or {})
    )


def _knn_enabled(settings: Mapping[str, Any]) -> bool:
    index = settings.get("index", settings)
    return index.get("knn") in (True, "true") or settings.get("index.knn") in (True, "true")


def _check_processors(processors: Any, where: str) -> list[str]:
    errors: list[str] = []
    for i, proc in enumerate(processors or []):
        if not isinstance(proc, Mapping) or len(proc) != 1:
            errors.append(f"{where}[{i}]: a processor is an object with exactly one type")
            continue
        ((kind, config),) = proc.items()
        if kind not in _processor_types():
            errors.append(f"{where}[{i}]: unknown processor {kind!r}")
            continue
        errors += _check_processors(config.get("on_failure"), f"{where}[{i}].on_failure")
        if kind == "foreach":
            errors += _check_processors([config.get("processor")], f"{where}[{i}].processor")
        if kind == "script" and config.get("lang", "painless") != "painless":
            errors.append(f"{where}[{i}]: only painless scripts are expected")
    return errors


def _check_pipeline(body: Any, spec: OpenSearchSpec) -> list[str]:
    errors = _check_processors(body.get("processors"), "processors")
    errors += _check_processors(body.get("on_failure"), "on_failure")
    if not body.get("processors"):
        errors.append("a pipeline needs at least one processor")
    return errors


def _check_bulk(lines: Any, spec: OpenSearchSpec) -> list[str]:
    """Action and source lines alternate; actions have exactly one known type."""
    errors: list[str] = []
    i = 0
    while i < len(lines):
        action = lines[i]
        if not isinstance(action, Mapping) or len(action) != 1:
            errors.append(f"line {i + 1}: expected an action line, got {str(action)[:80]}")
            break
        ((kind, meta),) = action.items()
        if kind not in ("index", "create", "update", "delete"):
            errors.append(f"line {i + 1}: unknown bulk action {kind!r}")
            break
        if "_id" in meta and not (
            isinstance(meta["_id"], str) and 0 < len(meta["_id"].encode()) <= 512
        ):
            errors.append(f"line {i + 1}: _id must be a non-empty string of at most 512 bytes")
        if kind == "delete":
            i += 1
            continue
        if i + 1 >= len(lines) or not isinstance(lines[i + 1], Mapping):
            errors.append(f"line {i + 1}: {kind} action without a source line")
            break
        i += 2
    return errors


def _check_ml_register(body: Any, spec: OpenSearchSpec) -> list[str]:
    errors: list[str] = []
    for key in ("name", "version", "model_format", "model_config"):
        if key not in body:
            errors.append(f"{key} is required to register a local model")
    if "url" not in body and "total_chunks" not in body:
        errors.append("either url (register) or total_chunks (register_meta) is required")
    if not SHA256.match(str(body.get("model_content_hash_value", ""))):
        errors.append("model_content_hash_value must be the zip's sha256 in lowercase hex")
    if "total_chunks" in body:
        size = body.get("model_content_size_in_bytes")
        if not (isinstance(size, int) and size > 0):
            errors.append("model_content_size_in_bytes must be a positive integer")
        if not (isinstance(body["total_chunks"], int) and body["total_chunks"] >= 1):
            errors.append("total_chunks must be a positive integer")
    config = body.get("model_config") or {}
    for key in ("model_type", "embedding_dimension", "framework_type"):
        if key not in config:
            errors.append(f"model_config.{key} is required")
    if config.get("framework_type") not in FRAMEWORK_TYPES:
        errors.append(f"model_config.framework_type must be one of {sorted(FRAMEWORK_TYPES)}")
    if "pooling_mode" in config and config["pooling_mode"] not in POOLING_MODES:
        errors.append(f"model_config.pooling_mode must be one of {sorted(POOLING_MODES)}")
    if "all_config" in config and not isinstance(config["all_config"], str):
        errors.append("model_config.all_config must be a JSON string")
    return errors


def _check_chunk(body: Any, spec: OpenSearchSpec) -> list[str]:
    if not isinstance(body, (bytes, bytearray)):
        return ["a model chunk is the raw bytes of the zip (see SPEC_GAPS['ml.upload_chunk'])"]
    if not 0 < len(body) <= MAX_CHUNK_BYTES:
        return [f"a model chunk must hold 1 to {MAX_CHUNK_BYTES} bytes, got {len(body)}"]
    return []


def _check_aliases(body: Any, spec: OpenSearchSpec) -> list[str]:
    errors = []
    for i, action in enumerate(body.get("actions") or []):
        ((kind, config),) = action.items()
        if kind in ("add", "remove") and not (
            ("index" in config or "indices" in config)
            and ("alias" in config or "aliases" in config)
        ):
            errors.append(f"actions[{i}].{kind} needs an index and an alias")
    if not body.get("actions"):
        errors.append("an _aliases call needs at least one action")
    return errors


def quote_path(*parts: str) -> str:
    """A request path as opensearch-py builds it (percent-encoded segments)."""
    return "/" + "/".join(quote(p, safe=",*") for p in parts)
