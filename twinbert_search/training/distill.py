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

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twinbert_search.runtime.models import default_checkpoint
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.args import LOSSES, DistillArgs
from twinbert_search.training.data import (
    CHECKPOINT_DIR,
    Checkpointing,
    TrainingData,
    TrainingQuery,
    batch_indices,
    build_bm25,
    load_training_data,
    mine_queries,
    resume_state,
    sample_group,
    step_rng,
)
from twinbert_search.training.data import pseudo_queries as make_pseudo_queries
from twinbert_search.training.export import export_model
from twinbert_search.training.modeling import TwinBert, TwinBertConfig
from twinbert_search.training.score_cache import TeacherScoreCache, score_missing
from twinbert_search.training.student_loop import (
    DocumentTower,
    ScoredList,
    fit_student,
    platt_calibrate,
)
from twinbert_search.training.teacher import TeacherScorer, load_teacher
from twinbert_search.training.tokenizer import tokenizer_file, tower_tokenizers

__all__ = ["LOSSES", "TeacherScoreCache", "distill"]

log = logging.getLogger(__name__)

REPORT_FILE = "distill.json"
StepCallback = Callable[[int, float], None]
# A batch of one step: (query index, [positive, negatives...]) per query.
Plan = list[list[tuple[int, list[str]]]]


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
    if missing:
        score_missing(teacher, cache, missing, chunk=chunk, progress=progress)


@dataclass
class _Student:
    """The student being trained and what feeds it: the queries and corpus, the teacher's
    cached scores, the tokenizers, and the settings a resume must match."""

    model: TwinBert
    tok_path: Path
    data: TrainingData
    queries: list[TrainingQuery]
    corpus_ids: list[str]
    run_config: dict[str, Any]
    fingerprint: str = ""


def distill(args: DistillArgs, *, on_step: StepCallback | None = None) -> Path:
    """Train a TwinBERT student on the teacher's soft labels (see `DistillArgs`); save and
    export it to out_dir and return out_dir.

    With `args.resume`, rerunning the same call continues from out_dir/checkpoint and ends
    with the same weights as an uninterrupted run. `on_step(step, loss)` runs after each
    step's bookkeeping.
    """
    args.validate()
    out_dir = Path(args.out_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    student, teacher = _setup(args)
    state = resume_state(ckpt_dir, student.run_config, args.resume)
    start = state["step"] if state is not None else 0
    plan = _plan(
        student.queries,
        student.corpus_ids,
        steps=range(start, args.steps),
        batch_size=args.batch_size,
        candidates=args.candidates_per_query,
        seed=args.seed,
    )
    cache_dir = Path(args.cache_dir) if args.cache_dir is not None else out_dir / "cache"
    cache = TeacherScoreCache(cache_dir)
    _score_plan(plan, student.queries, student.data.corpus, teacher, cache, progress=args.progress)
    student.fingerprint = teacher.fingerprint
    del teacher  # its memory, before the student trains
    history = _fit(args, student, plan, start, cache, state, on_step)
    _save(args, student, history)
    return out_dir


def _setup(args: DistillArgs) -> tuple[_Student, TeacherScorer]:
    """The queries, then the student (a bad checkpoint fails before any teacher scoring is
    paid for), then the teacher, whose fingerprint the run config records."""
    config = replace(args.config) if args.config is not None else TwinBertConfig()
    checkpoint = (
        Path(args.student_checkpoint)
        if args.student_checkpoint is not None
        else default_checkpoint()
    )
    data = load_training_data(args.data_dir, "train")
    index = build_bm25(data.corpus)
    depth, seed = args.bm25_depth, args.seed
    queries = mine_queries(data, data.labelled_query_ids(), index, depth=depth)
    queries += make_pseudo_queries(data.corpus, args.pseudo_queries, index, depth=depth, seed=seed)
    torch.manual_seed(seed)
    model = TwinBert.from_checkpoint(checkpoint, config)
    teacher = load_teacher(args.teacher_dir, batch_size=args.teacher_batch_size)
    student = _Student(
        model=model,
        tok_path=tokenizer_file(checkpoint),
        data=data,
        queries=queries,
        corpus_ids=sorted(data.corpus),
        run_config=args.run_config(teacher.fingerprint, checkpoint, config),
    )
    return student, teacher


def _fit(
    args: DistillArgs,
    student: _Student,
    plan: Plan,
    start: int,
    cache: TeacherScoreCache,
    state: dict[str, Any] | None,
    on_step: StepCallback | None,
) -> list[dict[str, Any]]:
    """The student loop over the planned batches; returns its per-step history."""
    torch.manual_seed(args.seed)  # the dropout stream; restored from the checkpoint on resume
    model, corpus = student.model, student.data.corpus
    q_tok, d_tok = _tokenizers(student)

    def batch(step: int) -> list[ScoredList]:
        return [
            _group_list(student.queries[i], docs, corpus, cache, student.fingerprint)
            for i, docs in plan[step - start]
        ]

    fit = fit_student(
        model,
        batch,
        steps=args.steps,
        lr=args.lr,
        crossing_lr=args.crossing_lr,
        warmup_steps=args.warmup_steps,
        query_tokenizer=q_tok,
        documents=DocumentTower(corpus, d_tok),
        loss=args.loss,
        temperature=args.temperature,
        label_weight=args.label_weight,
        recall_loss_weight=args.recall_loss_weight,
        checkpoint=Checkpointing(
            Path(args.out_dir) / CHECKPOINT_DIR, args.checkpoint_every, student.run_config
        ),
        state=state,
        progress=args.progress,
        on_step=on_step,
    )
    return fit.history


def _tokenizers(student: _Student) -> tuple[TextTokenizer, TextTokenizer]:
    """The query and document tokenizers at the student's own max lengths and prefixes."""
    return tower_tokenizers(student.tok_path, student.model.manifest)


def _save(args: DistillArgs, student: _Student, history: list[dict[str, Any]]) -> None:
    """Calibrate (margin-MSE only), record the distillation in the manifest, save and
    export the model, and write distill.json."""
    model, out_dir = student.model, Path(args.out_dir)
    model.eval()
    calibration = None
    if args.loss == "margin_mse":
        q_tok, d_tok = _tokenizers(student)
        calibration = _calibrate(
            model,
            student.queries,
            student.corpus_ids,
            student.data.corpus,
            q_tok,
            d_tok,
            args.candidates_per_query,
            args.seed,
        )
    model.manifest.extra["distillation"] = {
        "teacher_fingerprint": student.fingerprint,
        "loss": args.loss,
        "temperature": args.temperature,
        "steps": args.steps,
        "seed": args.seed,
        "pseudo_queries": args.pseudo_queries,
        "recall_loss_weight": args.recall_loss_weight,
        "label_weight": args.label_weight,
        "calibration": calibration,
    }
    model.save(out_dir, student.tok_path)
    report = export_model(out_dir, int8=args.int8)
    record = {"config": student.run_config, "export": report.lines(), "history": history}
    (out_dir / REPORT_FILE).write_text(json.dumps(record, indent=1) + "\n")


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
