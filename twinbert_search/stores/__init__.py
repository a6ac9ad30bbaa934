"""Vector stores behind one interface: the embedded store (default) and OpenSearch."""

from twinbert_search.stores.base import Candidates, StoreInfo, VectorStore

__all__ = ["Candidates", "StoreInfo", "VectorStore"]
