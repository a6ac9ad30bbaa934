"""The embedded store: SQLite documents, FAISS recall and a BM25 index in one directory.

`EmbeddedStore` (store.py) composes one module per job: `layout` (the directory and
store.json), `database` (SQLite), `writer` (the writer lock, upserts, deletes), `snapshot`
(building and publishing a search snapshot), `reader` (recall, fetch, BM25 on a snapshot),
`bm25` (the BM25 index itself), `ann` (the FAISS index, described by a short string),
`codecs` (how stored vectors are encoded) and `filters` (metadata filter postings). Only this
room imports faiss at module level (`tests/test_layout.py`).
"""

from twinbert_search.stores.embedded.store import EmbeddedStore

__all__ = ["EmbeddedStore"]
