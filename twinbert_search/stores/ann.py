"""The ANN index of an embedded store, described by a short string (like faiss.index_factory).

Accepted strings, parsed only by `parse_ann_spec`:

    flat                  exact inner product (faiss IndexFlatIP)
    hnswM                 HNSW graph with M links per node, e.g. hnsw32 (IndexHNSWFlat)
    hnswM,efc=N           the same, with efConstruction N (default 200)
    hnswM,sq8             HNSW over 8-bit scalar-quantized vectors (IndexHNSWSQ), ~4x less RAM
    hnswM,efc=N,sq8       both options (in any order)
    ivfN                  inverted file with N k-means lists, e.g. ivf2048 (IndexIVFFlat)
    ivfN,sq8              the same over 8-bit scalar-quantized vectors (IndexIVFScalarQuantizer)
    auto                  flat below 50,000 vectors, ivf2048 at or above; resolved at build time

An IVF index trains in seconds where an HNSW graph takes minutes at a million vectors. Its
list count is capped at build time so every list gets at least MIN_POINTS_PER_LIST vectors
(`AnnSpec.resolve`), and the resolved string is what the manifest records.

The search-time knobs (efSearch, nprobe) are arguments of `search`, not part of the string, so
one built index serves any recall/latency trade-off. An IVF index's default nprobe is tuned at
build (`tune_nprobe`): the fewest lists that reach NPROBE_TARGET_RECALL recall@100 against
exact search, measured on a sample of the indexed vectors themselves. Every index uses inner
product on unit vectors, i.e. cosine similarity.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from twinbert_search.errors import ConfigurationError

log = logging.getLogger(__name__)

AUTO_HNSW_THRESHOLD = 50_000  # below: exact search (name kept for compatibility)
AUTO_IVF_LISTS = 2048
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 200
MIN_EF_SEARCH = 128
DEFAULT_NPROBE = 32  # IVF lists scanned per query when tuning is off or finds none enough
NPROBE_CHOICES = (8, 16, 32, 64, 128, 256)  # tried in order by `tune_nprobe`
NPROBE_TARGET_RECALL = 0.98  # recall@100 the tuned nprobe must reach on the sample
NPROBE_SAMPLE = 200  # indexed vectors used as queries when tuning
MIN_POINTS_PER_LIST = 39  # faiss warns below 39 training points per k-means centroid
IVF_TRAIN_POINTS_PER_LIST = 64  # k-means sample size per list (faiss subsamples to this)
IVF_TRAIN_ITERATIONS = 10
MAX_NLIST = 1 << 20
ACCEPTED_FORMS = (
    "flat, auto, hnswM (e.g. hnsw32), hnswM,efc=N, hnswM,sq8, hnswM,efc=N,sq8, "
    "ivfN (e.g. ivf2048), ivfN,sq8"
)

_HNSW = re.compile(r"hnsw(\d+)")
_EFC = re.compile(r"efc=(\d+)")
_IVF = re.compile(r"ivf(\d+)")


@dataclass(frozen=True)
class AnnSpec:
    """A parsed index string; `canonical` is what manifests record."""

    kind: str  # "flat", "hnsw", "ivf" or "auto"
    m: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    sq8: bool = False
    nlist: int = 0  # IVF lists (ivf only)

    @property
    def canonical(self) -> str:
        if self.kind == "ivf":
            return f"ivf{self.nlist},sq8" if self.sq8 else f"ivf{self.nlist}"
        if self.kind != "hnsw":
            return self.kind
        parts = [f"hnsw{self.m}"]
        if self.ef_construction != DEFAULT_EF_CONSTRUCTION:
            parts.append(f"efc={self.ef_construction}")
        if self.sq8:
            parts.append("sq8")
        return ",".join(parts)

    def resolve(self, n_vectors: int) -> AnnSpec:
        """The concrete spec for a corpus of this size ("auto" picks flat or ivf2048).

        ivf2048 over hnsw32 by measurement (benchmarks/run.py, 100k vectors, 2 cores):
        recall@100 0.998 vs 0.976 (efc=40), k=1000 search 0.33 vs 2.95 ms, build 9.7 s vs
        minutes; at 1M it kept recall 1.000 with a 38 s build.

        IVF caps its list count at n / MIN_POINTS_PER_LIST, so k-means has enough points.
        """
        if self.kind == "ivf":
            nlist = max(1, min(self.nlist, n_vectors // MIN_POINTS_PER_LIST))
            return AnnSpec("ivf", nlist=nlist, sq8=self.sq8)
        if self.kind != "auto":
            return self
        if n_vectors < AUTO_HNSW_THRESHOLD:
            return AnnSpec("flat")
        return AnnSpec("ivf", nlist=AUTO_IVF_LISTS).resolve(n_vectors)

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
    ivf = _IVF.fullmatch(head)
    if ivf is not None:
        return _parse_ivf(spec, int(ivf.group(1)), options)
    match = _HNSW.fullmatch(head)
    if match is None:
        raise _invalid(spec, f"unknown index type {head!r}")
    m = int(match.group(1))
    if not 2 <= m <= 256:
        raise _invalid(spec, f"HNSW M must be between 2 and 256, got {m}")
    return _parse_hnsw_options(spec, m, options)


def _parse_ivf(spec: str, nlist: int, options: list[str]) -> AnnSpec:
    if not 1 <= nlist <= MAX_NLIST:
        raise _invalid(spec, f"IVF list count must be between 1 and {MAX_NLIST}, got {nlist}")
    if len(options) > 1 or (options and options[0] != "sq8"):
        raise _invalid(spec, "ivfN takes only the option 'sq8', once")
    return AnnSpec("ivf", nlist=nlist, sq8=bool(options))


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


def _new_ivf(spec: AnnSpec, dim: int) -> faiss.Index:
    quantizer = faiss.IndexFlatIP(dim)  # the python wrapper keeps it alive with the index
    if spec.sq8:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, spec.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, spec.nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = IVF_TRAIN_POINTS_PER_LIST
    index.cp.niter = IVF_TRAIN_ITERATIONS
    index.cp.seed = 1234
    index.nprobe = min(DEFAULT_NPROBE, spec.nlist)  # saved with the index: its default
    return index


def _new_index(spec: AnnSpec, dim: int) -> faiss.Index:
    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if spec.kind == "ivf":
        return _new_ivf(spec, dim)
    if spec.sq8:
        index = faiss.IndexHNSWSQ(
            dim, faiss.ScalarQuantizer.QT_8bit, spec.m, faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = spec.ef_construction
    return index


def build_index(
    spec: str | AnnSpec,
    vectors: np.ndarray,
    *,
    threads: int | None = None,
    tune: bool = True,
) -> faiss.Index:
    """An index over `vectors` (row i gets label i); "auto" is resolved by their count.

    IVF indexes get their default nprobe from `tune_nprobe` unless `tune` is False.
    """
    matrix = _as_float32_matrix(vectors)
    resolved = parse_ann_spec(spec).resolve(len(matrix))
    index = _new_index(resolved, matrix.shape[1])
    with _omp_threads(threads):
        if not index.is_trained and len(matrix):
            index.train(matrix)
        if len(matrix):
            index.add(matrix)
        if tune and isinstance(index, faiss.IndexIVF):
            nprobe, recall = tune_nprobe(index, matrix)
            log.info("%s: nprobe %d (recall@100 %.4f on indexed vectors)", spec, nprobe, recall)
    return index


def tune_nprobe(
    index: faiss.IndexIVF,
    vectors: np.ndarray,
    *,
    target: float = NPROBE_TARGET_RECALL,
    k: int = 100,
    sample: int = NPROBE_SAMPLE,
    seed: int = 0,
) -> tuple[int, float]:
    """Set `index.nprobe` to the fewest lists reaching `target` recall@k; return it and its recall.

    Queries are a random sample of the indexed vectors, each with itself left out of both
    the exact and the ANN top-k, so it measures how well the index finds a point's
    neighbours. Real queries sit farther from the documents than documents sit from each
    other, so the target is set above the recall a deployment needs. Too few vectors (at
    most 2k): the index keeps its nprobe.
    """
    matrix = _as_float32_matrix(vectors)
    n = len(matrix)
    if n <= 2 * k:
        return int(index.nprobe), 1.0
    rows = np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False)
    queries = matrix[rows]
    truth = []
    for lo in range(0, len(queries), 16):  # exact top-(k+1) in slabs: 16 x n scores at a time
        scores = queries[lo : lo + 16] @ matrix.T
        top = np.argpartition(-scores, k, axis=1)[:, : k + 1]
        truth += [set(t.tolist()) for t in top]
    truth = [t - {int(r)} for t, r in zip(truth, rows, strict=True)]
    choices = [p for p in NPROBE_CHOICES if p < index.nlist] + [int(index.nlist)]  # all lists
    for nprobe in choices:  # the last, every list, is exact up to float error
        _, found = index.search(queries, k + 1, params=faiss.SearchParametersIVF(nprobe=nprobe))
        hits = sum(
            len((set(f.tolist()) - {int(r)}) & t)
            for f, r, t in zip(found, rows, truth, strict=True)
        )
        recall = hits / sum(len(t) for t in truth)
        if recall >= target:
            break
    index.nprobe = nprobe
    return nprobe, recall


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    ef_search: int | None = None,
    *,
    nprobe: int | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) per query, best first; missing hits have row -1 (filter them out).

    `ef_search` applies to HNSW indexes, `nprobe` to IVF ones (default: the index's own, set
    at build to DEFAULT_NPROBE). Both go in per-call search parameters rather than on the
    index, so concurrent searches from several threads never race on a shared setting.
    """
    matrix = _as_float32_matrix(queries)
    if k <= 0 or index.ntotal == 0:
        shape = (len(matrix), max(k, 0))
        return np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int64)
    params = None
    if isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=ef_search or max(2 * k, MIN_EF_SEARCH))
    elif isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=nprobe or index.nprobe)
    with _omp_threads(threads):
        scores, rows = index.search(matrix, k, params=params)
    return scores, rows.astype(np.int64, copy=False)


