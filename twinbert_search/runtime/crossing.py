"""Crossing layers in numpy: score one query against many candidates in one call.

These mirror `twinbert_search.training.crossing` exactly (tests check parity) but need no
torch, so the serving path stays light. All return logits; `sigmoid` gives probabilities.
Weights are read from `crossing/model.safetensors`; `OnnxCrossing` runs the int8 graph that
`export --int8` writes for residual crossings (`twinbert_search.quantization.crossing_graph`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file

from twinbert_search.errors import ModelError
from twinbert_search.manifest import CrossingConfig
from twinbert_search.runtime.encoder import make_session


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic in float64: float32 rounds every logit above ~17 to 1.0 (and below ~-88
    to 0.0), and candidates ranked by probability would tie. Clipped, so exp never overflows.
    """
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -700.0, 700.0)))


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean()) / max(float(x.std()), 1e-6) if len(x) else x


def lexical_fusion(logits: np.ndarray, bm25: np.ndarray, weight: float) -> np.ndarray:
    """Crossing logits plus `weight` x BM25, each z-scored over one query's candidates.

    A distilled student learns from a teacher that fuses BM25 in, but its stored document
    vectors cannot carry exact term matches; adding back the BM25 score (which hybrid recall
    computes anyway) costs one vector operation. The weight is tuned per model on validation
    queries by the recipe and kept in its manifest (`extra.lexical_fusion.bm25_weight`).
    """
    return _z(logits) + weight * _z(bm25)


class CosineCrossing:
    """logit = scale * cos(q, d) + bias (vectors are unit length when the model normalises)."""

    def __init__(self, scale: float, bias: float, normalized: bool = True) -> None:
        self.scale = np.float32(scale)
        self.bias = np.float32(bias)
        self.normalized = normalized

    def precompute(self, docs: np.ndarray) -> None:
        return None

    def logits(
        self, query: np.ndarray, docs: np.ndarray, precomputed: np.ndarray | None = None
    ) -> np.ndarray:
        cos = docs @ query
        if not self.normalized:
            norms = np.linalg.norm(docs, axis=1) * np.linalg.norm(query)
            cos = cos / np.maximum(norms, 1e-12)
        return (self.scale * cos + self.bias).astype(np.float32)


class ResidualCrossing:
    """x = combine(q, d) (max, concat or mul); z = W2 relu(W1 x + b1) + b2 + x; logit = w . z + b.

    Everything after the hidden ReLU is linear, so w . W2 folds into one vector at load and
    a rerank costs one matrix product (W1) instead of two. Models trained before 0.1.0 put a
    ReLU on z (`output_relu`); they are scored with both products, as trained.
    With concat, W1 x = W1_q q + (W1_d d + b1): the bracket does not depend on the query, so
    `precompute` computes it once per document at ingest and query time skips that half.
    """

    def __init__(
        self, weights: dict[str, np.ndarray], combine: str, output_relu: bool = False
    ) -> None:
        self.combine = combine
        self.output_relu = output_relu
        w1 = weights["dense1.weight"].astype(np.float32)  # (h, width)
        self.b1 = weights["dense1.bias"].astype(np.float32)
        self.w2t = np.ascontiguousarray(weights["dense2.weight"].astype(np.float32).T)  # (h, width)
        self.b2 = weights["dense2.bias"].astype(np.float32)
        self.wo = weights["out.weight"].astype(np.float32).reshape(-1)
        self.bo = np.float32(weights["out.bias"].reshape(-1)[0])
        # Folded tail: w . (W2 h + b2 + x) + b = (W2^T w) . h + w . x + (w . b2 + b).
        self.v = (self.w2t.astype(np.float64) @ self.wo).astype(np.float32)  # (h,)
        self.c = np.float32(float(self.b2.astype(np.float64) @ self.wo) + float(self.bo))
        self.hidden, width = w1.shape
        if combine == "concat":
            dim = width // 2
            self.w1q_t = np.ascontiguousarray(w1[:, :dim].T)  # (dim, h)
            self.w1d_t = np.ascontiguousarray(w1[:, dim:].T)
            self.wo_q = np.ascontiguousarray(self.wo[:dim])
            self.wo_d = np.ascontiguousarray(self.wo[dim:])
        else:
            self.w1t = np.ascontiguousarray(w1.T)  # (width, h)

    def precompute(self, docs: np.ndarray) -> np.ndarray | None:
        """Query-independent document half of the first dense layer (concat only)."""
        if self.combine != "concat":
            return None
        return (docs.astype(np.float32) @ self.w1d_t + self.b1).astype(np.float32)

    def logits(
        self, query: np.ndarray, docs: np.ndarray, precomputed: np.ndarray | None = None
    ) -> np.ndarray:
        query = query.astype(np.float32, copy=False)
        docs = docs.astype(np.float32, copy=False)
        if self.combine == "concat":
            pre = precomputed if precomputed is not None else self.precompute(docs)
            h = pre + query @ self.w1q_t
            np.maximum(h, 0.0, out=h)
            if not self.output_relu:
                skip = docs @ self.wo_d + (float(query @ self.wo_q) + self.c)
                return (h @ self.v + skip).astype(np.float32, copy=False)
            y = h @ self.w2t
            dim = docs.shape[1]
            y[:, :dim] += query
            y[:, dim:] += docs
        else:
            x = docs * query[None, :] if self.combine == "mul" else np.maximum(docs, query[None, :])
            h = x @ self.w1t
            h += self.b1
            np.maximum(h, 0.0, out=h)
            if not self.output_relu:
                return (h @ self.v + x @ self.wo + self.c).astype(np.float32, copy=False)
            y = h @ self.w2t
            y += x
        y += self.b2
        np.maximum(y, 0.0, out=y)
        return (y @ self.wo + self.bo).astype(np.float32)


class OnnxCrossing:
    """A residual crossing (max or mul) as the int8 graph of `quantization.crossing_graph`.

    One intra-op thread: it matches numpy's two-thread float product on one core, and a
    second thread would spin-wait between calls, slowing whatever the process runs next.
    """

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    @classmethod
    def load(cls, path: str | Path) -> OnnxCrossing:
        return cls(make_session(path, threads=1))

    def precompute(self, docs: np.ndarray) -> None:
        return None

    def logits(
        self, query: np.ndarray, docs: np.ndarray, precomputed: np.ndarray | None = None
    ) -> np.ndarray:
        docs = np.ascontiguousarray(docs, dtype=np.float32)
        if len(docs) == 0:
            return np.zeros(0, dtype=np.float32)
        feed = {"docs": docs, "query": np.asarray(query, dtype=np.float32).reshape(1, -1)}
        return self.session.run(None, feed)[0]


Crossing = CosineCrossing | ResidualCrossing | OnnxCrossing


def load_crossing(
    model_dir: str | Path,
    config: CrossingConfig,
    normalized: bool,
    int8_graph: str | Path | None = None,
) -> Crossing:
    """Read the crossing weights saved by training (`crossing/model.safetensors`), or the
    int8 graph at `int8_graph` when given."""
    if int8_graph is not None:
        return OnnxCrossing.load(int8_graph)
    path = Path(model_dir) / "crossing" / "model.safetensors"
    if not path.is_file():
        raise ModelError(f"crossing weights not found: {path}", path=str(path))
    weights = load_file(str(path))
    if config.type == "cosine":
        return CosineCrossing(
            float(weights["scale"].reshape(-1)[0]),
            float(weights["bias"].reshape(-1)[0]),
            normalized,
        )
    return ResidualCrossing(weights, config.combine, config.output_relu)
