"""Distil a cross-encoder teacher into a TwinBERT student (Lu, Jiao, Zhang 2020).

Each step takes `batch_size` queries (judged train queries, plus optional pseudo-queries from
the corpus), each with `candidates_per_query` documents: one positive and BM25 hard negatives.
The student learns the teacher's soft relevance for every pair (`soft_ce`, TwinBERT's
objective) or the teacher's positive-negative margins (`margin_mse`, Hofstätter et al. 2020).

The whole batch plan is drawn from (seed, step) before training, so the teacher scores just
the pairs the run will use, once: scores go to an on-disk cache keyed by the teacher's
fingerprint, the query text and the document, and a rerun (or a resumed run) pays nothing.

An output directory, when done:

    manifest.json, tokenizer.json, query_encoder/, crossing/, onnx/   the model (see manifest)
    checkpoint/state.pt        latest training state, for resuming
    cache/teacher_scores.npz   teacher logits (unless `cache_dir` points elsewhere)
    distill.json               settings, per-step losses, export parity
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from twinbert_search.errors import ConfigurationError, ModelError
from twinbert_search.runtime.models import default_checkpoint
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.data import (
    CHECKPOINT_DIR,
    Checkpointing,
    TrainingQuery,
    batch_indices,
    build_bm25,
    check_resume_config,
    load_checkpoint,
    load_training_data,
    mine_queries,
    sample_group,
    step_rng,
)
from twinbert_search.training.data import pseudo_queries as make_pseudo_queries
from twinbert_search.training.export import export_model
from twinbert_search.training.modeling import TwinBert, TwinBertConfig
from twinbert_search.training.student_loop import (
    DocumentTower,
    ScoredList,
    fit_student,
    platt_calibrate,
)
from twinbert_search.training.teacher import TeacherScorer, load_teacher
from twinbert_search.training.tokenizer import tokenizer_file

__all__ = ["LOSSES", "TeacherScoreCache", "distill"]

log = logging.getLogger(__name__)

LOSSES = ("soft_ce", "margin_mse")
REPORT_FILE = "distill.json"
StepCallback = Callable[[int, float], None]
# A batch of one step: (query index, [positive, negatives...]) per query.
Plan = list[list[tuple[int, list[str]]]]


class TeacherScoreCache:
    """Teacher logits by key, persisted as one `.npz` (keys, scores) replaced atomically.

    A key hashes the teacher fingerprint, the query text, the document id and the document's
    content hash, so a retrained teacher or an edited document never reuses a stale score.
    """

    FILE = "teacher_scores.npz"

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / self.FILE
        self._scores: dict[str, float] = {}
        if self.path.is_file():
            try:
                with np.load(self.path) as data:
                    keys, scores = data["keys"], data["scores"]
            except (OSError, ValueError, KeyError) as exc:
                raise ModelError(
                    f"{self.path}: unreadable teacher score cache ({exc}); delete it",
                    path=str(self.path),
                ) from None
            self._scores = dict(zip(keys.astype(str).tolist(), scores.tolist(), strict=True))

    @staticmethod
    def key(fingerprint: str, query: str, doc_id: str, doc_hash: str) -> str:
        payload = json.dumps([fingerprint, query, doc_id, doc_hash], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]

    def __len__(self) -> int:
        return len(self._scores)

    def __contains__(self, key: str) -> bool:
        return key in self._scores

    def get_many(self, keys: Iterable[str]) -> np.ndarray:
        return np.array([self._scores[k] for k in keys], dtype=np.float32)

    def update(self, keys: Sequence[str], scores: Sequence[float]) -> None:
        self._scores.update(zip(keys, (float(s) for s in scores), strict=True))

    def flush(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._scores), dtype="S32")
        scores = np.array(list(self._scores.values()), dtype=np.float32)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=keys, scores=scores)
        os.replace(tmp, self.path)


def _plan(
    queries: Sequence[TrainingQuery],
    corpus_ids: Sequence[str],
    *,
    steps: range,
    batch_size: int,
    candidates: int,
    seed: int,
) -> Plan:
    plan = []
    for step in steps:
        rng = step_rng(seed, step, 1)
        groups = []
        for i in batch_indices(len(queries), batch_size, step, seed):
            positive, negs = sample_group(queries[i], candidates - 1, rng, corpus_ids)
            groups.append((i, [positive, *negs]))
        plan.append(groups)
    return plan


def _score_plan(
    plan: Plan,
    queries: Sequence[TrainingQuery],
    corpus: dict,
    teacher: TeacherScorer,
    cache: TeacherScoreCache,
    *,
    progress: bool,
    chunk: int = 2048,
) -> None:
    """Score every pair of the plan missing from the cache, flushing the cache per chunk."""
    missing: dict[str, tuple[str, str]] = {}
    for groups in plan:
        for i, docs in groups:
            q = queries[i]
            for doc_id in docs:
                doc = corpus[doc_id]
                key = cache.key(teacher.fingerprint, q.text, doc_id, doc.content_hash)
                if key not in cache and key not in missing:
                    missing[key] = (q.text, doc.encoding_text)
    total = sum(len(docs) for groups in plan for _, docs in groups)
    log.info("teacher scores: %d pairs planned, %d not cached", total, len(missing))
    if not missing:
        return
    keys = list(missing)
    bar = tqdm(total=len(keys), disable=not progress, desc="teacher scores", unit="pair")
    for start in range(0, len(keys), chunk):
        part = keys[start : start + chunk]
        cache.update(part, teacher.score([missing[k] for k in part]).tolist())
        cache.flush()
        bar.update(len(part))
    bar.close()


def distill(
    data_dir: str | Path,
    teacher_dir: str | Path,
    out_dir: str | Path,
    *,
    student_checkpoint: str | Path | None = None,
    config: TwinBertConfig | None = None,
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 3e-5,
    crossing_lr: float = 1e-3,
    temperature: float = 1.0,
    loss: str = "soft_ce",
    pseudo_queries: int = 0,
    candidates_per_query: int = 8,
    bm25_depth: int = 50,
    recall_loss_weight: float = 0.0,
    label_weight: float = 0.0,
    seed: int = 0,
    checkpoint_every: int = 100,
    warmup_fraction: float = 0.1,
    teacher_batch_size: int = 32,
    cache_dir: str | Path | None = None,
    int8: bool = True,
    resume: bool = True,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> Path:
    """Train a TwinBERT student on the teacher's soft labels; save and export it to out_dir.

    `recall_loss_weight` > 0 adds an in-batch-negatives loss on the raw tower vectors (query
    vs its positive), which a residual-crossing student needs to stay usable for kNN recall.
    `label_weight` > 0 adds the qrels' hard labels (`label_listwise` over each query's group,
    whose first document is its positive) to the teacher's soft ones.
    `temperature` applies to `soft_ce` only. With `resume`, rerunning the same call continues
    from out_dir/checkpoint and ends with the same weights as an uninterrupted run.
    `on_step(step, loss)` runs after each step's bookkeeping.
    """
    for name, value in {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "crossing_lr": crossing_lr,
        "temperature": temperature,
        "checkpoint_every": checkpoint_every,
        "bm25_depth": bm25_depth,
    }.items():
        if value <= 0:
            raise ConfigurationError(f"{name} must be positive, got {value}")
    if loss not in LOSSES:
        raise ConfigurationError(f"loss must be one of {LOSSES}, got {loss!r}")
    if candidates_per_query < 2:
        raise ConfigurationError(
            f"candidates_per_query must be at least 2 (a positive and a negative), "
            f"got {candidates_per_query}"
        )
    if pseudo_queries < 0 or recall_loss_weight < 0:
        raise ConfigurationError("pseudo_queries and recall_loss_weight must not be negative")
    config = replace(config) if config is not None else TwinBertConfig()
    student_checkpoint = (
        Path(student_checkpoint) if student_checkpoint is not None else default_checkpoint()
    )
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR

    data = load_training_data(data_dir, "train")
    index = build_bm25(data.corpus)
    queries = mine_queries(data, data.labelled_query_ids(), index, depth=bm25_depth)
    queries += make_pseudo_queries(data.corpus, pseudo_queries, index, depth=bm25_depth, seed=seed)
    corpus_ids = sorted(data.corpus)

    # The student first: a bad checkpoint fails before any teacher scoring is paid for.
    torch.manual_seed(seed)
    model = TwinBert.from_checkpoint(student_checkpoint, config)
    tok_path = tokenizer_file(student_checkpoint)
    teacher = load_teacher(teacher_dir, batch_size=teacher_batch_size)
    run_config: dict[str, Any] = {
        "data": str(Path(data_dir).resolve()),
        "teacher": teacher.fingerprint,
        "student_checkpoint": str(student_checkpoint.resolve()),
        "model": json.dumps(asdict(config), sort_keys=True),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "crossing_lr": crossing_lr,
        "temperature": temperature,
        "loss": loss,
        "pseudo_queries": pseudo_queries,
        "candidates_per_query": candidates_per_query,
        "bm25_depth": bm25_depth,
        "recall_loss_weight": recall_loss_weight,
        "seed": seed,
        "warmup_fraction": warmup_fraction,
        # only when set, so checkpoints written before the option existed still resume
        **({"label_weight": label_weight} if label_weight else {}),
    }
    state = load_checkpoint(ckpt_dir) if resume else None
    if state is not None:
        check_resume_config(state["config"], run_config, ckpt_dir)
    start = state["step"] if state is not None else 0

    plan = _plan(
        queries,
        corpus_ids,
        steps=range(start, steps),
        batch_size=batch_size,
        candidates=candidates_per_query,
        seed=seed,
    )
    cache = TeacherScoreCache(Path(cache_dir) if cache_dir is not None else out_dir / "cache")
    _score_plan(plan, queries, data.corpus, teacher, cache, progress=progress)
    fingerprint = teacher.fingerprint
    del teacher

    torch.manual_seed(seed)  # the dropout stream; restored from the checkpoint on resume
    q_tok = TextTokenizer.from_file(tok_path, model.manifest.max_query_length)
    d_tok = TextTokenizer.from_file(tok_path, model.manifest.max_doc_length)

    def batch(step: int) -> list[ScoredList]:
        return [
            _group_list(queries[i], docs, data.corpus, cache, fingerprint)
            for i, docs in plan[step - start]
        ]

    fit = fit_student(
        model,
        batch,
        steps=steps,
        lr=lr,
        crossing_lr=crossing_lr,
        warmup_steps=max(1, round(warmup_fraction * steps)),
        query_tokenizer=q_tok,
        documents=DocumentTower(data.corpus, d_tok),
        loss=loss,
        temperature=temperature,
        label_weight=label_weight,
        recall_loss_weight=recall_loss_weight,
        checkpoint=Checkpointing(ckpt_dir, checkpoint_every, run_config),
        state=state,
        progress=progress,
        on_step=on_step,
    )
    history = fit.history

    model.eval()
    calibration = (
        _calibrate(
            model, queries, corpus_ids, data.corpus, q_tok, d_tok, candidates_per_query, seed
        )
        if loss == "margin_mse"
        else None
    )
    model.manifest.extra["distillation"] = {
        "teacher_fingerprint": fingerprint,
        "loss": loss,
        "temperature": temperature,
        "steps": steps,
        "seed": seed,
        "pseudo_queries": pseudo_queries,
        "recall_loss_weight": recall_loss_weight,
        "label_weight": label_weight,
        "calibration": calibration,
    }
    model.save(out_dir, tok_path)
    report = export_model(out_dir, int8=int8)
    (out_dir / REPORT_FILE).write_text(
        json.dumps({"config": run_config, "export": report.lines(), "history": history}, indent=1)
        + "\n"
    )
    return out_dir


def _group_list(
    query: TrainingQuery,
    docs: Sequence[str],
    corpus: dict,
    cache: TeacherScoreCache,
    fingerprint: str,
) -> ScoredList:
    """A planned group (its positive first) with the teacher's cached scores."""
    keys = [cache.key(fingerprint, query.text, d, corpus[d].content_hash) for d in docs]
    positives = np.zeros(len(docs), dtype=bool)
    positives[0] = True
    return ScoredList(query.text, tuple(docs), cache.get_many(keys), positives)


def _calibrate(
    model: TwinBert,
    queries: Sequence[TrainingQuery],
    corpus_ids: Sequence[str],
    corpus: dict,
    q_tok: TextTokenizer,
    d_tok: TextTokenizer,
    candidates: int,
    seed: int,
    max_queries: int = 64,
) -> dict[str, Any]:
    """Platt-scale the crossing on labelled groups (a positive and sampled negatives).

    Margin-MSE only fixes score differences, so a student's logits can drift to a level where
    the logistic saturates and every candidate's probability ties (see `calibration`).
    """
    steps = range(max(1, -(-max_queries // 16)))
    plan = _plan(queries, corpus_ids, steps=steps, batch_size=16, candidates=candidates, seed=seed)
    groups = [g for step in plan for g in step][:max_queries]
    lists = []
    for i, docs in groups:
        positives = np.zeros(len(docs), dtype=bool)
        positives[0] = True  # each group's positive comes first
        lists.append(ScoredList(queries[i].text, tuple(docs), None, positives))
    return platt_calibrate(model, lists, q_tok, DocumentTower(corpus, d_tok), chunk=1)
