"""The HTTP sidecar: `create_app(config)` builds the FastAPI app (pyserini's app-factory idea).

The lifespan hook loads the model and the store once into `app.state.service` (or adopts a
Searcher given to `create_app`, which the caller then owns and closes). Nothing here imports
torch: the default model is built (with torch) only when it is missing from the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from twinbert_search import __version__
from twinbert_search.errors import TwinBertSearchError
from twinbert_search.search import Searcher
from twinbert_search.search.factory import open_searcher
from twinbert_search.service.config import ServiceConfig
from twinbert_search.service.engine import SearchService
from twinbert_search.service.errors import (
    NotAuthenticatedError,
    NotReadyError,
    SafeJSONResponse,
    classify,
    install_error_handlers,
)
from twinbert_search.service.metrics import ServiceMetrics
from twinbert_search.service.middleware import BodyLimitMiddleware, MetricsMiddleware
from twinbert_search.service.schemas import (
    ErrorResponse,
    Health,
    Readiness,
    RerankRequest,
    RerankResponse,
    SearchRequest,
    SearchResponse,
)

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

ERROR_RESPONSES = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "Malformed JSON."),
        (401, "Missing or wrong API key (when the service has one)."),
        (404, "Unknown document id."),
        (413, "Request body over the size limit."),
        (422, "Invalid request."),
        (503, "Store or backend unavailable."),
    )
}


def load_searcher(config: ServiceConfig) -> Searcher:
    """The model and store of `config`, loaded once; the store's model fingerprint is checked."""
    return open_searcher(
        config.backend,
        model=config.model,
        int8=config.int8,
        threads=config.threads,
        index_dir=config.index_dir,
        **config.cluster,
    )


def _service(request: Request) -> SearchService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise NotReadyError("the model and store are not loaded")
    return service


_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
_BEARER = HTTPBearer(auto_error=False)


def _api_key_dependency(expected: str) -> Callable[..., Awaitable[None]]:
    """Accept `X-API-Key: KEY` or `Authorization: Bearer KEY`, compared in constant time."""
    expected_bytes = expected.encode()

    async def require_api_key(
        key: Annotated[str | None, Security(_API_KEY_HEADER)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    ) -> None:
        given = key if key is not None else credentials.credentials if credentials else None
        if given is None:
            raise NotAuthenticatedError("this service needs an API key (X-API-Key header)")
        if not hmac.compare_digest(given.encode(), expected_bytes):
            raise NotAuthenticatedError("wrong API key")

    return require_api_key


def create_app(config: ServiceConfig, searcher: Searcher | None = None) -> FastAPI:
    """The app for `config`; with `searcher`, that one is served instead of loading one."""
    config.validate()
    metrics = ServiceMetrics(ROUTES)

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
            warning = await anyio.to_thread.run_sync(service.index_warning)
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
            if owned:
                loaded.store.close()

    app = FastAPI(
        title="twinbert-search",
        version=__version__,
        summary="TwinBERT two-stage search and rerank",
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.config = config
    app.state.metrics = metrics
    app.state.service = None
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees 413s too

    generic_openapi = app.openapi

    def openapi_with_dimension() -> dict[str, Any]:
        """The schema, with the loaded model's vector length on RerankCandidate.vector."""
        schema = generic_openapi()
        service = app.state.service
        if service is not None:
            vector = schema["components"]["schemas"]["RerankCandidate"]["properties"]["vector"]
            vector["minItems"] = vector["maxItems"] = service.searcher.runtime.dim
        return schema

    app.openapi = openapi_with_dimension  # type: ignore[method-assign]
    protected = [Depends(_api_key_dependency(config.api_key))] if config.api_key else []
    api_errors = {**ERROR_RESPONSES}
    if not config.api_key:
        api_errors.pop(401)

    @app.post(
        "/search",
        response_model=SearchResponse,
        responses=api_errors,
        dependencies=protected,
        tags=["search"],
    )
    async def search(
        body: SearchRequest, service: Annotated[SearchService, Depends(_service)]
    ) -> SearchResponse:
        """Encode the query, recall `candidates` by kNN, rerank them all, return the top `k`."""
        return await service.search(body)

    @app.post(
        "/rerank",
        response_model=RerankResponse,
        responses=api_errors,
        dependencies=protected,
        tags=["search"],
    )
    async def rerank(
        body: RerankRequest, service: Annotated[SearchService, Depends(_service)]
    ) -> RerankResponse:
        """Crossing-layer scores for given candidates: ids (vectors fetched) or ids + vectors."""
        return await service.rerank(body)

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        """Liveness: the process answers (says nothing about the model or the store)."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not loaded, or the store is down."}},
        tags=["operations"],
    )
    async def readyz(request: Request) -> Readiness | Response:
        """Readiness: model and store loaded, and the store answers (its document count).

        A store whose last indexing run did not complete is still ready (it serves what it
        holds), with `warning` saying so.
        """
        service = getattr(request.app.state, "service", None)
        if service is None:
            return _unready("the model and store are not loaded")
        try:
            info, warning = await anyio.to_thread.run_sync(
                lambda: (service.searcher.store.info, service.index_warning())
            )
        except TwinBertSearchError as exc:
            return _unready(f"{classify(exc)[1]}: {exc}")
        return Readiness(
            status="ready",
            backend=info.backend,
            model=service.searcher.runtime.fingerprint[:12],
            dim=service.searcher.runtime.dim,
            documents=info.count,
            warning=warning,
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
    )
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics: latency per stage, candidates, errors, query-cache hits, and
        whether the store's last indexing run completed (as of this scrape)."""
        service = getattr(request.app.state, "service", None)
        if service is not None:
            with contextlib.suppress(TwinBertSearchError):  # a store down keeps the last value
                await anyio.to_thread.run_sync(service.index_warning)
        content, media_type = metrics.render()
        return Response(content, media_type=media_type)

    return app


def _unready(message: str) -> SafeJSONResponse:
    body = Readiness(status="unavailable", message=message).model_dump()
    return SafeJSONResponse(body, status_code=503, headers={"Retry-After": "5"})
