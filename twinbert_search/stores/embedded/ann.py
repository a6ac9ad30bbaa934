"""The ANN index of an embedded store, described by a short string (like faiss.index_factory).

Accepted strings, parsed only by `parse_ann_spec`:

    flat                  exact inner product (faiss IndexFlatIP)
    hnswM                 HNSW graph with M links per node, e.g. hnsw32 (IndexHNSWFlat)
    hnswM,efc=N           the same, with efConstruction N (default 200)
    hnswM,sq8             HNSW over 8-bit scalar-quantized vectors (IndexHNSWSQ), ~4x less RAM
    hnswM,efc=N,sq8       both options (in any order)
    ivfN                  inverted file with N k-means lists, e.g. ivf2048 (IndexIVFFlat)
    ivfN,sq8              the same over 8-bit scalar-quantized vectors (IndexIVFScalarQuantizer,
                          not by residual: its codes are the vectors, so a store serves both
                          kNN and rerank from them and keeps no other copy)
    ivfN,fs               the same lists over 4-bit product-quantizer codes scanned with SIMD
                          (IndexIVFPQFastScan, dim/4 sub-quantizers): a shortlist that the
                          store's own vectors rescore exactly (`search_refined`)
    auto                  flat below 50,000 vectors; ivfN,sq8 from there; ivfN,fs from
                          AUTO_FASTSCAN_THRESHOLD vectors (N = 2048, doubled while lists would
                          hold over 2,500 vectors); resolved at build time

Indexes are built from a `VectorSource` read in chunks, and an IVF index trains on a sample
(`IVF_TRAIN_POINTS_PER_LIST` per list), so a build never holds every vector as float32: a
10M-document store builds on a 24 GiB machine. `load_index(mmap=True)` maps an IVF index's
lists from disk, so several processes share one copy in the page cache.

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
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from twinbert_search.errors import ConfigurationError

log = logging.getLogger(__name__)

AUTO_HNSW_THRESHOLD = 50_000  # below: exact search (name kept for compatibility)
AUTO_IVF_LISTS = 2048
AUTO_MAX_LIST_SIZE = 2_500  # auto doubles its list count until lists hold at most this many
AUTO_FASTSCAN_THRESHOLD = 1_000_000  # auto builds ivfN,fs from this many vectors
FASTSCAN_DIMS_PER_CODE = 4  # ivfN,fs: one 4-bit sub-quantizer code per 4 dimensions
REFINE_SHORTLIST = 2  # ivfN,fs: rows rescored per row returned ...
MIN_REFINE_SHORTLIST = 1_000  # ... and at least this many
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 200
MIN_EF_SEARCH = 128
DEFAULT_NPROBE = 32  # IVF lists scanned per query when tuning is off or finds none enough
NPROBE_CHOICES = (8, 16, 32, 64, 128, 256)  # tried in order by `tune_nprobe`
NPROBE_TARGET_RECALL = 0.98  # recall@100 the tuned nprobe must reach on the sample
NPROBE_SAMPLE = 200  # indexed vectors used as queries when tuning
NPROBE_CEILING_SHARE = 0.99  # ...or this share of the recall at NPROBE_CHOICES[-1] lists
MIN_POINTS_PER_LIST = 39  # faiss warns below 39 training points per k-means centroid
IVF_TRAIN_POINTS_PER_LIST = 64  # k-means sample size per list (faiss subsamples to this)
IVF_TRAIN_ITERATIONS = 10
MAX_NLIST = 1 << 20
ADD_CHUNK = 100_000  # vectors decoded and added per step while building
EXACT_CHUNK = 100_000  # vectors per step of a streamed exact search
ACCEPTED_FORMS = (
    "flat, auto, hnswM (e.g. hnsw32), hnswM,efc=N, hnswM,sq8, hnswM,efc=N,sq8, "
    "ivfN (e.g. ivf2048), ivfN,sq8, ivfN,fs"
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
    fastscan: bool = False  # ivf only: 4-bit PQ codes, rescored from the store's vectors

    @property
    def canonical(self) -> str:
        if self.kind == "ivf":
            codes = ",sq8" if self.sq8 else ",fs" if self.fastscan else ""
            return f"ivf{self.nlist}{codes}"
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

        auto picks ivfN,sq8: one 8-bit copy of the vectors serves kNN and rerank (a quarter
        of float32's memory). N is 2048, doubled while lists would average more than
        AUTO_MAX_LIST_SIZE vectors (10M vectors: 4096), so a query scans about as many lists
        at 10M as at 1M. From AUTO_FASTSCAN_THRESHOLD vectors it picks ivfN,fs: the lists
        scanned at 10M hold 19.5k codes, which cost 2.8-3.2 ms as 8-bit codes but a fraction
        of that as 4-bit fast-scan codes, and rescoring the shortlist from the codec arrays
        costs the same at any size.

        ivf2048 over hnsw32 by measurement (benchmarks/run.py, 100k vectors, 2 cores):
        recall@100 0.998 vs 0.976 (efc=40), k=1000 search 0.33 vs 2.95 ms, build 9.7 s vs
        minutes; at 1M it kept recall 1.000 with a 38 s build.

        IVF caps its list count at n / MIN_POINTS_PER_LIST, so k-means has enough points.
        """
        if self.kind == "ivf":
            nlist = max(1, min(self.nlist, n_vectors // MIN_POINTS_PER_LIST))
            return AnnSpec("ivf", nlist=nlist, sq8=self.sq8, fastscan=self.fastscan)
        if self.kind != "auto":
            return self
        if n_vectors < AUTO_HNSW_THRESHOLD:
            return AnnSpec("flat")
        nlist = AUTO_IVF_LISTS
        while n_vectors > nlist * AUTO_MAX_LIST_SIZE and nlist < MAX_NLIST:
            nlist *= 2
        fastscan = n_vectors >= AUTO_FASTSCAN_THRESHOLD
        return AnnSpec("ivf", nlist=nlist, sq8=not fastscan, fastscan=fastscan).resolve(n_vectors)

    @property
    def refines(self) -> bool:
        """Whether searches rescore a shortlist from the store's vectors (`search_refined`)."""
        return self.kind == "ivf" and self.fastscan

    @property
    def holds_vectors(self) -> bool:
        """Whether the built index keeps decodable vectors that serve the rerank too."""
        return self.kind == "ivf" and self.sq8

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
    if len(options) > 1 or (options and options[0] not in ("sq8", "fs")):
        raise _invalid(spec, "ivfN takes one option at most, 'sq8' or 'fs'")
    return AnnSpec("ivf", nlist=nlist, sq8=options == ["sq8"], fastscan=options == ["fs"])


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


class VectorSource(Protocol):
    """Vectors read in pieces: what `build_index` and `tune_nprobe` need, never all at once."""

    dim: int

    def __len__(self) -> int: ...

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Float32 vectors of rows lo..hi-1."""

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Float32 vectors of the given (sorted) rows."""


class ArraySource:
    """A float32 matrix in memory as a `VectorSource`."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = _as_float32_matrix(matrix)
        self.dim = int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.matrix)

    def rows(self, lo: int, hi: int) -> np.ndarray:
        return self.matrix[lo:hi]

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.matrix[rows]


def _as_source(vectors: np.ndarray | VectorSource) -> VectorSource:
    return ArraySource(vectors) if isinstance(vectors, np.ndarray) else vectors


class RunningTopK:
    """The exact top-k inner products of some queries over vectors that arrive in chunks
    (row numbers continue from chunk to chunk), so no full score matrix is ever held."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k = _as_float32_matrix(queries), k
        self.scores = np.full((len(self.queries), 0), -np.inf, np.float32)
        self.rows = np.zeros((len(self.queries), 0), np.int64)

    def add(self, start: int, block: np.ndarray) -> None:
        """Merge the scores of `block`, whose first vector is row `start`."""
        scores = np.concatenate([self.scores, self.queries @ block.T], axis=1)
        rows = np.broadcast_to(np.arange(start, start + len(block)), (len(scores), len(block)))
        rows = np.concatenate([self.rows, rows], axis=1)
        if scores.shape[1] > self.k:
            keep = np.argpartition(-scores, self.k - 1, axis=1)[:, : self.k]
            scores = np.take_along_axis(scores, keep, axis=1)
            rows = np.take_along_axis(rows, keep, axis=1)
        self.scores, self.rows = scores, rows

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) per query, best first."""
        order = np.argsort(-self.scores, axis=1, kind="stable")
        return np.take_along_axis(self.scores, order, 1), np.take_along_axis(self.rows, order, 1)


def exact_top_k(
    queries: np.ndarray, source: VectorSource, k: int, *, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, rows) per query by inner product, best first, streamed over
    `source` in chunks: the truth that ANN recall is measured against, at any size."""
    n, chunk = len(source), chunk or EXACT_CHUNK
    top = RunningTopK(queries, min(k, n))
    for lo in range(0, n, chunk):
        top.add(lo, source.rows(lo, min(n, lo + chunk)))
    return top.result()


def _training_sample(index: faiss.Index, source: VectorSource, seed: int = 1234) -> np.ndarray:
    """The vectors an index trains on: all of them when few, else a random sample of
    IVF_TRAIN_POINTS_PER_LIST per list (k-means would subsample to that anyway)."""
    n = len(source)
    wanted = IVF_TRAIN_POINTS_PER_LIST * getattr(index, "nlist", 1024)
    if n <= wanted:
        return source.rows(0, n)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=wanted, replace=False))
    return source.take(rows)


