"""Clustered synthetic document vectors: a Gaussian mixture projected onto the unit sphere.

Uniform noise on the sphere has no neighbourhood structure (every pair is near-orthogonal), so
ANN recall and latency measured on it say little about real embeddings. Here documents come
from `centers` clusters of unequal size (Dirichlet weights) and unequal spread; the cluster
centres themselves gather around `topics` broader topics, so neighbouring clusters overlap as
related subjects do. Queries are held-out points of the same mixture, perturbed, so they land
near their cluster as real queries land near their relevant documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def _normalize(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@dataclass(frozen=True)
class ClusteredSphere:
    """A fixed mixture: `centers` unit centres; a point is normalize(centre + noise).

    `spread` bounds the per-cluster noise norm (noise ~ N(0, s^2/dim) per coordinate), so a
    point's cosine to its centre is about 1/sqrt(1 + s^2): 0.78 to 0.53 for the defaults.
    """

    dim: int = 384
    centers: int = 1000
    topics: int = 50
    topic_spread: float = 1.0  # centre-to-topic cosine about 0.7
    spread: tuple[float, float] = (0.8, 1.6)
    query_noise: float = 0.3
    seed: int = 0

    def _mixture(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        topics = _normalize(rng.standard_normal((self.topics, self.dim), dtype=np.float32))
        centres = rng.standard_normal((self.centers, self.dim), dtype=np.float32)
        centres *= np.float32(self.topic_spread / np.sqrt(self.dim))
        centres += topics[rng.integers(0, self.topics, size=self.centers)]
        centres = _normalize(centres)
        weights = rng.dirichlet(np.full(self.centers, 2.0))
        sigmas = rng.uniform(*self.spread, size=self.centers).astype(np.float32)
        return centres, weights, sigmas / np.float32(np.sqrt(self.dim))

    def _points(self, n: int, rng: np.random.Generator) -> np.ndarray:
        centres, weights, sigmas = self._mixture()
        labels = rng.choice(self.centers, size=n, p=weights)
        noise = rng.standard_normal((n, self.dim), dtype=np.float32)
        noise *= sigmas[labels, None]
        noise += centres[labels]
        return _normalize(noise)

    def documents(self, n: int, chunk: int = 100_000) -> Iterator[np.ndarray]:
        """n document vectors (float32, unit length) in chunks, the same for the same seed."""
        rng = np.random.default_rng(self.seed + 1)
        for start in range(0, n, chunk):
            yield self._points(min(chunk, n - start), rng)

    def document_matrix(self, n: int) -> np.ndarray:
        out = np.empty((n, self.dim), dtype=np.float32)
        start = 0
        for block in self.documents(n):
            out[start : start + len(block)] = block
            start += len(block)
        return out

    def queries(self, n: int) -> np.ndarray:
        """Held-out points of the mixture (a separate stream), perturbed by `query_noise`."""
        rng = np.random.default_rng(self.seed + 2)
        points = self._points(n, rng)
        noise = rng.standard_normal(points.shape, dtype=np.float32)
        points += noise * np.float32(self.query_noise / np.sqrt(self.dim))
        return _normalize(points)
