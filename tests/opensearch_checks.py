"""The project's strict checks on OpenSearch request bodies, on top of the specification.

The specification is permissive where our mistakes would hide: unknown query types and
processors pass, misspelt top-level keys pass, `knn_vector.method.parameters` is any object.
`strict_errors(group, body, spec)` returns what these checks find in one request body (an
empty list when it is fine); `tests/opensearch_spec.py` runs it after the schema validation.
The k-NN tables below follow the k-NN plugin's documented engines, spaces and encoders.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.opensearch_spec import OpenSearchSpec

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
    ("lucene", "sq"): {"confidence_interval": None, "bits": {7}},  # 2.19.1 refuses bits 4
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


def unknown_top_level(
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
    from tests.opensearch_spec import load_spec

    return frozenset(
        load_spec().component_properties(
            "schemas/_common.query_dsl.yaml", "/components/schemas/QueryContainer"
        )
    )


@cache
def _processor_types() -> frozenset[str]:
    from tests.opensearch_spec import load_spec

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
    if "_meta" in body:  # see SPEC_GAPS["ingest.put_pipeline._meta"]
        errors.append("ingest pipelines take no _meta: OpenSearch refuses it (parse_exception)")
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