def fastscan_subquantizers(dim: int) -> int:
    """Sub-quantizers of an ivfN,fs index: one per FASTSCAN_DIMS_PER_CODE dimensions, or
    the largest divisor of `dim` below that count (each covers a whole number of dims)."""
    m = max(1, dim // FASTSCAN_DIMS_PER_CODE)
    while dim % m:
        m -= 1
    return m


def _new_ivf(spec: AnnSpec, dim: int) -> faiss.Index:
    quantizer = faiss.IndexFlatIP(dim)  # the python wrapper keeps it alive with the index
    if spec.fastscan:
        # 4-bit codes by residual (the centroid's part is exact), scanned 32 at a time with
        # SIMD lookups: about a tenth of an 8-bit code's cost, too coarse to rank on their
        # own, so the search rescores a shortlist from the store's vectors.
        index = faiss.IndexIVFPQFastScan(
            quantizer, dim, spec.nlist, fastscan_subquantizers(dim), 4, faiss.METRIC_INNER_PRODUCT
        )
        index.by_residual = True  # faiss' default is off for inner product
    elif spec.sq8:
        # Not by residual: a code then decodes to the vector itself, with no centroid added,
        # and the rerank reads it straight from the list the search just scanned.
        index = faiss.IndexIVFScalarQuantizer(
            quantizer,
            dim,
            spec.nlist,
            faiss.ScalarQuantizer.QT_8bit,
            faiss.METRIC_INNER_PRODUCT,
            False,
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
    vectors: np.ndarray | VectorSource,
    *,
    threads: int | None = None,
    tune: bool = True,
    progress: Callable[[int], None] | None = None,
) -> faiss.Index:
    """An index over `vectors` (row i gets label i); "auto" is resolved by their count.

    The vectors are read in chunks of ADD_CHUNK and training uses a sample, so a source
    backed by a memory map is never held whole. `progress(n)` is called after each chunk.
    IVF indexes get their default nprobe from `tune_nprobe` unless `tune` is False.
    """
    source = _as_source(vectors)
    n = len(source)
    resolved = parse_ann_spec(spec).resolve(n)
    index = _new_index(resolved, source.dim)
    with _omp_threads(threads):
        if not index.is_trained and n:
            sample = _training_sample(index, source)
            log.info("%s: training on %d of %d vectors", resolved, len(sample), n)
            index.train(sample)
            del sample
        for lo in range(0, n, ADD_CHUNK):
            block = source.rows(lo, min(n, lo + ADD_CHUNK))
            index.add(_as_float32_matrix(block))
            if progress is not None:
                progress(len(block))
        if tune and isinstance(index, faiss.IndexIVF):
            nprobe, recall = tune_nprobe(index, source)
            log.info("%s: nprobe %d (recall@100 %.4f on indexed vectors)", spec, nprobe, recall)
    return index


def tune_nprobe(
    index: faiss.IndexIVF,
    vectors: np.ndarray | VectorSource,
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
    most 2k): the index keeps its nprobe. The exact top-k streams over the source.

    Codes that lose recall at any nprobe (8-bit codes: their ties and near-ties fall either
    way) cap what more lists can buy, so the target is at most NPROBE_CEILING_SHARE of the
    recall of the widest choice, NPROBE_CHOICES[-1] lists: the lists chosen find 99% of
    what scanning many more would.

    A `refines` index (ivfN,fs) is measured as it serves: each shortlist rescored from the
    source's vectors.
    """
    source = _as_source(vectors)
    n = len(source)
    if n <= 2 * k:
        return int(index.nprobe), 1.0
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    queries = _as_float32_matrix(source.take(rows))
    _, top = exact_top_k(queries, source, k + 1)
    truth = [set(t.tolist()) - {int(r)} for t, r in zip(top, rows, strict=True)]

    def found_at(nprobe: int) -> np.ndarray | list[np.ndarray]:
        if not refines(index):
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            return index.search(queries, k + 1, params=params)[1]
        return [
            search_refined(index, query, k + 1, _sorted_take(source), nprobe=nprobe)[1]
            for query in queries
        ]

    def recall_at(nprobe: int) -> float:
        found = found_at(nprobe)
        hits = sum(
            len((set(f.tolist()) - {int(r)}) & t)
            for f, r, t in zip(found, rows, truth, strict=True)
        )
        return hits / sum(len(t) for t in truth)

    widest = min(int(index.nlist), NPROBE_CHOICES[-1])
    ceiling = recall_at(widest)
    target = min(target, NPROBE_CEILING_SHARE * ceiling)
    choices = [p for p in NPROBE_CHOICES if p < widest] + [widest]
    for nprobe in choices:
        recall = ceiling if nprobe == widest else recall_at(nprobe)
        if recall >= target:
            break
    index.nprobe = nprobe
    return nprobe, recall


def _sorted_take(source: VectorSource) -> Callable[[np.ndarray], np.ndarray]:
    """`source.take` for rows in any order (it reads sorted rows)."""

    def take(rows: np.ndarray) -> np.ndarray:
        order = np.argsort(rows, kind="stable")
        vectors = np.empty((len(rows), source.dim), np.float32)
        vectors[order] = source.take(rows[order])
        return vectors

    return take


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


def refines(index: faiss.Index) -> bool:
    """Whether the index's own scores are too coarse to rank by (4-bit fast-scan codes), so
    its hits are a shortlist to rescore from the store's vectors (`search_refined`)."""
    return isinstance(index, faiss.IndexIVFPQFastScan)


def refine_shortlist(k: int) -> int:
    """Rows an `ivfN,fs` search fetches to return k: REFINE_SHORTLIST times as many, at
    least MIN_REFINE_SHORTLIST."""
    return max(REFINE_SHORTLIST * k, MIN_REFINE_SHORTLIST)


def rescore(
    query: np.ndarray, rows: np.ndarray, vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k best of `rows` by inner product of `query` with their `vectors`, best first:
    (scores, rows, vectors)."""
    scores = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
    if len(scores) > k:
        keep = np.argpartition(-scores, k - 1)[:k]
        keep = keep[np.argsort(-scores[keep], kind="stable")]
    else:
        keep = np.argsort(-scores, kind="stable")
    return scores[keep], rows[keep], vectors[keep]


def search_refined(
    index: faiss.Index,
    query: np.ndarray,
    k: int,
    decode: Callable[[np.ndarray], np.ndarray],
    *,
    nprobe: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k of one query as (scores, rows, vectors), hits only: the index's shortlist of
    `refine_shortlist(k)` rows rescored exactly from `decode(rows)` (the store's vectors,
    which the rerank then reuses). For `refines` indexes; others need no shortlist."""
    matrix = _as_float32_matrix(query)
    if len(matrix) != 1:
        raise ValueError(f"search_refined takes one query, got {len(matrix)}")
    _, rows = search(index, matrix, min(refine_shortlist(k), max(index.ntotal, 1)), nprobe=nprobe)
    rows = rows[0][rows[0] >= 0]
    return rescore(matrix[0], rows, decode(rows), k)


def stores_exact_vectors(index: faiss.Index) -> bool:
    """Whether the index keeps its vectors uncompressed in its inverted lists (IVF-Flat).

    Such an index can return the hits' vectors from the lists it has just scanned, still in
    cache, instead of a gather of 1,000 random rows from a separate 1M-row array.
    """
    return isinstance(index, faiss.IndexIVFFlat)


def holds_vectors(index: faiss.Index) -> bool:
    """Whether the index's codes decode to the vectors themselves (IVF-Flat, or IVF-SQ not
    by residual), so it can stand in for the store's own copy."""
    if isinstance(index, faiss.IndexIVFFlat):
        return True
    return isinstance(index, faiss.IndexIVFScalarQuantizer) and not index.by_residual


def search_with_vectors(
    index: faiss.Index, query: np.ndarray, k: int, *, nprobe: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`search` for one query plus the hits' stored vectors: (scores, rows, vectors), hits only.

    Only for indexes where `holds_vectors` holds: IVF-Flat gives the indexed vectors bit for
    bit (measured at 1M documents, 1,000 hits: 0.59 ms against 0.82 for search + gather),
    IVF-SQ8 their 8-bit decoding.
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


def reconstruct_rows(index: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """Float32 vectors of these rows, decoded from an index where `holds_vectors` holds.

    An IVF index needs a row-to-list map for that; it is built on first use (8 bytes a
    vector), as only fetch by id and filtered recall read rows this way.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(index, faiss.IndexIVF) and index.direct_map.type == faiss.DirectMap.NoMap:
        index.make_direct_map()
    if len(rows) == 0:
        return np.zeros((0, index.d), np.float32)
    return index.reconstruct_batch(rows)


def save_index(index: faiss.Index, path: str | Path) -> None:
    faiss.write_index(index, str(path))


def load_index(path: str | Path, *, mmap: bool = False) -> faiss.Index:
    """Read an index; `mmap` maps an IVF index's lists from the file instead of reading them
    (read-only; the page cache holds them once for every process)."""
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)


def warm(index: faiss.Index) -> None:
    """Touch every inverted list once (one search over all of them), so a memory-mapped
    index serves its first queries without page faults."""
    if isinstance(index, faiss.IndexIVF) and index.ntotal:
        probe = np.zeros((1, index.d), np.float32)
        index.search(probe, 1, params=faiss.SearchParametersIVF(nprobe=int(index.nlist)))
