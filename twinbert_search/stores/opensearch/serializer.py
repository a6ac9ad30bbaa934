"""opensearch-py's JSON serializer on orjson (`stores/cluster/wire.py`); the client's own
`default` still turns dates, UUIDs and numpy or pandas values into JSON."""

from __future__ import annotations

from typing import Any

from opensearchpy.serializer import JSONSerializer

from twinbert_search.stores.cluster import wire


class OrjsonSerializer(JSONSerializer):
    """Request bodies written and answers read with orjson; the standard library where orjson
    refuses. Bodies stay `str`, as the bulk helpers measure and join them."""

    def dumps(self, data: Any) -> Any:
        if isinstance(data, str):
            return data
        encoded = wire.dumps(data, self.default)
        return super().dumps(data) if encoded is None else encoded.decode("utf-8")

    def loads(self, s: str) -> Any:
        try:
            return wire.loads(s)
        except (ValueError, TypeError):
            return super().loads(s)  # raises the client's SerializationError
