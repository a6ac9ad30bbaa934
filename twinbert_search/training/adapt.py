"""Adapt a TwinBERT student to a corpus without labels (`twinbert-search adapt`).

Users arrive with a corpus and rarely with labels. From the corpus alone: pseudo-queries
(titles, sentences, keyphrases; `training.corpus`), each with the candidates the student's
own hybrid recall returns for it (BM25 and its kNN, fused as served); the teacher scores
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

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError
from twinbert_search.training.args import AdaptArgs
from twinbert_search.training.corpus import (
    document_vectors,
    make_pseudo_queries,
    read_documents,
)
from twinbert_search.training.score_cache import TeacherScoreCache, score_missing

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


def _candidate_lists(
    runtime: Any,
    docs: Mapping[str, Document],
    ids: Sequence[str],
    vectors: np.ndarray,
    texts: Sequence[str],
    sources: Sequence[str],
    depth: int,
) -> list[dict[str, Any]]:
    """Each pseudo-query's source document, then its hybrid recall (BM25 and kNN fused as the
    model is served: `hybrid_fusion_of` its manifest), with every candidate's BM25 score and
    cosine (the ensemble teacher's other signals)."""
    from twinbert_search.search.fusion import hybrid_fusion_of
    from twinbert_search.training.data import build_bm25

    fusion = hybrid_fusion_of(runtime.manifest.extra)

    bm25 = build_bm25({d: docs[d] for d in ids})
    qvec = runtime.encode_queries(list(texts))
    norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
    row_of = {d: i for i, d in enumerate(ids)}
    out = []
    for i, text in enumerate(texts):
        sims = vectors @ qvec[i] / (norms * max(float(np.linalg.norm(qvec[i])), 1e-12))
        top = np.argsort(-sims, kind="stable")[:depth]
        lexical = bm25.scores(text)
        sparse = [r for r in np.argsort(-lexical, kind="stable")[:depth] if lexical[r] > 0]
        fused = [
            d
            for d, _ in fusion.fuse(
                ([ids[r] for r in top], sims[top]), ([ids[r] for r in sparse], lexical[sparse])
            )
        ]
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


@dataclass
class _Corpus:
    """The corpus by id (sorted) with its stored vectors, and the model that serves it."""

    docs: dict[str, Document]
    ids: list[str]
    runtime: Any
    vectors: np.ndarray


@dataclass
class _Scored:
    """The pseudo-queries, their candidate lists and the teacher's target for each list."""

    queries: list[Any]
    lists: list[dict[str, Any]]
    targets: list[np.ndarray]
    teacher: str  # the scores' fingerprint
    fusion: dict[str, Any] | None  # the ensemble distilled (None: a teacher's logits alone)
    described: str  # the teacher as the summary names it
    scored_now: int


def adapt(args: AdaptArgs, *, on_step: StepCallback | None = None) -> AdaptReport:
    """Adapt the student at `args.model_dir` to `args.corpus` (see the module docstring and
    `AdaptArgs`); save and export it to `args.out_dir` and return the summary.

    `on_step(step, loss)` runs after each training step's bookkeeping.
    """
    args.validate()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    work = Path(args.out_dir) / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(args, work)
    seconds["documents"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    queries, lists = _recall(args, corpus, work)
    seconds["recall"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = _teacher_scores(args, corpus, queries, lists)
    seconds["teacher"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    trained = _train(args, corpus, scored, on_step)
    seconds["training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = _report(args, corpus, scored, trained, seconds)
    _save(args, trained, report)
    seconds["export"] = time.perf_counter() - t0
    (Path(args.out_dir) / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return report


def _corpus(args: AdaptArgs, work: Path) -> _Corpus:
    """The corpus and the student's runtime, with its document vectors (index or tower)."""
    from twinbert_search.runtime.model import TwinBertRuntime

    docs = read_documents(args.corpus)
    ids = sorted(docs)
    runtime = TwinBertRuntime.load(args.model_dir)
    vectors = document_vectors(runtime, docs, ids, work, args.index_dir, args.progress)
    return _Corpus(docs, ids, runtime, vectors)


def _recall(args: AdaptArgs, corpus: _Corpus, work: Path) -> tuple[list[Any], list[dict]]:
    """The pseudo-queries and their hybrid-recall lists (kept under OUT/work for a rerun)."""
    queries = make_pseudo_queries(corpus.docs, args.pseudo_queries, seed=args.seed)
    if not queries:
        raise ConfigurationError(f"{args.corpus}: no document gives a pseudo-query")
    from twinbert_search.search.fusion import hybrid_fusion_of

    fusion = hybrid_fusion_of(corpus.runtime.manifest.extra).to_dict()
    key = _digest([corpus.runtime.fingerprint, args.seed, args.candidates, len(queries), fusion])
    lists_path = work / f"lists.{key}.json"
    if lists_path.is_file():
        return queries, json.loads(lists_path.read_text())
    lists = _candidate_lists(
        corpus.runtime,
        corpus.docs,
        corpus.ids,
        corpus.vectors,
        [q.text for q in queries],
        [q.doc_id for q in queries],
        args.candidates,
    )
    lists_path.write_text(json.dumps(lists))
    return queries, lists


def _teacher_scores(
    args: AdaptArgs, corpus: _Corpus, queries: list[Any], lists: list[dict]
) -> _Scored:
    """The teacher's target for every candidate: a tower teacher's fused cosines, or a
    cross-encoder's logits (those not in OUT/cache scored now), fused as its directory says."""
    from twinbert_search.training.tower_teacher import TowerTeacher

    towers = TowerTeacher.load(args.teacher)
    if towers is not None:
        return _tower_scores(args, corpus, queries, lists, towers)
    from twinbert_search.training.teacher_onnx import load_pair_scorer

    docs = corpus.docs
    scorer = load_pair_scorer(args.teacher, batch_size=args.teacher_batch_size)
    cache = TeacherScoreCache(Path(args.out_dir) / "cache")
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
    score_missing(scorer, cache, missing, chunk=1024, progress=args.progress)
    fusion = teacher_fusion(args.teacher) if args.use_teacher_fusion else None

    def target(item: Mapping[str, Any], ks: Sequence[str]) -> np.ndarray:
        logits = cache.get_many(ks)
        if fusion is None:
            return logits
        return _fused_targets(logits, np.asarray(item["bm25"]), np.asarray(item["cosine"]), fusion)

    targets = [target(item, ks) for item, ks in zip(lists, keys, strict=True)]
    described = str(args.teacher) + (f" (ensemble: {_weights_text(fusion)})" if fusion else "")
    return _Scored(queries, lists, targets, scorer.fingerprint, fusion, described, len(missing))


def _tower_scores(
    args: AdaptArgs, corpus: _Corpus, queries: list[Any], lists: list[dict], teacher: Any
) -> _Scored:
    """A tower teacher's targets: z(BM25), z(the student's cosine) and z(each tower's cosine)
    over each list, weighted; nothing to score pair by pair, so no cache but the vectors'."""
    if not args.use_teacher_fusion:
        raise ConfigurationError(
            f"--teacher-alone: {args.teacher} is a tower teacher, a fusion with no logits alone"
        )
    cosines, fingerprint, fresh = teacher.tower_cosines(
        corpus.docs,
        corpus.ids,
        [q.text for q in queries],
        lists,
        Path(args.out_dir) / WORK_DIR,
        args.progress,
    )
    targets = [
        teacher.fused(np.asarray(item["bm25"]), np.asarray(item["cosine"]), towers)
        for item, towers in zip(lists, cosines, strict=True)
    ]
    described = f"{args.teacher} (towers: {teacher.describe()})"
    return _Scored(queries, lists, targets, fingerprint, teacher.to_dict(), described, fresh)


@dataclass
class _Trained:
    """The trained student and what its report and manifest record."""

    model: Any
    tok_path: Path
    run_config: dict[str, Any]
    history: list[dict[str, Any]]
    resumed_at: int
    calibration: dict[str, Any]


def _train(
    args: AdaptArgs, corpus: _Corpus, scored: _Scored, on_step: StepCallback | None
) -> _Trained:
    """The listwise student loop over the scored lists, then Platt scaling."""
    import torch

    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.data import (
        CHECKPOINT_DIR,
        Checkpointing,
        batch_indices,
        resume_state,
    )
    from twinbert_search.training.modeling import TwinBert
    from twinbert_search.training.student_loop import fit_student, platt_calibrate

    torch.manual_seed(args.seed)
    model = _student(TwinBert.load(args.model_dir), args.learn_documents)
    tok_path = Path(args.model_dir) / "tokenizer.json"
    q_tok = TextTokenizer.from_file(
        tok_path, model.manifest.max_query_length, prefix=model.manifest.query_prefix
    )
    documents = _documents(args, corpus, model, tok_path)
    lists = _scored_lists(scored)
    run_config = args.run_config(
        _digest([corpus.docs[d].content_hash for d in corpus.ids]),
        model.manifest.fingerprint,
        scored.teacher,
        scored.fusion,
        len(scored.queries),
    )
    # the lists trained on: a checkpoint of other candidates (another recall) is another run
    run_config["lists"] = _digest([item["docs"] for item in scored.lists])
    ckpt_dir = Path(args.out_dir) / CHECKPOINT_DIR
    state = resume_state(ckpt_dir, run_config, args.resume)
    fit = fit_student(
        model,
        lambda step: [
            lists[i] for i in batch_indices(len(lists), args.batch_size, step, args.seed)
        ],
        steps=args.steps,
        lr=args.lr,
        crossing_lr=args.crossing_lr,
        warmup_steps=args.warmup_steps,
        query_tokenizer=q_tok,
        documents=documents,
        loss="listwise_kl",
        checkpoint=Checkpointing(ckpt_dir, args.checkpoint_every, run_config),
        state=state,
        progress=args.progress,
        on_step=on_step,
    )
    # The pseudo-query's source document as its label: enough to keep probabilities from
    # saturating (the listwise loss leaves the logits' level free), never to rank.
    calibration = platt_calibrate(model, lists[:64], q_tok, documents)
    resumed_at = int(state["step"]) if state is not None else 0
    return _Trained(model, tok_path, run_config, fit.history, resumed_at, calibration)


def _documents(args: AdaptArgs, corpus: _Corpus, model: Any, tok_path: Path) -> Any:
    """The documents' side: the stored vectors (frozen tower) or the learning tower."""
    import torch

    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.student_loop import DocumentTower, StoredVectors

    if args.learn_documents:
        tok = TextTokenizer.from_file(
            tok_path, model.manifest.max_doc_length, prefix=model.manifest.document_prefix
        )
        return DocumentTower(corpus.docs, tok)
    rows = {d: i for i, d in enumerate(corpus.ids)}
    return StoredVectors(torch.from_numpy(corpus.vectors), rows)


def _scored_lists(scored: _Scored) -> list[Any]:
    """Each pseudo-query's list as the student loop takes it: its candidates, the teacher's
    targets and its source document as positive."""
    from twinbert_search.training.student_loop import ScoredList

    return [
        ScoredList(
            q.text,
            tuple(item["docs"]),
            target,
            np.array([d == q.doc_id for d in item["docs"]], dtype=bool),
        )
        for q, item, target in zip(scored.queries, scored.lists, scored.targets, strict=True)
    ]


def _report(
    args: AdaptArgs,
    corpus: _Corpus,
    scored: _Scored,
    trained: _Trained,
    seconds: dict[str, float],
) -> AdaptReport:
    """The run's closing summary (`seconds` is filled in as the last phase ends)."""
    history = trained.history
    return AdaptReport(
        out=str(Path(args.out_dir)),
        corpus=str(args.corpus),
        documents=len(corpus.docs),
        pseudo_queries=dict(Counter(q.kind for q in scored.queries)),
        candidates=args.candidates,
        pairs=sum(len(item["docs"]) for item in scored.lists),
        pairs_scored_now=scored.scored_now,
        steps=args.steps,
        resumed_at=trained.resumed_at,
        learn_documents=args.learn_documents,
        teacher=scored.described,
        loss_first=history[0]["total"] if history else None,
        loss_last=history[-1]["total"] if history else None,
        calibration=trained.calibration,
        seconds=seconds,
    )


def _save(args: AdaptArgs, trained: _Trained, report: AdaptReport) -> None:
    """Record the adaptation in the manifest, then save and export the model."""
    from twinbert_search.training.export import export_model

    manifest = trained.model.manifest
    if args.learn_documents:
        manifest.document_fingerprint = ""  # new document vectors: an index of its own
    manifest.extra["adaptation"] = {**report.to_dict(), "config": trained.run_config}
    trained.model.save(Path(args.out_dir), trained.tok_path)
    export_model(Path(args.out_dir), int8=True)
