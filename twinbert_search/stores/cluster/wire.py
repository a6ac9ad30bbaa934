"""JSON on the wire to a cluster: orjson, falling back to the standard library.

A recall's answer is mostly numbers (100 hits with their 384-d vectors is about half a
megabyte of JSON); the standard library parses it an order of magnitude slower than orjson
(BENCHMARKS.md, the sidecar on OpenSearch). Each engine's client takes a serializer built on
these two functions (`stores/opensearch/serializer.py`, `stores/elasticsearch/serializer.py`).

orjson is stricter than the standard library: a body it refuses to write (an integer beyond
64 bits, an unsupported type its `default` does not turn into JSON) or an answer it refuses to
read is handed to the standard library, so the client behaves as it did without orjson, only
faster on what orjson takes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(data: Any, default: Callable[[Any], Any]) -> bytes | None:
    """`data` as compact UTF-8 JSON, or None where orjson cannot write it (use the fallback)."""
    try:
        return orjson.dumps(data, default=default, option=OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return None


def loads(data: str | bytes) -> Any:
    """Parsed JSON; what orjson refuses (NaN, huge integers) goes to the standard library."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
