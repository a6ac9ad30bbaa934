"""The embedded store: SQLite documents, FAISS recall and a BM25 index in one directory."""

from twinbert_search.stores.embedded.store import EmbeddedStore

__all__ = ["EmbeddedStore"]
