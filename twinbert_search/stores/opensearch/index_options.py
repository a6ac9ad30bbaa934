"""How the OpenSearch k-NN field is indexed, described by a short string, and read back.

`IndexOptions` is the whole ANN configuration (engine, HNSW parameters, encoding, space type)
as one string such as `faiss:hnsw16:efc128:fp16:innerproduct`: parsed here, recorded in the
index's `_meta`, and used again when a store opened later converts the k-NN plugin's scores
back to cosines (`score_to_similarity`, or `exact_similarity` from the stored vectors).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.stores.cluster.index_options import (
    SPACE_TYPES,
    check_dimension,
    check_layout,
    check_space_type,
    parse_description,
)

ENGINES = ("faiss", "lucene")
ENCODINGS = ("fp32", "fp16", "byte")
MAX_DIMENSION = 16000

_INT_TOKEN = re.compile(r"^(hnsw|efc|efs)(\d+)$")


@dataclass(frozen=True)
class IndexOptions:
    """How the `knn_vector` field is indexed; `describe()` and `parse()` round-trip.

    Compact encodings are limited to those that keep recall: Faiss SQfp16 (`fp16`, 2x smaller;
    unit vectors are far inside its range) and Lucene's scalar quantizer (`byte`, 4x smaller,
    int7 with per-segment confidence intervals). Both quantize only the ANN graph's copy:
    `_source` keeps the float32 values, so the rerank reads exact vectors either way, and the
    store computes recall scores from them (`exact_similarity`).
    """

    engine: str = "faiss"
    space_type: str = "innerproduct"
    m: int = 16
    ef_construction: int = 128
    encoding: str = "fp16"
    ef_search: int = 100  # index default (Faiss); a query may override it
    shards: int = 1
    replicas: int = 1

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigurationError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        check_space_type(self.space_type)
        if self.encoding not in ENCODINGS:
            raise ConfigurationError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.engine == "lucene" and self.encoding == "fp16":
            raise ConfigurationError(
                "fp16 is a Faiss encoding (SQfp16); with lucene use fp32 or byte"
            )
        if self.engine == "faiss" and self.encoding == "byte":
            raise ConfigurationError(
                "byte is Lucene's scalar quantizer; with faiss use fp32 or fp16"
            )
        if not 2 <= self.m <= 100:
            raise ConfigurationError(f"m must be between 2 and 100, got {self.m}")
        if self.ef_construction < 2:
            raise ConfigurationError(
                f"ef_construction must be at least 2, got {self.ef_construction}"
            )
        if self.ef_search < 1:
            raise ConfigurationError(f"ef_search must be positive, got {self.ef_search}")
        check_layout(self.shards, self.replicas)

    def describe(self) -> str:
        """The short string recorded in `_meta`: `faiss:hnsw16:efc128:fp16:innerproduct`."""
        hnsw = f"hnsw{self.m}:efc{self.ef_construction}"
        return f"{self.engine}:{hnsw}:{self.encoding}:{self.space_type}"

    @classmethod
    def parse(cls, text: str, **overrides: Any) -> IndexOptions:
        """Parse `describe()` output; tokens in any order, missing ones take the defaults.

        `efs<N>` sets the index-level ef_search; `overrides` (shards, replicas...) apply last.
        """

        tokens = [t.strip() for t in text.lower().split(":")]

        def read_token(token: str) -> list[tuple[str, Any]]:
            match = _INT_TOKEN.match(token)
            if token in ENGINES:
                # `lucene` alone means Lucene's own float graph, not Faiss's fp16 default
                # (which Lucene cannot build); an explicit encoding token still decides.
                if token == "lucene" and not any(t in ENCODINGS for t in tokens):
                    return [("engine", token), ("encoding", "fp32")]
                return [("engine", token)]
            if token in SPACE_TYPES:
                return [("space_type", token)]
            if token in ENCODINGS:
                return [("encoding", token)]
            if match:
                key = {"hnsw": "m", "efc": "ef_construction", "efs": "ef_search"}[match[1]]
                return [(key, int(match[2]))]
            raise ConfigurationError(
                f"cannot parse index description {text!r}: unknown token {token!r} "
                f"(expected an engine {ENGINES}, hnsw<M>, efc<N>, efs<N>, an encoding "
                f"{ENCODINGS} or a space type {SPACE_TYPES})"
            )

        return parse_description(cls, text, read_token, overrides)


def knn_vector_mapping(dim: int, options: IndexOptions) -> dict[str, Any]:
    """The `knn_vector` field: HNSW with the chosen engine, space type and encoding."""
    options.validate()
    check_dimension(dim, MAX_DIMENSION)
    parameters: dict[str, Any] = {"m": options.m, "ef_construction": options.ef_construction}
    if options.encoding == "fp16":
        parameters["encoder"] = {"name": "sq", "parameters": {"type": "fp16", "clip": False}}
    elif options.encoding == "byte":
        parameters["encoder"] = {"name": "sq"}
    return {
        "type": "knn_vector",
        "dimension": dim,
        "method": {
            "name": "hnsw",
            "engine": options.engine,
            "space_type": options.space_type,
            "parameters": parameters,
        },
    }


def score_to_similarity(space_type: str, scores: np.ndarray) -> np.ndarray:
    """Invert the k-NN plugin's score so recall scores are the cosine of unit vectors.

    Documented scores: innerproduct `1 + ip` when ip >= 0 else `1 / (1 - ip)`; cosinesimil
    `(2 - (1 - cos)) / 2`; l2 `1 / (1 + d^2)` (and for unit vectors cos = 1 - d^2 / 2).
    """
    s = np.asarray(scores, dtype=np.float64)
    if space_type == "innerproduct":
        sim = np.where(s >= 1.0, s - 1.0, 1.0 - 1.0 / np.maximum(s, 1e-30))
    elif space_type == "cosinesimil":
        sim = 2.0 * s - 1.0
    elif space_type == "l2":
        sim = 1.0 - (1.0 / np.maximum(s, 1e-30) - 1.0) / 2.0
    else:
        raise ConfigurationError(f"unknown space type {space_type!r}")
    return sim.astype(np.float32)


def exact_similarity(space_type: str, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """What `score_to_similarity` gives for exact scores, computed from float32 vectors.

    A compact encoding scores the graph's quantized copy: on OpenSearch 2.19.1 Lucene's int7
    `byte` was up to 0.24 off the cosine of 16-d unit vectors (0.03 on average). The hits
    carry the exact vectors in `_source`, so the store recomputes recall scores from them.
    """
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    v = np.asarray(vectors, dtype=np.float32)
    if space_type == "innerproduct":
        sim = v @ q
    elif space_type == "cosinesimil":
        norms = np.maximum(np.linalg.norm(v, axis=1) * np.linalg.norm(q), 1e-30)
        sim = (v @ q) / norms
    elif space_type == "l2":
        sim = 1.0 - np.sum((v - q) ** 2, axis=1) / 2.0
    else:
        raise ConfigurationError(f"unknown space type {space_type!r}")
    return np.asarray(sim, dtype=np.float32)
