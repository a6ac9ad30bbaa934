"""The HTTP sidecar: `create_app(config)` builds the FastAPI app (pyserini's app-factory idea).

The lifespan hook loads the model and the store once into `app.state.service` (or adopts a
Searcher given to `create_app`, which the caller then owns and closes); the routes are in
`routes`. Nothing here imports torch: the default model is built (with torch) only when it is
missing from the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from twinbert_search import __version__
from twinbert_search.errors import TwinBertSearchError
from twinbert_search.search import Searcher
from twinbert_search.search.factory import open_searcher
from twinbert_search.service.config import ServiceConfig
from twinbert_search.service.engine import SearchService
from twinbert_search.service.errors import install_error_handlers
from twinbert_search.service.metrics import ServiceMetrics
from twinbert_search.service.middleware import BodyLimitMiddleware, MetricsMiddleware
from twinbert_search.service.routes import ERROR_RESPONSES, api_router, operations

logger = logging.getLogger(__name__)

ROUTES = ("/search", "/rerank", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
DESCRIPTION = """\
Two-stage TwinBERT search (kNN recall, then the crossing-layer rerank) and a rerank-only
endpoint for callers that did their own recall.

**Routes** are served at the root (`/search`, `/rerank`, `/healthz`, `/readyz`, `/metrics`)
and are version 1 of this API: fields may be added, and an incompatible change would move
under a `/v2/` prefix.

**Errors** answer `{"error": {"status", "type", "message", ...}}`: 400 malformed JSON,
401 missing or wrong API key, 404 unknown document id (`ids` lists them), 413 body over the
size limit, 422 invalid request (`details` lists each field), 503 store or backend down.

**Degradation**: when the rerank fails or exceeds its time budget the recall order comes back
with `"reranked": false` and `degraded` saying why.

**Authentication**: when the service has an API key, `/search` and `/rerank` need it as
`X-API-Key: KEY` or `Authorization: Bearer KEY`; health, readiness, metrics and this schema
stay open for probes and scrapers.
"""

__all__ = ["DESCRIPTION", "ERROR_RESPONSES", "ROUTES", "create_app", "load_searcher"]


def load_searcher(config: ServiceConfig) -> Searcher:
    """The model and store of `config`, loaded once; the store's model fingerprint is checked.

    A cluster client keeps as many connections as the service has threads that read it.
    ONNX Runtime's threads spin-wait after an encode only with `config.spinning`: spinning,
    they hold the cores the recall, the rerank, the other requests and, on a shared host, the
    node need next (BENCHMARKS.md, "The sidecar on OpenSearch").
    """
    return open_searcher(
        config.backend,
        model=config.model,
        int8=config.int8,
        threads=config.threads,
        spinning=config.spinning,
        index_dir=config.index_dir,
        pool_size=config.pool_size,
        **config.cluster,
    )


def create_app(config: ServiceConfig, searcher: Searcher | None = None) -> FastAPI:
    """The app for `config`; with `searcher`, that one is served instead of loading one."""
    config.validate()
    metrics = ServiceMetrics(ROUTES)
    app = FastAPI(
        title="twinbert-search",
        version=__version__,
        summary="TwinBERT two-stage search and rerank",
        description=DESCRIPTION,
        lifespan=_lifespan(config, searcher, metrics),
        redoc_url=None,
    )
    app.state.config = config
    app.state.metrics = metrics
    app.state.service = None
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees 413s too
    app.openapi = _openapi_with_dimension(app)  # type: ignore[method-assign]
    app.include_router(api_router(config.api_key))
    app.include_router(operations)
    return app


def _lifespan(
    config: ServiceConfig, searcher: Searcher | None, metrics: ServiceMetrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load (or adopt) the searcher, start the snapshot refresher, and undo both at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = searcher is None
        loaded = (
            searcher
            if searcher is not None
            else await anyio.to_thread.run_sync(load_searcher, config)
        )
        service = SearchService(loaded, config, metrics)
        try:
            warning = await anyio.to_thread.run_sync(service.probe_store, service.index_warning)
        except TwinBertSearchError:  # the store is down: /readyz says so
            warning = None
        if warning is not None:
            logger.warning("%s", warning)  # once; /readyz and /metrics keep saying it
        app.state.service = service
        refresher = asyncio.create_task(service.refresh_forever(config.refresh_s))
        metrics.ready.set(1)
        logger.info("loaded model %s; serving", loaded.runtime.fingerprint[:12])
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            metrics.ready.set(0)
            app.state.service = None
            service.close()
            if owned:  # a searcher given to create_app is its caller's to close
                loaded.store.close()

    return lifespan


def _openapi_with_dimension(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """`app.openapi`, with the loaded model's vector length on RerankCandidate.vector."""
    generic_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generic_openapi()  # cached by FastAPI; the bounds are set on that copy
        service = app.state.service
        if service is not None:
            vector = schema["components"]["schemas"]["RerankCandidate"]["properties"]["vector"]
            vector["minItems"] = vector["maxItems"] = service.searcher.runtime.dim
        return schema

    return openapi
