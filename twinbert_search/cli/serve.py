"""`twinbert-search serve`: the HTTP sidecar (search with rerank, rerank only, health, metrics).

The main CLI registers it with one `add_command(serve)` and maps the project's errors to exit
codes; this command only raises them. The model and store are loaded before the port is
bound, so a bad --index-dir or --model fails at once with the CLI's one-line error, and a
listening server is a ready one. The API key (--api-key or TWINBERT_API_KEY) is never
printed, logged or shown as a default.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from twinbert_search.cli.options import (
    backend_option,
    cluster_options,
    index_dir_option,
    int8_option,
    model_option,
    threads_option,
)
from twinbert_search.service.config import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    DEFAULT_REFRESH_S,
    DEFAULT_RERANK_BUDGET_MS,
    DEFAULT_VECTOR_CACHE_MB,
    ServiceConfig,
    default_workers,
)
from twinbert_search.service.logs import LOG_LEVELS, configure_logging
from twinbert_search.stores.elasticsearch.connection import OPTION_NAMES as ES_OPTION_NAMES
from twinbert_search.stores.opensearch.connection import OPTION_NAMES

__all__ = ["serve"]

ENV_API_KEY = "TWINBERT_API_KEY"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@backend_option(
    "Where documents live: an embedded store (--index-dir), or OpenSearch or Elasticsearch "
    "(--url ...)."
)
@index_dir_option(help="Embedded store directory (--backend embedded).")
@model_option()
@int8_option("Use the int8 ONNX query graph.")
@threads_option
@click.option(
    "--ort-spinning/--no-ort-spinning",
    default=False,
    show_default=True,
    help="Let ONNX Runtime's threads spin after each encode: a faster lone query on cores of "
    "its own, at a core's worth of CPU burnt after every request.",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Requests encoding and recalling at once (default: one per core, at most 8).",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
@click.option(
    "--api-key",
    envvar=ENV_API_KEY,
    show_envvar=True,
    default=None,
    show_default=False,
    help=f"Require this key on /search and /rerank (X-API-Key or Authorization: Bearer); "
    f"prefer {ENV_API_KEY} (flags show up in `ps`).",
)
@click.option(
    "--rerank-budget-ms",
    type=float,
    default=DEFAULT_RERANK_BUDGET_MS,
    show_default=True,
    help="Longest wait for the rerank; past it the recall order is returned (reranked=false).",
)
@click.option(
    "--cache-size",
    type=int,
    default=DEFAULT_CACHE_SIZE,
    show_default=True,
    help="Query embeddings kept in the LRU cache (0: off).",
)
@click.option(
    "--vector-cache-mb",
    type=float,
    default=DEFAULT_VECTOR_CACHE_MB,
    show_default=True,
    help="Cluster backends: memory for the documents recalls fetched, so a recall carries ids "
    "and versions only and the vectors stay here (0: off, every recall carries its vectors).",
)
@click.option(
    "--max-body-bytes",
    type=int,
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    help="Larger request bodies get 413.",
)
@click.option(
    "--refresh-s",
    type=float,
    default=DEFAULT_REFRESH_S,
    show_default=True,
    help="Embedded store: look for a newer snapshot (from a re-index) this often; 0: never.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default="info",
    show_default=True,
    help="debug adds the cluster client's own records (every request, every retry, tracebacks).",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@cluster_options
def serve(
    backend: str,
    index_dir: Path | None,
    model: Path | None,
    int8: bool,
    threads: int | None,
    ort_spinning: bool,
    workers: int | None,
    host: str,
    port: int,
    api_key: str | None,
    rerank_budget_ms: float,
    cache_size: int,
    vector_cache_mb: float,
    max_body_bytes: int,
    refresh_s: float,
    log_level: str,
    access_log: bool,
    **cluster: Any,
) -> None:
    """Serve POST /search and POST /rerank, GET /healthz, /readyz, /metrics over HTTP.

    Against a cluster, a request waits at most --timeout (default here 5 s) and one retry
    before it is answered 503, so callers get an answer while a node hangs.
    """
    import uvicorn

    from twinbert_search.service import create_app, load_searcher

    config = ServiceConfig(
        index_dir=index_dir,
        model=model,
        int8=int8,
        threads=threads,
        spinning=ort_spinning,
        workers=workers or default_workers(),
        backend=backend,
        cluster=_serving_cluster(cluster),
        host=host,
        port=port,
        api_key=api_key,
        rerank_budget_ms=rerank_budget_ms,
        cache_size=cache_size,
        vector_cache_mb=vector_cache_mb,
        max_body_bytes=max_body_bytes,
        refresh_s=refresh_s,
    ).validate()
    configure_logging(log_level)
    if not _is_loopback(host) and not api_key:
        click.echo(
            f"warning: serving on {host} without an API key; set {ENV_API_KEY} to require one",
            err=True,
        )
    searcher = load_searcher(config)
    try:
        app = create_app(config, searcher)
        click.echo(
            f"serving {backend} store on http://{host}:{port} "
            f"(API key {'required' if api_key else 'not required'}; "
            f"rerank budget {rerank_budget_ms:g} ms)",
            err=True,
        )
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=10,
        )
    finally:
        searcher.store.close()


def _serving_cluster(flags: dict[str, Any]) -> dict[str, Any]:
    """The cluster flags, without --timeout when it was not given: the service's own bound
    (`ServiceConfig`: 5 s, one retry) applies then, not the CLI's bulk-sized 30 s."""
    cluster = {k: flags[k] for k in {*OPTION_NAMES, *ES_OPTION_NAMES} if k in flags}
    if click.get_current_context().get_parameter_source("timeout") is ParameterSource.DEFAULT:
        cluster.pop("timeout", None)
    return cluster
