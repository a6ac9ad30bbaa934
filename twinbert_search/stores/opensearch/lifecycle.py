"""OpenSearch's index and alias API as the shared lifecycle's `IndexAdmin`.

Blue/green rebuilds, generations and resuming an interrupted build are written once in
`stores/cluster/lifecycle.py`; this adapter maps each of its calls to one opensearch-py
request, and reads back what an index records about itself (its mapping's `_meta`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twinbert_search.stores.cluster.lifecycle import ClientAdmin
from twinbert_search.stores.cluster.schema import recorded_meta


class OpenSearchIndices(ClientAdmin):
    """`IndexAdmin` over an opensearch-py client; `errors` is the store's translate_errors."""

    def alias_members(self, name: str) -> list[str]:
        return list(self.client.indices.get_alias(name=name))

    def matching(self, pattern: str) -> list[str]:
        return list(self.client.indices.get(index=pattern, ignore=404))

    def flat_settings(self, index: str) -> Mapping[str, Any]:
        settings = self.client.indices.get_settings(index=index, params={"flat_settings": "true"})
        return next(iter(settings.values()), {}).get("settings", {})

    def create(self, index: str, body: Mapping[str, Any]) -> None:
        self.client.indices.create(index=index, body=body)

    def put_settings(self, index: str, body: Mapping[str, Any]) -> None:
        self.client.indices.put_settings(index=index, body=body)

    def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        self.client.indices.update_aliases(body={"actions": actions})

    def mapping_meta(self, index: str) -> Mapping[str, Any]:
        """The mapping's whole `_meta` (`cluster.runs` changes one key and puts it back)."""
        mapping = self.client.indices.get_mapping(index=index)
        return next(iter(mapping.values()))["mappings"].get("_meta") or {}

    def put_mapping_meta(self, index: str, meta: Mapping[str, Any]) -> None:
        self.client.indices.put_mapping(index=index, body={"_meta": dict(meta)})

    def recorded_meta(self, index: str) -> dict[str, Any]:
        """What `index` records about itself (model, dim, ann), from its mapping."""
        with self.errors(f"read the mapping of {index}"):
            mapping = self.client.indices.get_mapping(index=index)
        mappings = next(iter(mapping.values()))["mappings"]
        return recorded_meta(mappings, "dimension")
