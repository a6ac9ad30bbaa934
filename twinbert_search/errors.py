"""One error hierarchy for the whole package.

The CLI maps these to exit codes and the service to HTTP statuses, each in exactly one place,
so library code raises them with the offending record or field as named attributes.
"""

from __future__ import annotations


class TwinBertSearchError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 1


class ConfigurationError(TwinBertSearchError):
    """A flag, manifest or setting is invalid or inconsistent."""

    exit_code = 2


class ModelError(ConfigurationError):
    """A model or checkpoint directory is missing, incomplete or not of a supported kind."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class InputError(TwinBertSearchError):
    """A record of user data is malformed; names the source, line and field when known."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        record_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.record_id = record_id
        self.field = field
        self.reason = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.source:
            where.append(str(self.source) + (f":{self.line}" if self.line is not None else ""))
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.record_id is not None:
            where.append(f"id {self.record_id!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class EmptyDocumentError(InputError):
    """A document with neither title nor text: nothing to encode or match.

    `index` skips and counts these by default (`--strict` makes them errors), so it is told
    apart from the malformed records that stop a run.
    """


class StoreError(TwinBertSearchError):
    """The vector store cannot serve or accept the request."""

    exit_code = 4


class ModelMismatchError(StoreError):
    """The store was built with a different model than the one given."""

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class BackendUnavailableError(StoreError):
    """A remote backend (OpenSearch) is unreachable or failing."""

    exit_code = 5


class CredentialsRejectedError(StoreError):
    """A remote backend answered 401: the username or password (or API key) is wrong."""

    exit_code = 6


class PermissionDeniedError(StoreError):
    """A remote backend answered 403: the user may not do this; `user` and `action` when known."""

    exit_code = 7

    def __init__(self, message: str, *, user: str | None = None, action: str | None = None):
        super().__init__(message)
        self.user = user
        self.action = action


class UntrustedCertificateError(StoreError):
    """A remote backend's TLS certificate failed verification (unknown CA, wrong host name)."""

    exit_code = 8


class BulkIndexError(StoreError):
    """Some documents of a bulk request failed; `errors` holds one entry per failed document."""

    def __init__(self, message: str, errors: list[dict]) -> None:
        super().__init__(message)
        self.errors = errors
