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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.training.recipe.artifacts import EXPLORE_TEACHERS, TEACHER_DIR, TEACHERS_DIR
from twinbert_search.training.recipe.config import RecipeConfig
from twinbert_search.training.recipe.context import Context, read_json, write_json

if TYPE_CHECKING:
    from torch import nn

    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.data import TrainingQuery, Validation
    from twinbert_search.training.teacher_loop import TeacherFit

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

    depth = ctx.cfg.teacher_negative_depth
    return [
        TrainingQuery(
            q.id,
            q.text,
            tuple(q.positives),
            tuple(ctx.doc_ids[r] for r in q.hybrid[:depth]),
            pseudo=split != "train",
        )
        for q in ctx.split(split)
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
    val = ctx.split("val")
    runs: dict[str, dict[str, dict[str, float]]] = {"teacher": {}, "recall": {}}
    for q in val:
        rows = q.recall[:depth]
        s = score([(q.text, ctx.doc_text(r)) for r in rows])
        runs["teacher"][q.id] = {ctx.doc_ids[r]: float(v) for r, v in zip(rows, s, strict=True)}
        runs["recall"][q.id] = {ctx.doc_ids[r]: float(depth - i) for i, r in enumerate(rows)}
    out: dict[str, Any] = {"depth": depth}
    for subset, keep in (("all", lambda q: True), ("no_overlap", lambda q: not q.overlap)):
        qrels = {q.id: q.qrels() for q in val if keep(q)}
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
    from twinbert_search.training.teacher.train import TRAIN_LOG

    train = _training_queries(ctx, "train")
    pseudo = _training_queries(ctx, "tpseudo")
    run = _TeacherRun.start(ctx, cfg, out)
    start = time.perf_counter()
    warm: dict[str, Any] = {}
    if cfg.teacher_warm_steps > 0:
        fit = run.fit(
            train + pseudo,
            steps=cfg.teacher_warm_steps,
            lr=cfg.teacher_warm_lr or cfg.teacher_lr,
            loss="regress",
            sample_stream=WARM_SAMPLE_STREAM,
            eval_every=cfg.teacher_warm_steps,
        )
        warm = {"history": fit.history, "seconds": time.perf_counter() - start}
    fit = run.fit(
        train + pseudo if cfg.teacher_pseudo_labels else train,
        steps=cfg.teacher_steps,
        lr=cfg.teacher_lr,
        loss="listwise",
        soft_weight=cfg.teacher_fused_weight,
        sample_stream=TEACHER_SAMPLE_STREAM,
        eval_every=cfg.teacher_eval_every,
        on_best=run.save,
    )
    best = fit.best
    if best is None:  # no validation queries: the last weights
        best = {"step": cfg.teacher_steps}
        run.save(best)
    write_json(out / TRAIN_LOG, {"warm": warm, "labels": fit.history})
    return {
        "best": best,
        "seconds_training": time.perf_counter() - start,
        "history": fit.history,
        "warm": warm,
        "pseudo_queries": len(pseudo),
    }


@dataclass
class _TeacherRun:
    """One teacher being trained: the model and its tokenizer, where it is saved, and what
    both phases share (validation, soft targets, batch shape)."""

    ctx: Context
    cfg: RecipeConfig
    out: Path
    model: Any
    tok_path: Path
    tok: Any

    @classmethod
    def start(cls, ctx: Context, cfg: RecipeConfig, out: Path) -> _TeacherRun:
        """A fresh cross-encoder on the run's checkpoint, seeded (threads as configured)."""
        import torch

        from twinbert_search.runtime.tokenization import TextTokenizer
        from twinbert_search.training.teacher import CrossEncoder
        from twinbert_search.training.tokenizer import tokenizer_file

        ctx.load_candidates()
        torch.manual_seed(cfg.seed)
        if cfg.teacher_threads:
            torch.set_num_threads(cfg.teacher_threads)
        model = CrossEncoder.from_checkpoint(ctx.checkpoint, cfg.teacher_pooling)
        tok_path = tokenizer_file(ctx.checkpoint)
        tok = TextTokenizer.from_file(tok_path, cfg.teacher_max_length)
        return cls(ctx, cfg, out, model, tok_path, tok)

    def validate(self) -> Validation:
        """nDCG@10 of the teacher reranking each validation query's top recall candidates."""
        from twinbert_search.training.data import Validation

        score = pair_scorer(self.model, self.tok)
        report = teacher_validation(self.ctx, score, self.cfg.teacher_val_depth)
        value = report["all"]["teacher"]["ndcg@10"]
        log.info("teacher validation ndcg@10 %.4f", value)
        return Validation(value, {"val_ndcg@10": value})

    def fused(self, query: TrainingQuery, docs: Sequence[str]) -> np.ndarray:
        """The soft targets: fused BM25 + dense z-scores of the group's documents."""
        rows = np.asarray([self.ctx.row_of[d] for d in docs])
        f = self.ctx.features(self.ctx.load_candidates().row(query.id), rows)
        return f["bm25"] + f["dense"]

    def save(self, best: dict[str, Any], _result: Validation | None = None) -> None:
        extra = {"training": best}
        self.model.save(
            self.out, self.tok_path, max_length=self.cfg.teacher_max_length, extra=extra
        )

    def fit(self, queries: list[TrainingQuery], *, steps: int, **phase: Any) -> TeacherFit:
        """One phase of `fit_teacher` over `queries` (its loss, rate and stream in `phase`)."""
        from twinbert_search.training.teacher_loop import fit_teacher

        cfg, ctx = self.cfg, self.ctx
        return fit_teacher(
            self.model,
            self.tok,
            queries,
            ctx.corpus,
            steps=steps,
            warmup_steps=max(1, steps // 10),
            batch_size=cfg.teacher_queries_per_step,
            negatives=cfg.teacher_group - 1,
            seed=cfg.seed,
            soft_targets=self.fused,
            corpus_ids=ctx.doc_ids,
            on_step=lambda step, loss: log.info("teacher step %d loss %.4f", step, loss),
            validate=self.validate if ctx.split("val") else None,
            best_key="val_ndcg@10",
            **phase,
        )


def step_teacher(ctx: Context) -> dict[str, Any]:
    """Fine-tune the cross-encoder; keep the best checkpoint by validation nDCG@10."""
    return train_teacher_model(ctx, ctx.cfg, ctx.out / TEACHER_DIR)


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
    path = ctx.out / EXPLORE_TEACHERS
    done = read_json(path) if path.is_file() else {}
    for name, overrides in variants.items():
        if name in done:
            continue
        variant = replace(cfg, **overrides)
        out = ctx.out / TEACHERS_DIR / name
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
