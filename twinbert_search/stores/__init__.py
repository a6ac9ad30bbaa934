"""Vector stores behind one interface (`base.VectorStore`), chosen by `factory.open_store`.

`embedded/` is the default (a directory: SQLite, FAISS, BM25, with its own ANN index, vector
codecs and metadata filters); `opensearch/` and
`elasticsearch/` are the cluster backends, each the only importer of its engine's client, both
built on `cluster/`, which holds what every cluster engine shares (schema, queries, reads, bulk
retries, blue/green lifecycle, write checks, the ingest pipeline, the error table, and the
store methods both engines share).
"""

from twinbert_search.stores.base import Candidates, StoreInfo, VectorStore

__all__ = ["Candidates", "StoreInfo", "VectorStore"]
