"""A two-stage Searcher from CLI or service options: the store the options name, and its model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinbert_search.stores.factory import EMBEDDED, check_options, embedded_dir, open_store

if TYPE_CHECKING:
    from twinbert_search.search.searcher import Searcher

__all__ = ["open_searcher"]


def open_searcher(
    backend: str,
    *,
    model: str | Path | None = None,
    int8: bool = False,
    threads: int | None = None,
    index_dir: str | Path | None = None,
    **cluster_kwargs: Any,
) -> Searcher:
    """A two-stage Searcher over the configured store and model (the default model if None).

    `int8` picks the int8 query graph; the document side follows what the store records.
    The caller closes `searcher.store`.
    """
    from twinbert_search.search import Searcher

    check_options(backend, index_dir=index_dir, **cluster_kwargs)
    if backend == EMBEDDED:
        return Searcher.open(embedded_dir(index_dir), model, int8=int8, threads=threads)
    from twinbert_search.runtime import TwinBertRuntime
    from twinbert_search.runtime.model import document_graph_of
    from twinbert_search.runtime.models import resolve_model

    store = open_store(backend, writable=False, **cluster_kwargs)
    try:
        runtime = TwinBertRuntime.load(resolve_model(model), query_int8=int8, threads=threads)
        runtime.document_graph = document_graph_of(store.info.model_fingerprint)
        return Searcher(runtime, store)
    except BaseException:
        store.close()
        raise
