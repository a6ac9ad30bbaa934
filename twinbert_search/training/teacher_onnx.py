"""A teacher directory's ONNX graph as a pair scorer: the fast way to score many pairs on CPU.

The SciFact recipe exports its teacher to `teacher.onnx` and a dynamically quantised
`teacher.int8.onnx` (`recipe.scores.export_teacher`); scoring with ONNX Runtime is several
times faster than torch here, which is what makes scoring the candidates of hundreds of
pseudo-queries (`training.adapt`) cheap. `load_pair_scorer` takes the int8 graph when there
is one and falls back to torch (`load_teacher`) for any other teacher, a Hugging Face
sequence-classification checkpoint included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["ONNX_GRAPHS", "OnnxCrossEncoder", "PairScorer", "load_pair_scorer"]

ONNX_GRAPHS = ("teacher.int8.onnx", "teacher.onnx")


class PairScorer(Protocol):
    """Scores (query, document) pairs; `fingerprint` identifies the scores it gives."""

    fingerprint: str

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


class OnnxCrossEncoder:
    """The teacher's ONNX graph: (query, document) pairs -> logits, in length-sorted batches."""

    def __init__(
        self,
        folder: Path,
        threads: int | None = None,
        batch_size: int = 32,
        *,
        int8: bool = False,
        spinning: bool = True,
    ) -> None:
        from twinbert_search.runtime.encoder import make_session
        from twinbert_search.runtime.tokenization import TextTokenizer

        meta = json.loads((Path(folder) / "teacher.json").read_text())
        self.tokenizer = TextTokenizer.from_file(folder / "tokenizer.json", meta["max_length"])
        graph = "teacher.int8.onnx" if int8 else "teacher.onnx"
        self.session = make_session(folder / graph, threads, spinning=spinning)
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.batch_size = batch_size
        identity = f"{meta.get('fingerprint', '')}:{graph}:{meta['max_length']}"
        self.fingerprint = hashlib.sha256(identity.encode()).hexdigest()

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Logits (float32, one per pair, in input order)."""
        enc = self.tokenizer.encode_pairs(pairs)
        order = np.argsort([-len(e.ids) for e in enc], kind="stable")
        out = np.zeros(len(pairs), np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer.pad([enc[i] for i in rows])
            feed = {k: v for k, v in batch.items() if k in self._inputs}
            out[rows] = self.session.run(None, feed)[0].reshape(-1)
        return out


def load_pair_scorer(
    path: str | Path, *, threads: int | None = None, batch_size: int = 32
) -> PairScorer:
    """The teacher at `path`: its int8 ONNX graph when exported, else torch (`load_teacher`:
    our teacher directories and local HF sequence-classification checkpoints)."""
    folder = Path(path)
    if (folder / "teacher.json").is_file():
        for graph in ONNX_GRAPHS:
            if (folder / graph).is_file():
                return OnnxCrossEncoder(
                    folder, threads, batch_size, int8=graph == "teacher.int8.onnx"
                )
    from twinbert_search.training.teacher import load_teacher

    if threads:
        import torch

        torch.set_num_threads(threads)
    return load_teacher(folder, batch_size=batch_size)
