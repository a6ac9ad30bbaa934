"""Adapt a TwinBERT student to a corpus without labels (`twinbert-search adapt`).

Users arrive with a corpus and rarely with labels. From the corpus alone: pseudo-queries
(titles, sentences, keyphrases; `training.corpus`), each with the candidates the student's
own hybrid recall returns for it (RRF of BM25 and its kNN, as served); the teacher scores
every (pseudo-query, candidate) pair; the student learns the teacher's softmax over each list
(listwise KL). By default the document tower stays frozen, so the index the student already
serves from stays valid; with `learn_documents` both towers learn (a full TwinBERT), and the
adapted model needs an index of its own.

Resumable at every stage: document vectors and the candidate lists are kept under OUT/work,
teacher scores in OUT/cache (flushed per chunk, keyed by the teacher's fingerprint), and the
training state in OUT/checkpoint; rerunning the same call continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError
from twinbert_search.training.corpus import make_pseudo_queries, read_documents

__all__ = ["AdaptReport", "adapt"]

log = logging.getLogger(__name__)

WORK_DIR = "work"
REPORT_FILE = "adapt.json"
StepCallback = Callable[[int, float], None]


@dataclass
class AdaptReport:
    """What one `adapt` run trained on and what it wrote: its closing summary."""

    out: str
    corpus: str
    documents: int
    pseudo_queries: dict[str, int]
    candidates: int
    pairs: int
    pairs_scored_now: int
    steps: int
    resumed_at: int
    learn_documents: bool
    teacher: str
    loss_first: float | None = None
    loss_last: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The closing summary, one fact per line."""
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.pseudo_queries.items()))
        total = sum(self.pseudo_queries.values())
        out = [
            f"adapted model: {self.out}",
            f"corpus: {self.corpus} ({self.documents} documents)",
            f"pseudo-queries: {total} ({kinds}), {self.candidates} hybrid-recall candidates each",
            f"teacher: {self.teacher}; {self.pairs} pairs scored "
            f"({self.pairs_scored_now} in this run, the rest from the cache)",
            f"training: {self.steps} steps"
            + (f" (resumed at step {self.resumed_at})" if self.resumed_at else "")
            + (
                f"; loss {self.loss_first:.4f} -> {self.loss_last:.4f}"
                if self.loss_first is not None and self.loss_last is not None
                else ""
            ),
            "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items()),
        ]
        if self.learn_documents:
            out.append(
                "the document tower learned: index the corpus again with this model "
                f"(twinbert-search index {self.corpus} --index-dir NEW_DIR --model {self.out}; "
                "OpenSearch: --alias NAME --rebuild switches the alias when the new index is "
                "complete)"
            )
        else:
            out.append("document tower frozen: the index of the original model serves it")
        return out


FUSION_FILE = "ensemble.json"


def teacher_fusion(teacher: str | Path) -> dict[str, Any] | None:
    """The ensemble a teacher directory was distilled as (the recipe writes `ensemble.json`:
    weights of the z-scored cross-encoder logit, BM25 and cosine, and the logit's mean and
    deviation), or None: the teacher's logits alone."""
    path = Path(teacher) / FUSION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _fused_targets(
    logits: np.ndarray, bm25: np.ndarray, cosine: np.ndarray, fusion: Mapping[str, Any]
) -> np.ndarray:
    """One list's teacher scores under the ensemble: w_ce z(logit) with the teacher's global
    statistics, plus w_bm25 z(BM25) and w_dense z(cosine) over the list."""
    from twinbert_search.runtime.fusion import zscore

    w = fusion["weights"]
    mean, std = fusion["ce_stats"]
    out = w.get("ce", 0.0) * (np.asarray(logits, np.float64) - mean) / max(std, 1e-6)
    out = out + w.get("bm25", 0.0) * zscore(bm25) + w.get("dense", 0.0) * zscore(cosine)
    return out.astype(np.float32)


def _weights_text(fusion: Mapping[str, Any]) -> str:
    return ", ".join(f"{w:g} {k}" for k, w in fusion["weights"].items() if w)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _document_vectors(
    runtime: Any,
    docs: Mapping[str, Document],
    ids: Sequence[str],
    work: Path,
    index_dir: str | Path | None,
    progress: bool,
) -> np.ndarray:
    """The stored vectors of `ids`: from the index when it holds this model's vectors, else
    encoded by the model's document tower (kept under OUT/work for a rerun)."""
    key = _digest([runtime.fingerprint, [docs[d].content_hash for d in ids]])
    path = work / f"doc_vectors.{key}.npy"
    if path.is_file():
        return np.load(path)
    vectors = None
    if index_dir is not None:
        from twinbert_search.stores.embedded import EmbeddedStore

        store = EmbeddedStore.open(index_dir, with_documents=False)
        try:
            store.ensure_model(runtime.fingerprint)
            vectors = np.asarray(store.fetch(list(ids)).vectors, dtype=np.float32)
        finally:
            store.close()
    if vectors is None or len(vectors) != len(ids):
        bar = tqdm(total=len(ids), disable=not progress, desc="encoding documents", unit="doc")
        vectors = runtime.encode_documents(
            [docs[d].encoding_text for d in ids], progress=bar.update
        )
        bar.close()
    np.save(path, vectors.astype(np.float32))
    return np.load(path)


