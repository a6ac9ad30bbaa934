"""Step 6: the students, distilled by `fit_student` from the tuned teacher's scores.

TwinBERT-res and TwinBERT-cos keep a FROZEN document tower (the base model's), so the
index's stored vectors are the students' document vectors: only query towers and crossing
layers learn. Loss: KL between the teacher's and the student's softmax over each query's
candidates, plus the qrels' labels; the weights kept are the best by validation nDCG@10,
then Platt-scaled (the listwise loss leaves the logits' level free). Each student's BM25
weight for `lexical_fusion` is tuned on validation and kept in its manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinbert_search.evaluation.hybrid_tuning import HYBRID_RULE
from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.manifest import CrossingConfig
from twinbert_search.runtime.crossing import lexical_fusion
from twinbert_search.training.fusion import RULE as FUSION_RULE
from twinbert_search.training.recipe.artifacts import EXPLORE_STUDENTS, STUDENTS_DONE
from twinbert_search.training.recipe.config import RecipeConfig, StudentSpec, exploration_grid
from twinbert_search.training.recipe.context import Context, read_json, write_json
from twinbert_search.training.recipe.ensemble import WEIGHT_GRID, teacher_targets
from twinbert_search.training.recipe.records import Ensemble

if TYPE_CHECKING:
    import torch

    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.training.student_loop import ScoredList, StudentFit

__all__ = [
    "explore_students",
    "step_students",
    "student_loss",
    "train_student",
    "tune_lexical_fusion",
]

log = logging.getLogger(__name__)
# The rules of the served fusions (rerank, hybrid): a student tuned by others is re-tuned.
TUNING_RULES = (FUSION_RULE, HYBRID_RULE)

Targets = Mapping[str, tuple[np.ndarray, np.ndarray]]


def student_loss(
    scores: torch.Tensor, teacher: torch.Tensor, positives: torch.Tensor, spec: StudentSpec
) -> torch.Tensor:
    """One query's loss over its candidates: `listwise_objective` with the spec's weights,
    `distill_weight` x KL(teacher || student) at `spec.temperature` plus `label_weight` x
    `label_listwise` on its qrels' positives (0 for a list without one)."""
    from twinbert_search.training.student_loop import listwise_objective

    return listwise_objective(
        scores,
        teacher,
        positives,
        temperature=spec.temperature,
        distill_weight=spec.distill_weight,
        label_weight=spec.label_weight,
    )


def _scored_list(ctx: Context, key: str, target: tuple[np.ndarray, np.ndarray]) -> ScoredList:
    """A scored query ("split:id") as the student loop's list: its candidates, the teacher's
    scores and which candidates its qrels judge relevant."""
    from twinbert_search.training.student_loop import ScoredList

    q = ctx.load_candidates().query(key.split(":", 1)[1])
    rows, scores = target
    pos = set(q.positives)
    docs = tuple(ctx.doc_ids[r] for r in rows)
    positives = np.array([d in pos for d in docs], dtype=bool)
    return ScoredList(q.text, docs, np.asarray(scores, np.float32), positives)


def train_student(
    ctx: Context, spec: StudentSpec, targets: Targets, *, save: bool = True
) -> dict[str, Any]:
    """Distil one student with a frozen document tower; save and export it to OUT/SPEC.NAME.

    The weights kept are the best by validation nDCG@10 (on the validation queries'
    candidates), then Platt-scaled on those candidates (`platt_calibrate`): the listwise
    losses leave the logits' level free, and the served probabilities must not saturate.
    `save=False` only trains and validates.
    """
    from twinbert_search.training.student_loop import platt_calibrate

    model, tok, documents = _new_student(ctx, spec)
    splits = ("train", "pseudo") if spec.pseudo else ("train",)
    keys = sorted(k for k in targets if k.split(":", 1)[0] in splits)
    val_keys = sorted(k for k in targets if k.startswith("val:"))
    lists = {k: _scored_list(ctx, k, targets[k]) for k in [*keys, *val_keys]}
    fit = _fit(ctx, spec, model, tok, documents, [lists[k] for k in keys], lists, val_keys)
    if fit.best_score is None:
        best_val, history = 0.0, [{"step": 0, "val_ndcg@10": 0.0}]
    else:
        best_val, history = fit.best_score, fit.evaluations
    calibration = platt_calibrate(model, [lists[k] for k in val_keys or keys], tok, documents)
    if not save:
        return {"val_ndcg@10": best_val, "history": history}
    report = _save_student(ctx, spec, model, fit.best_step, calibration)
    return {"val_ndcg@10": best_val, "history": history, "export": report}


