"""How the Elasticsearch `dense_vector` field is indexed, described by one string, and read back.

`IndexOptions` is the whole ANN configuration as a short string such as
`elasticsearch:int8_hnsw16:efc128:innerproduct` (the kind, HNSW's `m`, `ef_construction`, the
space type): parsed here, recorded in the index's `_meta`, and rendered as the field's
`index_options`. Space types carry the project's names (those of `--ann` for OpenSearch);
`dot_product`, `cosine` and `l2_norm` are accepted as well.

Search-time knobs stay out of the string: `oversample` (the `rescore_vector` a quantized kind
gets in every kNN query, so its top hits carry exact float scores) and `num_candidates`.
`score_to_similarity` turns Elasticsearch's scores back into the inner product of the vectors.
"""

from __future__ import annotations

import math
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

ENGINE = "elasticsearch"
KINDS = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat", "int4_flat", "bbq_flat")
SIMILARITY = {"innerproduct": "dot_product", "cosinesimil": "cosine", "l2": "l2_norm"}
MAX_DIMENSION = 4096
BBQ_MIN_DIMENSION = 64
MAX_CANDIDATES = 10_000  # Elasticsearch's ceiling for k and num_candidates
DEFAULT_OVERSAMPLE = {"int8": 2.0, "int4": 3.0, "bbq": 3.0}  # bbq: Elasticsearch's own default

_KIND_TOKEN = re.compile(r"^(?P<kind>(?:int8_|int4_|bbq_)?(?:hnsw|flat))(?P<m>\d+)?$")
_EFC_TOKEN = re.compile(r"^efc(\d+)$")


@dataclass(frozen=True)
class IndexOptions:
    """How the `dense_vector` field is indexed; `describe()` and `parse()` round-trip.

    Quantized kinds (`int8_`, `int4_`, `bbq_`) quantize only the graph's copy of the vectors:
    `_source` keeps float32, so the rerank reads exact vectors, and each kNN query rescores
    its candidates with the float vectors (`oversample`), so recall scores are exact too.
    """

    kind: str = "int8_hnsw"
    space_type: str = "innerproduct"
    m: int = 16
    ef_construction: int = 128
    oversample: float | None = None  # None: DEFAULT_OVERSAMPLE of the quantization (0: off)
    shards: int = 1
    replicas: int = 1

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ConfigurationError(f"kind must be one of {KINDS}, got {self.kind!r}")
        check_space_type(self.space_type)
        if not 2 <= self.m <= 512:
            raise ConfigurationError(f"m must be between 2 and 512, got {self.m}")
        if self.ef_construction < self.m or self.ef_construction > 3200:
            raise ConfigurationError(
                f"ef_construction must be between m and 3200, got {self.ef_construction}"
            )
        if self.oversample is not None and not (
            self.oversample == 0 or 1.0 <= self.oversample <= 10.0
        ):
            raise ConfigurationError(
                f"oversample must be 0 (off) or between 1 and 10, got {self.oversample}"
            )
        check_layout(self.shards, self.replicas)

    @property
    def hnsw(self) -> bool:
        return self.kind.endswith("hnsw")

    @property
    def quantization(self) -> str | None:
        """int8, int4, bbq, or None for float vectors."""
        head = self.kind.split("_")[0]
        return head if head in DEFAULT_OVERSAMPLE else None

    @property
    def rescore_oversample(self) -> float | None:
        """The `rescore_vector.oversample` each kNN query sends (None: float, or turned off)."""
        if self.quantization is None:
            return None
        value = (
            DEFAULT_OVERSAMPLE[self.quantization] if self.oversample is None else self.oversample
        )
        return value or None

    def describe(self) -> str:
        """The string recorded in `_meta`: `elasticsearch:int8_hnsw16:efc128:innerproduct`."""
        if self.hnsw:
            return f"{ENGINE}:{self.kind}{self.m}:efc{self.ef_construction}:{self.space_type}"
        return f"{ENGINE}:{self.kind}:{self.space_type}"

    @classmethod
    def parse(cls, text: str, **overrides: Any) -> IndexOptions:
        """Parse `describe()` output; tokens in any order, missing ones take the defaults."""
        aliases = {v: k for k, v in SIMILARITY.items()}

        def read_token(token: str) -> list[tuple[str, Any]]:
            kind, efc = _KIND_TOKEN.match(token), _EFC_TOKEN.match(token)
            if token == ENGINE:
                return []
            if kind:
                m = [("m", int(kind["m"]))] if kind["m"] else []
                return [("kind", kind["kind"]), *m]
            if efc:
                return [("ef_construction", int(efc[1]))]
            if token in SPACE_TYPES or token in aliases:
                return [("space_type", aliases.get(token, token))]
            raise ConfigurationError(
                f"cannot parse index description {text!r}: unknown token {token!r} "
                f"(expected a kind {KINDS} with an optional m, as int8_hnsw16; efc<N>; "
                f"a space type {SPACE_TYPES})"
            )

        return parse_description(cls, text, read_token, overrides)


