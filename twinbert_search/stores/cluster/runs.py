"""An indexing run that has not completed, recorded where a cluster store's readers look.

The mark is `_meta.twinbert_search.unfinished_run` on the index the run writes: put when the
run begins (or when it creates the index), removed when it completes, so `search`, `eval` and
`serve` can say the index is incomplete after a run was killed or stopped by a bad record.
`PUT <index>/_mapping` replaces `_meta` whole on both engines (OpenSearch 2.19,
Elasticsearch 9.2), so the mark is changed by reading `_meta` and putting all of it back.

During a blue/green rebuild the mark lands on the new generation, which readers see only
once the alias moves to it; a rebuild that dies leaves the live index as complete as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from twinbert_search.stores.cluster.schema import META_KEY

if TYPE_CHECKING:
    from twinbert_search.stores.cluster.lifecycle import Generations

RUN_KEY = "unfinished_run"


class MetaAdmin(Protocol):
    """The mapping calls the mark needs (the engines' `IndexAdmin` adapters have them)."""

    def errors(self, what: str) -> AbstractContextManager[Any]: ...
    def mapping_meta(self, index: str) -> Mapping[str, Any]: ...
    def put_mapping_meta(self, index: str, meta: Mapping[str, Any]) -> None: ...


class IndexRuns:
    """The current run's mark: which indices carry it, to clear them when the run completes."""

    def __init__(self, admin: MetaAdmin) -> None:
        self.admin = admin
        self.run: dict[str, Any] | None = None
        self.marked: list[str] = []

    def begin(self, index: str | None) -> None:
        """Mark `index` (where writes go, when it exists yet) as being indexed."""
        self.run = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.marked = []
        if index is not None:
            self.created(index)

    def created(self, index: str) -> None:
        """An index written during the run carries the mark until the run completes."""
        if self.run is not None and index not in self.marked:
            self._put(index, self.run)
            self.marked.append(index)

    def end(self) -> None:
        """The run completed: remove its mark everywhere it was put."""
        for index in self.marked:
            self._put(index, None)
        self.run, self.marked = None, []

    def unfinished(self, indices: Sequence[str]) -> dict[str, Any] | None:
        """The mark on any of `indices` (those behind the read target), read afresh."""
        for index in indices:
            with self.admin.errors(f"read the mapping of {index}"):
                ours = self.admin.mapping_meta(index).get(META_KEY) or {}
            if ours.get(RUN_KEY):
                return dict(ours[RUN_KEY])
        return None

    def _put(self, index: str, run: dict[str, Any] | None) -> None:
        with self.admin.errors(f"record the indexing run in the mapping of {index}"):
            meta = dict(self.admin.mapping_meta(index))
            ours = dict(meta.get(META_KEY) or {})
            if ours.get(RUN_KEY) == run:
                return
            if run is None:
                del ours[RUN_KEY]
            else:
                ours[RUN_KEY] = run
            self.admin.put_mapping_meta(index, {**meta, META_KEY: ours})


class IndexRunHooks:
    """`VectorStore`'s indexing-run hooks for a cluster store (a mixin listed before it).

    The store holds `runs` (an `IndexRuns`) and `generations`, and calls `runs.created` for
    each index it creates, so an index created by the run's first write is marked too.
    """

    runs: IndexRuns
    generations: Generations

    def begin_index_run(self) -> None:
        self.runs.begin(self.generations.hash_target())

    def end_index_run(self) -> None:
        self.runs.end()

    def unfinished_index_run(self) -> dict[str, Any] | None:
        target = self.generations.alias or self.generations.index or ""
        return self.runs.unfinished(self.generations.concrete_indices(target))
