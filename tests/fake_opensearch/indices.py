"""Index, alias, template and pipeline handlers of the fake cluster.

Index templates are matched by pattern and priority and merged under the create body;
`_aliases` is validated and applied as a whole (add, remove, remove_index), as the server does.
As on OpenSearch 2.19.1 and 3.5.0: a template whose patterns overlap another's at the same
priority is refused, and so are keys a pipeline's parser does not read (`_meta` included).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from tests.fake_cluster_common import (
    FakeIndex,
    FakeUnsupported,
    as_list,
    deep_merge,
    flatten_settings,
)
from tests.fake_opensearch.common import ApiError

# What the engine's pipeline parsers read; anything else (`_meta` too) is refused.
NEURAL_PROCESSORS = ("normalization-processor", "score-ranker-processor")
INGEST_PIPELINE_KEYS = frozenset({"description", "version", "processors", "on_failure"})
SEARCH_PIPELINE_KEYS = frozenset(
    {"description", "version", "request_processors", "response_processors",
     "phase_results_processors"}
)  # fmt: skip


def check_pipeline_keys(pipeline: str, body: Mapping[str, Any], known: frozenset[str]) -> None:
    """OpenSearch 2.19.1 and 3.5.0 refuse keys their pipeline parser does not read."""
    unknown = [key for key in body if key not in known]
    if unknown:
        raise ApiError(
            400,
            "parse_exception",
            f"pipeline [{pipeline}] doesn't support one or more provided configuration "
            f"parameters [{', '.join(unknown)}]",
        )


def patterns_overlap(a: str, b: str) -> bool:
    """Whether some index name matches both patterns (`*` is the only wildcard)."""

    @cache
    def meet(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*":
            return meet(i + 1, j) or (j < len(b) and meet(i, j + 1))
        if j < len(b) and b[j] == "*":
            return meet(i, j + 1) or (i < len(a) and meet(i + 1, j))
        return i < len(a) and j < len(b) and a[i] == b[j] and meet(i + 1, j + 1)

    return meet(0, 0)


class IndicesApi:
    """The cluster-level, `indices.*`, `ingest.*` and `search_pipeline.*` handlers.

    A mixin of FakeCluster, which holds the state; `resolve` and `write_index` serve the
    other handlers too.
    """

    indices: dict[str, FakeIndex]
    aliases: dict[str, set[str]]
    templates: dict[str, dict[str, Any]]
    pipelines: dict[str, dict[str, Any]]
    search_pipelines: dict[str, dict[str, Any]]
    models: dict[str, dict[str, Any]]
    neural_search: bool
    version: str

    # -- names --------------------------------------------------------------------------------

    def resolve(self, expression: str, *, allow_missing: bool = False) -> list[str]:
        """Concrete indices for an expression of indices, aliases and wildcards."""
        found: list[str] = []
        for part in expression.split(","):
            if "*" in part:
                found += [n for n in self.indices if fnmatch.fnmatch(n, part)]
                for alias, members in self.aliases.items():
                    if fnmatch.fnmatch(alias, part):
                        found += sorted(members)
            elif part in self.indices:
                found.append(part)
            elif part in self.aliases:
                found += sorted(self.aliases[part])
            elif not allow_missing:
                raise ApiError(404, "index_not_found_exception", f"no such index [{part}]")
        return list(dict.fromkeys(found))

    def write_index(self, name: str) -> FakeIndex:
        if name in self.aliases:
            members = self.aliases[name]
            if len(members) != 1:
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"no write index is defined for alias [{name}]",
                )
            return self.indices[next(iter(members))]
        if name not in self.indices:
            self._create_index(name, {})
        return self.indices[name]

    def _check_index_name(self, name: str) -> None:
        if (
            name != name.lower()
            or name.startswith(("_", "-", "+"))
            or re.search(r'[\\/*?"<>| ,#:]', name)
        ):
            raise ApiError(400, "invalid_index_name_exception", f"Invalid index name [{name}]")
        if name in self.indices:
            raise ApiError(
                400, "resource_already_exists_exception", f"index [{name}] already exists"
            )
        if name in self.aliases:
            raise ApiError(400, "invalid_index_name_exception", f"[{name}] is an alias")

    def _create_index(self, name: str, body: Mapping[str, Any]) -> FakeIndex:
        self._check_index_name(name)
        matching = [
            t
            for t in self.templates.values()
            if any(fnmatch.fnmatch(name, p) for p in as_list(t.get("index_patterns")))
        ]
        template = max(matching, key=lambda t: t.get("priority", 0), default={}).get("template", {})
        settings = flatten_settings(template.get("settings", {}))
        settings.update(flatten_settings(body.get("settings", {})))
        mappings = deep_merge(template.get("mappings", {}), body.get("mappings", {}))
        index = FakeIndex(name=name, settings=settings, mappings=mappings)
        for prop_name, prop in index.properties.items():
            if prop.get("type") == "knn_vector" and settings.get("index.knn") != "true":
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"[{prop_name}] knn_vector needs index.knn=true",
                )
        self.indices[name] = index
        for alias in {**template.get("aliases", {}), **body.get("aliases", {})}:
            self.aliases.setdefault(alias, set()).add(name)
        return index

    # -- cluster ------------------------------------------------------------------------------

    def _h_info(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        return 200, {
            "cluster_name": "fake",
            "version": {"distribution": "opensearch", "number": self.version},
        }

    def _h_cluster_health(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        return 200, {"cluster_name": "fake", "status": "green", "number_of_nodes": 2}

    def _h_nodes_info(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        """Two nodes alike: the k-NN plugin or not, a distribution with a JDK or not."""
        plugins = [{"name": "opensearch-knn"}] if self.knn_plugin else []
        if self.neural_search:
            plugins.append({"name": "opensearch-neural-search"})
        node = {"jvm": {"bundled_jdk": self.bundled_jdk}, "plugins": plugins}
        return 200, {"nodes": {f"n{i}": {"name": f"fake-{i}", **node} for i in (1, 2)}}

    def _h_knn_stats(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        if not self.knn_plugin:
            raise ApiError(400, "illegal_argument_exception", "no handler found for uri")
        node = {"faiss_initialized": self.faiss_loaded, "lucene_initialized": True}
        return 200, {"nodes": {f"n{i}": dict(node) for i in (1, 2)}}

    # -- indices ------------------------------------------------------------------------------

    def _h_indices_exists(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        try:
            return (200 if self.resolve(pp["index"]) else 404), ""
        except ApiError:
            return 404, ""

    def _h_indices_create(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        self._create_index(pp["index"], body or {})
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": pp["index"]}

    def _h_indices_get(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        names = self.resolve(pp["index"])
        return 200, {
            n: {
                "aliases": {a: {} for a, m in self.aliases.items() if n in m},
                "mappings": self.indices[n].mappings,
                "settings": self.indices[n].settings,
            }
            for n in names
        }

    def _h_indices_delete(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        for name in pp["index"].split(","):
            if name in self.aliases:
                raise ApiError(
                    400, "illegal_argument_exception", f"[{name}] is an alias, not an index"
                )
        for name in self.resolve(pp["index"]):
            self._delete_index(name)
        return 200, {"acknowledged": True}

    def _delete_index(self, name: str) -> None:
        del self.indices[name]
        for alias in list(self.aliases):
            self.aliases[alias].discard(name)
            if not self.aliases[alias]:
                del self.aliases[alias]

    def _h_indices_get_mapping(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        return 200, {n: {"mappings": self.indices[n].mappings} for n in self.resolve(pp["index"])}

    def _h_indices_put_mapping(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        """Only `_meta`, which replaces the recorded one whole, as the real engine does."""
        if set(body or {}) != {"_meta"}:
            raise FakeUnsupported(f"put_mapping of {sorted(body or {})}")
        for name in self.resolve(pp["index"]):
            self.indices[name].mappings["_meta"] = json.loads(json.dumps(body["_meta"]))
        return 200, {"acknowledged": True}

    def _h_indices_put_settings(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        for name in self.resolve(pp["index"]):
            self.indices[name].settings.update(flatten_settings(body))
        return 200, {"acknowledged": True}

    def _h_indices_get_settings(
        self, pp: dict[str, str], params: dict[str, Any], body: Any
    ) -> tuple[int, Any]:
        if params.get("flat_settings") != "true":
            raise FakeUnsupported("nested settings output")
        return 200, {
            n: {"settings": dict(self.indices[n].settings)} for n in self.resolve(pp["index"])
        }

    def _h_indices_refresh(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        names = self.resolve(pp["index"])
        for name in names:
            self.indices[name].refresh()
        return 200, {"_shards": {"total": len(names), "successful": len(names), "failed": 0}}

    def _h_indices_exists_alias(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        return (200 if pp["name"] in self.aliases else 404), ""

    def _h_indices_get_alias(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        name = pp["name"]
        if name not in self.aliases:
            raise ApiError(404, "aliases_not_found_exception", f"alias [{name}] missing")
        return 200, {i: {"aliases": {name: {}}} for i in sorted(self.aliases[name])}

    def _h_indices_update_aliases(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        aliases = {k: set(v) for k, v in self.aliases.items()}
        # validated as a whole: an index removed in this call frees its name for an alias
        removed = [a["remove_index"]["index"] for a in body["actions"] if "remove_index" in a]
        for action in body["actions"]:
            ((kind, cfg),) = action.items()
            if kind == "remove_index":
                name = cfg["index"]
                if name not in self.indices:
                    raise ApiError(404, "index_not_found_exception", f"no such index [{name}]")
                continue
            index, alias = cfg["index"], cfg["alias"]
            if index not in self.indices:
                raise ApiError(404, "index_not_found_exception", f"no such index [{index}]")
            if kind == "add":
                if alias in self.indices and alias not in removed:
                    raise ApiError(
                        400,
                        "invalid_alias_name_exception",
                        f"an index exists with the same name as the alias [{alias}]",
                    )
                aliases.setdefault(alias, set()).add(index)
            else:
                if index not in aliases.get(alias, set()):
                    raise ApiError(404, "aliases_not_found_exception", f"aliases [{alias}] missing")
                aliases[alias].discard(index)
        for name in removed:
            del self.indices[name]
            for members in aliases.values():
                members.discard(name)
        self.aliases = {k: v for k, v in aliases.items() if v}
        return 200, {"acknowledged": True}

    # -- templates and pipelines --------------------------------------------------------------

    def _h_indices_put_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        name, patterns = pp["name"], as_list(body.get("index_patterns"))
        priority = body.get("priority", 0)
        for other, template in self.templates.items():
            theirs = as_list(template.get("index_patterns"))
            if (
                other != name
                and template.get("priority", 0) == priority
                and any(patterns_overlap(a, b) for a in patterns for b in theirs)
            ):
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"index template [{name}] has index patterns [{', '.join(patterns)}] "
                    f"matching patterns from existing templates [{other}] with patterns "
                    f"({other} => [{', '.join(theirs)}]) that have the same priority "
                    f"[{priority}], multiple index templates may not match during index "
                    "creation, please use a different priority",
                )
        self.templates[name] = body
        return 200, {"acknowledged": True}

    def _h_indices_get_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        names = [n for n in self.templates if fnmatch.fnmatch(n, pp["name"])]
        if not names:
            raise ApiError(
                404,
                "resource_not_found_exception",
                f"index template matching [{pp['name']}] not found",
            )
        return 200, {
            "index_templates": [{"name": n, "index_template": self.templates[n]} for n in names]
        }

    def _h_indices_exists_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        return (200 if pp["name"] in self.templates else 404), ""

    def _h_indices_delete_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        if self.templates.pop(pp["name"], None) is None:
            raise ApiError(404, "index_template_missing_exception", f"[{pp['name']}] missing")
        return 200, {"acknowledged": True}

    def _h_ingest_delete_pipeline(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        if self.pipelines.pop(pp["id"], None) is None:
            raise ApiError(404, "resource_not_found_exception", f"pipeline [{pp['id']}] is missing")
        return 200, {"acknowledged": True}

    def _h_search_pipeline_delete(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        if self.search_pipelines.pop(pp["id"], None) is None:
            raise ApiError(404, "resource_not_found_exception", f"pipeline [{pp['id']}] is missing")
        return 200, {"acknowledged": True}

    def _h_ingest_put_pipeline(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        for proc in body["processors"]:
            ((kind, cfg),) = proc.items()
            if kind == "text_embedding" and cfg["model_id"] not in self.models:
                raise ApiError(
                    400, "illegal_argument_exception", f"model [{cfg['model_id']}] not found"
                )
        check_pipeline_keys(pp["id"], body, INGEST_PIPELINE_KEYS)  # after the processors
        self.pipelines[pp["id"]] = body
        return 200, {"acknowledged": True}

    def _h_ingest_get_pipeline(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        found = {i: self.pipelines[i] for i in pp["id"].split(",") if i in self.pipelines}
        return (200 if found else 404), found

    def _h_search_pipeline_put(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        for proc in body.get("phase_results_processors", []):
            kind = next(iter(proc), "")
            if not self.neural_search and kind in NEURAL_PROCESSORS:
                raise ApiError(400, "illegal_argument_exception", f"Invalid processor type {kind}")
        check_pipeline_keys(pp["id"], body, SEARCH_PIPELINE_KEYS)  # after the processors
        self.search_pipelines[pp["id"]] = body
        return 200, {"acknowledged": True}

    def _h_search_pipeline_get(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        found = {
            i: self.search_pipelines[i] for i in pp["id"].split(",") if i in self.search_pipelines
        }
        if not found:
            raise ApiError(404, "resource_not_found_exception", f"pipeline [{pp['id']}] not found")
        return 200, found
