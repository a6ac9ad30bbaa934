"""One error table for every cluster engine: what a failed request becomes in this package.

Each engine's client raises its own exception classes; the engine's `translate_errors` maps
them onto the rows of this table, so OpenSearch and Elasticsearch fail with the same errors
and messages. Transient failures (no answer, a timeout, 429, 5xx) are BackendUnavailableError,
the caller's retry signal; the rest is StoreError. Messages name the URL without credentials.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from twinbert_search.errors import BackendUnavailableError, StoreError


def reason(exc: Any) -> str:
    """The server's error type and reason when it sent one, else the exception's text."""
    info = getattr(exc, "info", None)
    if isinstance(info, Mapping) and isinstance(info.get("error"), Mapping):
        error = info["error"]
        return f"{error.get('type', 'error')}: {str(error.get('reason', ''))[:500]}"
    return str(getattr(exc, "error", exc))[:500]


def is_transient(status: int | None) -> bool:
    """No status (the request never got an answer), 429 or 5xx: worth retrying later."""
    return status is None or status == 429 or status >= 500


@dataclass(frozen=True)
class ErrorTable:
    """The package's error for each kind of failure, worded for one engine.

    `engine` names it in messages ("OpenSearch"); `password_env` is the variable a user
    checks when the credentials are rejected.
    """

    engine: str
    password_env: str

    def timed_out(self, what: str, url: str) -> StoreError:
        return BackendUnavailableError(f"{what}: {self.engine} at {url} timed out")

    def unreachable(self, what: str, url: str, exc: BaseException) -> StoreError:
        return BackendUnavailableError(
            f"{what}: cannot reach {self.engine} at {url} ({type(exc).__name__}); "
            "check --url, TLS (--ca-certs) and that the cluster is up"
        )

    def rejected_credentials(self, what: str, url: str) -> StoreError:
        return StoreError(
            f"{what}: {self.engine} at {url} rejected the credentials "
            f"(check --username and {self.password_env})"
        )

    def forbidden(self, what: str, exc: Any) -> StoreError:
        return StoreError(f"{what}: permission denied by {self.engine} ({reason(exc)})")

    def answered(self, what: str, status_code: Any, exc: Any) -> StoreError:
        """Any other HTTP error: transient statuses are BackendUnavailableError."""
        status = status_code if isinstance(status_code, int) else None
        message = f"{what}: {self.engine} answered {status_code}: {reason(exc)}"
        if is_transient(status):
            return BackendUnavailableError(message)
        return StoreError(message)

    def missing(self, what: str, target: str, url: str) -> StoreError:
        """The index or alias read from does not exist."""
        return StoreError(f"{what}: {target} does not exist at {url}")

    @contextmanager
    def translating(
        self,
        url: str,
        what: str,
        exceptions: Any,
        *,
        answered: type[BaseException],
        below_http: tuple[type[BaseException], ...] = (),
    ) -> Iterator[None]:
        """Map a client's exceptions onto the rows, most specific first.

        `exceptions` is the client's module of exception classes: both clients name them
        alike (ConnectionTimeout, ConnectionError, AuthenticationException,
        AuthorizationException). `answered` is the class of HTTP errors (it has
        `status_code`); `below_http`, failures under HTTP that the client does not class as
        connection errors (TLS), count as no answer.
        """
        try:
            yield
        except exceptions.ConnectionTimeout as exc:
            raise self.timed_out(what, url) from exc
        except exceptions.ConnectionError as exc:
            raise self.unreachable(what, url, exc) from exc
        except exceptions.AuthenticationException as exc:
            raise self.rejected_credentials(what, url) from exc
        except exceptions.AuthorizationException as exc:
            raise self.forbidden(what, exc) from exc
        except answered as exc:
            raise self.answered(what, getattr(exc, "status_code", None), exc) from exc
        except below_http as exc:
            raise self.unreachable(what, url, exc) from exc
