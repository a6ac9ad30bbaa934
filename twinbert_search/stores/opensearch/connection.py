"""From a command's keyword arguments to a connection and an OpenSearchStore.

The CLI's connection flags and the service's config carry the same names (`OPTION_NAMES`):
--url (or OPENSEARCH_URL), --index, --alias, --username, --password, --ca-certs,
--verify-certs, --timeout. `store_from_options(**kwargs)` takes them as they are and ignores
keys it does not know, so a command can pass all of its own.
"""

from __future__ import annotations

from typing import Any

from twinbert_search.stores.opensearch import assets
from twinbert_search.stores.opensearch.store import ConnectionOptions, OpenSearchStore

__all__ = ["OPTION_NAMES", "STORE_KWARGS", "connection_from_options", "store_from_options"]

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
STORE_KWARGS = ("manifest", "index_options", "bulk", "ef_search", "hybrid_weights")


def connection_from_options(**kwargs: Any) -> ConnectionOptions:
    """ConnectionOptions from the flags (environment fallbacks included)."""
    return ConnectionOptions.from_env(
        kwargs.get("url"),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        ca_certs=kwargs.get("ca_certs"),
        verify_certs=kwargs.get("verify_certs", True),
        timeout=kwargs.get("timeout") or 30.0,
        client_kwargs=kwargs.get("client_kwargs") or {},
    )


def store_from_options(**kwargs: Any) -> OpenSearchStore:
    """An OpenSearchStore from a command's kwargs; keys it does not know are ignored.

    Besides the `opensearch_options` flags it takes the store's own keyword arguments
    (manifest, index_options, bulk, ef_search, hybrid_weights) and `client_kwargs`.
    Without --index or --alias the target is the alias `twinbert`.
    """
    connection = connection_from_options(**kwargs)
    index, alias = kwargs.get("index"), kwargs.get("alias")
    if not index and not alias:
        alias = assets.DEFAULT_BASE
    extra = {k: kwargs[k] for k in STORE_KWARGS if kwargs.get(k) is not None}
    return OpenSearchStore(connection, index=index, alias=alias, **extra)
