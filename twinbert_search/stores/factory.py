"""CLI and service options in, a store out: the one place that knows the backends.

`index`, `search`, `eval` and `serve` all come through here (searchers through
`search.factory.open_searcher`), so a flag means the same thing on every command:
`--backend embedded` needs `--index-dir`; `--backend opensearch` needs `--url` (or
OPENSEARCH_URL) and takes the other `opensearch_options` flags as keyword arguments, as
`stores.opensearch.connection.store_from_options` does (keys it does not know are ignored).

`--ann` is read per backend: an embedded ANN spec (`auto`, `flat`, `hnsw32,efc=200`) or an
OpenSearch index description (`faiss:hnsw16:efc128:fp16:innerproduct`; `auto` is its default).
Heavy modules (onnxruntime, faiss) are imported by the functions, so the CLI starts fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.opensearch import ENV_URL

if TYPE_CHECKING:
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.stores.base import VectorStore

BACKENDS = ("embedded", "opensearch")
EMBEDDED, OPENSEARCH = BACKENDS


def embedded_dir(index_dir: str | Path | None) -> Path:
    if index_dir is None:
        raise ConfigurationError("--backend embedded needs --index-dir (the store directory)")
    return Path(index_dir)


def check_options(
    backend: str, *, index_dir: str | Path | None = None, **opensearch_kwargs: Any
) -> None:
    """Raise ConfigurationError when the backend lacks what it needs (before any real work)."""
    if backend not in BACKENDS:
        raise ConfigurationError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == EMBEDDED:
        embedded_dir(index_dir)
        return
    if index_dir is not None:
        raise ConfigurationError("--index-dir is for --backend embedded; OpenSearch takes --url")
    if not (opensearch_kwargs.get("url") or os.environ.get(ENV_URL)):
        raise ConfigurationError(f"--backend opensearch needs --url (or {ENV_URL})")


def open_store(
    backend: str,
    *,
    index_dir: str | Path | None = None,
    writable: bool,
    dim: int | None = None,
    codec: str | None = None,
    ann: str | None = None,
    manifest: ModelManifest | None = None,
    **opensearch_kwargs: Any,
) -> VectorStore:
    """The store the options describe; the caller closes it (stores are context managers).

    Embedded: `writable` creates or opens the writer (`dim`, `codec`, `ann` as in
    `EmbeddedStore.create_or_open`), otherwise the snapshot is opened read-only. OpenSearch:
    a connection reads and writes either way; `ann` shapes the indices it creates and
    `manifest` renders its template and pipelines.
    """
    check_options(backend, index_dir=index_dir, **opensearch_kwargs)
    if backend == EMBEDDED:
        from twinbert_search.stores.embedded import EmbeddedStore

        path = embedded_dir(index_dir)
        if writable:
            return EmbeddedStore.create_or_open(path, dim=dim, codec=codec, ann=ann)
        return EmbeddedStore.open(path)
    from twinbert_search.stores.opensearch.assets import IndexOptions
    from twinbert_search.stores.opensearch.connection import store_from_options

    if codec not in (None, "float32"):
        raise ConfigurationError(
            "--codec is for the embedded store; OpenSearch keeps float32 vectors in _source "
            "(set the ANN graph's encoding in --ann, e.g. faiss:fp16 or lucene:byte)"
        )
    options = None if ann in (None, "auto") else IndexOptions.parse(ann)
    return store_from_options(**opensearch_kwargs, manifest=manifest, index_options=options)
