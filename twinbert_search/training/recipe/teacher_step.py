"""Step 3: fine-tune the cross-encoder with `fit_teacher` on the recipe's own candidates.

Optionally a warm start first: the cross-encoder regresses onto the fused BM25 + dense
z-scores of hybrid-recall candidates, for pseudo-queries from the corpus (`training.corpus`)
and the train queries, a signal that needs no label. Then the labels: each train query's
group is its positive and hard negatives from its hybrid recall list (BM25 + dense); the loss
is listwise (`localized_contrastive`) plus a KL term towards the fused z-scores of the same
group; the checkpoint kept is the best by nDCG@10 of the validation queries' recall lists.
`explore_teachers` trains variants side by side and measures each alone on validation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.training.recipe.config import RecipeConfig
from twinbert_search.training.recipe.context import Context, read_json, write_json

if TYPE_CHECKING:
    from torch import nn

    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.data import TrainingQuery

__all__ = [
    "TEACHER_SAMPLE_STREAM",
    "explore_teachers",
    "step_teacher",
    "teacher_validation",
    "train_teacher_model",
]

log = logging.getLogger(__name__)

TEACHER_SAMPLE_STREAM = 3  # the `step_rng` stream the recipe's groups have always drawn from
WARM_SAMPLE_STREAM = 5  # the warm start's groups: independent of the label phase's


def _training_queries(ctx: Context, split: str) -> list[TrainingQuery]:
    from twinbert_search.training.data import TrainingQuery

    cfg, cand = ctx.cfg, ctx.load_candidates()
    return [
        TrainingQuery(
            q["id"],
            q["text"],
            tuple(q["positives"]),
            tuple(ctx.doc_ids[r] for r in q["hybrid"][: cfg.teacher_negative_depth]),
            pseudo=split != "train",
        )
        for q in cand["queries"]
        if q["split"] == split
    ]


def pair_scorer(
    model: nn.Module, tok: TextTokenizer, batch: int = 64
) -> Callable[[Sequence[tuple[str, str]]], np.ndarray]:
    """The torch cross-encoder as a pair scorer (no grad, batches of `batch`)."""
    import torch

    from twinbert_search.training.tokenizer import to_torch

    def score(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(pairs), batch):
                part = pairs[start : start + batch]
                out.append(model(**to_torch(tok.pad(tok.encode_pairs(part)))).float().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    return score


def teacher_validation(
    ctx: Context, score: Callable[[Sequence[tuple[str, str]]], np.ndarray], depth: int
) -> dict[str, Any]:
    """nDCG@10 and MRR@10 of the scorer alone reranking each validation query's top `depth`
    recall candidates, for every validation query and for those without overlap (their
    positives were never a trained query's), beside the recall order of the same lists."""
    cand = ctx.load_candidates()
    val = [q for q in cand["queries"] if q["split"] == "val"]
    runs: dict[str, dict[str, dict[str, float]]] = {"teacher": {}, "recall": {}}
    for q in val:
        rows = q["recall"][:depth]
        s = score([(q["text"], ctx.doc_text(r)) for r in rows])
        runs["teacher"][q["id"]] = {ctx.doc_ids[r]: float(v) for r, v in zip(rows, s, strict=True)}
        runs["recall"][q["id"]] = {ctx.doc_ids[r]: float(depth - i) for i, r in enumerate(rows)}
    out: dict[str, Any] = {"depth": depth}
    for subset, keep in (("all", lambda q: True), ("no_overlap", lambda q: not q.get("overlap"))):
        qrels = {q["id"]: {d: 1 for d in q["positives"]} for q in val if keep(q)}
        if not qrels:
            continue
        out[subset] = {
            "queries": len(qrels),
            **{name: evaluate(qrels, run, ("ndcg@10", "mrr@10")) for name, run in runs.items()},
        }
    return out


def train_teacher_model(ctx: Context, cfg: RecipeConfig, out: Path) -> dict[str, Any]:
    """Warm start (optional) and label phase with `fit_teacher`; the best checkpoint by
    validation nDCG@10 (teacher_val_depth candidates) is saved to `out`."""
    import torch

    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.data import Validation
    from twinbert_search.training.teacher import CrossEncoder
    from twinbert_search.training.teacher_loop import fit_teacher
    from twinbert_search.training.tokenizer import tokenizer_file

    cand = ctx.load_candidates()
    train = _training_queries(ctx, "train")
    pseudo = _training_queries(ctx, "tpseudo")
    val = [q for q in cand["queries"] if q["split"] == "val"]
    torch.manual_seed(cfg.seed)
    if cfg.teacher_threads:
        torch.set_num_threads(cfg.teacher_threads)
    model = CrossEncoder.from_checkpoint(ctx.checkpoint, cfg.teacher_pooling)
    tok_path = tokenizer_file(ctx.checkpoint)
    tok = TextTokenizer.from_file(tok_path, cfg.teacher_max_length)
    score = pair_scorer(model, tok)

    def validate() -> Validation:
        """nDCG@10 of the teacher reranking each validation query's top recall candidates."""
        value = teacher_validation(ctx, score, cfg.teacher_val_depth)["all"]["teacher"]["ndcg@10"]
        log.info("teacher validation ndcg@10 %.4f", value)
        return Validation(value, {"val_ndcg@10": value})

    def fused(query: TrainingQuery, docs: Sequence[str]) -> np.ndarray:
        f = ctx.features(cand["pos"][query.id], np.asarray([ctx.row_of[d] for d in docs]))
        return f["bm25"] + f["dense"]

    def save(best: dict[str, Any], _result: Validation | None = None) -> None:
        model.save(out, tok_path, max_length=cfg.teacher_max_length, extra={"training": best})

    common = {
        "batch_size": cfg.teacher_queries_per_step,
        "negatives": cfg.teacher_group - 1,
        "seed": cfg.seed,
        "soft_targets": fused,
        "corpus_ids": ctx.doc_ids,
        "on_step": lambda step, loss: log.info("teacher step %d loss %.4f", step, loss),
    }
    start = time.perf_counter()
    warm: dict[str, Any] = {}
    if cfg.teacher_warm_steps > 0:
        fit = fit_teacher(
            model,
            tok,
            train + pseudo,
            ctx.corpus,
            steps=cfg.teacher_warm_steps,
            lr=cfg.teacher_warm_lr or cfg.teacher_lr,
            warmup_steps=max(1, cfg.teacher_warm_steps // 10),
            loss="regress",
            sample_stream=WARM_SAMPLE_STREAM,
            validate=validate if val else None,
            eval_every=cfg.teacher_warm_steps,
            best_key="val_ndcg@10",
            **common,
        )
        warm = {"history": fit.history, "seconds": time.perf_counter() - start}
    labelled = train + pseudo if cfg.teacher_pseudo_labels else train
    fit = fit_teacher(
        model,
        tok,
        labelled,
        ctx.corpus,
        steps=cfg.teacher_steps,
        lr=cfg.teacher_lr,
        warmup_steps=max(1, cfg.teacher_steps // 10),
        loss="listwise",
        soft_weight=cfg.teacher_fused_weight,
        sample_stream=TEACHER_SAMPLE_STREAM,
        validate=validate if val else None,
        eval_every=cfg.teacher_eval_every,
        best_key="val_ndcg@10",
        on_best=save,
        **common,
    )
    best = fit.best
    if best is None:  # no validation queries: the last weights
        best = {"step": cfg.teacher_steps}
        save(best)
    write_json(out / "train_log.json", {"warm": warm, "labels": fit.history})
    return {
        "best": best,
        "seconds_training": time.perf_counter() - start,
        "history": fit.history,
        "warm": warm,
        "pseudo_queries": len(pseudo),
    }


def step_teacher(ctx: Context) -> dict[str, Any]:
    """Fine-tune the cross-encoder; keep the best checkpoint by validation nDCG@10."""
    return train_teacher_model(ctx, ctx.cfg, ctx.out / "teacher")


def explore_teachers(
    cfg: RecipeConfig, variants: Mapping[str, Mapping[str, Any]], depth: int | None = None
) -> Path:
    """Train each teacher variant (RecipeConfig overrides) to OUT/teachers/NAME and measure
    its cross-encoder alone on the validation queries' top `depth` (default val_depth)
    recall candidates; OUT/explore_teachers.json holds every result. Needs `candidates`
    done with enough `teacher_pseudo_queries` for the variants that use them."""
    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.teacher import CrossEncoder

    ctx = Context(cfg)
    path = ctx.out / "explore_teachers.json"
    done = read_json(path) if path.is_file() else {}
    for name, overrides in variants.items():
        if name in done:
            continue
        variant = replace(cfg, **overrides)
        out = ctx.out / "teachers" / name
        t0 = time.perf_counter()
        result = train_teacher_model(ctx, variant, out)
        model, meta = CrossEncoder.load(out)
        tok = TextTokenizer.from_file(out / "tokenizer.json", meta["max_length"])
        val = teacher_validation(ctx, pair_scorer(model.eval(), tok), depth or cfg.val_depth)
        done[name] = {
            "overrides": dict(overrides),
            "config": {k: v for k, v in asdict(variant).items() if k.startswith("teacher")},
            "best": result["best"],
            "validation": val,
            "seconds": time.perf_counter() - t0,
        }
        log.info("explore teacher %s: %s", name, val)
        write_json(path, done)
    return path
