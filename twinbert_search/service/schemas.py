"""Request and response bodies of the HTTP API (pydantic; unknown fields are rejected).

The limits are part of the published schema (/openapi.json), so clients and fuzzers see them.
Every string is checked to be encodable as UTF-8: JSON can carry lone surrogates ("\\ud800"),
which the tokenizer, SQLite and the response encoder would otherwise fail on with a 500.
Floats must be finite, because NaN and infinity have no JSON form in a response.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
)

MAX_QUERY_CHARS = 1024  # far beyond what the query tower reads (max_query_length tokens)
MAX_K = 1000
MAX_CANDIDATES = 1000
MAX_ID_CHARS = 512
MAX_FILTER_FIELDS = 16
MAX_FILTER_VALUES = 256
MAX_FILTER_CHARS = 256
MAX_VECTOR_DIMS = 4096
MAX_VECTOR_ABS = 1e4  # stored vectors are unit length; this only keeps the arithmetic finite


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it contains a lone surrogate)") from None
    return value


def _integral(value: Any) -> Any:
    """JSON has one number type: 10.0 is the integer 10 (JSON Schema agrees); "10" is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _json_int(ge: int, le: int) -> Any:
    """A strict integer in [ge, le] that also takes integral floats; bounds in the schema."""
    return Annotated[Annotated[int, Field(ge=ge, le=le), Strict()], BeforeValidator(_integral)]