def _candidate_lists(
    runtime: Any,
    docs: Mapping[str, Document],
    ids: Sequence[str],
    vectors: np.ndarray,
    texts: Sequence[str],
    sources: Sequence[str],
    depth: int,
) -> list[dict[str, Any]]:
    """Each pseudo-query's source document, then its hybrid recall (RRF of BM25 and kNN),
    with every candidate's BM25 score and cosine (the ensemble teacher's other signals)."""
    from twinbert_search.search import reciprocal_rank_fusion
    from twinbert_search.training.data import build_bm25

    bm25 = build_bm25({d: docs[d] for d in ids})
    qvec = runtime.encode_queries(list(texts))
    norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
    row_of = {d: i for i, d in enumerate(ids)}
    out = []
    for i, text in enumerate(texts):
        sims = vectors @ qvec[i] / (norms * max(float(np.linalg.norm(qvec[i])), 1e-12))
        top = np.argsort(-sims, kind="stable")[:depth]
        dense = [ids[r] for r in top]
        lexical = bm25.scores(text)
        sparse = [ids[r] for r in np.argsort(-lexical, kind="stable")[:depth] if lexical[r] > 0]
        fused = [d for d, _ in reciprocal_rank_fusion([dense, sparse])]
        rows = [row_of[d] for d in [sources[i], *[d for d in fused if d != sources[i]]][:depth]]
        out.append(
            {
                "docs": [ids[r] for r in rows],
                "bm25": lexical[rows].tolist(),
                "cosine": sims[rows].tolist(),
            }
        )
    return out


def _student(model: Any, learn_documents: bool) -> Any:
    """The model to train: with a frozen document tower, one of its own (a copy when the
    towers were shared), so the query tower learns while the stored vectors stay valid."""
    import copy

    if learn_documents:
        for p in model.doc_tower.parameters():
            p.requires_grad_(True)
        return model
    manifest = model.manifest
    if manifest.shared_towers:
        model.doc_tower = copy.deepcopy(model.query_tower)
        manifest.shared_towers = False
    manifest.document_fingerprint = manifest.document_fingerprint or manifest.fingerprint
    for p in model.doc_tower.parameters():
        p.requires_grad_(False)
    return model


