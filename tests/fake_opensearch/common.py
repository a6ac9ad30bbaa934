"""The OpenSearch fake's own errors, request record and k-NN scores, beside what both fakes
share (`tests/fake_cluster_common.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tests.fake_cluster_common import SERVER_ERROR_TYPES, FakeUnsupported

ERROR_TYPES = {
    429: "rejected_execution_exception",
    **SERVER_ERROR_TYPES,
}

# neural-search's markers in a hybrid query's raw results (-9549511920.488f, -4422440593.979f),
# as the engine writes them: the shortest decimal of the float32
HYBRID_START_STOP = -9549511700.0
HYBRID_DELIMITER = -4422440400.0


class ApiError(Exception):
    """An error answer; `caused_by` is (type, reason) of the cause, as the engine nests it."""

    def __init__(
        self, status: int, kind: str, reason: str, caused_by: tuple[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason
        self.caused_by = caused_by

    def error(self) -> dict[str, Any]:
        """The `error` object of a response or of a bulk item."""
        error: dict[str, Any] = {"type": self.kind, "reason": self.reason}
        if self.caused_by is not None:
            error["caused_by"] = {"type": self.caused_by[0], "reason": self.caused_by[1]}
        return error

    def body(self) -> dict[str, Any]:
        cause = {"type": self.kind, "reason": self.reason}
        return {"error": {"root_cause": [cause], **self.error()}, "status": self.status}


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    body: Any
    group: str


def knn_score(space_type: str, query: np.ndarray, doc: np.ndarray) -> float:
    """The k-NN plugin's documented score for each space type (faiss and lucene agree)."""
    if space_type == "innerproduct":
        ip = float(query @ doc)
        return 1.0 + ip if ip >= 0 else 1.0 / (1.0 - ip)
    if space_type == "cosinesimil":
        cos = float(query @ doc / max(np.linalg.norm(query) * np.linalg.norm(doc), 1e-30))
        return (2.0 - (1.0 - cos)) / 2.0
    if space_type == "l2":
        return 1.0 / (1.0 + float(np.sum((query - doc) ** 2)))
    raise FakeUnsupported(f"space type {space_type}")
