"""stores/cluster/ without any engine: the parts an Elasticsearch store would reuse as they are."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import twinbert_search
from twinbert_search.errors import BackendUnavailableError, BulkIndexError
from twinbert_search.stores.cluster import lifecycle, reads, schema
from twinbert_search.stores.cluster.bulk import BulkOptions, send_with_retries

PACKAGE = Path(twinbert_search.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_each_engine_sub_package_imports_its_client() -> None:
    engine_clients = {"opensearchpy", "elasticsearch"}
    seen: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        clients = imported_modules(path) & engine_clients
        seen |= clients
        where = path.relative_to(PACKAGE).as_posix()
        if where.startswith("stores/opensearch/"):
            assert clients <= {"opensearchpy"}, where
        elif where.startswith("stores/elasticsearch/"):
            assert clients <= {"elasticsearch"}, where
        else:
            assert not clients, f"{where} imports {clients}"
    assert seen == engine_clients, "the scan found both engines' imports"


def outcome(doc_id: str, status: int | None) -> tuple[bool, dict[str, Any]]:
    if status is None or status < 300:
        return True, {"index": {"_id": doc_id, "status": status or 201}}
    error = {"type": "rejected", "reason": f"status {status}"}
    return False, {"index": {"_id": doc_id, "_index": "i", "status": status, "error": error}}


def scripted_stream(statuses: Mapping[str, list[int]]) -> tuple[Any, list[list[str]]]:
    """A bulk stream as any engine's helper yields it; each id's next status from a script."""
    sent: list[list[str]] = []
    script = {doc_id: list(seq) for doc_id, seq in statuses.items()}

    def stream(actions: Iterable[dict[str, Any]]) -> Iterator[tuple[bool, dict[str, Any]]]:
        batch = [a["_id"] for a in actions]
        sent.append(batch)
        for doc_id in batch:
            queue = script.get(doc_id) or []
            yield outcome(doc_id, queue.pop(0) if queue else None)

    return stream, sent


def test_send_with_retries_resends_transient_failures_over_any_stream() -> None:
    stream, sent = scripted_stream({"b": [429, 503], "c": [400]})
    actions = [{"_id": i, "_source": {}} for i in "abcd"]
    sleeps: list[float] = []
    options = BulkOptions(initial_backoff=1.0, max_backoff=1.5, max_retries=3)
    with pytest.raises(BulkIndexError) as failed:
        send_with_retries(stream, actions, options, sleep=sleeps.append, unreachable="x")
    assert sent == [["a", "b", "c", "d"], ["b"], ["b"]], "only the transient failure is resent"
    assert sleeps == [1.0, 1.5], "doubling, capped at max_backoff"
    assert [(e["id"], e["status"], e["attempts"]) for e in failed.value.errors] == [("c", 400, 1)]


def test_send_with_retries_reports_an_unreachable_cluster() -> None:
    def stream(actions: Iterable[dict[str, Any]]) -> Iterator[tuple[bool, dict[str, Any]]]:
        for action in actions:  # what the helpers yield when the request never arrived
            yield False, {"index": {"_id": action["_id"], "status": "N/A", "error": "refused"}}

    options = BulkOptions(max_retries=1)
    with pytest.raises(BackendUnavailableError, match="cannot reach Engine at http://h"):
        send_with_retries(
            stream, [{"_id": "a"}], options, sleep=lambda s: None, unreachable="Engine at http://h"
        )


class DictAdmin:
    """`IndexAdmin` over plain dicts: what an engine adapter does with its own client."""

    def __init__(self) -> None:
        self.settings: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, set[str]] = {}
        self.calls: list[str] = []

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        yield

    def alias_exists(self, name: str) -> bool:
        return name in self.aliases

    def alias_members(self, name: str) -> list[str]:
        return sorted(self.aliases[name])

    def index_exists(self, name: str) -> bool:
        return name in self.settings

    def matching(self, pattern: str) -> list[str]:
        return [n for n in self.settings if n.startswith(pattern.rstrip("*"))]

    def flat_settings(self, index: str) -> Mapping[str, Any]:
        return self.settings[index]

    def put_settings(self, index: str, body: Mapping[str, Any]) -> None:
        self.calls.append(f"put_settings {index}")
        self.settings[index].update(body)

    def refresh(self, index: str) -> None:
        self.calls.append(f"refresh {index}")

    def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        self.calls.append("update_aliases")
        for action in actions:
            ((kind, cfg),) = action.items()
            members = self.aliases.setdefault(cfg["alias"], set())
            if kind == "add":
                members.add(cfg["index"])
            else:
                members.discard(cfg["index"])

    def delete(self, indices: Sequence[str]) -> None:
        self.calls.append(f"delete {','.join(indices)}")
        for name in indices:
            del self.settings[name]

    def create(self, name: str) -> None:
        self.settings[name] = {"index.refresh_interval": "-1"}


def test_blue_green_generations_over_a_small_protocol() -> None:
    admin = DictAdmin()
    generations = lifecycle.Generations(admin, index=None, alias="docs")
    assert generations.resolve_write_index() is None
    first = generations.new_index_name()
    assert first == "docs-000001" and lifecycle.generation_of(first, "docs") == 1
    admin.create(first)
    generations.mark_created(first)
    assert generations.finalize({"index.refresh_interval": "1s"})
    assert admin.aliases["docs"] == {first}
    assert admin.calls == ["put_settings docs-000001", "refresh docs-000001", "update_aliases"]

    assert generations.begin_rebuild(resume=True, delete_old=True) is None
    second = generations.new_index_name()
    assert second == "docs-000002"
    admin.create(second)
    generations.mark_created(second)
    admin.calls.clear()
    generations.finalize({"index.refresh_interval": "1s"})
    assert admin.aliases["docs"] == {second} and set(admin.settings) == {second}
    assert admin.calls == [
        "put_settings docs-000002",
        "refresh docs-000002",
        "update_aliases",
        "delete docs-000001",
    ]
    assert lifecycle.alias_actions(
        "docs", "docs-000003", lifecycle.Rebuild(["docs-000002"], False, False)
    ) == [
        {"add": {"index": "docs-000003", "alias": "docs"}},
        {"remove": {"index": "docs-000002", "alias": "docs"}},
    ]


def test_hits_decode_into_candidates_ordered_by_score_then_id() -> None:
    pre = np.array([[0.5, -2.0], [1.0, 3.0]], np.float32)

    def hit(doc_id: str, score: float, row: int) -> dict[str, Any]:
        source = {
            schema.FIELD_VECTOR: [float(row), 1.0],
            schema.FIELD_PRECOMPUTED: schema.encode_floats(pre[row]),
            schema.FIELD_TITLE: doc_id.upper(),
        }
        return {"_id": doc_id, "_score": score, "_source": source}

    found = reads.candidates_from_hits([hit("b", 2.0, 1), hit("a", 2.0, 0)], 2, lambda s: s - 1)
    assert list(found.ids) == ["a", "b"], "ties broken by id"
    np.testing.assert_array_equal(found.recall_scores, [1.0, 1.0])
    np.testing.assert_array_equal(found.precomputed, pre)
    np.testing.assert_array_equal(found.vectors, [[0.0, 1.0], [1.0, 1.0]])
    assert found.documents is not None and found.documents[1]["title"] == "B"
