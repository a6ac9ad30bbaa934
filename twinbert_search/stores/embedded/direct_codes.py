"""`ivfN,sq8d`: IVF lists of faiss's direct signed 8-bit codes, scaled per dimension.

At 10M documents a query's kNN is mostly the scan of its lists' 8-bit codes. faiss scans
`QT_8bit_direct_signed` codes about 1.5x faster than `QT_8bit` ones (an integer product per
code, nothing decoded; `benchmarks/ivf_scan.py`, BENCHMARKS.md "Scale"), but it quantizes the
query to bytes too, so unit vectors (components well inside [-1, 1]) would all become 0. Both
sides are therefore scaled so that the inner product survives:

- a document is stored as code_d = round(x_d * s_d), clipped to [-128, 127], with
  s_d = 127 / (the SCALE_QUANTILE quantile of |x_d| over the training sample);
- a query is searched as round(f * q_d / s_d), f scaling its largest component to 127, so
  sum_d code_d * q'_d is about f * (x . q); scores are divided by f again.

The coarse quantizer holds the k-means centroids multiplied by s, so a scaled query ranks the
lists as the query ranks the centroids; documents are assigned to lists in their own space.
faiss has no place for the scales (it refuses a direct quantizer with trained values and
extra attributes on its objects), so a `DirectIndex` carries them beside the faiss index, and
`ann.save_index` writes them next to its file (SCALES_SUFFIX).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import faiss
import numpy as np

QTYPE = faiss.ScalarQuantizer.QT_8bit_direct_signed
SCALE_QUANTILE = 0.9999  # rarer components are clipped to the code range
CODE_MAX = 127.0
SCALES_SUFFIX = ".scales.npy"  # beside the index file


class DirectIndex:
    """The faiss IVF index of direct codes and its per-dimension scales, as one index.

    Attributes other than `ivf` and `scales` (ntotal, d, nprobe, nlist) are the faiss
    index's; `ann`'s functions take either this or a plain faiss index.
    """

    __slots__ = ("ivf", "scales")

    def __init__(self, ivf: faiss.IndexIVFScalarQuantizer, scales: np.ndarray) -> None:
        object.__setattr__(self, "ivf", ivf)
        object.__setattr__(self, "scales", np.asarray(scales, dtype=np.float32))

    def __getattr__(self, name: str) -> object:
        return getattr(self.ivf, name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self.ivf, name, value)


def is_direct(index: faiss.Index) -> bool:
    """Whether a faiss index holds direct signed 8-bit codes (and so needs its scales)."""
    return isinstance(index, faiss.IndexIVFScalarQuantizer) and index.sq.qtype == QTYPE


def unwrap(index: object) -> tuple[faiss.Index, np.ndarray | None]:
    """(the faiss index, its scales or None)."""
    if isinstance(index, DirectIndex):
        return index.ivf, index.scales
    return index, None


def fit_scales(sample: np.ndarray) -> np.ndarray:
    """s_d mapping the SCALE_QUANTILE quantile of |x_d| to the largest code."""
    spread = np.quantile(np.abs(sample), SCALE_QUANTILE, axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    return (CODE_MAX / spread).astype(np.float32)


def encode(vectors: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Documents as the integer values faiss stores (float32, contiguous)."""
    codes = np.clip(np.rint(vectors * s), -CODE_MAX - 1, CODE_MAX)
    return np.ascontiguousarray(codes, dtype=np.float32)


def decode(codes: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.asarray(codes, dtype=np.float32) / s


def prepared(s: np.ndarray | None, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """What to hand faiss for these queries, and the factor each query's scores carry (None
    for an index without scales, which takes queries as they are)."""
    if s is None:
        return queries, None
    q = queries / s
    top = np.abs(q).max(axis=1)
    factor = np.where(top > 0, CODE_MAX / np.where(top > 0, top, 1.0), 1.0).astype(np.float32)
    return np.ascontiguousarray(np.rint(q * factor[:, None]), dtype=np.float32), factor


def build(
    dim: int,
    nlist: int,
    sample: np.ndarray,
    blocks: Callable[[], Iterable[np.ndarray]],
    *,
    iterations: int,
    points_per_list: int,
    seed: int = 1234,
) -> DirectIndex:
    """The index over every block `blocks()` yields (float32 rows, in order): lists by
    k-means on `sample` in the vectors' own space, codes and scales as above."""
    s = fit_scales(sample)
    coarse = faiss.IndexFlatIP(dim)
    kmeans = faiss.Clustering(dim, nlist)
    kmeans.niter, kmeans.seed, kmeans.max_points_per_centroid = iterations, seed, points_per_list
    kmeans.spherical = True  # as faiss's own IVF trains for the inner product
    kmeans.train(sample, coarse)
    centroids = faiss.rev_swig_ptr(coarse.get_xb(), nlist * dim).reshape(nlist, dim)
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(np.ascontiguousarray(centroids * s, dtype=np.float32))
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dim, nlist, QTYPE, faiss.METRIC_INNER_PRODUCT, False
    )
    index.train(encode(sample[: min(len(sample), 1000)], s))  # the lists exist: a no-op
    for block in blocks():
        lists = np.ascontiguousarray(coarse.search(block, 1)[1][:, 0])
        codes = encode(block, s)
        index.add_core(len(codes), faiss.swig_ptr(codes), None, faiss.swig_ptr(lists))
    return DirectIndex(index, s)
