"""The ANN index of an embedded store, described by a short string (like faiss.index_factory).

The accepted strings and their parsing are `ann_spec.py`'s (`parse_ann_spec`, `AnnSpec`),
re-exported here.

Indexes are built from a `VectorSource` read in chunks, and an IVF index trains on a sample
(`IVF_TRAIN_POINTS_PER_LIST` per list), so a build never holds every vector as float32: a
10M-document store builds on a 24 GiB machine. `load_index(mmap=True)` maps an IVF index's
lists from disk, so several processes share one copy in the page cache.

The search-time knobs (efSearch, nprobe) are arguments of `search`, not part of the string, so
one built index serves any recall/latency trade-off. An IVF index's default nprobe is tuned at
build (`tune_nprobe`): the fewest lists that reach NPROBE_TARGET_RECALL recall@100 against
exact search, measured on a sample of the indexed vectors themselves. Every index uses inner
product on unit vectors, i.e. cosine similarity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from twinbert_search.errors import ModelError
from twinbert_search.stores.embedded import direct_codes
from twinbert_search.stores.embedded.ann_spec import ACCEPTED_FORMS as ACCEPTED_FORMS
from twinbert_search.stores.embedded.ann_spec import AUTO_HNSW_THRESHOLD as AUTO_HNSW_THRESHOLD
from twinbert_search.stores.embedded.ann_spec import AUTO_IVF_LISTS as AUTO_IVF_LISTS
from twinbert_search.stores.embedded.ann_spec import AUTO_MAX_LIST_SIZE as AUTO_MAX_LIST_SIZE
from twinbert_search.stores.embedded.ann_spec import (
    DEFAULT_EF_CONSTRUCTION as DEFAULT_EF_CONSTRUCTION,
)
from twinbert_search.stores.embedded.ann_spec import DEFAULT_M as DEFAULT_M
from twinbert_search.stores.embedded.ann_spec import MAX_NLIST as MAX_NLIST
from twinbert_search.stores.embedded.ann_spec import MIN_POINTS_PER_LIST as MIN_POINTS_PER_LIST
from twinbert_search.stores.embedded.ann_spec import AnnSpec as AnnSpec
from twinbert_search.stores.embedded.ann_spec import parse_ann_spec as parse_ann_spec

log = logging.getLogger(__name__)

FASTSCAN_DIMS_PER_CODE = 4  # ivfN,fs: one 4-bit sub-quantizer code per 4 dimensions
REFINE_SHORTLIST = 2  # ivfN,fs: rows rescored per row returned ...
MIN_REFINE_SHORTLIST = 1_000  # ... and at least this many
MIN_EF_SEARCH = 128
DEFAULT_NPROBE = 32  # IVF lists scanned per query when tuning is off or finds none enough
NPROBE_CHOICES = (8, 16, 32, 64, 128, 256)  # tried in order by `tune_nprobe`
NPROBE_TARGET_RECALL = 0.98  # recall@100 the tuned nprobe must reach on the sample
NPROBE_SAMPLE = 200  # indexed vectors used as queries when tuning
NPROBE_CEILING_SHARE = 0.99  # ...or this share of the recall at NPROBE_CHOICES[-1] lists
IVF_TRAIN_POINTS_PER_LIST = 64  # k-means sample size per list (faiss subsamples to this)
IVF_TRAIN_ITERATIONS = 10
ADD_CHUNK = 100_000  # vectors decoded and added per step while building
EXACT_CHUNK = 100_000  # vectors per step of a streamed exact search
UNIT_SAMPLE = 4_096  # rows whose norms decide whether `auto` may use direct codes
UNIT_TOLERANCE = 0.02  # |norm - 1| allowed: an 8-bit codec's decoded rows round their norms


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


def _training_sample(nlist: int, source: VectorSource, seed: int = 1234) -> np.ndarray:
    """The vectors an index trains on: all of them when few, else a random sample of
    IVF_TRAIN_POINTS_PER_LIST per list (k-means would subsample to that anyway)."""
    n = len(source)
    wanted = IVF_TRAIN_POINTS_PER_LIST * nlist
    if n <= wanted:
        return source.rows(0, n)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=wanted, replace=False))
    return source.take(rows)


def unit_length(source: VectorSource, sample: int = UNIT_SAMPLE) -> bool:
    """Whether the vectors are unit length, judged on up to `sample` rows spread over the
    source (within UNIT_TOLERANCE: 8-bit codecs round the norms). `auto` builds direct
    8-bit codes only then: their lists come from spherical k-means, which keeps the
    directions of the vectors and drops their lengths."""
    n = len(source)
    if n == 0:
        return False
    rows = np.unique(np.linspace(0, n - 1, min(n, sample)).astype(np.int64))
    norms = np.linalg.norm(source.take(rows), axis=1)
    return bool(np.all(np.abs(norms - 1.0) <= UNIT_TOLERANCE))


def resolve_for(spec: str | AnnSpec, source: VectorSource) -> AnnSpec:
    """`spec` resolved for these vectors: `auto` by their count, and with direct 8-bit codes
    (`ivfN,sq8d`) where it picks IVF and the vectors are unit length, as every model of
    this toolkit writes them; `ivfN,sq8` for other vectors. Other strings as they say."""
    parsed = parse_ann_spec(spec)
    resolved = parsed.resolve(len(source))
    auto_ivf = parsed.kind == "auto" and resolved.kind == "ivf" and not resolved.direct
    return replace(resolved, direct=True) if auto_ivf and unit_length(source) else resolved


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
    """An index over `vectors` (row i gets label i); "auto" is resolved by their count and
    their norms (`resolve_for`).

    The vectors are read in chunks of ADD_CHUNK and training uses a sample, so a source
    backed by a memory map is never held whole. `progress(n)` is called after each chunk.
    IVF indexes get their default nprobe from `tune_nprobe` unless `tune` is False.
    """
    source = _as_source(vectors)
    n = len(source)
    resolved = resolve_for(spec, source)

    def blocks() -> Iterator[np.ndarray]:
        for lo in range(0, n, ADD_CHUNK):
            block = _as_float32_matrix(source.rows(lo, min(n, lo + ADD_CHUNK)))
            yield block
            if progress is not None:
                progress(len(block))

    with _omp_threads(threads):
        if resolved.direct and n:
            sample = _training_sample(resolved.nlist, source)
            log.info("%s: training on %d of %d vectors", resolved, len(sample), n)
            index = direct_codes.build(
                source.dim,
                resolved.nlist,
                _as_float32_matrix(sample),
                blocks,
                iterations=IVF_TRAIN_ITERATIONS,
                points_per_list=IVF_TRAIN_POINTS_PER_LIST,
            )
            index.nprobe = min(DEFAULT_NPROBE, resolved.nlist)
            del sample
        else:
            index = _new_index(resolved, source.dim)
            if not index.is_trained and n:
                sample = _training_sample(getattr(index, "nlist", 1024), source)
                log.info("%s: training on %d of %d vectors", resolved, len(sample), n)
                index.train(sample)
                del sample
            for block in blocks():
                index.add(block)
        if tune and isinstance(direct_codes.unwrap(index)[0], faiss.IndexIVF):
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
            return search(index, queries, k + 1, nprobe=nprobe)[1]
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
    index, scales = direct_codes.unwrap(index)
    matrix = _as_float32_matrix(queries)
    if k <= 0 or index.ntotal == 0:
        shape = (len(matrix), max(k, 0))
        return np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int64)
    params = None
    if isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=ef_search or max(2 * k, MIN_EF_SEARCH))
    elif isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=nprobe or index.nprobe)
    feed, factor = direct_codes.prepared(scales, matrix)
    with _omp_threads(threads):
        scores, rows = index.search(feed, k, params=params)
        if isinstance(index, faiss.IndexIVF):
            scores, rows = _filled(index, feed, k, int(params.nprobe), scores, rows)
    if factor is not None:  # direct codes: back to the inner product of the vectors
        scores = scores / factor[:, None]
    return scores, rows.astype(np.int64, copy=False)


def _filled(
    index: faiss.IndexIVF,
    matrix: np.ndarray,
    k: int,
    nprobe: int,
    scores: np.ndarray,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Queries whose `nprobe` lists held fewer than k vectors search again with twice the
    lists until they have k hits or every list is scanned: a tuned nprobe (recall@100) can
    leave a rerank depth of 1,000 unfilled (869 hits on average at 100k, 16 of 2,048 lists)."""
    want = min(k, int(index.ntotal))
    short = np.flatnonzero((rows[:, :want] < 0).any(axis=1))
    while len(short) and nprobe < index.nlist:
        nprobe = min(2 * nprobe, int(index.nlist))
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        more_scores, more_rows = index.search(matrix[short], k, params=params)
        scores[short], rows[short] = more_scores, more_rows
        short = short[(more_rows[:, :want] < 0).any(axis=1)]
    return scores, rows


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
    by residual, direct codes included), so it can stand in for the store's own copy."""
    index, _ = direct_codes.unwrap(index)
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
    index, s = direct_codes.unwrap(index)
    matrix = _as_float32_matrix(query)
    if len(matrix) != 1:
        raise ValueError(f"search_with_vectors takes one query, got {len(matrix)}")
    if k <= 0 or index.ntotal == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, index.d), np.float32)
    params = faiss.SearchParametersIVF(nprobe=nprobe or index.nprobe)
    feed, _ = direct_codes.prepared(s, matrix)
    scores, rows, vectors = index.search_and_reconstruct(feed, k, params=params)
    scores, rows, vectors = scores[0], rows[0].astype(np.int64, copy=False), vectors[0]
    if rows[-1] < 0:  # fewer than k hits: the missing ones come last, as row -1
        keep = rows >= 0
        scores, rows, vectors = scores[keep], rows[keep], vectors[keep]
    if s is not None:  # the codes decoded, scored exactly against the query as it came
        vectors = direct_codes.decode(vectors, s)
        scores = vectors @ matrix[0]
        order = np.argsort(-scores, kind="stable")
        return scores[order], rows[order], vectors[order]
    return scores, rows, vectors  # views: no copy of the (k, dim) vectors