def similarity(options: IndexOptions, *, unit: bool = True) -> str:
    """Elasticsearch's similarity for the space type; vectors that are not unit length get
    `max_inner_product` instead of `dot_product` (which refuses them)."""
    name = SIMILARITY[options.space_type]
    return "max_inner_product" if name == "dot_product" and not unit else name


def dense_vector_mapping(dim: int, options: IndexOptions, *, unit: bool = True) -> dict[str, Any]:
    """The `dense_vector` field: the kind's `index_options`, the similarity of the space."""
    options.validate()
    check_dimension(dim, MAX_DIMENSION)
    if options.quantization == "bbq" and dim < BBQ_MIN_DIMENSION:
        raise ConfigurationError(f"bbq needs at least {BBQ_MIN_DIMENSION} dimensions, got {dim}")
    if options.quantization == "int4" and dim % 2:
        raise ConfigurationError(f"int4 needs an even dimension, got {dim}")
    index_options: dict[str, Any] = {"type": options.kind}
    if options.hnsw:
        index_options.update(m=options.m, ef_construction=options.ef_construction)
    return {
        "type": "dense_vector",
        "dims": dim,
        "index": True,
        "similarity": similarity(options, unit=unit),
        "index_options": index_options,
    }


def num_candidates(k: int, options: IndexOptions) -> int:
    """Candidates per shard for a kNN query of `k`: at least 100, twice what is rescored."""
    wanted = math.ceil(k * (options.rescore_oversample or 1.0))
    if wanted > MAX_CANDIDATES:
        raise ConfigurationError(
            f"a kNN query of {k} (oversampled to {wanted}) exceeds Elasticsearch's "
            f"{MAX_CANDIDATES} candidates"
        )
    return min(MAX_CANDIDATES, max(100, 2 * wanted))


def score_to_similarity(similarity_name: str, scores: np.ndarray) -> np.ndarray:
    """Invert Elasticsearch's kNN score into the inner product (the cosine of unit vectors).

    Documented scores: dot_product and cosine `(1 + s) / 2`; l2_norm `1 / (1 + d^2)` (and for
    unit vectors s = 1 - d^2 / 2); max_inner_product `1 / (1 - s)` below 0, else `s + 1`.
    """
    s = np.asarray(scores, dtype=np.float64)
    if similarity_name in ("dot_product", "cosine"):
        sim = 2.0 * s - 1.0
    elif similarity_name == "l2_norm":
        sim = 1.0 - (1.0 / np.maximum(s, 1e-30) - 1.0) / 2.0
    elif similarity_name == "max_inner_product":
        sim = np.where(s >= 1.0, s - 1.0, 1.0 - 1.0 / np.maximum(s, 1e-30))
    else:
        raise ConfigurationError(f"unknown similarity {similarity_name!r}")
    return sim.astype(np.float32)
