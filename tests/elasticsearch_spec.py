"""Request validation against the official Elasticsearch specification.

The specification's compiled `schema.json` (Apache-2.0) ships inside the npm package
`@elastic/request-converter`; `load_spec()` fetches it once with `npm pack` into a cache
(~/.cache/twinbert-search/specs, or $TWINBERT_SPEC_CACHE) and returns None, with the reason in
`SPEC_MISSING`, where npm or the registry is not there. Nothing is vendored.

`ElasticsearchSpec.validate_request` checks a request as the client sends it: the endpoint
exists for that method and path, every query parameter is one the endpoint (or the common
parameters) declares, and the body matches the request's body type. The checker follows the
specification's metamodel: interfaces (inherited properties, aliases, shortcut properties,
containers that hold exactly one variant, additional properties), internally tagged unions
(mapping properties by `type`), enums, dictionaries, arrays, literals and generics.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

SPEC_PACKAGE = "@elastic/request-converter"
SPEC_VERSION = os.environ.get("TWINBERT_ES_SPEC_VERSION", "9.2.0")  # the default node's version
COMMON_QUERY = {"error_trace", "filter_path", "human", "pretty"}
SPEC_MISSING: list[str] = []

TypeName = tuple[str, str]


class SpecViolation(AssertionError):
    """A request the specification does not allow (a test failure, not a server error)."""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "twinbert-search" / "specs"
    return Path(os.environ.get("TWINBERT_SPEC_CACHE", default))


def fetch_schema(version: str = SPEC_VERSION) -> Path | None:
    """The cached schema.json, fetched with `npm pack` the first time; None if it cannot be."""
    target = cache_dir() / f"elasticsearch-specification-{version}.json"
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        SPEC_MISSING.append("npm is not installed")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(
                [npm, "pack", f"{SPEC_PACKAGE}@{version}", "--silent"],
                cwd=tmp,
                check=True,
                capture_output=True,
                timeout=180,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            SPEC_MISSING.append(f"npm pack {SPEC_PACKAGE}@{version} failed ({exc})")
            return None
        archive = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(archive) as tar:
            member = tar.extractfile("package/dist/schema.json")
            if member is None:
                SPEC_MISSING.append(f"{SPEC_PACKAGE}@{version} has no dist/schema.json")
                return None
            data = member.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


@lru_cache(maxsize=2)
def load_spec(version: str = SPEC_VERSION) -> ElasticsearchSpec | None:
    path = fetch_schema(version)
    return None if path is None else ElasticsearchSpec(json.loads(path.read_text()))


def _type_name(ref: Mapping[str, Any]) -> TypeName:
    return (ref["namespace"], ref["name"])


class ElasticsearchSpec:
    """The endpoints and types of one specification version."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.types: dict[TypeName, dict[str, Any]] = {
            _type_name(t["name"]): t for t in schema["types"]
        }
        self.routes: list[tuple[int, str, re.Pattern[str], dict[str, Any]]] = []
        for endpoint in schema["endpoints"]:
            for url in endpoint["urls"]:
                literal = len(re.sub(r"\{\w+\}", "", url["path"]))
                regex = re.compile(
                    "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(url["path"])) + "$"
                )
                for method in url["methods"]:
                    self.routes.append((literal, method, regex, endpoint))
        self.routes.sort(key=lambda r: -r[0])  # literal paths win over templates

    # -- requests ---------------------------------------------------------------------------

    def find_endpoint(self, method: str, path: str) -> tuple[dict[str, Any], dict[str, str]]:
        for _, verb, regex, endpoint in self.routes:
            match = regex.match(path)
            if match and verb == method:
                return endpoint, match.groupdict()
        raise SpecViolation(f"no endpoint of the specification serves {method} {path}")

    def validate_request(self, method: str, path: str, params: Mapping[str, Any], body: Any) -> str:
        """Raise SpecViolation unless the request is allowed; returns the endpoint's name."""
        endpoint, _ = self.find_endpoint(method, path)
        name = endpoint["name"]
        request = self.types[_type_name(endpoint["request"])]
        known = {p["name"]: p for p in request.get("query", [])}
        for key, value in params.items():
            if key in COMMON_QUERY:
                continue
            if key not in known:
                raise SpecViolation(f"{name}: unknown query parameter {key!r}")
            self._check_query_value(name, key, value, known[key]["type"])
        spec_body = request.get("body", {"kind": "no_body"})
        if body is None:
            if endpoint.get("requestBodyRequired"):
                raise SpecViolation(f"{name}: a body is required")
            return name
        if spec_body["kind"] == "no_body":
            raise SpecViolation(f"{name}: takes no body")
        if name == "bulk":  # NDJSON: action lines, each followed by its source (free-form)
            self._bulk_lines(body)
        elif spec_body["kind"] == "properties":
            self._properties(body, spec_body["properties"], name, {}, extra=None)
        else:  # a request's own generics (a document's TDocument) take any value
            free = {
                _type_name(g): {"kind": "user_defined_value"} for g in request.get("generics", [])
            }
            self.check(body, spec_body["value"], name, free)
        return name

    def _check_query_value(self, name: str, key: str, value: Any, ref: Mapping[str, Any]) -> None:
        text = str(value).lower() if isinstance(value, bool) else str(value)
        resolved = self._resolve_builtin(ref)
        if resolved == "boolean" and text not in ("true", "false"):
            raise SpecViolation(f"{name}: query parameter {key}={value!r} is not a boolean")
        if resolved == "number" and not re.fullmatch(r"-?\d+(\.\d+)?", text):
            raise SpecViolation(f"{name}: query parameter {key}={value!r} is not a number")

    def _resolve_builtin(self, ref: Mapping[str, Any]) -> str | None:
        """The builtin a query parameter's type comes down to (None for anything else)."""
        seen = 0
        while ref.get("kind") == "instance_of" and seen < 10:
            ns, name = _type_name(ref["type"])
            if ns == "_builtins":
                return name
            t = self.types.get((ns, name))
            if t is None or t["kind"] != "type_alias":
                return None
            ref, seen = t["type"], seen + 1
        return None

    def _bulk_lines(self, lines: Any) -> None:
        if not isinstance(lines, list):
            raise SpecViolation("bulk: the body must be NDJSON lines")
        action = ("_global.bulk", "OperationContainer")
        i = 0
        while i < len(lines):
            op = lines[i]
            self.check(op, {"kind": "instance_of", "type": _ref(action)}, f"bulk[{i}]", {})
            i += 1 if "delete" in op else 2

    # -- values -----------------------------------------------------------------------------

    def check(self, value: Any, ref: Mapping[str, Any], where: str, env: Mapping) -> None:
        """Raise SpecViolation unless `value` is of the value type `ref`."""
        kind = ref["kind"]
        if kind == "user_defined_value":
            return
        if kind == "literal_value":
            if value != ref["value"]:
                raise SpecViolation(f"{where}: expected {ref['value']!r}, got {value!r}")
        elif kind == "array_of":
            if not isinstance(value, list):
                raise SpecViolation(f"{where}: expected an array, got {_show(value)}")
            for i, item in enumerate(value):
                self.check(item, ref["value"], f"{where}[{i}]", env)
        elif kind == "dictionary_of":
            if not isinstance(value, Mapping):
                raise SpecViolation(f"{where}: expected an object, got {_show(value)}")
            if ref.get("singleKey") and len(value) != 1:
                raise SpecViolation(f"{where}: expected exactly one key, got {sorted(value)}")
            for key, item in value.items():
                self.check(item, ref["value"], f"{where}.{key}", env)
        elif kind == "union_of":
            self._union(value, ref["items"], where, env)
        elif kind == "instance_of":
            self._instance(value, ref, where, env)
        else:
            raise SpecViolation(f"{where}: the checker does not know value kind {kind}")

    def _union(self, value: Any, items: list[Any], where: str, env: Mapping) -> None:
        errors = []
        for item in items:
            try:
                self.check(value, item, where, env)
                return
            except SpecViolation as exc:
                errors.append(str(exc))
        raise SpecViolation(f"{where}: matches no alternative: " + " | ".join(errors[:4]))

    def _instance(self, value: Any, ref: Mapping[str, Any], where: str, env: Mapping) -> None:
        name = _type_name(ref["type"])
        if name in env:  # a generic parameter
            self.check(value, env[name], where, env)
            return
        if name[0] == "_builtins":
            self._builtin(value, name[1], where)
            return
        t = self.types.get(name)
        if t is None:
            raise SpecViolation(f"{where}: unknown type {name}")
        bound = dict(env)
        for param, arg in zip(t.get("generics", []), ref.get("generics", []), strict=False):
            bound[_type_name(param)] = arg
        if t["kind"] == "type_alias":
            variants = t.get("variants") or {}
            if variants.get("kind") == "internal_tag" and isinstance(value, Mapping):
                self._tagged(value, t, variants, where, bound)
            else:
                self.check(value, t["type"], where, bound)
        elif t["kind"] == "enum":
            self._enum(value, t, where)
        elif t["kind"] == "interface":
            self._interface(value, t, where, bound)
        else:
            raise SpecViolation(f"{where}: {name} is a {t['kind']}, not a value type")

    @staticmethod
    def _builtin(value: Any, name: str, where: str) -> None:
        ok = {
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "null": value is None,
            "binary": True,
            "void": value is None,
        }.get(name)
        if ok is None:
            raise SpecViolation(f"{where}: unknown builtin {name}")
        if not ok:
            raise SpecViolation(f"{where}: expected {name}, got {_show(value)}")

    @staticmethod
    def _enum(value: Any, t: Mapping[str, Any], where: str) -> None:
        text = str(value).lower() if isinstance(value, bool) else value
        names = {m["name"] for m in t["members"]} | {
            a for m in t["members"] for a in m.get("aliases", [])
        }
        if not isinstance(text, str) or (text not in names and not t.get("isOpen")):
            raise SpecViolation(f"{where}: {value!r} is not one of {sorted(names)}")

    def _tagged(
        self, value: Mapping[str, Any], t: Mapping[str, Any], variants: Mapping, where: str, env
    ) -> None:
        tag = value.get(variants["tag"], variants.get("defaultTag"))
        for item in t["type"]["items"]:
            member = self.types[_type_name(item["type"])]
            for prop in self._all_properties(member):
                literal = prop["type"]
                if prop["name"] == variants["tag"] and literal.get("value", object()) == tag:
                    self.check(value, item, where, env)
                    return
        if not variants.get("nonExhaustive"):
            raise SpecViolation(f"{where}: unknown {variants['tag']} {tag!r}")

    def _all_properties(self, t: Mapping[str, Any]) -> list[dict[str, Any]]:
        props = list(t.get("properties", []))
        parent = t.get("inherits")
        if parent:
            props += self._all_properties(self.types[_type_name(parent["type"])])
        return props

    def _extra_value(self, t: Mapping[str, Any]) -> dict[str, Any] | None:
        """The value type of keys beyond the properties (AdditionalProperties), if allowed."""
        for behavior in t.get("behaviors", []):
            if behavior["type"]["name"] in ("AdditionalProperties", "AdditionalProperty"):
                generics = behavior.get("generics") or []
                return generics[1] if len(generics) > 1 else {"kind": "user_defined_value"}
        if {"AdditionalProperties", "AdditionalProperty"} & set(t.get("attachedBehaviors", [])):
            return {"kind": "user_defined_value"}
        parent = t.get("inherits")
        if parent:
            return self._extra_value(self.types[_type_name(parent["type"])])
        return None

    def _interface(self, value: Any, t: Mapping[str, Any], where: str, env: Mapping) -> None:
        props = self._all_properties(t)
        if not isinstance(value, Mapping):
            shortcut = t.get("shortcutProperty")
            prop = next((p for p in props if p["name"] == shortcut), None)
            if prop is None:
                raise SpecViolation(f"{where}: expected an object, got {_show(value)}")
            self.check(value, prop["type"], where, env)
            return
        self._properties(value, props, where, env, extra=self._extra_value(t))
        if (t.get("variants") or {}).get("kind") == "container":
            variants = {p["name"] for p in props if not p.get("containerProperty")}
            chosen = [k for k in value if k in variants]
            if len(chosen) != 1:
                raise SpecViolation(f"{where}: a container needs exactly one of its variants")

    def _properties(
        self,
        value: Any,
        props: list[dict[str, Any]],
        where: str,
        env: Mapping,
        *,
        extra: dict[str, Any] | None,
    ) -> None:
        if not isinstance(value, Mapping):
            raise SpecViolation(f"{where}: expected an object, got {_show(value)}")
        by_name = {}
        for prop in props:
            by_name[prop["name"]] = prop
            for alias in prop.get("aliases", []):
                by_name[alias] = prop
        for prop in props:
            names = {prop["name"], *prop.get("aliases", [])}
            if prop.get("required") and not names & set(value):
                raise SpecViolation(f"{where}: missing required property {prop['name']!r}")
        for key, item in value.items():
            prop = by_name.get(key)
            if prop is not None:
                self.check(item, prop["type"], f"{where}.{key}", env)
            elif extra is not None:
                self.check(item, extra, f"{where}.{key}", env)
            else:
                raise SpecViolation(f"{where}: unknown property {key!r}")


def _ref(name: TypeName) -> dict[str, str]:
    return {"namespace": name[0], "name": name[1]}


def _show(value: Any) -> str:
    return f"{type(value).__name__} {json.dumps(value, default=str)[:60]}"
