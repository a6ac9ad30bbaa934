"""What both engines' request bodies share: asset names, the template around a body, settings.

Each engine renders its own vector field, index settings, pipelines and search bodies
(`stores/<engine>/assets.py`); the names of what a store creates for one index family, the
index template's frame and the settings a finished build returns to are the same on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twinbert_search.stores.cluster.lifecycle import DEFAULT_BASE, template_priority


@dataclass(frozen=True)
class AssetNames:
    """Names of everything the backend creates for one index family (alias or index name)."""

    base: str = DEFAULT_BASE

    @property
    def template(self) -> str:
        return self.base

    @property
    def index_patterns(self) -> list[str]:
        return [self.base, f"{self.base}-*"]

    @property
    def template_priority(self) -> int:
        """Unique per name length, so templates of nested names (`a`, `a-b`) never tie."""
        return template_priority(self.base)

    @property
    def vector_pipeline(self) -> str:
        return f"{self.base}-vectors"


def index_template(
    names: AssetNames,
    settings: dict[str, Any],
    mappings: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """PUT /_index_template/{names.template}: an index body for indices created elsewhere."""
    return {
        "index_patterns": names.index_patterns,
        "priority": names.template_priority,
        "template": {"settings": settings, "mappings": mappings},
        "_meta": meta,
    }


def live_settings(options: Any) -> dict[str, Any]:
    """The settings a finished (re)build is switched back to before it takes traffic."""
    return {"index": {"number_of_replicas": options.replicas, "refresh_interval": "1s"}}