def adapt(
    corpus: str | Path,
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    teacher: str | Path,
    index_dir: str | Path | None = None,
    pseudo_queries: int = 400,
    candidates: int = 30,
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 5e-5,
    crossing_lr: float = 1e-3,
    learn_documents: bool = False,
    seed: int = 0,
    teacher_batch_size: int = 32,
    use_teacher_fusion: bool = True,
    checkpoint_every: int = 50,
    resume: bool = True,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> AdaptReport:
    """Adapt the student at `model_dir` to `corpus` (see the module docstring); save and
    export it to `out_dir` and return the summary. `index_dir`: an embedded index of the
    corpus by this model, whose stored vectors are reused instead of encoding the corpus.
    The teacher's targets are its logits, or the ensemble its directory records
    (`teacher_fusion`, as the recipe distils it) unless `use_teacher_fusion` is False."""
    import torch

    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.data import (
        CHECKPOINT_DIR,
        Checkpointing,
        batch_indices,
        check_resume_config,
        load_checkpoint,
    )
    from twinbert_search.training.distill import TeacherScoreCache
    from twinbert_search.training.export import export_model
    from twinbert_search.training.modeling import TwinBert
    from twinbert_search.training.student_loop import (
        DocumentTower,
        ScoredList,
        StoredVectors,
        fit_student,
        platt_calibrate,
    )
    from twinbert_search.training.teacher_onnx import load_pair_scorer

    for name, value in {
        "pseudo_queries": pseudo_queries,
        "candidates": candidates - 1,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "crossing_lr": crossing_lr,
        "checkpoint_every": checkpoint_every,
    }.items():
        if value <= 0:
            raise ConfigurationError(
                f"{name} must be positive (candidates at least 2), got {value}"
            )
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    out = Path(out_dir)
    work = out / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    docs = read_documents(corpus)
    ids = sorted(docs)
    runtime = TwinBertRuntime.load(model_dir)
    vectors = _document_vectors(runtime, docs, ids, work, index_dir, progress)
    seconds["documents"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    queries = make_pseudo_queries(docs, pseudo_queries, seed=seed)
    if not queries:
        raise ConfigurationError(f"{corpus}: no document gives a pseudo-query")
    lists_path = (
        work / f"lists.{_digest([runtime.fingerprint, seed, candidates, len(queries)])}.json"
    )
    if lists_path.is_file():
        lists = json.loads(lists_path.read_text())
    else:
        lists = _candidate_lists(
            runtime,
            docs,
            ids,
            vectors,
            [q.text for q in queries],
            [q.doc_id for q in queries],
            candidates,
        )
        lists_path.write_text(json.dumps(lists))
    seconds["recall"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    scorer = load_pair_scorer(teacher, batch_size=teacher_batch_size)
    cache = TeacherScoreCache(out / "cache")
    keys = [
        [cache.key(scorer.fingerprint, q.text, d, docs[d].content_hash) for d in item["docs"]]
        for q, item in zip(queries, lists, strict=True)
    ]
    missing = {
        k: (q.text, docs[d].encoding_text)
        for q, item, ks in zip(queries, lists, keys, strict=True)
        for d, k in zip(item["docs"], ks, strict=True)
        if k not in cache
    }
    bar = tqdm(total=len(missing), disable=not progress, desc="teacher scores", unit="pair")
    pending = list(missing)
    for start in range(0, len(pending), 1024):
        part = pending[start : start + 1024]
        cache.update(part, scorer.score([missing[k] for k in part]).tolist())
        cache.flush()
        bar.update(len(part))
    bar.close()
    seconds["teacher"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = _student(TwinBert.load(model_dir), learn_documents)
    manifest = model.manifest
    tok_path = Path(model_dir) / "tokenizer.json"
    q_tok = TextTokenizer.from_file(tok_path, manifest.max_query_length)
    documents: StoredVectors | DocumentTower
    if learn_documents:
        documents = DocumentTower(docs, TextTokenizer.from_file(tok_path, manifest.max_doc_length))
    else:
        documents = StoredVectors(torch.from_numpy(vectors), {d: i for i, d in enumerate(ids)})
    fusion = teacher_fusion(teacher) if use_teacher_fusion else None

    def target(item: Mapping[str, Any], ks: Sequence[str]) -> np.ndarray:
        logits = cache.get_many(ks)
        if fusion is None:
            return logits
        return _fused_targets(logits, np.asarray(item["bm25"]), np.asarray(item["cosine"]), fusion)

    scored = [
        ScoredList(
            q.text,
            tuple(item["docs"]),
            target(item, ks),
            np.array([d == q.doc_id for d in item["docs"]], dtype=bool),
        )
        for q, item, ks in zip(queries, lists, keys, strict=True)
    ]
    run_config = {
        "corpus": _digest([docs[d].content_hash for d in ids]),
        "model": manifest.fingerprint,
        "teacher": scorer.fingerprint,
        "teacher_fusion": fusion,
        "pseudo_queries": len(queries),
        "candidates": candidates,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "crossing_lr": crossing_lr,
        "learn_documents": learn_documents,
        "seed": seed,
    }
    ckpt_dir = out / CHECKPOINT_DIR
    state = load_checkpoint(ckpt_dir) if resume else None
    if state is not None:
        check_resume_config(state["config"], run_config, ckpt_dir)
    fit = fit_student(
        model,
        lambda step: [scored[i] for i in batch_indices(len(scored), batch_size, step, seed)],
        steps=steps,
        lr=lr,
        crossing_lr=crossing_lr,
        warmup_steps=max(1, steps // 10),
        query_tokenizer=q_tok,
        documents=documents,
        loss="listwise_kl",
        checkpoint=Checkpointing(ckpt_dir, checkpoint_every, run_config),
        state=state,
        progress=progress,
        on_step=on_step,
    )
    # The pseudo-query's source document as its label: enough to keep probabilities from
    # saturating (the listwise loss leaves the logits' level free), never to rank.
    calibration = platt_calibrate(model, scored[:64], q_tok, documents)
    seconds["training"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = AdaptReport(
        out=str(out),
        corpus=str(corpus),
        documents=len(docs),
        pseudo_queries=dict(Counter(q.kind for q in queries)),
        candidates=candidates,
        pairs=sum(len(item["docs"]) for item in lists),
        pairs_scored_now=len(missing),
        steps=steps,
        resumed_at=int(state["step"]) if state is not None else 0,
        learn_documents=learn_documents,
        teacher=str(teacher) + (" (ensemble: " + _weights_text(fusion) + ")" if fusion else ""),
        loss_first=fit.history[0]["total"] if fit.history else None,
        loss_last=fit.history[-1]["total"] if fit.history else None,
        calibration=calibration,
        seconds=seconds,
    )
    if learn_documents:
        manifest.document_fingerprint = ""  # new document vectors: an index of its own
    manifest.extra["adaptation"] = {**report.to_dict(), "config": run_config}
    model.save(out, tok_path)
    export_model(out, int8=True)
    seconds["export"] = time.perf_counter() - t0
    (out / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return report
