"""Scoring (query, document) pairs with a teacher, and measuring it as a reranker."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from twinbert_search.documents import Document
from twinbert_search.errors import InputError
from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.ingest.readers import Qrels
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.data import TrainingQuery
from twinbert_search.training.tokenizer import to_torch

__all__ = ["TeacherScorer", "rerank_metrics"]


class TeacherScorer:
    """Scores (query, document) pairs with a teacher, in length-sorted batches, without grad.

    `fingerprint` identifies the scores (weights and max_length), so cached scores are reused
    only for the very teacher that produced them.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: TextTokenizer,
        model_fingerprint: str,
        batch_size: int = 32,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.fingerprint = hashlib.sha256(
            f"{model_fingerprint}:{tokenizer.max_length}".encode()
        ).hexdigest()

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    def score(self, pairs: Sequence[tuple[str, str]], *, progress: bool = False) -> np.ndarray:
        """Logits (float32, one per pair, in input order)."""
        for i, (query, doc) in enumerate(pairs):
            if not query.strip() or not doc.strip():
                side = "query" if not query.strip() else "document"
                raise InputError(f"pair {i} has an empty {side} text")
        out = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return out
        encodings = self.tokenizer.encode_pairs(pairs)
        # Longest first: each batch pads to lengths alike, and results land by row.
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        was_training = self.model.training
        self.model.eval()
        bar = tqdm(
            total=len(pairs), disable=not progress, desc="teacher scores", unit="pair", leave=False
        )
        try:
            with torch.no_grad():
                for start in range(0, len(order), self.batch_size):
                    rows = order[start : start + self.batch_size]
                    batch = to_torch(self.tokenizer.pad([encodings[i] for i in rows]))
                    out[rows] = self.model(**batch).float().numpy()
                    bar.update(len(rows))
        finally:
            bar.close()
            self.model.train(was_training)
        return out


def rerank_metrics(
    scorer: TeacherScorer,
    queries: Sequence[TrainingQuery],
    corpus: Mapping[str, Document],
    qrels: Qrels,
) -> dict[str, dict[str, float]]:
    """nDCG@10 and MRR@10 of BM25's ranking and of the teacher reranking it, per system."""
    pairs = [(q.text, corpus[d].encoding_text) for q in queries for d in q.bm25]
    scores = iter(scorer.score(pairs).tolist())
    judged = {q.id: qrels[q.id] for q in queries}
    bm25_run = {q.id: [(d, float(len(q.bm25) - r)) for r, d in enumerate(q.bm25)] for q in queries}
    rerank = {q.id: {d: next(scores) for d in q.bm25} for q in queries}
    metrics = ("ndcg@10", "mrr@10")
    return {
        "bm25": evaluate(judged, bm25_run, metrics),
        "teacher": evaluate(judged, rerank, metrics),
    }
