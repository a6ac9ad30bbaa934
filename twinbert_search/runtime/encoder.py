"""ONNX Runtime text encoder: texts in, L2-normalised float32 vectors out.

Documents are tokenized first and batched by length, so a batch pads to similar lengths and
no compute is spent on padding; results come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from twinbert_search.errors import ModelError
from twinbert_search.runtime.tokenization import TextTokenizer

ProgressFn = Callable[[int], None]


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of `a` with the same row of `b`: how close two graphs' vectors are."""
    num = (a * b).sum(1)
    return num / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def make_session(
    path: str | Path, threads: int | None = None, *, spinning: bool = True
) -> ort.InferenceSession:
    """A CPU inference session; `threads` bounds intra-op threads (None: ORT's default).

    `spinning=False` stops the session's worker threads from spin-waiting after each run:
    they would otherwise keep the cores busy for a while, slowing whatever runs next on them
    (another session timed back to back, numpy, FAISS).
    """
    if not Path(path).is_file():
        raise ModelError(f"ONNX graph not found: {path}", path=str(path))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """One tower (query or document) of an exported TwinBERT."""

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: TextTokenizer,
        *,
        prefix: str = "",
        one_per_run: bool = False,
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.prefix = prefix  # the manifest's query_prefix / document_prefix
        # A dynamically quantized graph scales its activations per run, over the whole batch
        # (padding included): a text's vector then depends on the texts batched with it
        # (cosine down to 0.987 for SciFact queries). `one_per_run` encodes each text alone,
        # as a search encodes its query, so evaluation and tuning see the served vectors.
        self.one_per_run = one_per_run
        self._inputs = {i.name for i in session.get_inputs()}
        self.dim = int(session.get_outputs()[0].shape[-1])

    def _run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: v for k, v in batch.items() if k in self._inputs}
        return self.session.run(None, feed)[0].astype(np.float32, copy=False)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        *,
        sort_by_length: bool = True,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Encode texts; `progress(n)` is called after each batch with its size."""
        if self.one_per_run:
            batch_size = 1
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.prefix:
            texts = [self.prefix + t for t in texts]
        encodings = self.tokenizer.encode(texts)
        if sort_by_length:
            order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        else:
            order = np.arange(len(encodings))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._run(self.tokenizer.pad([encodings[i] for i in rows]))
            if progress is not None:
                progress(len(rows))
        return out
