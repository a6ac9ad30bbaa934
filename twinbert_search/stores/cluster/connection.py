"""Where a cluster is and how to authenticate, for any engine; the client is the engine's.

`ClusterConnection` parses the URL once: credentials in it (`https://user:pass@host:9200`)
move to `username`/`password` (explicit values win), and `url` keeps no secret, so it may
appear in messages and logs; the password is left out of the repr. A multi-node cluster may be
given as several comma-separated URLs of one scheme (`http://a:9200,http://b:9200`): the client
spreads requests over them and, while one node is down, sends them to the others. Flags come
first, then the engine's environment variables (`<PREFIX>_URL`, `_USERNAME`, `_PASSWORD`,
`_CA_CERTS`, `_VERIFY_CERTS`). An engine subclasses it, names itself and builds its client.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.cluster.lifecycle import DEFAULT_BASE

logger = logging.getLogger(__name__)

C = TypeVar("C", bound="ClusterConnection")


@dataclass(frozen=True)
class ClusterConnection:
    """Connection options; subclasses set ENGINE ("OpenSearch") and ENV_PREFIX ("OPENSEARCH")."""

    ENGINE: ClassVar[str] = "cluster"
    ENV_PREFIX: ClassVar[str] = "CLUSTER"
    SECRET_KEYS: ClassVar[tuple[str, ...]] = ()  # an engine's extra credentials (api_key)

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True
    timeout: float = 30.0
    max_retries: int = 3
    client_kwargs: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        urls = [u.strip() for u in self.url.split(",") if u.strip()]
        if not urls:
            raise ConfigurationError(f"the {self.ENGINE} URL is empty")
        clean = [self._strip_credentials(u) for u in urls]
        schemes = {urlsplit(u).scheme for u in clean}
        if len(schemes) > 1:
            raise ConfigurationError(
                f"the {self.ENGINE} URLs mix http and https: give every node with one scheme"
            )
        object.__setattr__(self, "url", ",".join(dict.fromkeys(clean)))
        if self.password is not None and self.username is None:
            raise ConfigurationError("a password was given without a username")

    def _strip_credentials(self, url: str) -> str:
        """One node's URL without credentials (moved to username/password) or trailing '/'."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https"):
            raise ConfigurationError(f"the {self.ENGINE} URL must be http(s), got {parts.scheme!r}")
        if not parts.hostname:
            raise ConfigurationError(f"the {self.ENGINE} URL has no host")
        if parts.username and self.username is None:
            object.__setattr__(self, "username", unquote(parts.username))
        if parts.password and self.password is None:
            object.__setattr__(self, "password", unquote(parts.password))
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"

    @classmethod
    def env_name(cls, key: str) -> str:
        """The environment variable for `key` (URL, USERNAME, PASSWORD, CA_CERTS...)."""
        return f"{cls.ENV_PREFIX}_{key}"

    @classmethod
    def from_env(cls: type[C], url: str | None = None, **overrides: Any) -> C:
        """Flags first, then <PREFIX>_URL/_USERNAME/_PASSWORD/_CA_CERTS/_VERIFY_CERTS.

        A key passed as None counts as not given, so a command can hand on every flag.
        """
        url = url or os.environ.get(cls.env_name("URL"))
        if not url:
            raise ConfigurationError(
                f"no {cls.ENGINE} URL: pass --url or set {cls.env_name('URL')}"
            )
        # a flag left out arrives as None: the environment fills it
        for key in ("username", "password", "ca_certs", *cls.SECRET_KEYS):
            if overrides.get(key) is None:
                overrides[key] = os.environ.get(cls.env_name(key.upper())) or None
        if overrides.get("verify_certs") is None:
            verify = os.environ.get(cls.env_name("VERIFY_CERTS"), "true").strip().lower()
            overrides["verify_certs"] = verify not in ("0", "false", "no", "off")
        return cls(url=url, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_flags(cls: type[C], flags: Mapping[str, Any], **engine: Any) -> C:
        """Options from a command's flags (`url`, `username`, `password`, `ca_certs`, `timeout`,
        `client_kwargs`) and the engine's own (`engine`), with the environment's fallbacks."""
        return cls.from_env(
            flags.get("url"),
            username=flags.get("username"),
            password=flags.get("password"),
            ca_certs=flags.get("ca_certs"),
            timeout=flags.get("timeout") or 30.0,
            client_kwargs=flags.get("client_kwargs") or {},
            **engine,
        )

    @property
    def safe_url(self) -> str:
        """The URL as it may appear in messages (it never holds credentials)."""
        return self.url

    @property
    def urls(self) -> list[str]:
        """Each node's URL (one unless several were given, comma-separated)."""
        return self.url.split(",")

    def hosts(self) -> list[dict[str, Any]]:
        """The URLs as a client's host entries (port 9200 unless given)."""
        return [_host_entry(url) for url in self.urls]

    def host(self) -> dict[str, Any]:
        """The first URL as a client's host entry."""
        return self.hosts()[0]

    @property
    def use_ssl(self) -> bool:
        return urlsplit(self.urls[0]).scheme == "https"

    def client_options(self, engine: Mapping[str, Any]) -> dict[str, Any]:
        """A client's keyword arguments: the shared TLS and retry settings, the engine's own
        (`engine`: hosts, timeout and authentication, in its client's words), then
        `client_kwargs`. TLS verification stays on unless explicitly disabled."""
        kwargs: dict[str, Any] = {
            "verify_certs": self.verify_certs,
            "ssl_show_warn": self.verify_certs,
            "max_retries": self.max_retries,
            "retry_on_timeout": True,
            "retry_on_status": (502, 503, 504),
            **engine,
        }
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        if self.use_ssl and not self.verify_certs:
            logger.warning("TLS certificate verification is disabled for %s", self.safe_url)
        if self.password is not None and not self.use_ssl:
            # basic auth is the password in base64: over http anyone on the path can read it
            logger.warning(
                "sending the %s password over plain http to %s: use an https:// URL",
                self.ENGINE,
                self.safe_url,
            )
        kwargs.update(self.client_kwargs)
        return kwargs


def _host_entry(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    host: dict[str, Any] = {
        "host": parts.hostname,
        "port": parts.port or 9200,
        "scheme": parts.scheme,
    }
    if parts.path:
        host["url_prefix"] = parts.path
    return host


def store_arguments(flags: Mapping[str, Any], store_keys: Sequence[str]) -> dict[str, Any]:
    """A store's keyword arguments from a command's flags: its target (the alias `twinbert`
    without --index or --alias) and each of `store_keys` that is given."""
    index, alias = flags.get("index"), flags.get("alias")
    if not index and not alias:
        alias = DEFAULT_BASE
    given = {k: flags[k] for k in store_keys if flags.get(k) is not None}
    return {"index": index, "alias": alias, **given}


def version_numbers(number: str) -> tuple[int, ...]:
    """A cluster version's numbers: "2.19.1" -> (2, 19, 1); a suffix ("-SNAPSHOT") is dropped."""
    parts = []
    for part in number.split("-")[0].split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)
