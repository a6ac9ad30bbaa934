"""The Elasticsearch store: the only sub-package that imports `elasticsearch`.

    connection     ConnectionOptions, ELASTICSEARCH_* variables, the client (basic auth or an
                   API key, TLS), translate_errors, store_from_options (from CLI flags)
    lifecycle      Elasticsearch's index and alias API as the shared lifecycle's IndexAdmin
    index_options  the dense_vector field described by one string
                   (elasticsearch:int8_hnsw16:efc128:innerproduct); score conversions
    assets         request bodies: template, index body, ingest pipeline, kNN and rrf bodies
    store          ElasticsearchStore: the client's calls behind ClusterStoreBase's hooks,
                   the kNN body and scores, the rrf retriever

What every cluster engine shares (document schema, filters, bulk retries, blue/green alias
switching, decoding hits into Candidates, the error table, the write checks and the ingest
pipeline) is in `stores/cluster/`. The official client is imported lazily, inside the
functions that talk to the cluster; it serves 8.x and 9.x clusters (the 8.x client sends
`compatible-with=8`, which 9.x nodes accept).
"""

from twinbert_search.stores.cluster.bulk import BulkOptions
from twinbert_search.stores.elasticsearch.connection import (
    ENV_API_KEY,
    ENV_CA_CERTS,
    ENV_PASSWORD,
    ENV_URL,
    ENV_USERNAME,
    ENV_VERIFY_CERTS,
    ConnectionOptions,
    translate_errors,
)
from twinbert_search.stores.elasticsearch.index_options import IndexOptions
from twinbert_search.stores.elasticsearch.store import ElasticsearchStore

__all__ = [
    "ENV_API_KEY",
    "ENV_CA_CERTS",
    "ENV_PASSWORD",
    "ENV_URL",
    "ENV_USERNAME",
    "ENV_VERIFY_CERTS",
    "BulkOptions",
    "ConnectionOptions",
    "ElasticsearchStore",
    "IndexOptions",
    "translate_errors",
]
