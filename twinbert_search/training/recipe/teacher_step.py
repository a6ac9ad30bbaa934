"""Step 3: fine-tune the cross-encoder with `fit_teacher` on the recipe's own candidates.

Each train query's group is its positive and hard negatives from its hybrid recall list
(BM25 + dense); the loss is listwise (`localized_contrastive`) plus a KL term towards the
fused BM25 + bi-encoder z-scores of the same group (a cheap strong signal); the checkpoint
kept is the best by nDCG@10 of the validation queries' recall lists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.training.recipe.context import Context, write_json

__all__ = ["TEACHER_SAMPLE_STREAM", "step_teacher"]

log = logging.getLogger(__name__)

TEACHER_SAMPLE_STREAM = 3  # the `step_rng` stream the recipe's groups have always drawn from


def step_teacher(ctx: Context) -> dict[str, Any]:
    """Fine-tune the cross-encoder; keep the best checkpoint by validation nDCG@10."""
    import torch

    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.data import TrainingQuery, Validation
    from twinbert_search.training.teacher import CrossEncoder
    from twinbert_search.training.teacher_loop import fit_teacher
    from twinbert_search.training.tokenizer import to_torch, tokenizer_file

    cfg = ctx.cfg
    cand = ctx.load_candidates()
    train = [
        TrainingQuery(
            q["id"],
            q["text"],
            tuple(q["positives"]),
            tuple(ctx.doc_ids[r] for r in q["hybrid"][: cfg.teacher_negative_depth]),
        )
        for q in cand["queries"]
        if q["split"] == "train"
    ]
    val = [q for q in cand["queries"] if q["split"] == "val"]
    torch.manual_seed(cfg.seed)
    if cfg.teacher_threads:
        torch.set_num_threads(cfg.teacher_threads)
    model = CrossEncoder.from_checkpoint(ctx.checkpoint, cfg.teacher_pooling)
    tok_path = tokenizer_file(ctx.checkpoint)
    tok = TextTokenizer.from_file(tok_path, cfg.teacher_max_length)
    out = ctx.out / "teacher"

    def validate() -> Validation:
        """nDCG@10 of the teacher reranking each validation query's top recall candidates."""
        run, qrels = {}, {}
        with torch.no_grad():
            for q in val:
                rows = q["recall"][: cfg.teacher_val_depth]
                pairs = [(q["text"], ctx.doc_text(r)) for r in rows]
                s = model(**to_torch(tok.pad(tok.encode_pairs(pairs)))).numpy()
                run[q["id"]] = {ctx.doc_ids[r]: float(v) for r, v in zip(rows, s, strict=True)}
                qrels[q["id"]] = {d: 1 for d in q["positives"]}
        value = evaluate(qrels, run, ("ndcg@10",))["ndcg@10"]
        log.info("teacher validation ndcg@10 %.4f", value)
        return Validation(value, {"val_ndcg@10": value})

    def fused(query: TrainingQuery, docs: Sequence[str]) -> np.ndarray:
        f = ctx.features(cand["pos"][query.id], np.asarray([ctx.row_of[d] for d in docs]))
        return f["bm25"] + f["dense"]

    def save(best: dict[str, Any], _result: Validation | None = None) -> None:
        model.save(out, tok_path, max_length=cfg.teacher_max_length, extra={"training": best})

    start = time.perf_counter()
    fit = fit_teacher(
        model,
        tok,
        train,
        ctx.corpus,
        steps=cfg.teacher_steps,
        batch_size=cfg.teacher_queries_per_step,
        negatives=cfg.teacher_group - 1,
        lr=cfg.teacher_lr,
        warmup_steps=max(1, cfg.teacher_steps // 10),
        seed=cfg.seed,
        loss="listwise",
        soft_targets=fused,
        soft_weight=cfg.teacher_fused_weight,
        sample_stream=TEACHER_SAMPLE_STREAM,
        corpus_ids=ctx.doc_ids,
        validate=validate if val else None,
        eval_every=cfg.teacher_eval_every,
        best_key="val_ndcg@10",
        on_best=save,
        on_step=lambda step, loss: log.info("teacher step %d loss %.4f", step, loss),
    )
    best = fit.best
    if best is None:  # no validation queries: the last weights
        best = {"step": cfg.teacher_steps}
        save(best)
    write_json(out / "train_log.json", fit.history)
    return {"best": best, "seconds_training": time.perf_counter() - start, "history": fit.history}