def _new_student(ctx: Context, spec: StudentSpec) -> tuple[Any, Any, Any]:
    """The spec's student over the base model's frozen document tower (seeded), its query
    tokenizer and the stored document vectors it is trained against."""
    import torch

    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.modeling import frozen_document_student
    from twinbert_search.training.student_loop import StoredVectors
    from twinbert_search.training.tokenizer import tokenizer_file

    cfg = ctx.cfg
    crossing_cfg = CrossingConfig(spec.crossing, spec.combine)
    if spec.hidden is not None:
        crossing_cfg.hidden = spec.hidden
    torch.manual_seed(cfg.seed)
    model = frozen_document_student(
        ctx.checkpoint,
        ctx.base_model,
        crossing_cfg,
        pooling=spec.pooling,
        num_layers=spec.num_layers,
        max_query_length=cfg.max_query_length,
    )
    tok = TextTokenizer.from_file(
        tokenizer_file(ctx.checkpoint), cfg.max_query_length, prefix=model.manifest.query_prefix
    )
    documents = StoredVectors(torch.from_numpy(ctx.load_candidates().dvec), ctx.row_of)
    return model, tok, documents


def _fit(
    ctx: Context,
    spec: StudentSpec,
    model: Any,
    tok: Any,
    documents: Any,
    train: list[ScoredList],
    lists: Mapping[str, ScoredList],
    val_keys: Sequence[str],
) -> StudentFit:
    """`fit_student` on the training lists, validated on the validation queries' lists
    (when there are any) every eighth of the run."""
    from twinbert_search.training.data import batch_indices
    from twinbert_search.training.student_loop import fit_student, rerank_validation

    cfg = ctx.cfg
    steps = spec.steps or cfg.student_steps
    validate = None
    if val_keys:
        cand = ctx.load_candidates()
        ids = [k.split(":", 1)[1] for k in val_keys]
        qrels = {qid: cand.query(qid).qrels() for qid in ids}
        by_query = {qid: lists[k] for qid, k in zip(ids, val_keys, strict=True)}
        validate = rerank_validation(model, by_query, qrels, tok, documents)

    def batch(step: int) -> list[ScoredList]:
        return [train[i] for i in batch_indices(len(train), cfg.student_batch, step, cfg.seed)]

    return fit_student(
        model,
        batch,
        steps=steps,
        lr=cfg.student_lr,
        crossing_lr=cfg.crossing_lr,
        warmup_steps=max(1, steps // 10),
        query_tokenizer=tok,
        documents=documents,
        loss="listwise_kl",
        temperature=spec.temperature,
        distill_weight=spec.distill_weight,
        label_weight=spec.label_weight,
        validate=validate,
        eval_every=max(1, steps // 8),
    )


def _save_student(
    ctx: Context, spec: StudentSpec, model: Any, best_step: int | None, calibration: Any
) -> list[str]:
    """Record how the student was distilled in its manifest; save and export it."""
    from twinbert_search.training.export import export_model
    from twinbert_search.training.tokenizer import tokenizer_file

    model.eval()
    folder = ctx.out / spec.name
    model.manifest.extra["distillation"] = {
        "teacher": Ensemble.load(ctx.work).to_dict(),
        "spec": asdict(spec),
        "best_step": best_step,
        "calibration": calibration,
        "frozen_document_tower": str(ctx.base_model),
    }
    model.save(folder, tokenizer_file(ctx.checkpoint))
    return export_model(folder, int8=True).lines()


def tune_lexical_fusion(ctx: Context, runtime: TwinBertRuntime) -> dict[str, Any]:
    """The BM25 weight for `lexical_fusion` with the best nDCG@10 on the validation queries,
    reranking the same depth of their recall lists as the test queries."""
    dvec = ctx.load_candidates().dvec
    depth = ctx.cfg.rerank_depth
    val = ctx.split("val")
    if not val:
        return {"bm25_weight": 0.0, "val_ndcg@10": None, "grid": {}}
    qvec = runtime.encode_queries([q.text for q in val])
    parts = []
    for j, q in enumerate(val):
        rows = q.recall[:depth]
        logits = runtime.crossing.logits(qvec[j], dvec[rows])
        parts.append((q, rows, logits, ctx.bm25.scores(q.text)[rows]))
    qrels = {q.id: q.qrels() for q in val}
    grid = {}
    for weight in WEIGHT_GRID:
        run = {}
        for q, rows, logits, bm25 in parts:
            fused = lexical_fusion(logits, bm25, weight)
            run[q.id] = {ctx.doc_ids[r]: float(x) for r, x in zip(rows, fused, strict=True)}
        grid[weight] = evaluate(qrels, run, ("ndcg@10",))["ndcg@10"]
    best = max(WEIGHT_GRID, key=lambda w: (grid[w], -w))
    return {
        "bm25_weight": best,
        "val_ndcg@10": grid[best],
        "grid": {str(w): v for w, v in grid.items()},
    }


def step_students(ctx: Context) -> dict[str, Any]:
    """Train every configured student not trained yet with its current spec."""
    targets = teacher_targets(ctx)
    done_path = ctx.work / STUDENTS_DONE
    done = read_json(done_path) if done_path.is_file() else {}
    for spec in ctx.cfg.students:
        manifest = ctx.out / spec.name / "manifest.json"
        if spec.name in done and manifest.is_file():
            trained = read_json(manifest)["extra"].get("distillation", {}).get("spec")
            if trained == asdict(spec):
                # A changed spec retrains that student only; a changed fusion rule re-tunes.
                if _tuned_by(done[spec.name].get("rerank_fusion") or {}) != TUNING_RULES:
                    done[spec.name]["rerank_fusion"] = store_rerank_fusion(ctx, spec)
                    write_json(done_path, done)
                continue
        t0 = time.perf_counter()
        done[spec.name] = train_student(ctx, spec, targets)
        done[spec.name]["lexical_fusion"] = _store_lexical_fusion(ctx, ctx.out / spec.name)
        done[spec.name]["rerank_fusion"] = store_rerank_fusion(ctx, spec)
        done[spec.name]["seconds"] = time.perf_counter() - t0
        write_json(done_path, done)
    keys = ("val_ndcg@10", "seconds", "lexical_fusion", "rerank_fusion")
    return {name: {k: v.get(k) for k in keys} for name, v in done.items()}


def _store_lexical_fusion(ctx: Context, folder: Path) -> dict[str, Any]:
    """Tune the student's BM25 weight and record it in its manifest (`extra.lexical_fusion`)."""
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime.model import TwinBertRuntime

    tuned = tune_lexical_fusion(ctx, TwinBertRuntime.load(folder))
    manifest = ModelManifest.load(folder)
    manifest.extra["lexical_fusion"] = tuned
    manifest.save(folder)
    return tuned


def _tuned_by(record: Mapping[str, Any]) -> tuple[Any, Any]:
    """The rules a student's served fusions were tuned by (compared with `TUNING_RULES`)."""
    return record.get("rule"), (record.get("hybrid_fusion") or {}).get("rule")


def store_rerank_fusion(ctx: Context, spec: StudentSpec) -> dict[str, Any]:
    """Tune the student's hybrid recall fusion, then its served rerank fusion over that recall,
    on validation queries; keep both in its manifest.

    Both on the validation queries of `fusion_subset` (see `RecipeConfig`), never test's: the
    hybrid fusion (`extra.hybrid_fusion`: rrf or zscore, BM25's weight), then the rerank
    fusion on the student's own hybrid recall so fused (as `Searcher.search(hybrid=True)`
    serves it, `rerank_depth` deep). The no-overlap queries are what a user's look like:
    on queries about documents it was trained on, a student's kNN looks stronger than it is,
    and a BM25 weight chosen there (all 60 SciFact validation queries) was too low for new
    documents. Returns the rerank fusion's record, the hybrid fusion's under
    "hybrid_fusion".
    """
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime.fusion import MANIFEST_KEY
    from twinbert_search.search.fusion import HYBRID_MANIFEST_KEY, HybridFusion
    from twinbert_search.training.recipe.served import served_runtime
    from twinbert_search.training.recipe.signals import (
        served_lists,
        tune_served_fusion,
        tune_served_hybrid,
    )

    cfg = ctx.cfg
    val = ctx.split("val")
    subset = cfg.fusion_subset
    chosen = [q for q in val if not q.overlap] if subset == "no_overlap" else val
    if len(chosen) < cfg.fusion_min_queries:
        subset, chosen = "all", val
    if not chosen:
        return {"skipped": "no validation queries"}
    coll = ctx.collection()
    runtime = served_runtime(ctx, spec)
    hybrid = tune_served_hybrid(
        coll,
        runtime,
        [(q.id, q.text) for q in chosen],
        {q.id: q.qrels() for q in chosen},
        depth=cfg.rerank_depth,
    )
    lists = served_lists(
        coll,
        runtime,
        [(q.id, q.text) for q in chosen],
        depth=cfg.rerank_depth,
        recall_depth=cfg.rerank_depth,
        fusion=HybridFusion.from_dict(hybrid),
    )
    qrels = {q.id: q.qrels() for q in chosen}
    tuned = tune_served_fusion(coll, {k: v for k, (_, v) in lists.items()}, qrels)
    tuned.update({"subset": subset, "candidates": cfg.rerank_depth})
    folder = ctx.out / spec.name
    manifest = ModelManifest.load(folder)
    manifest.extra[HYBRID_MANIFEST_KEY] = hybrid
    manifest.extra[MANIFEST_KEY] = tuned
    manifest.save(folder)
    return {**tuned, "hybrid_fusion": hybrid}


def explore_students(cfg: RecipeConfig, specs: Sequence[StudentSpec] | None = None) -> Path:
    """Train each spec (no export) and record its validation nDCG@10 in OUT/explore.json."""
    ctx = Context(cfg)
    targets = teacher_targets(ctx)
    path = ctx.out / EXPLORE_STUDENTS
    done = read_json(path) if path.is_file() else {}
    for spec in specs or exploration_grid():
        if spec.name in done:
            continue
        t0 = time.perf_counter()
        result = train_student(ctx, spec, targets, save=False)
        done[spec.name] = {
            "spec": asdict(spec),
            "val_ndcg@10": result["val_ndcg@10"],
            "history": result["history"],
            "seconds": time.perf_counter() - t0,
        }
        log.info("explore %s: val ndcg@10 %.4f", spec.name, result["val_ndcg@10"])
        write_json(path, done)
    return path
