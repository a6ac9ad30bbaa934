"""`docs.sqlite`, the embedded store's source of truth: schema, meta table, transactions.

Writes and the read path's document lookups share one connection, guarded by one lock, so a
store is safe to use from several threads. Writes are explicit `BEGIN IMMEDIATE` transactions,
one per batch (WAL, synchronous=NORMAL), so a crash loses at most the batch in flight. The
snapshot builder opens its own read-only connection (`connect`) for a consistent view.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from twinbert_search.errors import StoreError
from twinbert_search.stores.embedded.layout import FORMAT_VERSION

SQL_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL,
    scale REAL,
    precomputed BLOB
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def connect(db_path: Path, *, read_only: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit); WAL when writable."""
    if read_only:
        conn = sqlite3.connect(
            f"{db_path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(str(db_path), check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed batch survives a process crash (SIGKILL) without an fsync.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.isolation_level = None  # transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def read_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    """The `meta` table: counts, data generation, model fingerprint, dim, codec."""
    return {key: json.loads(value) for key, value in conn.execute("SELECT key, value FROM meta")}


def set_meta(conn: sqlite3.Connection, values: Mapping[str, Any]) -> None:
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(key, json.dumps(value)) for key, value in values.items()],
    )


def init_db(conn: sqlite3.Connection, codec: str) -> None:
    """Create the tables and the meta defaults of a new store (a no-op on an existing one)."""
    conn.executescript(SCHEMA)
    defaults = {
        "format_version": FORMAT_VERSION,
        "data_generation": 0,
        "count": 0,
        "model_fingerprint": None,
        "dim": None,
        "codec": codec,
        "precomputed_dim": None,
    }
    conn.executemany(
        "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
        [(key, json.dumps(value)) for key, value in defaults.items()],
    )


def chunks(items: Sequence[str], size: int = SQL_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(n: int) -> str:
    return ",".join("?" * n)


class Database:
    """The store's one SQLite connection and its lock; `dirty` says store.json lags behind."""

    def __init__(self, store_path: Path, conn: sqlite3.Connection, *, read_only: bool) -> None:
        self.store_path = store_path
        self.conn: sqlite3.Connection | None = conn
        self.read_only = read_only
        self.lock = threading.RLock()
        self.dirty = False

    def connection(self) -> sqlite3.Connection:
        if self.conn is None:
            raise StoreError(f"the store at {self.store_path} is closed")
        return self.conn

    @contextmanager
    def write_txn(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it lands or none does."""
        if self.read_only:
            raise StoreError(f"{self.store_path} was opened read-only")
        with self.lock:
            conn = self.connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self.dirty = True

    def meta(self) -> dict[str, Any]:
        with self.lock:
            return read_meta(self.connection())

    def select_by_ids(self, columns: str, ids: Sequence[str]) -> dict[str, tuple]:
        """Rows of `docs` for these ids, keyed by id, in chunked IN queries."""
        found: dict[str, tuple] = {}
        with self.lock:
            conn = self.connection()
            for chunk in chunks(ids):
                sql = f"SELECT id, {columns} FROM docs WHERE id IN ({placeholders(len(chunk))})"
                for row in conn.execute(sql, tuple(chunk)):
                    found[row[0]] = row[1:]
        return found

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """What incremental indexing compares: the recorded hash of each known id."""
        return {doc_id: row[0] for doc_id, row in self.select_by_ids("hash", ids).items()}

    def all_ids(self) -> list[str]:
        with self.lock:
            return [row[0] for row in self.connection().execute("SELECT id FROM docs ORDER BY id")]

    def close(self) -> None:
        """Close the connection (callers hold `lock`); later use raises StoreError."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
