"""Connecting to OpenSearch: options, the opensearch-py client, its errors, a store from flags.

The CLI's connection flags and the service's config carry the same names (`OPTION_NAMES`):
--url (or OPENSEARCH_URL), --index, --alias, --username, --password, --ca-certs,
--verify-certs, --timeout. `store_from_options(**kwargs)` takes them as they are and ignores
keys it does not know, so a command can pass all of its own.

Credentials never reach logs, reprs or error messages: the URL is stored without them and the
password field is excluded from the options' repr (`stores/cluster/connection.py`).
`translate_errors` maps opensearch-py's exceptions onto the shared error table.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twinbert_search.stores.cluster.connection import ClusterConnection, store_arguments
from twinbert_search.stores.cluster.errors import ErrorTable

if TYPE_CHECKING:
    from twinbert_search.stores.opensearch.store import OpenSearchStore

__all__ = [
    "ENV_CA_CERTS",
    "ENV_PASSWORD",
    "ENV_URL",
    "ENV_USERNAME",
    "ENV_VERIFY_CERTS",
    "OPTION_NAMES",
    "STORE_KWARGS",
    "ConnectionOptions",
    "connection_from_options",
    "store_from_options",
    "translate_errors",
]

ENV_URL = "OPENSEARCH_URL"
ENV_USERNAME = "OPENSEARCH_USERNAME"
ENV_PASSWORD = "OPENSEARCH_PASSWORD"
ENV_CA_CERTS = "OPENSEARCH_CA_CERTS"
ENV_VERIFY_CERTS = "OPENSEARCH_VERIFY_CERTS"  # "false" only for local demo clusters
ERRORS = ErrorTable(engine="OpenSearch", password_env=ENV_PASSWORD, ca_env=ENV_CA_CERTS)

OPTION_NAMES = (
    "url",
    "index",
    "alias",
    "username",
    "password",
    "ca_certs",
    "verify_certs",
    "timeout",
)
STORE_KWARGS = ("manifest", "index_options", "bulk", "ef_search", "vector_cache_mb")


@dataclass(frozen=True)
class ConnectionOptions(ClusterConnection):
    """Where the cluster is and how to authenticate; `url` never keeps credentials.

    Credentials in the URL (`https://user:pass@host:9200`) move to `username`/`password`, and
    explicit values win over them. `client_kwargs` reaches opensearch-py unchanged (a custom
    `connection_class` in tests, for instance).
    """

    ENGINE = "OpenSearch"
    ENV_PREFIX = "OPENSEARCH"

    def client(self) -> Any:
        """An opensearch-py client; TLS verification stays on unless explicitly disabled.

        JSON goes through orjson (a `serializer` in `client_kwargs` wins); responses are not
        gzipped (opensearch-py's `http_compress` stays off: on the recall's half megabyte the
        node's gzip costs more than the bytes it saves, BENCHMARKS.md).
        """
        from opensearchpy import OpenSearch

        from twinbert_search.stores.opensearch.serializer import OrjsonSerializer

        engine: dict[str, Any] = {
            "hosts": self.hosts(),
            "use_ssl": self.use_ssl,
            "timeout": self.timeout,
            "serializer": OrjsonSerializer(),
        }
        if self.username is not None:
            engine["http_auth"] = (self.username, self.password or "")
        return OpenSearch(**self.client_options(engine))


def translate_errors(
    safe_url: str, what: str, user: str | None = None
) -> AbstractContextManager[None]:
    """Turn opensearch-py exceptions into the package's errors, naming no password (`user`, the
    username, is named when the cluster refuses it)."""
    from opensearchpy import exceptions

    return ERRORS.translating(
        safe_url, what, exceptions, answered=exceptions.TransportError, user=user
    )


def connection_from_options(**kwargs: Any) -> ConnectionOptions:
    """ConnectionOptions from the flags (environment fallbacks included)."""
    return ConnectionOptions.from_flags(kwargs, verify_certs=kwargs.get("verify_certs", True))


def store_from_options(**kwargs: Any) -> OpenSearchStore:
    """An OpenSearchStore from a command's kwargs; keys it does not know are ignored.

    Besides the `opensearch_options` flags it takes the store's own keyword arguments
    (manifest, index_options, bulk, ef_search) and `client_kwargs`.
    Without --index or --alias the target is the alias `twinbert`.
    """
    from twinbert_search.stores.opensearch.store import OpenSearchStore

    return OpenSearchStore(
        connection_from_options(**kwargs), **store_arguments(kwargs, STORE_KWARGS)
    )
