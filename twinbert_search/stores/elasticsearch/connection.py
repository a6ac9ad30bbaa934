"""Connecting to Elasticsearch: options, the official client, its errors, a store from flags.

The flags are the cluster flags every command shares (`cli/options.py`: --url, --index,
--alias, --username, --password, --ca-certs, --verify-certs, --timeout) plus --es-api-key;
left out, each falls back to ELASTICSEARCH_URL, _USERNAME, _PASSWORD, _API_KEY, _CA_CERTS or
_VERIFY_CERTS. An API key (the base64 `id:key` Elasticsearch prints as `encoded`) wins over
basic auth. `store_from_options(**kwargs)` takes a command's kwargs and ignores keys it does
not know.

Credentials never reach logs, reprs or error messages: the URL is stored without them, and the
password and API key are left out of the options' repr (`stores/cluster/connection.py`).
`translate_errors` maps the client's exceptions onto the error table OpenSearch uses too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.cluster.connection import ClusterConnection
from twinbert_search.stores.cluster.errors import ErrorTable
from twinbert_search.stores.cluster.lifecycle import DEFAULT_BASE

if TYPE_CHECKING:
    from twinbert_search.stores.elasticsearch.store import ElasticsearchStore

__all__ = [
    "ENV_API_KEY",
    "ENV_CA_CERTS",
    "ENV_PASSWORD",
    "ENV_URL",
    "ENV_USERNAME",
    "ENV_VERIFY_CERTS",
    "OPTION_NAMES",
    "ConnectionOptions",
    "connection_from_options",
    "store_from_options",
    "translate_errors",
]

logger = logging.getLogger(__name__)

ENV_URL = "ELASTICSEARCH_URL"
ENV_USERNAME = "ELASTICSEARCH_USERNAME"
ENV_PASSWORD = "ELASTICSEARCH_PASSWORD"
ENV_API_KEY = "ELASTICSEARCH_API_KEY"
ENV_CA_CERTS = "ELASTICSEARCH_CA_CERTS"
ENV_VERIFY_CERTS = "ELASTICSEARCH_VERIFY_CERTS"  # "false" only for local demo clusters
ERRORS = ErrorTable(engine="Elasticsearch", password_env=f"{ENV_PASSWORD} or {ENV_API_KEY}")

OPTION_NAMES = (
    "url",
    "index",
    "alias",
    "username",
    "password",
    "es_api_key",
    "ca_certs",
    "verify_certs",
    "timeout",
)
STORE_KWARGS = ("manifest", "index_options", "bulk", "num_candidates")


@dataclass(frozen=True)
class ConnectionOptions(ClusterConnection):
    """Where the cluster is and how to authenticate; `url` never keeps credentials.

    `api_key` is the encoded API key (Authorization: ApiKey ...); `client_kwargs` reaches the
    client unchanged (a fake node class in tests, for instance).
    """

    ENGINE = "Elasticsearch"
    ENV_PREFIX = "ELASTICSEARCH"
    SECRET_KEYS = ("api_key",)

    api_key: str | None = field(default=None, repr=False)

    def node(self) -> dict[str, Any]:
        """The URL as the client's node entry (port 9200 unless given)."""
        host = self.host()
        node = {"scheme": host["scheme"], "host": host["host"], "port": host["port"]}
        if host.get("url_prefix"):
            node["path_prefix"] = host["url_prefix"]
        return node

    def client(self) -> Any:
        """The official client; TLS verification stays on unless explicitly disabled."""
        from elasticsearch import Elasticsearch

        kwargs: dict[str, Any] = {
            "hosts": [self.node()],
            "verify_certs": self.verify_certs,
            "ssl_show_warn": self.verify_certs,
            "request_timeout": self.timeout,
            "max_retries": self.max_retries,
            "retry_on_timeout": True,
            "retry_on_status": (502, 503, 504),
        }
        if self.api_key:
            kwargs["api_key"] = self.api_key
        elif self.username is not None:
            kwargs["basic_auth"] = (self.username, self.password or "")
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        if self.use_ssl and not self.verify_certs:
            logger.warning("TLS certificate verification is disabled for %s", self.safe_url)
        kwargs.update(self.client_kwargs)
        return Elasticsearch(**kwargs)


@contextmanager
def translate_errors(safe_url: str, what: str) -> Iterator[None]:
    """Turn the client's exceptions into the package's errors, naming no credentials."""
    import elasticsearch

    try:
        yield
    except elasticsearch.ConnectionTimeout as exc:
        raise ERRORS.timed_out(what, safe_url) from exc
    except elasticsearch.ConnectionError as exc:
        raise ERRORS.unreachable(what, safe_url, exc) from exc
    except elasticsearch.AuthenticationException as exc:
        raise ERRORS.rejected_credentials(what, safe_url) from exc
    except elasticsearch.AuthorizationException as exc:
        raise ERRORS.forbidden(what, exc) from exc
    except elasticsearch.ApiError as exc:
        raise ERRORS.answered(what, exc.status_code, exc) from exc
    except elasticsearch.TransportError as exc:  # TLS and other failures below HTTP
        raise ERRORS.unreachable(what, safe_url, exc) from exc


def connection_from_options(**kwargs: Any) -> ConnectionOptions:
    """ConnectionOptions from the flags (environment fallbacks included)."""
    if kwargs.get("es_api_key") and kwargs.get("password"):
        raise ConfigurationError("give an API key or a password, not both")
    return ConnectionOptions.from_env(
        kwargs.get("url"),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        api_key=kwargs.get("es_api_key"),
        ca_certs=kwargs.get("ca_certs"),
        verify_certs=kwargs.get("verify_certs"),
        timeout=kwargs.get("timeout") or 30.0,
        client_kwargs=kwargs.get("client_kwargs") or {},
    )


def store_from_options(**kwargs: Any) -> ElasticsearchStore:
    """An ElasticsearchStore from a command's kwargs; keys it does not know are ignored.

    Besides the connection flags it takes the store's keyword arguments (manifest,
    index_options, bulk, num_candidates) and `client_kwargs`. Without --index or --alias
    the target is the alias `twinbert`.
    """
    from twinbert_search.stores.elasticsearch.store import ElasticsearchStore

    connection = connection_from_options(**kwargs)
    index, alias = kwargs.get("index"), kwargs.get("alias")
    if not index and not alias:
        alias = DEFAULT_BASE
    extra = {k: kwargs[k] for k in STORE_KWARGS if kwargs.get(k) is not None}
    return ElasticsearchStore(connection, index=index, alias=alias, **extra)
