"""One error table for every cluster engine: what a failed request becomes in this package.

Each engine's client raises its own exception classes; the engine's `translate_errors` maps
them onto the rows of this table, so OpenSearch and Elasticsearch fail with the same errors
and messages. Transient failures (no answer, a timeout, 429, 5xx) are BackendUnavailableError,
the caller's retry signal; the rest is StoreError. Three failures a user fixes in their own
settings get classes (and exit codes) of their own: credentials rejected (401), permission
denied (403, naming the user and the action their roles lack), and a TLS certificate that is
not trusted (an unknown CA or a host name the certificate does not name). Messages name the
URL and the user, never a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from twinbert_search.errors import (
    BackendUnavailableError,
    CredentialsRejectedError,
    PermissionDeniedError,
    StoreError,
    UntrustedCertificateError,
)

# What the engines' security layers say on a 403, the action and user in their own words:
# OpenSearch's security plugin and Elasticsearch's security.
DENIED = (
    re.compile(r"no permissions for \[(?P<action>.+?)\] and User \[name=(?P<user>[^,\]]+)"),
    re.compile(
        r"action \[(?P<action>.+?)\] is unauthorized for user \[(?P<user>[^\]]+)\]"
        r"(?:.*? on indices \[(?P<indices>[^\]]+)\])?"
    ),
)
# A connection the server closed before answering (urllib3 and http.client's words).
CLOSED_WITHOUT_ANSWER = ("RemoteDisconnected", "Connection aborted", "Connection reset by peer")
# The reason in an SSL error: "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed:
# unable to get local issuer certificate (_ssl.c:1006)" -> "unable to get local issuer ...".
CERTIFICATE_FAILED = re.compile(r"certificate verify failed: (?P<why>[^()\]]+)")


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
    checks when the credentials are rejected, `ca_env` the one naming the CA to trust.
    """

    engine: str
    password_env: str
    ca_env: str = "the CA certificate variable"

    def timed_out(self, what: str, url: str) -> StoreError:
        return BackendUnavailableError(f"{what}: {self.engine} at {url} timed out")

    def unreachable(self, what: str, url: str, exc: BaseException) -> StoreError:
        if url.startswith("http://") and any(w in str(exc) for w in CLOSED_WITHOUT_ANSWER):
            # what a TLS-only cluster (the security plugin) does to a plain-http request
            return BackendUnavailableError(
                f"{what}: {self.engine} at {url} closed the connection without an answer, as "
                "a cluster that serves only TLS does to plain http; if it does, use an "
                "https:// URL (and --ca-certs)"
            )
        return BackendUnavailableError(
            f"{what}: cannot reach {self.engine} at {url} ({type(exc).__name__}); "
            "check --url, TLS (--ca-certs) and that the cluster is up"
        )

    def rejected_credentials(self, what: str, url: str, user: str | None = None) -> StoreError:
        if not user:
            return CredentialsRejectedError(
                f"{what}: authentication failed: {self.engine} at {url} requires credentials "
                f"(pass --username, with the password in {self.password_env})"
            )
        return CredentialsRejectedError(
            f"{what}: authentication failed: {self.engine} at {url} rejected the credentials "
            f"of user {user!r} (check --username and {self.password_env})"
        )

    def forbidden(self, what: str, exc: Any, user: str | None = None) -> StoreError:
        """A 403: the user and the action their roles lack, when the engine said so."""
        said = reason(exc) if getattr(exc, "info", None) else ""
        found = next((m for p in DENIED if (m := p.search(said))), None)
        action = found["action"] if found else None
        user = user or (found["user"] if found else None)
        who = f"user {user!r}" if user else "these credentials"
        if action:
            indices = found.groupdict().get("indices") if found else None
            on = f" on {indices}" if indices else ""
            detail = f"the user's roles do not grant {action}{on}"
        else:
            detail = f"{self.engine} answered 403 Forbidden" + (f" ({said})" if said else "")
        return PermissionDeniedError(
            f"{what}: permission denied for {who} by {self.engine}: {detail}",
            user=user,
            action=action,
        )

    def untrusted(self, what: str, url: str, exc: BaseException) -> StoreError | None:
        """A certificate that failed verification; None for other TLS failures."""
        # opensearch-py's text holds the reason; elastic_transport's str() is "TLS error", with
        # the reason in `message` and the underlying errors
        said = " ".join(
            [str(exc), str(getattr(exc, "message", ""))]
            + [str(e) for e in getattr(exc, "errors", ())]
        )
        found = CERTIFICATE_FAILED.search(said)
        if not found:
            return None
        why = found["why"].strip().rstrip(".")
        fix = (
            "connect with a host name or address the certificate names (--url)"
            if "mismatch" in why
            else f"pass --ca-certs (or {self.ca_env}) with the CA that signed it"
        )
        return UntrustedCertificateError(
            f"{what}: certificate not trusted: the TLS certificate of {self.engine} at {url} "
            f"failed verification ({why}); {fix}"
        )

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
        user: str | None = None,
    ) -> Iterator[None]:
        """Map a client's exceptions onto the rows, most specific first.

        `exceptions` is the client's module of exception classes: both clients name them
        alike (ConnectionTimeout, ConnectionError, AuthenticationException,
        AuthorizationException). `answered` is the class of HTTP errors (it has
        `status_code`); `below_http`, failures under HTTP that the client does not class as
        connection errors (TLS), count as no answer. `user` (never the password) is named when
        the cluster refuses it. A TLS certificate that fails verification is no transient
        failure: it is UntrustedCertificateError, which callers do not retry.
        """
        try:
            yield
        except exceptions.ConnectionTimeout as exc:
            raise self.timed_out(what, url) from exc
        except exceptions.SSLError as exc:
            raise (self.untrusted(what, url, exc) or self.unreachable(what, url, exc)) from exc
        except exceptions.ConnectionError as exc:
            raise self.unreachable(what, url, exc) from exc
        except exceptions.AuthenticationException as exc:
            raise self.rejected_credentials(what, url, user) from exc
        except exceptions.AuthorizationException as exc:
            raise self.forbidden(what, exc, user) from exc
        except answered as exc:
            raise self.answered(what, getattr(exc, "status_code", None), exc) from exc
        except below_http as exc:
            raise self.unreachable(what, url, exc) from exc
