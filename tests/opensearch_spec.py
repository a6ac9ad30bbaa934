"""Validate request bodies against the official OpenSearch API specification, then stricter.

The specification (../shared/opensearch-api-spec, OpenAPI 3.1 YAML) is loaded with PyYAML and
its `$ref`s between files are resolved with `referencing`; a (method, path, params, body) is
matched to its operation and the body validated against that operation's request body schema.

The specification is permissive where our mistakes would hide (unknown query types and
processors pass, misspelt top-level keys pass, `knn_vector.method.parameters` is any object),
so `strict_errors` (tests/opensearch_checks.py) adds the project's own checks on top. The
places where the specification disagrees with the server are listed in SPEC_GAPS with the
server code that decides.
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

from tests.opensearch_checks import strict_errors, unknown_top_level

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
    "ingest.put_pipeline._meta": (
        'declared by the spec; OpenSearch 2.19.1 and 3.5.0 answer 400 parse_exception "pipeline '
        "[id] doesn't support one or more provided configuration parameters [_meta]\" "
        "(Pipeline.create reads only description, version, processors, on_failure); refused "
        "project-side"
    ),
    "ml.register_model_meta.model_content_size_in_bytes": (
        "absent from the spec's register_model_meta body; ml-commons MLRegisterModelMetaInput "
        "parses it and opensearch-py-ml sends it"
    ),
}
RAW_BODY_GROUPS = frozenset({"ml.upload_chunk"})


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
            errors += unknown_top_level(op.group, body, schema, self, uri)
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


def quote_path(*parts: str) -> str:
    """A request path as opensearch-py builds it (percent-encoded segments)."""
    return "/" + "/".join(quote(p, safe=",*") for p in parts)
