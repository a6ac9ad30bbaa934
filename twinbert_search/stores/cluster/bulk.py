"""Bulk writes as a stream of per-document outcomes, with one retry policy for every engine.

opensearch-py and elasticsearch-py ship the same `helpers.streaming_bulk`: it chunks actions
by count and bytes and yields `(ok, {op_type: info})` per document. `helper_stream` binds an
engine's helper to a client with the chunking of `BulkOptions`; `send_with_retries` then
resends the documents that failed transiently (throttled with 429, rejected with 5xx, or not
delivered at all) with capped exponential backoff, and raises once at the end: one
`BulkIndexError(errors)` with a record per document, or BackendUnavailableError when nothing
reached the cluster. `_id` is the document id, so resending is harmless.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twinbert_search.errors import BackendUnavailableError, BulkIndexError

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Action = dict[str, Any]
Outcome = tuple[bool, Mapping[str, Any]]
BulkStream = Callable[[Iterable[Action]], Iterable[Outcome]]


@dataclass(frozen=True)
class BulkOptions:
    """Bulk chunking and retry policy (retries apply to 429 and 5xx only)."""

    chunk_size: int = 500
    max_chunk_bytes: int = 50 * 1024 * 1024
    max_retries: int = 5
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    use_pipeline: bool = True  # run the vector-checking ingest pipeline on each document

    def backoff(self, attempt: int) -> float:
        """Seconds before retry `attempt` (1-based): doubling from initial_backoff, capped."""
        return float(min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1)))


def helper_stream(
    streaming_bulk: Callable[..., Iterable[Outcome]],
    client: Any,
    options: BulkOptions,
    *,
    helper_retries: bool = False,
    **request: Any,
) -> BulkStream:
    """An engine's `streaming_bulk` bound to a client, chunked as `options` say.

    Failures come back as outcomes, never as exceptions. Without `helper_retries` the helper
    retries nothing (`send_with_retries` does, for 5xx as well as 429); with it the helper
    resends 429s itself, as deletions do. `request` reaches the bulk request (a pipeline).
    """
    retries: dict[str, Any] = {"max_retries": 0}
    if helper_retries:
        retries = {
            "max_retries": options.max_retries,
            "initial_backoff": options.initial_backoff,
            "max_backoff": options.max_backoff,
        }

    def stream(actions: Iterable[Action]) -> Iterable[Outcome]:
        return streaming_bulk(
            client,
            actions,
            chunk_size=options.chunk_size,
            max_chunk_bytes=options.max_chunk_bytes,
            raise_on_error=False,
            raise_on_exception=False,
            yield_ok=True,
            **retries,
            **request,
        )

    return stream


def send_with_retries(
    stream: BulkStream,
    actions: list[Action],
    options: BulkOptions,
    *,
    sleep: Callable[[float], None],
    unreachable: str,
    resent: Counter[str] | None = None,
) -> int:
    """Send actions; resend 429/5xx failures with backoff; raise once for the rest.

    Returns how many documents succeeded. `unreachable` names the cluster (e.g. "OpenSearch
    at https://host:9200") in each retry's line, which says why documents are resent
    (`retry_reason`), and in the error raised when no document got an HTTP status.
    `resent` counts each resent document by `retry_kind` (throttled, rejected, unreachable).
    """
    by_id = {a["_id"]: a for a in actions}
    pending = actions
    errors: list[dict[str, Any]] = []
    succeeded = 0
    attempt = 0
    while pending:
        retry: list[Action] = []
        why: Counter[str] = Counter()
        for ok, item in stream(pending):
            op_type, info = next(iter(item.items()))
            if ok:
                succeeded += 1
                continue
            status = info.get("status")
            retryable = not isinstance(status, int) or status in RETRY_STATUSES
            if retryable and attempt < options.max_retries:
                retry.append(by_id[info["_id"]])
                why[retry_reason(info, unreachable)] += 1
                if resent is not None:
                    resent[retry_kind(info)] += 1
            else:
                errors.append(item_error(op_type, info, attempt + 1))
        if retry:
            attempt += 1
            delay = options.backoff(attempt)
            logger.warning(
                "bulk: %d documents to resend (%s); retry %d/%d in %.1fs",
                len(retry),
                ", ".join(f"{n} {reason}" for reason, n in why.most_common()),
                attempt,
                options.max_retries,
                delay,
            )
            sleep(delay)
        pending = retry
    if errors:
        if all(not isinstance(e["status"], int) for e in errors):
            raise BackendUnavailableError(
                f"bulk indexing: cannot reach {unreachable} ({len(errors)} documents not sent)"
            )
        first = errors[0]
        raise BulkIndexError(
            f"{len(errors)} of {len(actions)} documents failed to index "
            f"(first: {first['id']}: {first['type']}: {first['reason']})",
            errors,
        )
    return succeeded


def retry_kind(info: Mapping[str, Any]) -> str:
    """`throttled` (429), `rejected` (5xx) or `unreachable` (no HTTP answer, or a timeout)."""
    status = info.get("status")
    if not isinstance(status, int):
        return "unreachable"
    return "throttled" if status == 429 else "rejected"


def retry_reason(info: Mapping[str, Any], unreachable: str) -> str:
    """Why one document is resent: the cluster was not reached (or timed out), it throttled
    the writes (429), or it failed to handle them (5xx)."""
    status = info.get("status")
    if not isinstance(status, int):  # the request got no HTTP answer
        failure = type(info.get("exception")).__name__
        if "Timeout" in failure:
            return f"timed out waiting for {unreachable}"
        return f"not delivered: cannot reach {unreachable}"
    if status == 429:
        return "throttled by the cluster (429 Too Many Requests)"
    return f"rejected by the cluster with {status}"


def count_deletions(outcomes: Iterable[Outcome]) -> int:
    """How many documents the delete actions removed; failures other than 404 raise once."""
    deleted = 0
    failures: list[dict[str, Any]] = []
    for ok, item in outcomes:
        info = item["delete"]
        if ok and info.get("result") == "deleted":
            deleted += 1
        elif not ok and info.get("status") != 404:
            failures.append(item_error("delete", info, 1))
    if failures:
        raise BulkIndexError(f"{len(failures)} deletions failed", failures)
    return deleted


def item_error(op_type: str, info: Mapping[str, Any], attempts: int) -> dict[str, Any]:
    """One failed document, without its source (vectors are large, texts may be private)."""
    error = info.get("error")
    if isinstance(error, Mapping):
        kind, reason = error.get("type", "error"), str(error.get("reason", ""))
        # the engine's message is often in the cause (a painless check: "runtime error")
        cause = error.get("caused_by")
        while isinstance(cause, Mapping):
            reason += f"; caused by {cause.get('type', 'error')}: {cause.get('reason', '')}"
            cause = cause.get("caused_by")
    else:
        kind, reason = "request_failed", str(error or "")
    return {
        "id": info.get("_id"),
        "index": info.get("_index"),
        "op": op_type,
        "status": info.get("status"),
        "type": kind,
        "reason": reason[:500],
        "attempts": attempts,
    }
