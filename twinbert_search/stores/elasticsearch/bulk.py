"""Bulk writes to Elasticsearch: the official `streaming_bulk` under the shared retry policy.

Chunking, backoff and error collection are `stores/cluster/bulk.py`; this module binds them to
the official client's helper and to the ingest pipeline each document runs through. Index
actions are resent by our loop (5xx as well as 429); deletions let the helper resend 429s, and
a 404 is not a failure (already gone). The helper turns HTTP errors into per-document
outcomes; a request that got no answer at all raises, and the store's `translate_errors`
makes that BackendUnavailableError.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from twinbert_search.stores.cluster.bulk import (
    Action,
    BulkOptions,
    count_deletions,
    helper_stream,
    send_with_retries,
)

__all__ = ["BulkOptions", "delete_ids", "send_actions"]


def send_actions(
    client: Any,
    actions: list[Action],
    options: BulkOptions,
    *,
    pipeline: str | None,
    safe_url: str,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Index `actions` through `pipeline`; returns how many succeeded, raises for the rest."""
    from elasticsearch.helpers import streaming_bulk

    request = {"pipeline": pipeline} if pipeline else {}
    stream = helper_stream(streaming_bulk, client, options, **request)
    return send_with_retries(
        stream, actions, options, sleep=sleep, unreachable=f"Elasticsearch at {safe_url}"
    )


def delete_ids(client: Any, index: str, ids: Sequence[str], options: BulkOptions) -> int:
    """Delete these ids from `index`; returns how many existed."""
    from elasticsearch.helpers import streaming_bulk

    stream = helper_stream(streaming_bulk, client, options, helper_retries=True)
    actions = ({"_op_type": "delete", "_index": index, "_id": i} for i in ids)
    return count_deletions(stream(actions))
