"""Elasticsearch's index and alias API as the shared lifecycle's `IndexAdmin`.

Blue/green rebuilds, generations and resuming an interrupted build are written once in
`stores/cluster/lifecycle.py`; this adapter maps each of its calls to one request of the
official client, and reads back what an index records about itself: its mapping's `_meta`,
and the `dense_vector` field's similarity (how its kNN scores read).

Elasticsearch refuses wildcard deletes (`action.destructive_requires_name`), so old
generations are deleted by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twinbert_search.stores.cluster.lifecycle import ClientAdmin
from twinbert_search.stores.cluster.schema import FIELD_VECTOR, recorded_meta


class ElasticsearchIndices(ClientAdmin):
    """`IndexAdmin` over an Elasticsearch client; `errors` is the store's translate_errors."""

    def alias_members(self, name: str) -> list[str]:
        return list(self.client.indices.get_alias(name=name).body)

    def matching(self, pattern: str) -> list[str]:
        from elasticsearch import NotFoundError

        try:
            return list(self.client.indices.get(index=pattern).body)
        except NotFoundError:
            return []

    def flat_settings(self, index: str) -> Mapping[str, Any]:
        settings = self.client.indices.get_settings(index=index, flat_settings=True)
        return next(iter(settings.body.values()), {}).get("settings", {})

    def create(self, index: str, body: Mapping[str, Any]) -> None:
        self.client.indices.create(index=index, **body)

    def put_settings(self, index: str, body: Mapping[str, Any]) -> None:
        self.client.indices.put_settings(index=index, settings=body)

    def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        self.client.indices.update_aliases(actions=actions)

    def mapping_meta(self, index: str) -> Mapping[str, Any]:
        """The mapping's whole `_meta` (`cluster.runs` changes one key and puts it back)."""
        mapping = self.client.indices.get_mapping(index=index).body
        return next(iter(mapping.values()))["mappings"].get("_meta") or {}

    def put_mapping_meta(self, index: str, meta: Mapping[str, Any]) -> None:
        self.client.indices.put_mapping(index=index, meta=dict(meta))

    def recorded_meta(self, index: str) -> dict[str, Any]:
        """What `index` records (model, dim, ann) and its vector field's `similarity`."""
        with self.errors(f"read the mapping of {index}"):
            mapping = self.client.indices.get_mapping(index=index).body
        mappings = next(iter(mapping.values()))["mappings"]
        meta = recorded_meta(mappings, "dims")
        vector = mappings.get("properties", {}).get(FIELD_VECTOR, {})
        meta["similarity"] = vector.get("similarity")
        return meta
