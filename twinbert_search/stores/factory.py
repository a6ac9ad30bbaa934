"""CLI and service options in, a store out: the one place that knows the backends.

`index`, `search`, `eval` and `serve` all come through here (searchers through
`search.factory.open_searcher`), so a flag means the same thing on every command:
`--backend embedded` needs `--index-dir`; `--backend opensearch` and `--backend elasticsearch`
need `--url` (or OPENSEARCH_URL, ELASTICSEARCH_URL) and take the other cluster flags as
keyword arguments (`CLUSTER_KEYS`: the connection flags of either engine, the stores' own
keyword arguments and `client_kwargs`); any other key is a ConfigurationError naming it, so
a misspelt option is not silently dropped. A flag left out falls back to that engine's
environment variable.

`--ann` is read per backend: an embedded ANN spec (`auto`, `flat`, `hnsw32,efc=200`), an
OpenSearch index description (`faiss:hnsw16:efc128:fp16:innerproduct`) or an Elasticsearch one
(`elasticsearch:int8_hnsw16:efc128:innerproduct`); `auto` is each backend's default, for
OpenSearch the default its cluster's k-NN plugin can run (faiss needs a native library).
Heavy modules (onnxruntime, faiss) are imported by the functions, so the CLI starts fast.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.elasticsearch import ENV_URL as ELASTICSEARCH_ENV_URL
from twinbert_search.stores.elasticsearch import connection as es_connection
from twinbert_search.stores.opensearch import ENV_URL
from twinbert_search.stores.opensearch import connection as os_connection

if TYPE_CHECKING:
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.stores.base import VectorStore

BACKENDS = ("embedded", "opensearch", "elasticsearch")
EMBEDDED, OPENSEARCH, ELASTICSEARCH = BACKENDS
CLUSTERS = (OPENSEARCH, ELASTICSEARCH)
URL_ENV = {OPENSEARCH: ENV_URL, ELASTICSEARCH: ELASTICSEARCH_ENV_URL}
ENGINE_NAMES = {OPENSEARCH: "OpenSearch", ELASTICSEARCH: "Elasticsearch"}
# what **cluster_kwargs may hold; `manifest` and `index_options` (from --ann) are open_store's
CLUSTER_KEYS = frozenset(
    {
        *os_connection.OPTION_NAMES,
        *es_connection.OPTION_NAMES,
        *os_connection.STORE_KWARGS,
        *es_connection.STORE_KWARGS,
        "client_kwargs",
    }
    - {"manifest", "index_options"}
)
# Each client's name for the number of connections it keeps per node (opensearch-py's urllib3
# pool holds 1 unless told, so concurrent requests would each open and drop a connection).
POOL_SIZE_KEYWORDS = {OPENSEARCH: "pool_maxsize", ELASTICSEARCH: "connections_per_node"}


def embedded_dir(index_dir: str | Path | None) -> Path:
    if index_dir is None:
        raise ConfigurationError("--backend embedded needs --index-dir (the store directory)")
    return Path(index_dir)


def check_options(
    backend: str, *, index_dir: str | Path | None = None, **cluster_kwargs: Any
) -> None:
    """Raise ConfigurationError when the backend lacks what it needs (before any real work)."""
    if backend not in BACKENDS:
        raise ConfigurationError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    unknown = sorted(set(cluster_kwargs) - CLUSTER_KEYS)
    if unknown:
        raise ConfigurationError(
            f"unknown store option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)} (known: {', '.join(sorted(CLUSTER_KEYS))})"
        )
    if backend == EMBEDDED:
        embedded_dir(index_dir)
        return
    engine, url_env = ENGINE_NAMES[backend], URL_ENV[backend]
    if index_dir is not None:
        raise ConfigurationError(f"--index-dir is for --backend embedded; {engine} takes --url")
    if not (cluster_kwargs.get("url") or os.environ.get(url_env)):
        raise ConfigurationError(f"--backend {backend} needs --url (or {url_env})")
    if backend == OPENSEARCH and cluster_kwargs.get("es_api_key"):
        raise ConfigurationError("--es-api-key is for --backend elasticsearch")


def open_store(
    backend: str,
    *,
    index_dir: str | Path | None = None,
    writable: bool,
    dim: int | None = None,
    codec: str | None = None,
    ann: str | None = None,
    shards: int | None = None,
    replicas: int | None = None,
    manifest: ModelManifest | None = None,
    pool_size: int | None = None,
    **cluster_kwargs: Any,
) -> VectorStore:
    """The store the options describe; the caller closes it (stores are context managers).

    Embedded: `writable` creates or opens the writer (`dim`, `codec`, `ann` as in
    `EmbeddedStore.create_or_open`), otherwise the snapshot is opened read-only. A cluster
    (OpenSearch, Elasticsearch): a connection reads and writes either way; `ann` shapes the
    indices it creates, `shards` and `replicas` their layout (the index options' own when
    None), and `manifest` renders its template and pipelines; `pool_size` is how many
    connections its client keeps (as many as threads that use the store at once).
    """
    check_options(backend, index_dir=index_dir, **cluster_kwargs)
    layout = {k: v for k, v in (("shards", shards), ("replicas", replicas)) if v is not None}
    if backend == EMBEDDED and layout:
        raise ConfigurationError(
            "--shards and --replicas lay out a cluster's indices: they need --backend "
            "opensearch or elasticsearch"
        )
    if backend == EMBEDDED:
        from twinbert_search.stores.embedded import EmbeddedStore

        path = embedded_dir(index_dir)
        if writable:
            return EmbeddedStore.create_or_open(path, dim=dim, codec=codec, ann=ann)
        return EmbeddedStore.open(path)
    if codec not in (None, "float32"):
        hint = {
            OPENSEARCH: "e.g. faiss:fp16 or lucene:byte",
            ELASTICSEARCH: "e.g. int8_hnsw or bbq_hnsw",
        }[backend]
        raise ConfigurationError(
            f"--codec is for the embedded store; {ENGINE_NAMES[backend]} keeps float32 "
            f"vectors in _source (set the ANN graph's encoding in --ann, {hint})"
        )
    if pool_size is not None:
        given = cluster_kwargs.get("client_kwargs") or {}
        cluster_kwargs["client_kwargs"] = {POOL_SIZE_KEYWORDS[backend]: pool_size, **given}
    if backend == ELASTICSEARCH:
        from twinbert_search.stores.elasticsearch.connection import (
            store_from_options as elasticsearch_store,
        )
        from twinbert_search.stores.elasticsearch.index_options import IndexOptions as EsOptions

        es_options = None if ann in (None, "auto") else EsOptions.parse(ann)
        if layout:
            es_options = replace(es_options or EsOptions(), **layout)
        return elasticsearch_store(**cluster_kwargs, manifest=manifest, index_options=es_options)
    from twinbert_search.stores.opensearch.assets import IndexOptions
    from twinbert_search.stores.opensearch.connection import (
        connection_from_options,
        store_from_options,
    )

    options = None if ann in (None, "auto") else IndexOptions.parse(ann)
    store = store_from_options(**cluster_kwargs, manifest=manifest, index_options=options)
    if writable:  # indices may be created: with an engine the cluster runs
        try:
            url = connection_from_options(**cluster_kwargs).safe_url
            fitted = fitting_index_options(store.client, url, options)
            store.index_options = replace(fitted, **layout)
        except BaseException:
            store.close()
            raise
    return store


def fitting_index_options(client: Any, safe_url: str, given: Any) -> Any:
    """OpenSearch index options (`given`, None for auto) checked against the engines the
    cluster at `safe_url` runs (`stores/opensearch/knn_engines.py`): the default it can
    run, or ConfigurationError before anything is created."""
    from twinbert_search.stores.opensearch.knn_engines import (
        cluster_engines,
        runnable_index_options,
    )

    engines = cluster_engines(client, safe_url)
    return runnable_index_options(given, engines, f"OpenSearch at {safe_url}")
