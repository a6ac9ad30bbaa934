"""`train_teacher`: fine-tune a cross-encoder teacher on a BEIR folder's train qrels.

BCE on labelled pairs: each query's positive and BM25 hard negatives. The loop itself is
`training.teacher_loop.fit_teacher`, which the SciFact recipe drives with its own
candidates and loss; this module prepares the data, picks the best teacher on a validation
split and writes the teacher directory (see `teacher.model`) with:

    checkpoint/         latest training state, for resuming (state.pt)
    train_log.json      per-step losses and validation metrics
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from twinbert_search.runtime.models import default_checkpoint
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.args import TeacherArgs
from twinbert_search.training.data import (
    CHECKPOINT_DIR,
    Checkpointing,
    TrainingData,
    TrainingQuery,
    Validation,
    build_bm25,
    load_training_data,
    mine_queries,
    resume_state,
    split_validation,
)
from twinbert_search.training.teacher.model import (
    BACKBONE_DIR,
    HEAD_FILE,
    TEACHER_FILE,
    CrossEncoder,
)
from twinbert_search.training.teacher.scorer import TeacherScorer, rerank_metrics
from twinbert_search.training.teacher_loop import TeacherFit, fit_teacher
from twinbert_search.training.tokenizer import tokenizer_file

__all__ = ["TRAIN_LOG", "train_teacher"]

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.json"
StepCallback = Callable[[int, float], None]


@dataclass
class _Setup:
    """What the training phase needs: the data and its splits, the fresh model, its
    tokenizer (max_length capped by the backbone) and the settings a resume must match."""

    data: TrainingData
    train: list[TrainingQuery]
    val: list[TrainingQuery]
    checkpoint: Path
    model: CrossEncoder
    tok_path: Path
    tokenizer: TextTokenizer
    run_config: dict[str, Any]


def train_teacher(args: TeacherArgs, *, on_step: StepCallback | None = None) -> Path:
    """Fine-tune a cross-encoder teacher as `args` says (see `TeacherArgs`); return out_dir.

    out_dir keeps the best teacher by validation nDCG@10; with `args.resume`, rerunning the
    same call continues from out_dir/checkpoint. `on_step(step, loss)` runs after each
    step's bookkeeping (tests raise from it to simulate an interruption).
    """
    args.validate()
    setup = _setup(args)
    out_dir = Path(args.out_dir)
    state = resume_state(out_dir / CHECKPOINT_DIR, setup.run_config, args.resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    fit = _fit(args, setup, state, on_step)
    if not (out_dir / TEACHER_FILE).is_file():
        # No validation split, or a kill inside the final swap: the last weights.
        _save_best(args, setup, args.steps, {})
    log_path = out_dir / TRAIN_LOG
    log_path.write_text(json.dumps({"best": fit.best, "history": fit.history}, indent=1) + "\n")
    return out_dir


def _setup(args: TeacherArgs) -> _Setup:
    """Data first (a bad folder fails before a model loads), then the seeded fresh model."""
    checkpoint = Path(args.checkpoint) if args.checkpoint is not None else default_checkpoint()
    data = load_training_data(args.data_dir, "train")
    index = build_bm25(data.corpus)
    train_ids, val_ids = split_validation(
        data.labelled_query_ids(), max_queries=args.validation_queries, seed=args.seed
    )
    train_q = mine_queries(data, train_ids, index, depth=args.bm25_depth)
    val_q = mine_queries(data, val_ids, index, depth=args.rerank_depth)
    torch.manual_seed(args.seed)
    model = CrossEncoder.from_checkpoint(checkpoint, args.pooling)
    tok_path = tokenizer_file(checkpoint)
    max_length = min(args.max_length, model.backbone.config.max_position_embeddings)
    return _Setup(
        data=data,
        train=train_q,
        val=val_q,
        checkpoint=checkpoint,
        model=model,
        tok_path=tok_path,
        tokenizer=TextTokenizer.from_file(tok_path, max_length),
        run_config=args.run_config(checkpoint, max_length),
    )


def _fit(
    args: TeacherArgs,
    setup: _Setup,
    state: dict[str, Any] | None,
    on_step: StepCallback | None,
) -> TeacherFit:
    """The loop, validating every `eval_every` steps and swapping in each new best."""
    scorer = TeacherScorer(setup.model, setup.tokenizer, "training")
    data = setup.data

    def validate() -> Validation:
        metrics = rerank_metrics(scorer, setup.val, data.corpus, data.qrels)
        ndcg, bm25 = metrics["teacher"]["ndcg@10"], metrics["bm25"]["ndcg@10"]
        log.info("validation ndcg@10 %.4f (bm25 %.4f)", ndcg, bm25)
        return Validation(ndcg, {"validation": metrics})

    return fit_teacher(
        setup.model,
        setup.tokenizer,
        setup.train,
        data.corpus,
        steps=args.steps,
        batch_size=args.batch_size,
        negatives=args.negatives,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        corpus_ids=sorted(data.corpus),
        validate=validate if setup.val else None,
        eval_every=args.eval_every,
        on_best=lambda best, result: _save_best(
            args, setup, best["step"], result.record["validation"]
        ),
        checkpoint=Checkpointing(
            Path(args.out_dir) / CHECKPOINT_DIR, args.save_every, setup.run_config
        ),
        state=state,
        progress=args.progress,
        on_step=on_step,
    )


def _save_best(args: TeacherArgs, setup: _Setup, step: int, metrics: dict) -> None:
    """The current weights as the teacher, with the step and validation that chose them."""
    extra = {
        "base_model": str(setup.checkpoint),
        "training": {"step": step, "steps": args.steps, "seed": args.seed, "validation": metrics},
    }
    max_length = setup.tokenizer.max_length
    _replace_teacher(setup.model, Path(args.out_dir), setup.tok_path, max_length, extra)


def _replace_teacher(
    model: CrossEncoder, out_dir: Path, tokenizer_path: Path, max_length: int, extra: dict
) -> None:
    """Swap a new teacher into out_dir; teacher.json goes last, so it marks a complete dir."""
    tmp = out_dir / ".teacher.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, tokenizer_path, max_length=max_length, extra=extra)
    (out_dir / TEACHER_FILE).unlink(missing_ok=True)
    for name in (BACKBONE_DIR, HEAD_FILE, "tokenizer.json"):
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
    os.replace(tmp / TEACHER_FILE, out_dir / TEACHER_FILE)
    shutil.rmtree(tmp, ignore_errors=True)
