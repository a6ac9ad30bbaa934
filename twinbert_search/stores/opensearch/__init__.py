"""The OpenSearch store: the only sub-package that imports `opensearchpy`."""

from twinbert_search.stores.opensearch.store import (
    ENV_CA_CERTS,
    ENV_PASSWORD,
    ENV_URL,
    ENV_USERNAME,
    ENV_VERIFY_CERTS,
    BulkOptions,
    ConnectionOptions,
    OpenSearchStore,
    translate_errors,
)

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
