"""What every part of the fake shares: its errors, an index's state, small JSON helpers."""

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
    429: "rejected_execution_exception",
    500: "exception",
    502: "bad_gateway",
    503: "unavailable_shards_exception",
    504: "timeout_exception",
}

# neural-search's markers in a hybrid query's raw results (-9549511920.488f, -4422440593.979f),
# as the engine writes them: the shortest decimal of the float32
HYBRID_START_STOP = -9549511700.0
HYBRID_DELIMITER = -4422440400.0


class FakeUnsupported(AssertionError):
    """The fake was asked for something it does not implement (a test gap, not a server 400)."""


class ApiError(Exception):
    """An error answer; `caused_by` is (type, reason) of the cause, as the engine nests it."""

    def __init__(
        self, status: int, kind: str, reason: str, caused_by: tuple[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason
        self.caused_by = caused_by

    def error(self) -> dict[str, Any]:
        """The `error` object of a response or of a bulk item."""
        error: dict[str, Any] = {"type": self.kind, "reason": self.reason}
        if self.caused_by is not None:
            error["caused_by"] = {"type": self.caused_by[0], "reason": self.caused_by[1]}
        return error

    def body(self) -> dict[str, Any]:
        cause = {"type": self.kind, "reason": self.reason}
        return {"error": {"root_cause": [cause], **self.error()}, "status": self.status}


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
