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

from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.manifest import CrossingConfig
from twinbert_search.runtime.crossing import lexical_fusion
from twinbert_search.training.recipe.config import RecipeConfig, StudentSpec, exploration_grid
from twinbert_search.training.recipe.context import Context, read_json, write_json
from twinbert_search.training.recipe.ensemble import WEIGHT_GRID, teacher_targets

if TYPE_CHECKING:
    import torch

    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.training.student_loop import ScoredList

__all__ = [
    "explore_students",
    "step_students",
    "student_loss",
    "train_student",
    "tune_lexical_fusion",
]

log = logging.getLogger(__name__)

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

    cand = ctx.load_candidates()
    q = cand["queries"][cand["pos"][key.split(":", 1)[1]]]
    rows, scores = target
    pos = set(q["positives"])
    docs = tuple(ctx.doc_ids[r] for r in rows)
    positives = np.array([d in pos for d in docs], dtype=bool)
    return ScoredList(q["text"], docs, np.asarray(scores, np.float32), positives)


def train_student(
    ctx: Context, spec: StudentSpec, targets: Targets, *, save: bool = True
) -> dict[str, Any]:
    """Distil one student with a frozen document tower; save and export it to OUT/SPEC.NAME.

    The weights kept are the best by validation nDCG@10 (on the validation queries'
    candidates), then Platt-scaled on those candidates (`platt_calibrate`): the listwise
    losses leave the logits' level free, and the served probabilities must not saturate.
    `save=False` only trains and validates.
    """
    import torch

    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.data import batch_indices
    from twinbert_search.training.export import export_model
    from twinbert_search.training.modeling import frozen_document_student
    from twinbert_search.training.student_loop import (
        StoredVectors,
        fit_student,
        platt_calibrate,
        rerank_validation,
    )
    from twinbert_search.training.tokenizer import tokenizer_file

    cfg = ctx.cfg
    cand = ctx.load_candidates()
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
    tok = TextTokenizer.from_file(tokenizer_file(ctx.checkpoint), cfg.max_query_length)
    documents = StoredVectors(torch.from_numpy(cand["dvec"]), ctx.row_of)
    splits = ("train", "pseudo") if spec.pseudo else ("train",)
    keys = sorted(k for k in targets if k.split(":", 1)[0] in splits)
    val_keys = sorted(k for k in targets if k.startswith("val:"))
    lists = {k: _scored_list(ctx, k, targets[k]) for k in [*keys, *val_keys]}
    steps = spec.steps or cfg.student_steps
    validate = None
    if val_keys:
        qrels = {}
        for k in val_keys:
            qid = k.split(":", 1)[1]
            qrels[qid] = {d: 1 for d in cand["queries"][cand["pos"][qid]]["positives"]}
        by_query = {k.split(":", 1)[1]: lists[k] for k in val_keys}
        validate = rerank_validation(model, by_query, qrels, tok, documents)

    def batch(step: int) -> list[ScoredList]:
        return [lists[keys[i]] for i in batch_indices(len(keys), cfg.student_batch, step, cfg.seed)]

    fit = fit_student(
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
    if validate is None:
        best_val, history = 0.0, [{"step": 0, "val_ndcg@10": 0.0}]
    else:
        best_val, history = fit.best_score, fit.evaluations
    calibration = platt_calibrate(model, [lists[k] for k in val_keys or keys], tok, documents)
    if not save:
        return {"val_ndcg@10": best_val, "history": history}
    model.eval()
    folder = ctx.out / spec.name
    model.manifest.extra["distillation"] = {
        "teacher": read_json(ctx.work / "teacher_ensemble.json"),
        "spec": asdict(spec),
        "best_step": fit.best_step,
        "calibration": calibration,
        "frozen_document_tower": str(ctx.base_model),
    }
    model.save(folder, tokenizer_file(ctx.checkpoint))
    report = export_model(folder, int8=True)
    return {"val_ndcg@10": best_val, "history": history, "export": report.lines()}


def tune_lexical_fusion(ctx: Context, runtime: TwinBertRuntime) -> dict[str, Any]:
    """The BM25 weight for `lexical_fusion` with the best nDCG@10 on the validation queries,
    reranking the same depth of their recall lists as the test queries."""
    cand = ctx.load_candidates()
    depth = ctx.cfg.rerank_depth
    val = [q for q in cand["queries"] if q["split"] == "val"]
    if not val:
        return {"bm25_weight": 0.0, "val_ndcg@10": None, "grid": {}}
    qvec = runtime.encode_queries([q["text"] for q in val])
    parts = []
    for j, q in enumerate(val):
        rows = q["recall"][:depth]
        logits = runtime.crossing.logits(qvec[j], cand["dvec"][rows])
        parts.append((q, rows, logits, ctx.bm25.scores(q["text"])[rows]))
    qrels = {q["id"]: {d: 1 for d in q["positives"]} for q in val}
    grid = {}
    for weight in WEIGHT_GRID:
        run = {}
        for q, rows, logits, bm25 in parts:
            fused = lexical_fusion(logits, bm25, weight)
            run[q["id"]] = {ctx.doc_ids[r]: float(x) for r, x in zip(rows, fused, strict=True)}
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
    done_path = ctx.work / "students.json"
    done = read_json(done_path) if done_path.is_file() else {}
    for spec in ctx.cfg.students:
        manifest = ctx.out / spec.name / "manifest.json"
        if spec.name in done and manifest.is_file():
            trained = read_json(manifest)["extra"].get("distillation", {}).get("spec")
            if trained == asdict(spec):
                continue  # a changed spec retrains that student only
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


def store_rerank_fusion(ctx: Context, spec: StudentSpec) -> dict[str, Any]:
    """Tune the student's served rerank fusion on validation queries, keep it in its manifest.

    The lists are the student's own hybrid recall (as `Searcher.search(hybrid=True)` serves
    it), the queries those of `fusion_subset` (see `RecipeConfig`), never test's.
    """
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime.fusion import MANIFEST_KEY
    from twinbert_search.training.recipe.served import served_runtime
    from twinbert_search.training.recipe.signals import served_lists, tune_served_fusion

    cfg = ctx.cfg
    val = ctx.split("val")
    subset = cfg.fusion_subset
    chosen = [q for q in val if not q.get("overlap")] if subset == "no_overlap" else val
    if len(chosen) < cfg.fusion_min_queries:
        subset, chosen = "all", val
    if not chosen:
        return {"skipped": "no validation queries"}
    coll = ctx.collection()
    lists = served_lists(
        coll,
        served_runtime(ctx, spec),
        [(q["id"], q["text"]) for q in chosen],
        depth=cfg.rerank_depth,
        recall_depth=cfg.deep_depth,
    )
    qrels = {q["id"]: {d: 1 for d in q["positives"]} for q in chosen}
    tuned = tune_served_fusion(coll, {k: v for k, (_, v) in lists.items()}, qrels)
    tuned.update({"subset": subset, "candidates": cfg.rerank_depth})
    folder = ctx.out / spec.name
    manifest = ModelManifest.load(folder)
    manifest.extra[MANIFEST_KEY] = tuned
    manifest.save(folder)
    return tuned


def explore_students(cfg: RecipeConfig, specs: Sequence[StudentSpec] | None = None) -> Path:
    """Train each spec (no export) and record its validation nDCG@10 in OUT/explore.json."""
    ctx = Context(cfg)
    targets = teacher_targets(ctx)
    path = ctx.out / "explore.json"
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
