"""Metadata filters of the embedded store: an inverted index, field -> value -> rows.

Built once per snapshot while documents stream in row order, saved as numpy arrays per
field, and loaded per field on first use, so a store with many fields pays only for those
a query filters on. Values match as OpenSearch term filters do: a list-valued field matches
when any element does, and 3 matches 3.0.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.base import Filters


def _filter_key(value: Any) -> str:
    """One canonical string per metadata value, so 3 and 3.0 match (as in OpenSearch)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except TypeError:
        raise ConfigurationError(f"filter value {value!r} is not a JSON value") from None


def _values_of(value: Any) -> list[Any]:
    # A list-valued field matches when any element does (OpenSearch term semantics).
    return list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]


class FilterBuilder:
    """Collects field -> value -> rows while the snapshot streams documents in row order."""

    def __init__(self) -> None:
        self._postings: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))

    def add(self, row: int, metadata: Mapping[str, Any]) -> None:
        for name, value in metadata.items():
            for key in {_filter_key(v) for v in _values_of(value)}:
                self._postings[name][key].append(row)

    def save(self, directory: Path) -> list[str]:
        directory.mkdir(parents=True)
        fields = {}
        for number, name in enumerate(sorted(self._postings)):
            subdir = f"f{number:04d}"
            self._save_field(directory / subdir, self._postings[name])
            fields[name] = subdir
        (directory / "fields.json").write_text(json.dumps(fields, ensure_ascii=False))
        return sorted(fields)

    @staticmethod
    def _save_field(directory: Path, postings: dict[str, list[int]]) -> None:
        directory.mkdir()
        keys = sorted(postings)
        sizes = [len(postings[key]) for key in keys]
        offsets = np.zeros(len(keys) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        rows = np.fromiter((r for key in keys for r in postings[key]), np.int64, int(offsets[-1]))
        (directory / "values.json").write_text(json.dumps(keys, ensure_ascii=False))
        np.save(directory / "offsets.npy", offsets)
        np.save(directory / "rows.npy", rows)


@dataclass
class _FieldPostings:
    index: dict[str, int]
    offsets: np.ndarray
    rows: np.ndarray

    def rows_for(self, keys: Iterable[str]) -> np.ndarray:
        slots = sorted({self.index[key] for key in keys if key in self.index})
        parts = [self.rows[self.offsets[s] : self.offsets[s + 1]] for s in slots]
        if not parts:
            return np.zeros(0, np.int64)
        if len(parts) == 1:
            return np.asarray(parts[0], dtype=np.int64)
        return np.unique(np.concatenate(parts))


class FilterIndex:
    """Inverted index over metadata; each field is loaded on its first use."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._fields: dict[str, str] = json.loads((directory / "fields.json").read_text())
        self._loaded: dict[str, _FieldPostings] = {}
        self._lock = threading.Lock()

    def _field(self, name: str) -> _FieldPostings | None:
        if name not in self._fields:
            return None
        with self._lock:
            if name not in self._loaded:
                subdir = self._dir / self._fields[name]
                keys = json.loads((subdir / "values.json").read_text())
                self._loaded[name] = _FieldPostings(
                    index={key: i for i, key in enumerate(keys)},
                    offsets=np.load(subdir / "offsets.npy"),
                    rows=np.load(subdir / "rows.npy"),
                )
            return self._loaded[name]

    def rows(self, filters: Filters) -> np.ndarray:
        """Sorted rows whose metadata satisfies every {field: value or [values]} condition."""
        result: np.ndarray | None = None
        for name, wanted in filters.items():
            keys = [_filter_key(v) for v in _values_of(wanted)]
            postings = self._field(name)
            rows = np.zeros(0, np.int64) if postings is None else postings.rows_for(keys)
            result = rows if result is None else np.intersect1d(result, rows, assume_unique=True)
            if len(result) == 0:
                break
        return np.zeros(0, np.int64) if result is None else result
