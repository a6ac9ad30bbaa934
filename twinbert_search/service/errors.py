"""The one place where errors become HTTP responses.

`ERROR_STATUS` maps the package's error hierarchy to a status and a stable `type`; the
handlers installed by `install_error_handlers` (and the body-size middleware, through
`error_response`) all answer with the same body, `{"error": {status, type, message, ...}}`,
and count it in `twinbert_errors_total{type}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from twinbert_search.errors import (
    BackendUnavailableError,
    ConfigurationError,
    InputError,
    ModelError,
    StoreError,
    TwinBertSearchError,
)

logger = logging.getLogger(__name__)

MAX_DETAILS = 20
MAX_MESSAGE_ERRORS = 5


class UnknownDocumentError(StoreError):
    """Ids the store does not hold (stores raise a plain StoreError; the service finds which)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:5])
        more = f" and {len(self.ids) - 5} more" if len(self.ids) > 5 else ""
        super().__init__(f"unknown document id {shown}{more}")


class NotAuthenticatedError(TwinBertSearchError):
    """The API key is missing or wrong."""


class NotReadyError(TwinBertSearchError):
    """The model and store are not loaded (yet, or any more)."""


# First match wins, so subclasses come before their bases.
ERROR_STATUS: tuple[tuple[type[TwinBertSearchError], int, str], ...] = (
    (UnknownDocumentError, 404, "unknown_document"),
    (NotAuthenticatedError, 401, "unauthorized"),
    (NotReadyError, 503, "not_ready"),
    (BackendUnavailableError, 503, "backend_unavailable"),
    (StoreError, 503, "store_unavailable"),
    (ModelError, 500, "model_error"),
    (InputError, 422, "invalid_input"),
    (ConfigurationError, 422, "invalid_request"),
    (TwinBertSearchError, 500, "internal_error"),
)
HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def classify(exc: TwinBertSearchError) -> tuple[int, str]:
    """(HTTP status, error type) of one of the package's errors."""
    for cls, status, kind in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "internal_error"  # unreachable: TwinBertSearchError is the last row


class SafeJSONResponse(JSONResponse):
    """ASCII-escaped JSON: a message that quotes odd input (a lone surrogate) still encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


def error_response(
    request_or_app: Request | FastAPI | None,
    status: int,
    kind: str,
    message: str,
    *,
    details: Iterable[Mapping[str, Any]] | None = None,
    ids: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> SafeJSONResponse:
    """The error body every failure answers with; counts it in the app's metrics."""
    app = request_or_app.app if isinstance(request_or_app, Request) else request_or_app
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    if metrics is not None:
        metrics.errors.labels(kind).inc()
    error: dict[str, Any] = {"status": status, "type": kind, "message": message}
    if details is not None:
        error["details"] = list(details)[:MAX_DETAILS]
    if ids is not None:
        error["ids"] = list(ids)
    return SafeJSONResponse({"error": error}, status_code=status, headers=dict(headers or {}))


def _describe(err: Mapping[str, Any]) -> dict[str, Any]:
    loc = [x if isinstance(x, int) else str(x) for x in err.get("loc", ())]
    if loc[:1] == ["body"]:
        loc = loc[1:]
    kind = str(err.get("type", "value_error"))
    msg = "unknown field" if kind == "extra_forbidden" else str(err.get("msg", "invalid"))
    if msg.startswith("Value error, "):  # our validators' ValueError messages
        msg = msg[len("Value error, ") :]
    return {"loc": loc, "msg": msg, "type": kind}


def _where(detail: Mapping[str, Any]) -> str:
    loc = detail["loc"]
    return ".".join(str(x) for x in loc) if loc else "body"


async def _project_error(request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, TwinBertSearchError)
    status, kind = classify(exc)
    # A 503 is the store (or the model) not being there, which `outage.StoreHealth` logs
    # once per outage: per request it is debug detail. Other 5xx are worth a line each.
    if status >= 500:
        level = logging.DEBUG if status == 503 else logging.WARNING
        logger.log(level, "%s %s: %s: %s", request.method, request.url.path, kind, exc)
    headers = {"WWW-Authenticate": 'Bearer, ApiKey header="X-API-Key"'} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "5"}
    ids = exc.ids if isinstance(exc, UnknownDocumentError) else None
    return error_response(request, status, kind, str(exc), ids=ids, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        err = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (err.get("ctx") or {}).get("error", "JSON decode error")
        position = err.get("loc", ("body", None))[-1]
        return error_response(
            request,
            400,
            "malformed_json",
            f"malformed JSON body: {reason} (at character {position})",
        )
    details = [_describe(e) for e in errors]
    shown = "; ".join(f"{_where(d)}: {d['msg']}" for d in details[:MAX_MESSAGE_ERRORS])
    more = f" (and {len(details) - MAX_MESSAGE_ERRORS} more)" if len(details) > 5 else ""
    return error_response(
        request, 422, "validation_error", f"invalid request: {shown}{more}", details=details
    )


async def _http_error(request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = HTTP_TYPES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return error_response(request, exc.status_code, kind, message, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> SafeJSONResponse:
    logger.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(
        request, 500, "internal_error", "internal error; the service log has the details"
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through `classify` and `error_response`."""
    app.add_exception_handler(TwinBertSearchError, _project_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
