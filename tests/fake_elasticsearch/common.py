"""What every part of the fake shares: its errors, an index's state, small JSON helpers, and
Elasticsearch's kNN scores (with the quantized graph's approximation)."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TOKEN = re.compile(r"\w+", re.UNICODE)
ERROR_TYPES = {
    400: "illegal_argument_exception",
    401: "security_exception",
    403: "security_exception",
    404: "resource_not_found_exception",
    429: "es_rejected_execution_exception",
    500: "exception",
    502: "bad_gateway",
    503: "unavailable_shards_exception",
    504: "timeout_exception",
}


class FakeUnsupported(AssertionError):
    """The fake was asked for something it does not implement (a test gap, not a server 400)."""


class ApiError(Exception):
    """An error answer, in Elasticsearch's shape."""

    def __init__(self, status: int, kind: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason, self.extra = status, kind, reason, extra

    def body(self) -> dict[str, Any]:
        cause = {"type": self.kind, "reason": self.reason, **self.extra}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


def not_found(name: str) -> ApiError:
    return ApiError(
        404,
        "index_not_found_exception",
        f"no such index [{name}]",
        **{"resource.type": "index_or_alias", "resource.id": name, "index": name},
    )


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    body: Any
    endpoint: str
    headers: dict[str, str]


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


def flatten_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_settings(value, f"{name}."))
        else:
            out[name if name.startswith("index.") else f"index.{name}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return out


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = json.loads(json.dumps(value))
    return out


def get_path(source: Mapping[str, Any], path: str) -> Any:
    node: Any = source
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def tokenize(text: str) -> list[str]:
    return [t.lower() for t in TOKEN.findall(text or "")]


def hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def project_source(source: Mapping[str, Any], includes: list[str]) -> dict[str, Any]:
    if not includes:
        return json.loads(json.dumps(source))
    return {
        k: json.loads(json.dumps(v))
        for k, v in source.items()
        if any(fnmatch.fnmatch(k, p) for p in includes)
    }


def knn_score(similarity: str, query: np.ndarray, doc: np.ndarray) -> float:
    """Elasticsearch's documented `_score` of a kNN hit for each similarity."""
    if similarity == "dot_product":
        return (1.0 + float(query @ doc)) / 2.0
    if similarity == "cosine":
        cos = float(query @ doc / max(np.linalg.norm(query) * np.linalg.norm(doc), 1e-30))
        return (1.0 + cos) / 2.0
    if similarity == "l2_norm":
        return 1.0 / (1.0 + float(np.sum((query - doc) ** 2)))
    if similarity == "max_inner_product":
        ip = float(query @ doc)
        return 1.0 / (1.0 - ip) if ip < 0 else ip + 1.0
    raise FakeUnsupported(f"similarity {similarity}")


def quantized(vector: np.ndarray, kind: str) -> np.ndarray:
    """The graph's copy of a vector under a quantized index kind (what unrescored scores see).

    A per-vector scalar quantizer: 127 levels for int8, 7 for int4, the sign for bbq.
    """
    head = kind.split("_")[0]
    if head not in ("int8", "int4", "bbq"):
        return vector
    if head == "bbq":
        return np.sign(vector) * float(np.mean(np.abs(vector)))
    levels = 127.0 if head == "int8" else 7.0
    scale = float(np.max(np.abs(vector))) / levels or 1.0
    return (np.round(vector / scale) * scale).astype(np.float32)