def reconstruct_rows(index: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """Float32 vectors of these rows, decoded from an index where `holds_vectors` holds.

    An IVF index needs a row-to-list map for that; it is built on first use (8 bytes a
    vector), as only fetch by id and filtered recall read rows this way.
    """
    index, s = direct_codes.unwrap(index)
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(index, faiss.IndexIVF) and index.direct_map.type == faiss.DirectMap.NoMap:
        index.make_direct_map()
    if len(rows) == 0:
        return np.zeros((0, index.d), np.float32)
    vectors = index.reconstruct_batch(rows)
    return vectors if s is None else direct_codes.decode(vectors, s)


def save_index(index: faiss.Index | direct_codes.DirectIndex, path: str | Path) -> None:
    """Write the index; direct codes' scales go beside it (`direct_codes.SCALES_SUFFIX`)."""
    index, scales = direct_codes.unwrap(index)
    faiss.write_index(index, str(path))
    if scales is not None:
        np.save(f"{path}{direct_codes.SCALES_SUFFIX}", scales)


def load_index(path: str | Path, *, mmap: bool = False) -> faiss.Index | direct_codes.DirectIndex:
    """Read an index; `mmap` maps an IVF index's lists from the file instead of reading them
    (read-only; the page cache holds them once for every process)."""
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
    if direct_codes.is_direct(index):
        scales = Path(f"{path}{direct_codes.SCALES_SUFFIX}")
        if not scales.is_file():
            raise ModelError(f"{path} holds direct 8-bit codes but {scales.name} is missing")
        return direct_codes.DirectIndex(index, np.load(scales))
    return index


def warm(index: faiss.Index) -> None:
    """Touch every inverted list once (one search over all of them), so a memory-mapped
    index serves its first queries without page faults."""
    index, _ = direct_codes.unwrap(index)
    if isinstance(index, faiss.IndexIVF) and index.ntotal:
        probe = np.zeros((1, index.d), np.float32)
        index.search(probe, 1, params=faiss.SearchParametersIVF(nprobe=int(index.nlist)))
