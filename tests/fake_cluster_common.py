"""What both fake engines (`tests/fake_opensearch/`, `tests/fake_elasticsearch/`) share: an
index's state, the server errors' types, small JSON helpers and the tokenizer.

Each engine's `common.py` holds its own error shape, request record and kNN scores.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TOKEN = re.compile(r"\w+", re.UNICODE)
SERVER_ERROR_TYPES = {
    500: "exception",
    502: "bad_gateway",
    503: "unavailable_shards_exception",
    504: "timeout_exception",
}


class FakeUnsupported(AssertionError):
    """The fake was asked for something it does not implement (a test gap, not a server 400)."""


@dataclass
class FakeIndex:
    name: str
    settings: dict[str, str]
    mappings: dict[str, Any]
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    searchable: dict[str, dict[str, Any]] = field(default_factory=dict)
    refreshes: int = 0
    # a shard's sequence numbers: every write takes the next one (primary term stays 1)
    seq_nos: dict[str, int] = field(default_factory=dict)
    searchable_seq_nos: dict[str, int] = field(default_factory=dict)
    next_seq_no: int = 0

    def refresh(self) -> None:
        self.searchable = {k: json.loads(json.dumps(v)) for k, v in self.docs.items()}
        self.searchable_seq_nos = dict(self.seq_nos)
        self.refreshes += 1

    def written(self, doc_id: str) -> None:
        """Count a write of `doc_id`: its version and its sequence number move on."""
        self.versions[doc_id] = self.versions.get(doc_id, 0) + 1
        self.seq_nos[doc_id] = self.next_seq_no
        self.next_seq_no += 1

    def doc_seq(self, doc_id: str) -> dict[str, int]:
        """What a get or mget answer carries of the document's last write."""
        return {"_seq_no": self.seq_nos[doc_id], "_primary_term": 1}

    def hit_seq(self, doc_id: str, body: Mapping[str, Any]) -> dict[str, int]:
        """A search hit's `_seq_no`/`_primary_term` (as of the refresh) when the body asks."""
        if not body.get("seq_no_primary_term"):
            return {}
        return {"_seq_no": self.searchable_seq_nos[doc_id], "_primary_term": 1}

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


def without_unnamed_vectors(
    source: dict[str, Any], mappings: Mapping[str, Any], includes: list[str]
) -> dict[str, Any]:
    """Elasticsearch 9 leaves `dense_vector` values out of `_source` unless a request names
    the field (`index.mapping.exclude_source_vectors`, on by default for new indices)."""
    vectors = {
        field
        for field, prop in (mappings.get("properties") or {}).items()
        if prop.get("type") == "dense_vector"
    }
    return {k: v for k, v in source.items() if k not in vectors or k in includes}
