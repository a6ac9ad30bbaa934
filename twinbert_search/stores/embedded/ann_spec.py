"""ANN index strings (like faiss.index_factory's), parsed only by `parse_ann_spec`:

    flat                  exact inner product (faiss IndexFlatIP)
    hnswM                 HNSW graph with M links per node, e.g. hnsw32 (IndexHNSWFlat)
    hnswM,efc=N           the same, with efConstruction N (default 200)
    hnswM,sq8             HNSW over 8-bit scalar-quantized vectors (IndexHNSWSQ), ~4x less RAM
    hnswM,efc=N,sq8       both options (in any order)
    ivfN                  inverted file with N k-means lists, e.g. ivf2048 (IndexIVFFlat)
    ivfN,sq8              the same over 8-bit scalar-quantized vectors (IndexIVFScalarQuantizer,
                          not by residual: its codes are the vectors, so a store serves both
                          kNN and rerank from them and keeps no other copy)
    ivfN,sq8d             the same with faiss's direct signed 8-bit codes, documents and
                          queries scaled per dimension (`direct_codes.py`): the list scan
                          runs about 1.5x faster than sq8's at the same recall
    ivfN,fs               the same lists over 4-bit product-quantizer codes scanned with SIMD
                          (IndexIVFPQFastScan, dim/4 sub-quantizers): a shortlist that the
                          store's own vectors rescore exactly (`search_refined`)
    auto                  flat below 50,000 vectors, at or above ivfN,sq8d for unit-length
                          vectors (what every model here writes) and ivfN,sq8 for others
                          (N = 2048, doubled while lists would hold over 2,500 vectors);
                          resolved at build time (`ann.resolve_for`: `resolve` sees the count
                          only and says ivfN,sq8)
    auto,sq8d             the same choice, direct codes whatever the vectors' lengths

An IVF index's list count is capped at build time so every list gets at least
MIN_POINTS_PER_LIST vectors (`AnnSpec.resolve`), and the resolved string is what the manifest
records. Building and searching the indexes is `ann.py`'s (which re-exports these names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from twinbert_search.errors import ConfigurationError

AUTO_HNSW_THRESHOLD = 50_000  # below: exact search (name kept for compatibility)
AUTO_IVF_LISTS = 2048
AUTO_MAX_LIST_SIZE = 2_500  # auto doubles its list count until lists hold at most this many
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 200
MIN_POINTS_PER_LIST = 39  # faiss warns below 39 training points per k-means centroid
MAX_NLIST = 1 << 20
ACCEPTED_FORMS = (
    "flat, auto, auto,sq8d, hnswM (e.g. hnsw32), hnswM,efc=N, hnswM,sq8, hnswM,efc=N,sq8, "
    "ivfN (e.g. ivf2048), ivfN,sq8, ivfN,sq8d, ivfN,fs"
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
    direct: bool = False  # ivf only, with sq8: faiss's direct codes, scaled per dimension

    @property
    def canonical(self) -> str:
        if self.kind == "ivf":
            codes = ",sq8d" if self.direct else ",sq8" if self.sq8 else ""
            codes = codes or (",fs" if self.fastscan else "")
            return f"ivf{self.nlist}{codes}"
        if self.kind == "auto" and self.direct:
            return "auto,sq8d"
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
        at 10M as at 1M. It never picks ivfN,fs: at 10M (2026-12-07) its shortlist of 1,000 for
        k = 100 held only 0.89 of the true top 100 (recall@100 0.76), as 19.5k codes scanned
        crowd more near-ties than 4-bit codes separate; at 1M it kept 0.975.

        ivf2048 over hnsw32 by measurement (benchmarks/run.py, 100k vectors, 2 cores):
        recall@100 0.998 vs 0.976 (efc=40), k=1000 search 0.33 vs 2.95 ms, build 9.7 s vs
        minutes; at 1M it kept recall 1.000 with a 38 s build.

        IVF caps its list count at n / MIN_POINTS_PER_LIST, so k-means has enough points.
        """
        if self.kind == "ivf":
            nlist = max(1, min(self.nlist, n_vectors // MIN_POINTS_PER_LIST))
            return AnnSpec(
                "ivf", nlist=nlist, sq8=self.sq8, fastscan=self.fastscan, direct=self.direct
            )
        if self.kind != "auto":
            return self
        if n_vectors < AUTO_HNSW_THRESHOLD:
            return AnnSpec("flat")
        nlist = AUTO_IVF_LISTS
        while n_vectors > nlist * AUTO_MAX_LIST_SIZE and nlist < MAX_NLIST:
            nlist *= 2
        return AnnSpec("ivf", nlist=nlist, sq8=True, direct=self.direct).resolve(n_vectors)

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
    if head == "auto" and options == ["sq8d"]:
        return AnnSpec("auto", direct=True)
    if head in ("flat", "auto"):
        if options:
            raise _invalid(spec, f"{head!r} takes no options (auto: sq8d)")
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
    if len(options) > 1 or (options and options[0] not in ("sq8", "sq8d", "fs")):
        raise _invalid(spec, "ivfN takes one option at most, 'sq8', 'sq8d' or 'fs'")
    return AnnSpec(
        "ivf",
        nlist=nlist,
        sq8=options in (["sq8"], ["sq8d"]),
        fastscan=options == ["fs"],
        direct=options == ["sq8d"],
    )


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
