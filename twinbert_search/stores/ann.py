"""The ANN index of an embedded store, described by a short string (like faiss.index_factory).

Accepted strings, parsed only by `parse_ann_spec`:

    flat                  exact inner product (faiss IndexFlatIP)
    hnswM                 HNSW graph with M links per node, e.g. hnsw32 (IndexHNSWFlat)
    hnswM,efc=N           the same, with efConstruction N (default 200)
    hnswM,sq8             HNSW over 8-bit scalar-quantized vectors (IndexHNSWSQ), ~4x less RAM
    hnswM,efc=N,sq8       both options (in any order)
    auto                  flat below 50,000 vectors, hnsw32 at or above; resolved at build time

The search-time knob (efSearch) is an argument of `search`, not part of the string, so one
built index serves any recall/latency trade-off. Every index uses inner product on unit
vectors, i.e. cosine similarity.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from twinbert_search.errors import ConfigurationError

AUTO_HNSW_THRESHOLD = 50_000
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 200
MIN_EF_SEARCH = 128
ACCEPTED_FORMS = "flat, auto, hnswM (e.g. hnsw32), hnswM,efc=N, hnswM,sq8, hnswM,efc=N,sq8"

_HNSW = re.compile(r"hnsw(\d+)")
_EFC = re.compile(r"efc=(\d+)")


@dataclass(frozen=True)
class AnnSpec:
    """A parsed index string; `canonical` is what manifests record."""

    kind: str  # "flat", "hnsw" or "auto"
    m: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    sq8: bool = False

    @property
    def canonical(self) -> str:
        if self.kind != "hnsw":
            return self.kind
        parts = [f"hnsw{self.m}"]
        if self.ef_construction != DEFAULT_EF_CONSTRUCTION:
            parts.append(f"efc={self.ef_construction}")
        if self.sq8:
            parts.append("sq8")
        return ",".join(parts)

    def resolve(self, n_vectors: int) -> AnnSpec:
        """The concrete spec for a corpus of this size ("auto" picks flat or hnsw32)."""
        if self.kind != "auto":
            return self
        return AnnSpec("flat") if n_vectors < AUTO_HNSW_THRESHOLD else AnnSpec("hnsw")

    def __str__(self) -> str:
        return self.canonical


def _invalid(spec: object, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"invalid ANN index {spec!r}: {why}; accepted forms: {ACCEPTED_FORMS}"
    )


def parse_ann_spec(spec: str | AnnSpec) -> AnnSpec:
    """Parse an index string (case and spaces around commas are ignored)."""
    if isinstance(spec, AnnSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise _invalid(spec, "empty or not a string")
    head, *options = [part.strip() for part in spec.strip().lower().split(",")]
    if head in ("flat", "auto"):
        if options:
            raise _invalid(spec, f"{head!r} takes no options")
        return AnnSpec(head)
    match = _HNSW.fullmatch(head)
    if match is None:
        raise _invalid(spec, f"unknown index type {head!r}")
    m = int(match.group(1))
    if not 2 <= m <= 256:
        raise _invalid(spec, f"HNSW M must be between 2 and 256, got {m}")
    return _parse_hnsw_options(spec, m, options)


def _parse_hnsw_options(spec: str, m: int, options: list[str]) -> AnnSpec:
    ef_construction, sq8, seen = DEFAULT_EF_CONSTRUCTION, False, set()
    for option in options:
        efc = _EFC.fullmatch(option)
        key = "efc" if efc else option
        if key in seen:
            raise _invalid(spec, f"option {key!r} given twice")
        seen.add(key)
        if efc:
            ef_construction = int(efc.group(1))
            if ef_construction < 1:
                raise _invalid(spec, "efc must be a positive integer")
        elif option == "sq8":
            sq8 = True
        else:
            raise _invalid(spec, f"unknown option {option!r}")
    return AnnSpec("hnsw", m=m, ef_construction=ef_construction, sq8=sq8)


@contextmanager
def _omp_threads(threads: int | None):
    """Set faiss' OpenMP thread count for one call only (it is process-global)."""
    if threads is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _as_float32_matrix(vectors: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise ValueError(f"expected vectors of shape (n, dim), got shape {array.shape}")
    return array


def _new_index(spec: AnnSpec, dim: int) -> faiss.Index:
    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if spec.sq8:
        index = faiss.IndexHNSWSQ(
            dim, faiss.ScalarQuantizer.QT_8bit, spec.m, faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = spec.ef_construction
    return index


def build_index(
    spec: str | AnnSpec, vectors: np.ndarray, *, threads: int | None = None
) -> faiss.Index:
    """An index over `vectors` (row i gets label i); "auto" is resolved by their count."""
    matrix = _as_float32_matrix(vectors)
    resolved = parse_ann_spec(spec).resolve(len(matrix))
    index = _new_index(resolved, matrix.shape[1])
    with _omp_threads(threads):
        if not index.is_trained and len(matrix):
            index.train(matrix)
        if len(matrix):
            index.add(matrix)
    return index


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    ef_search: int | None = None,
    *,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) per query, best first; missing hits have row -1 (filter them out).

    efSearch goes in per-call search parameters rather than on the index, so concurrent
    searches from several threads never race on a shared setting.
    """
    matrix = _as_float32_matrix(queries)
    if k <= 0 or index.ntotal == 0:
        shape = (len(matrix), max(k, 0))
        return np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int64)
    params = None
    if isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=ef_search or max(2 * k, MIN_EF_SEARCH))
    with _omp_threads(threads):
        scores, rows = index.search(matrix, k, params=params)
    return scores, rows.astype(np.int64, copy=False)


def save_index(index: faiss.Index, path: str | Path) -> None:
    faiss.write_index(index, str(path))


def load_index(path: str | Path) -> faiss.Index:
    return faiss.read_index(str(path))
