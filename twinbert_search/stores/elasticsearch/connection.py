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

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.cluster.connection import ClusterConnection, store_arguments
from twinbert_search.stores.cluster.errors import ErrorTable

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

ENV_URL = "ELASTICSEARCH_URL"
ENV_USERNAME = "ELASTICSEARCH_USERNAME"
ENV_PASSWORD = "ELASTICSEARCH_PASSWORD"
ENV_API_KEY = "ELASTICSEARCH_API_KEY"
ENV_CA_CERTS = "ELASTICSEARCH_CA_CERTS"
ENV_VERIFY_CERTS = "ELASTICSEARCH_VERIFY_CERTS"  # "false" only for local demo clusters
ERRORS = ErrorTable(
    engine="Elasticsearch", password_env=f"{ENV_PASSWORD} or {ENV_API_KEY}", ca_env=ENV_CA_CERTS
)

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
STORE_KWARGS = ("manifest", "index_options", "bulk", "num_candidates", "vector_cache_mb")


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

    def nodes(self) -> list[dict[str, Any]]:
        """The URLs as the client's node entries (port 9200 unless given)."""
        nodes = []
        for host in self.hosts():
            node = {"scheme": host["scheme"], "host": host["host"], "port": host["port"]}
            if host.get("url_prefix"):
                node["path_prefix"] = host["url_prefix"]
            nodes.append(node)
        return nodes

    def node(self) -> dict[str, Any]:
        """The first URL as the client's node entry."""
        return self.nodes()[0]

    def client(self) -> Any:
        """The official client; TLS verification stays on unless explicitly disabled.

        JSON goes through orjson (`serializer` or `serializers` in `client_kwargs` win);
        `http_compress` stays off, as on OpenSearch.
        """
        from elasticsearch import Elasticsearch

        from twinbert_search.stores.elasticsearch.serializer import OrjsonSerializer

        engine: dict[str, Any] = {"hosts": self.nodes(), "request_timeout": self.timeout}
        if "serializers" not in self.client_kwargs:
            engine["serializer"] = OrjsonSerializer()
        if self.api_key:
            engine["api_key"] = self.api_key
        elif self.username is not None:
            engine["basic_auth"] = (self.username, self.password or "")
        return Elasticsearch(**self.client_options(engine))


def translate_errors(
    safe_url: str, what: str, user: str | None = None
) -> AbstractContextManager[None]:
    """Turn the client's exceptions into the package's errors, naming no password (`user`, the
    username, is named when the cluster refuses it)."""
    import elasticsearch

    return ERRORS.translating(
        safe_url,
        what,
        elasticsearch,
        answered=elasticsearch.ApiError,
        below_http=(elasticsearch.TransportError,),  # TLS and other failures below HTTP
        user=user,
    )


def connection_from_options(**kwargs: Any) -> ConnectionOptions:
    """ConnectionOptions from the flags (environment fallbacks included)."""
    if kwargs.get("es_api_key") and kwargs.get("password"):
        raise ConfigurationError("give an API key or a password, not both")
    return ConnectionOptions.from_flags(
        kwargs, api_key=kwargs.get("es_api_key"), verify_certs=kwargs.get("verify_certs")
    )


def store_from_options(**kwargs: Any) -> ElasticsearchStore:
    """An ElasticsearchStore from a command's kwargs; keys it does not know are ignored.

    Besides the connection flags it takes the store's keyword arguments (manifest,
    index_options, bulk, num_candidates) and `client_kwargs`. Without --index or --alias
    the target is the alias `twinbert`.
    """
    from twinbert_search.stores.elasticsearch.store import ElasticsearchStore

    return ElasticsearchStore(
        connection_from_options(**kwargs), **store_arguments(kwargs, STORE_KWARGS)
    )
