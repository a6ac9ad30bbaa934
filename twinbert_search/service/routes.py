"""The routes, on two routers that carry what their routes share (FastAPI's `APIRouter`).

`api_router(api_key)`: `/search` and `/rerank`, behind the API key when the service has one,
with the error answers declared once for both. `operations`: `/healthz`, `/readyz` and
`/metrics`, open to probes and scrapers. A route only awaits the `SearchService` in
`app.state.service`; errors become responses in `service.errors`.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from twinbert_search.errors import TwinBertSearchError
from twinbert_search.service.engine import SearchService
from twinbert_search.service.errors import (
    NotAuthenticatedError,
    NotReadyError,
    SafeJSONResponse,
    classify,
)
from twinbert_search.service.schemas import (
    ErrorResponse,
    Health,
    Readiness,
    RerankRequest,
    RerankResponse,
    SearchRequest,
    SearchResponse,
)

__all__ = ["ERROR_RESPONSES", "api_router", "operations"]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
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


# --- what the API routes share ------------------------------------------------------------------


async def _service(request: Request) -> SearchService:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a hand-off per request
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise NotReadyError("the model and store are not loaded")
    return service


Service = Annotated[SearchService, Depends(_service)]
"""The loaded service, or 503 `not_ready` before the lifespan hook has loaded it."""

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
        # compare_digest takes as long for a near miss as for a wild guess: no timing oracle.
        if not hmac.compare_digest(given.encode(), expected_bytes):
            raise NotAuthenticatedError("wrong API key")

    return require_api_key


# --- /search and /rerank ------------------------------------------------------------------------


def _json(answer: BaseModel) -> Response:
    """The answer written by pydantic's own serializer, in one step.

    Returned as a `Response`, FastAPI sends it as it is; a returned model would be validated
    again against `response_model`, turned into Python objects and encoded by `json.dumps`
    (BENCHMARKS.md, "The sidecar on OpenSearch": the framework's share of a request).
    `response_model` still documents the answer. Non-finite floats are written as null.
    """
    return Response(answer.__pydantic_serializer__.to_json(answer), media_type="application/json")


async def search(body: SearchRequest, service: Service) -> Response:
    """Encode the query, recall `candidates` by kNN, rerank them all, return the top `k`."""
    return _json(await service.search(body))


async def rerank(body: RerankRequest, service: Service) -> Response:
    """Crossing-layer scores for given candidates: ids (vectors fetched) or ids + vectors."""
    return _json(await service.rerank(body))


def api_router(api_key: str | None) -> APIRouter:
    """`/search` and `/rerank`; with `api_key` both need it, and 401 is among their answers."""
    auth: list[DependsParam] = [Depends(_api_key_dependency(api_key))] if api_key else []
    errors = {code: answer for code, answer in ERROR_RESPONSES.items() if api_key or code != 401}
    router = APIRouter(tags=["search"], dependencies=auth, responses=errors)
    router.add_api_route("/search", search, methods=["POST"], response_model=SearchResponse)
    router.add_api_route("/rerank", rerank, methods=["POST"], response_model=RerankResponse)
    return router


# --- operations ---------------------------------------------------------------------------------

operations = APIRouter(tags=["operations"])


@operations.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers (says nothing about the model or the store)."""
    return Health(status="ok")


@operations.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not loaded, or the store is down."}},
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
            service.probe_store, lambda: (service.searcher.store.info, service.index_warning())
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


@operations.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus metrics: latency per stage, candidates, errors, query-cache hits, and
    whether the store's last indexing run completed (as of this scrape)."""
    service = getattr(request.app.state, "service", None)
    if service is not None:
        # index_warning sets the incomplete-indexing gauge as a side effect; a store that is
        # down keeps the gauge's last value.
        with contextlib.suppress(TwinBertSearchError):
            await anyio.to_thread.run_sync(service.probe_store, service.index_warning)
    content, media_type = request.app.state.metrics.render()
    return Response(content, media_type=media_type)


def _unready(message: str) -> SafeJSONResponse:
    body = Readiness(status="unavailable", message=message).model_dump()
    return SafeJSONResponse(body, status_code=503, headers={"Retry-After": "5"})
