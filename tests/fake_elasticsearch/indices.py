"""Index handlers of the fake cluster: indices, templates, aliases, settings, mappings, health,
and ingest pipeline definitions (what a pipeline does to a document is in documents.py)."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from typing import Any

from tests.fake_cluster_common import FakeIndex, FakeUnsupported, deep_merge, flatten_settings
from tests.fake_elasticsearch.common import ApiError, not_found

KNOWN_PROCESSORS = {"set", "trim", "remove", "script"}  # with ingest-common and lang-painless
LIVE_SETTINGS = {"index.number_of_replicas", "index.refresh_interval"}
KINDS = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat", "int4_flat", "bbq_flat")


class IndicesApi:
    """A mixin of FakeElasticsearch, which holds the state."""

    indices: dict[str, FakeIndex]
    aliases: dict[str, set[str]]
    templates: dict[str, dict[str, Any]]
    pipelines: dict[str, dict[str, Any]]
    ingest_common: bool

    # -- name resolution ----------------------------------------------------------------------

    def resolve(self, expression: str, *, allow_missing: bool = False) -> list[str]:
        """Concrete index names of a comma-separated list of names, aliases and wildcards."""
        names: list[str] = []
        for part in expression.split(","):
            if "*" in part:
                found = [n for n in self.indices if fnmatch.fnmatch(n, part)]
                found += [i for a, m in self.aliases.items() if fnmatch.fnmatch(a, part) for i in m]
                names += found
            elif part in self.indices:
                names.append(part)
            elif part in self.aliases:
                names += sorted(self.aliases[part])
            elif not allow_missing:
                raise not_found(part)
        return sorted(dict.fromkeys(names))

    def write_index(self, name: str) -> FakeIndex:
        """Where a document for `name` goes: the index, or an alias's single index."""
        if name in self.indices:
            return self.indices[name]
        members = sorted(self.aliases.get(name, ()))
        if len(members) == 1:
            return self.indices[members[0]]
        if members:
            raise ApiError(
                400,
                "illegal_argument_exception",
                f"no write index is defined for alias [{name}]. The write index may be explicitly "
                "disabled using is_write_index=false or the alias points to multiple indices "
                "without one being designated as a write index",
            )
        raise not_found(name)  # auto-creation is not what the store relies on

    # -- cluster --------------------------------------------------------------------------------

    def _h_cluster_health(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        replicas = any(
            i.settings.get("index.number_of_replicas", "1") != "0" for i in self.indices.values()
        )
        return 200, {
            "cluster_name": "fake",
            "status": "yellow" if replicas else "green",
            "number_of_nodes": 1,
        }

    # -- indices --------------------------------------------------------------------------------

    def _h_indices_create(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        name = pp["index"]
        if name in self.indices or name in self.aliases:
            raise ApiError(
                400,
                "resource_already_exists_exception",
                f"index [{name}/fake-uuid] already exists",
            )
        if name != name.lower():
            raise ApiError(
                400,
                "invalid_index_name_exception",
                f"Invalid index name [{name}], must be lowercase",
            )
        body = body or {}
        merged: dict[str, Any] = {"settings": {}, "mappings": {}}
        matching = [
            t
            for t in self.templates.values()
            if any(fnmatch.fnmatch(name, p) for p in t["index_patterns"])
        ]
        if matching:
            best = max(matching, key=lambda t: t.get("priority", 0))
            merged = deep_merge(merged, best.get("template", {}))
        merged = deep_merge(merged, {k: body[k] for k in ("settings", "mappings") if k in body})
        settings = flatten_settings(merged["settings"])
        for key in settings:
            if key.startswith("index.knn"):
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"unknown setting [{key}] please check that any required plugins are "
                    "installed, "
                    "or check the breaking changes documentation for removed settings",
                )
        settings.setdefault("index.number_of_shards", "1")
        settings.setdefault("index.number_of_replicas", "1")
        self._check_mappings(merged["mappings"])
        self.indices[name] = FakeIndex(name=name, settings=settings, mappings=merged["mappings"])
        for alias in body.get("aliases") or {}:
            self.aliases.setdefault(alias, set()).add(name)
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}

    @staticmethod
    def _check_mappings(mappings: Mapping[str, Any]) -> None:
        for field, prop in (mappings.get("properties") or {}).items():
            if prop.get("type") != "dense_vector":
                continue
            options = prop.get("index_options") or {}
            kind = options.get("type", "int8_hnsw")
            if kind not in KINDS:
                raise ApiError(
                    400,
                    "mapper_parsing_exception",
                    f"Unknown vector index options type [{kind}] for field [{field}]",
                )
            dims = int(prop.get("dims", 0))
            if kind.startswith("bbq") and dims < 64:
                raise ApiError(
                    400,
                    "mapper_parsing_exception",
                    f"Failed to parse mapping: The [{kind}] index type requires at least 64 "
                    "dimensions",
                )

    def _h_indices_exists(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        try:
            self.resolve(pp["index"])
        except ApiError:
            return 404, {}
        return 200, {}

    def _h_indices_get(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        out = {}
        for name in self.resolve(pp["index"]):
            index = self.indices[name]
            out[name] = {
                "aliases": {a: {} for a, m in self.aliases.items() if name in m},
                "mappings": index.mappings,
                "settings": {"index": {k[len("index.") :]: v for k, v in index.settings.items()}},
            }
        return 200, out

    def _h_indices_delete(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        if "*" in pp["index"]:
            raise ApiError(
                400,
                "illegal_argument_exception",
                "Wildcard expressions or all indices are not allowed",
            )
        for name in pp["index"].split(","):
            if name not in self.indices:
                raise not_found(name)
        for name in pp["index"].split(","):
            del self.indices[name]
            for members in self.aliases.values():
                members.discard(name)
        self.aliases = {a: m for a, m in self.aliases.items() if m}
        return 200, {"acknowledged": True}

    def _h_indices_refresh(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        for name in self.resolve(pp["index"]):
            self.indices[name].refresh()
        return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}

    def _h_indices_get_settings(
        self, pp: dict[str, str], params: dict[str, Any], body: Any
    ) -> tuple[int, Any]:
        if params.get("flat_settings") != "true":
            raise ApiError(400, "illegal_argument_exception", "the fake answers flat settings only")
        return 200, {
            n: {"settings": dict(self.indices[n].settings)} for n in self.resolve(pp["index"])
        }

    def _h_indices_put_settings(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        flat = flatten_settings(body)
        for key in flat:
            if key not in LIVE_SETTINGS:
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"can not update non-dynamic settings [{key}]",
                )
        for name in self.resolve(pp["index"]):
            self.indices[name].settings.update(flat)
        return 200, {"acknowledged": True}

    def _h_indices_get_mapping(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        return 200, {n: {"mappings": self.indices[n].mappings} for n in self.resolve(pp["index"])}

    def _h_indices_put_mapping(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        """Only `_meta`, which replaces the recorded one whole, as the real engine does."""
        if set(body or {}) != {"_meta"}:
            raise FakeUnsupported(f"put_mapping of {sorted(body or {})}")
        for name in self.resolve(pp["index"]):
            self.indices[name].mappings["_meta"] = json.loads(json.dumps(body["_meta"]))
        return 200, {"acknowledged": True}

    # -- aliases --------------------------------------------------------------------------------

    def _h_indices_exists_alias(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        return (200 if pp["name"] in self.aliases else 404), {}

    def _h_indices_get_alias(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        name = pp["name"]
        if name not in self.aliases:
            return 404, {"error": f"alias [{name}] missing", "status": 404}
        return 200, {i: {"aliases": {name: {}}} for i in sorted(self.aliases[name])}

    def _h_indices_update_aliases(self, pp: Any, params: Any, body: Any) -> tuple[int, Any]:
        aliases = {a: set(m) for a, m in self.aliases.items()}
        indices = set(self.indices)
        for action in body["actions"]:
            ((kind, spec),) = action.items()
            if spec["index"] not in indices:
                raise not_found(spec["index"])
            if kind == "add":
                aliases.setdefault(spec["alias"], set()).add(spec["index"])
            elif kind == "remove":
                if spec["index"] not in aliases.get(spec["alias"], set()):
                    raise ApiError(
                        404, "aliases_not_found_exception", f"aliases [{spec['alias']}] missing"
                    )
                aliases[spec["alias"]].discard(spec["index"])
            elif kind == "remove_index":
                indices.discard(spec["index"])
            else:
                raise ApiError(400, "illegal_argument_exception", f"unknown alias action {kind}")
        for alias in aliases:
            if alias in indices:  # checked on the outcome: add + remove_index is one switch
                raise ApiError(
                    400,
                    "invalid_alias_name_exception",
                    f"Invalid alias name [{alias}]: an index or data stream exists with the "
                    "same name as the alias",
                )
        for name in set(self.indices) - indices:  # all or nothing: applied at the end
            del self.indices[name]
            for members in aliases.values():
                members.discard(name)
        self.aliases = {a: m for a, m in aliases.items() if m}
        return 200, {"acknowledged": True, "errors": False}

    # -- templates ------------------------------------------------------------------------------

    def _h_indices_put_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        self._check_mappings((body.get("template") or {}).get("mappings") or {})
        for name, other in self.templates.items():
            overlapping = [
                (a, b)
                for a in body["index_patterns"]
                for b in other["index_patterns"]
                if fnmatch.fnmatch(a, b) or fnmatch.fnmatch(b, a)
            ]
            if name != pp["name"] and overlapping and other.get("priority") == body.get("priority"):
                raise ApiError(
                    400,
                    "illegal_argument_exception",
                    f"index template [{pp['name']}] has index patterns {body['index_patterns']} "
                    f"matching patterns from existing templates [{name}] that have the same "
                    f"priority [{body.get('priority')}], multiple index templates may not match "
                    "during index creation, please use a different priority",
                )
        self.templates[pp["name"]] = json.loads(json.dumps(body))
        return 200, {"acknowledged": True}

    def _template_or_404(self, name: str) -> dict[str, Any]:
        if name not in self.templates:
            raise ApiError(
                404, "resource_not_found_exception", f"index template matching [{name}] not found"
            )
        return self.templates[name]

    def _h_indices_get_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        template = self._template_or_404(pp["name"])
        return 200, {"index_templates": [{"name": pp["name"], "index_template": template}]}

    def _h_indices_exists_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        return (200 if pp["name"] in self.templates else 404), {}

    def _h_indices_delete_index_template(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        self._template_or_404(pp["name"])
        del self.templates[pp["name"]]
        return 200, {"acknowledged": True}

    # -- ingest pipelines -----------------------------------------------------------------------

    def _h_ingest_put_pipeline(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        for processor in body.get("processors", []):
            ((kind, _),) = processor.items()
            if not self.ingest_common or kind not in KNOWN_PROCESSORS:
                raise ApiError(
                    400, "parse_exception", f"No processor type exists with name [{kind}]"
                )
        self.pipelines[pp["id"]] = json.loads(json.dumps(body))
        return 200, {"acknowledged": True}

    def _h_ingest_get_pipeline(self, pp: dict[str, str], params: Any, body: Any) -> tuple[int, Any]:
        found = {i: self.pipelines[i] for i in pp["id"].split(",") if i in self.pipelines}
        return (200 if found else 404), found

    def _h_ingest_delete_pipeline(
        self, pp: dict[str, str], params: Any, body: Any
    ) -> tuple[int, Any]:
        if pp["id"] not in self.pipelines:
            raise ApiError(404, "resource_not_found_exception", f"pipeline [{pp['id']}] is missing")
        del self.pipelines[pp["id"]]
        return 200, {"acknowledged": True}
