"""Codecs for stored document vectors: how many bytes a unit vector costs on disk and in RAM.

Vectors are stored once at ingest and decoded per query for the candidates only, so a codec
trades storage for a small rerank error: float16 halves the size (error ~1e-3), int8 quarters
it with one float32 scale per vector (cosine to the original >= 0.999 for unit vectors).

A codec turns (n, dim) float32 vectors into named arrays (what the store persists, as .npy
files or SQLite blobs) and gathers + decodes any rows of them back to float32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from twinbert_search.errors import ConfigurationError

VECTORS = "vectors"  # the per-vector codes, (n, dim), in every codec
SCALES = "scales"  # int8 only: float32 (n,), decoded = code * scale


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected vectors of shape (n, dim), got shape {array.shape}")
    return array


def gather_rows(array: np.ndarray, rows: np.ndarray | Sequence[int]) -> np.ndarray:
    """array[rows] along axis 0; see `_rows_or_all`."""
    if isinstance(array, np.memmap):
        array = array.view(np.ndarray)
    return np.take(array, np.asarray(rows, dtype=np.int64), axis=0)


def _rows_or_all(array: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    # A gather from a memory map reads only the pages of the gathered rows; `take` on a
    # plain ndarray view skips np.memmap's per-call wrapping (about half the gather time
    # for 1,000 rows of a 1M-row map).
    return array if rows is None else gather_rows(array, rows)


class Codec(ABC):
    """Encodes float32 vectors into arrays to persist and decodes gathered rows."""

    name: str
    dtype: np.dtype  # dtype of the VECTORS array (and of a SQLite blob)
    has_scale: bool = False

    @abstractmethod
    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays to persist for (n, dim) float32 vectors, keyed by array name."""

    @abstractmethod
    def decode(
        self, arrays: Mapping[str, np.ndarray], rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Float32 (k, dim) vectors of the given rows (all rows when None)."""

    def bytes_per_vector(self, dim: int) -> int:
        return dim * np.dtype(self.dtype).itemsize + (4 if self.has_scale else 0)

    def array_names(self) -> tuple[str, ...]:
        return (VECTORS, SCALES) if self.has_scale else (VECTORS,)

    def to_blobs(self, arrays: Mapping[str, np.ndarray]) -> tuple[list[bytes], list[float | None]]:
        """One blob (and scale, or None) per vector, for row-wise storage such as SQLite."""
        codes = np.ascontiguousarray(arrays[VECTORS])
        blobs = [row.tobytes() for row in codes]
        if self.has_scale:
            return blobs, [float(s) for s in arrays[SCALES]]
        return blobs, [None] * len(blobs)

    def from_blobs(
        self, blobs: Sequence[bytes], scales: Sequence[float | None], dim: int
    ) -> dict[str, np.ndarray]:
        """Inverse of to_blobs: the persisted arrays for these rows."""
        codes = np.frombuffer(b"".join(blobs), dtype=self.dtype).reshape(len(blobs), dim)
        arrays = {VECTORS: codes}
        if self.has_scale:
            arrays[SCALES] = np.asarray(scales, dtype=np.float32)
        return arrays


class Float32Codec(Codec):
    name = "float32"
    dtype = np.dtype(np.float32)

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        return {VECTORS: np.ascontiguousarray(_as_matrix(vectors))}

    def decode(
        self, arrays: Mapping[str, np.ndarray], rows: np.ndarray | None = None
    ) -> np.ndarray:
        if rows is None:  # a copy, so callers never hold (or write to) the memory map
            return np.array(arrays[VECTORS], dtype=np.float32)
        return np.asarray(_rows_or_all(arrays[VECTORS], rows), dtype=np.float32)


class Float16Codec(Codec):
    name = "float16"
    dtype = np.dtype(np.float16)

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        return {VECTORS: _as_matrix(vectors).astype(np.float16)}

    def decode(
        self, arrays: Mapping[str, np.ndarray], rows: np.ndarray | None = None
    ) -> np.ndarray:
        return np.asarray(_rows_or_all(arrays[VECTORS], rows)).astype(np.float32)


class Int8Codec(Codec):
    """Symmetric per-vector quantization: scale = max|x| / 127, code = round(x / scale)."""

    name = "int8"
    dtype = np.dtype(np.int8)
    has_scale = True

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        matrix = _as_matrix(vectors)
        peak = np.abs(matrix).max(axis=1) if matrix.shape[1] else np.zeros(len(matrix), np.float32)
        scales = (peak / 127.0).astype(np.float32)
        safe = np.where(scales > 0, scales, np.float32(1.0))  # an all-zero vector stays zero
        codes = np.clip(np.rint(matrix / safe[:, None]), -127, 127).astype(np.int8)
        return {VECTORS: codes, SCALES: scales}

    def decode(
        self, arrays: Mapping[str, np.ndarray], rows: np.ndarray | None = None
    ) -> np.ndarray:
        codes = np.asarray(_rows_or_all(arrays[VECTORS], rows)).astype(np.float32)
        scales = np.asarray(_rows_or_all(arrays[SCALES], rows), dtype=np.float32)
        codes *= scales[:, None]
        return codes


_CODECS: dict[str, Codec] = {c.name: c for c in (Float32Codec(), Float16Codec(), Int8Codec())}
CODEC_NAMES = tuple(_CODECS)


def get_codec(name: str) -> Codec:
    """The codec called `name`; the one place codec names are checked."""
    try:
        return _CODECS[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"unknown vector codec {name!r}; valid codecs: {', '.join(CODEC_NAMES)}"
        ) from None
