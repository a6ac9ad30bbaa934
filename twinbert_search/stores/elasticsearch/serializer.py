"""elasticsearch-py's JSON serializer on orjson (`stores/cluster/wire.py`): the client's own
`OrjsonSerializer`, with the standard library where orjson refuses a body or an answer."""

from __future__ import annotations

from typing import Any

from elasticsearch.serializer import JsonSerializer
from elasticsearch.serializer import OrjsonSerializer as ClientOrjsonSerializer

from twinbert_search.stores.cluster import wire


class OrjsonSerializer(ClientOrjsonSerializer):
    """The client's orjson serializer (numpy arrays written natively), falling back to its
    standard-library one for what orjson refuses."""

    def json_dumps(self, data: Any) -> bytes:
        encoded = wire.dumps(data, self.default)
        return JsonSerializer.json_dumps(self, data) if encoded is None else encoded

    def json_loads(self, data: bytes) -> Any:
        return wire.loads(data)