K = _json_int(1, MAX_K)
CandidateCount = _json_int(1, MAX_CANDIDATES)
# "Not only whitespace" as a pattern, so the published schema says it too (an explicit class:
# the Python and Rust regex engines disagree on what \s covers).
Query = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"[^ \t\n\r\f\v]"),
    AfterValidator(_utf8),
]
DocId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_utf8)
]
FilterText = Annotated[str, StringConstraints(max_length=MAX_FILTER_CHARS), AfterValidator(_utf8)]
FilterField = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_FILTER_CHARS), AfterValidator(_utf8)
]
FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]
FilterScalar = FilterText | StrictBool | StrictInt | FiniteFloat
FilterValue = (
    FilterScalar | Annotated[list[FilterScalar], Field(min_length=1, max_length=MAX_FILTER_VALUES)]
)
Component = Annotated[
    StrictFloat, Field(ge=-MAX_VECTOR_ABS, le=MAX_VECTOR_ABS, allow_inf_nan=False)
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests ---------------------------------------------------------------------------------


class SearchRequest(_Strict):
    """Two-stage search: kNN recall of `candidates` documents, crossing-layer rerank, top `k`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"query": "how do vaccines train the immune system", "k": 10}]
        },
    )

    query: Query
    k: K = Field(10, description="Hits returned.")
    candidates: CandidateCount = Field(
        100,
        description="Recall depth: how many kNN candidates the crossing layer reranks "
        "(raised to k when smaller).",
    )
    filters: (
        Annotated[dict[FilterField, FilterValue], Field(max_length=MAX_FILTER_FIELDS)] | None
    ) = Field(
        None,
        description="Metadata filters applied during recall: {field: value or [values]}; "
        "every field must match, a list matches any of its values.",
    )
    rerank: StrictBool = Field(True, description="False returns the recall order only.")
    hybrid: StrictBool = Field(
        False,
        description="Fuse BM25 and kNN recall before the rerank: in the engine by reciprocal "
        "rank where it can, else by the model's hybrid fusion (rrf or zscore).",
    )
    hybrid_method: Literal["rrf", "zscore"] | None = Field(
        None,
        description="Hybrid recall fused by the sidecar with this method instead of the "
        "model's (or the engine's reciprocal rank): rrf, or zscore (each list's scores "
        "z-scored over the list, a document missing from one taking its lowest z).",
    )
    hybrid_bm25_weight: Annotated[FiniteFloat, Field(gt=0, le=100)] | None = Field(
        None,
        description="BM25's weight against kNN's 1 in a hybrid recall the sidecar fuses, by "
        "hybrid_method (default: the model's method; the weight then defaults to 1).",
    )
    include_documents: StrictBool = Field(
        True, description="Return each hit's stored title, text and metadata."
    )
    lexical_weight: Annotated[FiniteFloat, Field(ge=0, le=100)] | None = Field(
        None,
        description="Fuse BM25 into the rerank with this weight (the crossing logit and BM25, "
        "each z-scored over the candidates): null takes the model's tuned weight, if any, "
        "and 0 turns it off. Fused rerank scores are z-score sums, not probabilities.",
    )


class RerankCandidate(_Strict):
    """A candidate with its document vector (from the same model's document tower)."""

    id: DocId
    vector: Annotated[list[Component], Field(min_length=1, max_length=MAX_VECTOR_DIMS)] = Field(
        description="The document vector; /openapi.json states the model's exact length."
    )


class RerankRequest(_Strict):
    """Crossing-layer scores for candidates the caller recalled itself.

    `candidates` is a list of ids (vectors are fetched from the store) or a list of
    {id, vector} objects (scored as given; the store is not consulted). Each entry is scored
    on its own, so a repeated id comes back once per time it was sent.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"query": "vaccine immune response", "candidates": ["4983", "5836"]}]
        },
    )

    query: Query
    candidates: (
        Annotated[list[DocId], Field(min_length=1, max_length=MAX_CANDIDATES)]
        | Annotated[list[RerankCandidate], Field(min_length=1, max_length=MAX_CANDIDATES)]
    )
    k: CandidateCount | None = Field(None, description="Return only the best k (default: all).")

    @property
    def ids(self) -> list[str]:
        return [c if isinstance(c, str) else c.id for c in self.candidates]

    @property
    def has_vectors(self) -> bool:
        return isinstance(self.candidates[0], RerankCandidate)


# --- responses --------------------------------------------------------------------------------

Degraded = Literal["rerank_timeout", "rerank_error"]


class Document(BaseModel):
    """Stored fields (empty when the document was deleted since the snapshot)."""

    title: str = ""
    text: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class Hit(BaseModel):
    """One result; `score` is the rerank score when reranked, else the recall score."""

    id: str
    rank: int
    score: float
    recall_rank: int
    recall_score: float
    rerank_score: float | None
    document: Document | None = None


class SearchResponse(BaseModel):
    query: str
    reranked: bool = Field(description="False when the rerank was not asked for or degraded.")
    degraded: Degraded | None = Field(
        description="Why the recall order came back instead of the reranked one (else null)."
    )
    candidates: int = Field(description="How many candidates recall returned.")
    cache_hit: bool = Field(description="The query embedding came from the LRU cache.")
    hybrid_fusion: Literal["engine", "client"] | None = Field(
        default=None,
        description="Hybrid recall only: whether the engine fused BM25 and kNN (one request, "
        "by reciprocal rank) or the sidecar did (hybrid_method says how); null without hybrid.",
    )
    hybrid_method: Literal["rrf", "zscore"] | None = Field(
        default=None,
        description="Hybrid recall only: the fusion that ran, rrf or zscore; null without hybrid.",
    )
    timings_ms: dict[str, float] = Field(description="encode, recall, rerank, documents and total.")
    hits: list[Hit]


class RerankResult(BaseModel):
    id: str
    rank: int
    score: float | None = Field(description="Crossing-layer probability; null when degraded.")
    input_rank: int = Field(description="1-based position in the request.")


class RerankResponse(BaseModel):
    query: str
    reranked: bool
    degraded: Degraded | None
    cache_hit: bool
    timings_ms: dict[str, float] = Field(description="encode, fetch, rerank and total.")
    results: list[RerankResult]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    backend: str | None = None
    model: str | None = Field(None, description="Model fingerprint (first 12 characters).")
    dim: int | None = None
    documents: int | None = None
    message: str | None = None
    warning: str | None = Field(
        None, description="Still ready, but e.g. the store's last indexing run did not complete."
    )


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorInfo(BaseModel):
    status: int
    type: str = Field(description="Stable machine-readable kind, e.g. unknown_document.")
    message: str
    details: list[ErrorDetail] | None = None
    ids: list[str] | None = Field(None, description="The unknown ids (unknown_document).")


class ErrorResponse(BaseModel):
    error: ErrorInfo
