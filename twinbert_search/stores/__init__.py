"""Vector stores behind one interface (`base.VectorStore`), chosen by `factory.open_store`.

`embedded/` is the default (a directory: SQLite, FAISS, BM25); `opensearch/` is a cluster
backend, built on `cluster/`, which holds what every cluster engine shares so another one
(Elasticsearch) joins beside it. `ann`, `codecs` and `filters` serve the embedded store.
"""

from twinbert_search.stores.base import Candidates, StoreInfo, VectorStore

__all__ = ["Candidates", "StoreInfo", "VectorStore"]
