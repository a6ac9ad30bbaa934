"""The OpenSearch store: the only sub-package that imports `opensearchpy`.

    connection     ConnectionOptions, environment variables, the client, translate_errors,
                   store_from_options (a store from CLI flags or service config)
    lifecycle      OpenSearch's index and alias API as the shared lifecycle's IndexAdmin
    index_options  the k-NN field described by one string (faiss:hnsw16:efc128:fp16:...)
    assets         request bodies: template, index body, pipelines, search bodies
    ml             ML Commons: package, register and deploy the document encoder
    store          OpenSearchStore: opensearch-py's calls behind ClusterStoreBase's hooks,
                   the `knn` and `hybrid` queries, in-cluster encoding

What any cluster engine shares (document schema, filters, bulk retries, blue/green alias
switching, decoding hits into Candidates, the error table) is in `stores/cluster/`.
opensearch-py itself is imported lazily, inside the functions that talk to the cluster.
"""

from twinbert_search.stores.cluster.bulk import BulkOptions
from twinbert_search.stores.opensearch.connection import (
    ENV_CA_CERTS,
    ENV_PASSWORD,
    ENV_URL,
    ENV_USERNAME,
    ENV_VERIFY_CERTS,
    ConnectionOptions,
    translate_errors,
)
from twinbert_search.stores.opensearch.store import OpenSearchStore

__all__ = [
    "ENV_CA_CERTS",
    "ENV_PASSWORD",
    "ENV_URL",
    "ENV_USERNAME",
    "ENV_VERIFY_CERTS",
    "BulkOptions",
    "ConnectionOptions",
    "OpenSearchStore",
    "translate_errors",
]
