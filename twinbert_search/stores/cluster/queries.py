"""Query DSL both engines accept unchanged: metadata filters, BM25 and id paging.

The kNN clause differs (OpenSearch's `knn` query, Elasticsearch's top-level `knn`), so it is
the engine's; the filters built here go inside it as they are. Filters are exact term
matches on `metadata.<name>`, the same semantics as the embedded store's `FilterIndex`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.cluster.schema import (
    FIELD_ID,
    FIELD_METADATA,
    FIELD_PRECOMPUTED,
    FIELD_SEARCH,
    FIELD_VECTOR,
    SOURCE_FIELDS,
)


def filter_clauses(filters: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """`{field: value}` or `{field: [values]}` on metadata, as exact term filters."""
    clauses: list[dict[str, Any]] = []
    for name, value in sorted((filters or {}).items()):
        field = f"{FIELD_METADATA}.{name}"
        if isinstance(value, (list, tuple, set, frozenset)):
            values = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
            if not values or not all(_is_scalar(v) for v in values):
                raise ConfigurationError(
                    f"filter {name!r} must list strings, numbers or booleans, got {value!r}"
                )
            clauses.append({"terms": {field: values}})
        elif _is_scalar(value):
            clauses.append({"term": {field: value}})
        else:
            raise ConfigurationError(
                f"filter {name!r} must be a string, number, boolean or a list of them, "
                f"got {type(value).__name__}"
            )
    return clauses


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and value is not None


def filter_query(filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The filters as one `bool` filter query, or None without any."""
    clauses = filter_clauses(filters)
    return {"bool": {"filter": clauses}} if clauses else None


def source_includes(include_text: bool) -> dict[str, Any] | bool:
    """The `_source` a recall asks for: what the rerank needs, and the text when wanted.

    With the text that is the whole stored `_source` (every field but the 64-character
    `content_hash`), asked for as `true`: the engine then sends its stored bytes as they are,
    where a list of fields makes it parse and write again each hit's source, vector and all
    (OpenSearch 2.19, 100 hits: took 48 ms with the list, 20 ms without; BENCHMARKS.md).
    """
    if include_text:
        return True
    return source_fields(include_text)


def source_fields(include_text: bool) -> dict[str, Any]:
    """`source_includes` as a list of fields, for an engine that leaves vectors out of a
    whole `_source` (Elasticsearch 9 excludes `dense_vector` values unless named)."""
    fields = list(SOURCE_FIELDS) if include_text else [FIELD_ID, FIELD_VECTOR, FIELD_PRECOMPUTED]
    return {"includes": fields}


def match_query(text: str) -> dict[str, Any]:
    """BM25 on `search_text`, the field title and text are both copied to."""
    return {"match": {FIELD_SEARCH: {"query": text}}}


def filtered_match(text: str, filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """BM25 over title and text, restricted by the filters when there are any."""
    query: dict[str, Any] = match_query(text)
    clauses = filter_clauses(filters)
    if clauses:
        query = {"bool": {"must": [query], "filter": clauses}}
    return query


def bm25_search_body(
    text: str, n: int, *, filters: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """BM25 over title and text (one `match` on the field both are copied to)."""
    return {"size": int(n), "query": filtered_match(text, filters), "_source": False}


def bm25_scores_body(text: str, ids: Sequence[str]) -> dict[str, Any]:
    """The BM25 recall's `match`, restricted to given documents: their scores for a rerank
    that fuses BM25 (documents the query does not match come back without a hit)."""
    query = {"bool": {"must": [match_query(text)], "filter": [{"ids": {"values": list(ids)}}]}}
    return {"size": len(ids), "query": query, "_source": False}


def id_page_body(page: int, after: list[Any] | None) -> dict[str, Any]:
    """One page of ids in `doc_id` order, continuing after the last page's sort values."""
    body: dict[str, Any] = {
        "size": page,
        "query": {"match_all": {}},
        # a bare field name sorts ascending (the spec's oneOf rejects {field: "asc"})
        "sort": [FIELD_ID],
        "_source": False,
    }
    if after is not None:
        body["search_after"] = after
    return body


def scan_ids(search: Callable[[dict[str, Any]], list[dict[str, Any]]], page: int) -> list[str]:
    """Every id, paged with search_after on `doc_id`; `search` runs a body and returns hits."""
    ids: list[str] = []
    after: list[Any] | None = None
    while True:
        hits = search(id_page_body(page, after))
        ids.extend(h["_id"] for h in hits)
        if len(hits) < page:
            return ids
        after = hits[-1]["sort"]