def stores_exact_vectors(index: faiss.Index) -> bool:
    """Whether the index keeps its vectors uncompressed in its inverted lists (IVF-Flat).

    Such an index can return the hits' vectors from the lists it has just scanned, still in
    cache, instead of a gather of 1,000 random rows from a separate 1M-row array.
    """
    return isinstance(index, faiss.IndexIVFFlat)


def search_with_vectors(
    index: faiss.Index, query: np.ndarray, k: int, *, nprobe: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`search` for one query plus the hits' stored vectors: (scores, rows, vectors), hits only.

    Only for indexes where `stores_exact_vectors` holds: the vectors are the indexed ones, bit
    for bit (measured at 1M documents, 1,000 hits: 0.59 ms against 0.82 for search + gather).
    """
    matrix = _as_float32_matrix(query)
    if len(matrix) != 1:
        raise ValueError(f"search_with_vectors takes one query, got {len(matrix)}")
    if k <= 0 or index.ntotal == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, index.d), np.float32)
    params = faiss.SearchParametersIVF(nprobe=nprobe or index.nprobe)
    scores, rows, vectors = index.search_and_reconstruct(matrix, k, params=params)
    scores, rows, vectors = scores[0], rows[0].astype(np.int64, copy=False), vectors[0]
    if rows[-1] < 0:  # fewer than k hits: the missing ones come last, as row -1
        keep = rows >= 0
        return scores[keep], rows[keep], vectors[keep]
    return scores, rows, vectors  # views: no copy of the (k, dim) vectors


def save_index(index: faiss.Index, path: str | Path) -> None:
    faiss.write_index(index, str(path))


def load_index(path: str | Path) -> faiss.Index:
    return faiss.read_index(str(path))
