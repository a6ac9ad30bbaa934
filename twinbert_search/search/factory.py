"""A two-stage Searcher from CLI or service options: the store the options name, and its model.

Before reading a store, `search`, `eval` and `serve` ask two questions of it here, so each
says the same thing: does it hold any documents (`require_documents`), and did its last
indexing run complete (`incomplete_warning`)?
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinbert_search.errors import StoreError
from twinbert_search.stores.factory import EMBEDDED, check_options, embedded_dir, open_store

if TYPE_CHECKING:
    from twinbert_search.search.fusion import HybridFusion
    from twinbert_search.search.searcher import Searcher
    from twinbert_search.stores.base import VectorStore

__all__ = ["incomplete_warning", "open_searcher", "require_documents"]

REINDEX = "run `twinbert-search index` again to complete it"


def open_searcher(
    backend: str,
    *,
    model: str | Path | None = None,
    int8: bool = False,
    threads: int | None = None,
    index_dir: str | Path | None = None,
    pool_size: int | None = None,
    hybrid_fusion: HybridFusion | None = None,
    spinning: bool = True,
    **cluster_kwargs: Any,
) -> Searcher:
    """A two-stage Searcher over the configured store and model (the default model if None).

    `int8` picks the int8 query graph; the document side follows what the store records;
    `pool_size` is how many connections a cluster client keeps (`stores.factory.open_store`).
    `hybrid_fusion` overrides the model's hybrid fusion (and is fused by the searcher, never
    the engine). `spinning` as in `TwinBertRuntime.load`. The caller closes `searcher.store`.
    """
    from twinbert_search.search import Searcher

    check_options(backend, index_dir=index_dir, **cluster_kwargs)
    if backend == EMBEDDED:
        return Searcher.open(
            embedded_dir(index_dir),
            model,
            int8=int8,
            threads=threads,
            hybrid_fusion=hybrid_fusion,
            spinning=spinning,
        )
    from twinbert_search.runtime import TwinBertRuntime
    from twinbert_search.runtime.model import document_graph_of
    from twinbert_search.runtime.models import resolve_model

    store = open_store(backend, writable=False, pool_size=pool_size, **cluster_kwargs)
    try:
        runtime = TwinBertRuntime.load(
            resolve_model(model), query_int8=int8, threads=threads, spinning=spinning
        )
        runtime.document_graph = document_graph_of(store.info.model_fingerprint)
        return Searcher(runtime, store, hybrid_fusion=hybrid_fusion)
    except BaseException:
        store.close()
        raise


def require_documents(store: VectorStore) -> None:
    """Raise StoreError when the store holds no documents: every metric would read 0.0."""
    if store.info.count > 0:
        return
    where = store.location()["where"]
    why = "its indexing run did not complete; " if store.unfinished_index_run() else ""
    raise StoreError(f"{where} holds no documents ({why}index a corpus: `twinbert-search index`)")


def incomplete_warning(store: VectorStore) -> str | None:
    """One line saying the store's last indexing run did not complete, or None if it did."""
    run = store.unfinished_index_run()
    if run is None:
        return None
    where = store.location()["where"]
    started = run.get("started", "at an unknown time")
    return (
        f"{where} is incomplete: an indexing run started {started} did not finish "
        f"(killed, crashed or stopped by a bad record); {REINDEX}"
    )
