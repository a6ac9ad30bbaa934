"""The embedded store's directory and its manifest, `store.json`.

    index_dir/
      store.json                   manifest (config, counts, generations, current snapshot,
                                   and `unfinished_run` while an index run has not completed)
      docs.sqlite                  source of truth (WAL): docs + meta tables
      .writer.lock                 held (flock) by the one process that may write
      snapshots/snapshot-<gen>-<tag>/
        snapshot.json              what was built, from which data generation
        ids.json                   row -> id (rows sorted by id)
        vectors.npy [scales.npy]   codec arrays, memory-mapped at query time; absent when
                                   the ANN index holds the vectors ("vectors": "ann")
        precomputed.npy            optional, float32 (n, h)
        ann.faiss                  faiss index over the decoded vectors (absent when empty);
                                   IVF lists memory-mapped at query time
        ann.faiss.scales.npy       ivfN,sq8d only: the direct codes' per-dimension scales
        bm25/                      optional BM25 index over "title text"
        filters/                   metadata inverted index: field -> value -> rows

The writer, the snapshot builder and the read path all find their files here, so a name or
the format version is written once. `store.json` is what a reader trusts: it is replaced
atomically, and only after the snapshot it names is in place.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search import __version__
from twinbert_search.errors import StoreError

FORMAT_VERSION = 1
MANIFEST_NAME = "store.json"
DB_NAME = "docs.sqlite"
LOCK_NAME = ".writer.lock"
SNAPSHOTS = "snapshots"
SNAPSHOT_META = "snapshot.json"
VECTORS_IN_ANN = "ann"  # snapshot.json "vectors": the ANN index holds the only copy
REINDEX_HINT = "run `twinbert-search index` (or EmbeddedStore.finalize()) on it"
UNFINISHED_RUN = "unfinished_run"  # store.json key: {"started": ...} until the run completes


def now() -> str:
    """A UTC timestamp for the manifest, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write beside `path`, then rename over it: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def versions() -> dict[str, str]:
    """The library versions a manifest records (what built the snapshot)."""
    import bm25s
    import faiss

    return {
        "twinbert_search": __version__,
        "faiss": faiss.__version__,
        "bm25s": bm25s.__version__,
        "numpy": np.__version__,
    }


def read_manifest(path: Path) -> dict[str, Any]:
    """`store.json` of the store at `path`, refused when not embedded or too new."""
    manifest_path = path / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{manifest_path}: invalid JSON ({exc})") from None
    if manifest.get("backend") != "embedded":
        raise StoreError(f"{path} is a {manifest.get('backend')!r} store, not an embedded one")
    version = manifest.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{manifest_path}: format_version {version} is newer than this twinbert-search "
            f"({__version__}) understands ({FORMAT_VERSION}); upgrade twinbert-search"
        )
    return manifest


class StoreManifest:
    """The manifest as the open store holds it, shared by the writer and the read path.

    `data` is the parsed `store.json`; `lock` guards replacing it together with whatever the
    read path loaded from the snapshot it names (see `reader.Reader.refresh`).
    """

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.lock = threading.Lock()

    @property
    def snapshot(self) -> dict[str, Any] | None:
        """The current snapshot's entry (its `snapshot.json`), None before the first one."""
        return self.data.get("snapshot")

    def snapshot_dir(self, snapshot: Mapping[str, Any]) -> Path:
        return self.path / SNAPSHOTS / snapshot["name"]

    def record(self, meta: Mapping[str, Any]) -> None:
        """Write `store.json`: the SQLite `meta` table's values and the current snapshot."""
        snapshot = self.snapshot
        self.data.update(
            {
                "format_version": FORMAT_VERSION,
                "backend": "embedded",
                "model_fingerprint": meta["model_fingerprint"],
                "dim": meta["dim"],
                "codec": meta["codec"],
                "counts": {
                    "documents": meta["count"],
                    "snapshot_documents": snapshot["count"] if snapshot else 0,
                },
                "generations": {
                    "data": meta["data_generation"],
                    "snapshot": snapshot["data_generation"] if snapshot else None,
                },
                "snapshot": snapshot,
                "updated": now(),
                "versions": versions(),
            }
        )
        self.data.setdefault("created", now())
        write_json_atomic(self.path / MANIFEST_NAME, self.data)

    def prune_snapshots(self) -> None:
        """Keep the current and the previous snapshot (a reader may still be serving it)."""
        keep = {self.data["snapshot"]["name"], self.data.get("previous_snapshot")}
        for entry in (self.path / SNAPSHOTS).iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
