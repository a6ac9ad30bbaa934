"""Vector stores behind one interface (`base.VectorStore`), chosen by `factory.open_store`.

`embedded/` is the default (a directory: SQLite, FAISS, BM25); `opensearch/` and
`elasticsearch/` are the cluster backends, each the only importer of its engine's client, both
built on `cluster/`, which holds what every cluster engine shares (schema, queries, reads, bulk
retries, blue/green lifecycle, write checks, the ingest pipeline, the error table).
`ann`, `codecs` and `filters` serve the embedded store.
"""

from twinbert_search.stores.base import Candidates, StoreInfo, VectorStore

__all__ = ["Candidates", "StoreInfo", "VectorStore"]
