"""The Elasticsearch fake's own errors, request record and kNN scores (with the quantized
graph's approximation), beside what both fakes share (`tests/fake_cluster_common.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tests.fake_cluster_common import SERVER_ERROR_TYPES, FakeUnsupported

ERROR_TYPES = {
    400: "illegal_argument_exception",
    401: "security_exception",
    403: "security_exception",
    404: "resource_not_found_exception",
    429: "es_rejected_execution_exception",
    **SERVER_ERROR_TYPES,
}


class ApiError(Exception):
    """An error answer, in Elasticsearch's shape."""

    def __init__(self, status: int, kind: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason, self.extra = status, kind, reason, extra

    def body(self) -> dict[str, Any]:
        cause = {"type": self.kind, "reason": self.reason, **self.extra}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


def not_found(name: str) -> ApiError:
    return ApiError(
        404,
        "index_not_found_exception",
        f"no such index [{name}]",
        **{"resource.type": "index_or_alias", "resource.id": name, "index": name},
    )


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    body: Any
    endpoint: str
    headers: dict[str, str]


def knn_score(similarity: str, query: np.ndarray, doc: np.ndarray) -> float:
    """Elasticsearch's documented `_score` of a kNN hit for each similarity."""
    if similarity == "dot_product":
        return (1.0 + float(query @ doc)) / 2.0
    if similarity == "cosine":
        cos = float(query @ doc / max(np.linalg.norm(query) * np.linalg.norm(doc), 1e-30))
        return (1.0 + cos) / 2.0
    if similarity == "l2_norm":
        return 1.0 / (1.0 + float(np.sum((query - doc) ** 2)))
    if similarity == "max_inner_product":
        ip = float(query @ doc)
        return 1.0 / (1.0 - ip) if ip < 0 else ip + 1.0
    raise FakeUnsupported(f"similarity {similarity}")


def quantized(vector: np.ndarray, kind: str) -> np.ndarray:
    """The graph's copy of a vector under a quantized index kind (what unrescored scores see).

    A per-vector scalar quantizer: 127 levels for int8, 7 for int4, the sign for bbq.
    """
    head = kind.split("_")[0]
    if head not in ("int8", "int4", "bbq"):
        return vector
    if head == "bbq":
        return np.sign(vector) * float(np.mean(np.abs(vector)))
    levels = 127.0 if head == "int8" else 7.0
    scale = float(np.max(np.abs(vector))) / levels or 1.0
    return (np.round(vector / scale) * scale).astype(np.float32)
