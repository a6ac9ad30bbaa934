"""Steps 4 and 7: the teacher's ONNX graph, and its logits for the pairs the later steps need.

`scores` scores the distillation (train, pseudo) and validation candidates; `teacher_rerank`
the test queries' top candidates, timed per query (the teacher's rerank cost in the table).
Scores are saved as they come, so a killed step resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.training.recipe.artifacts import (
    CE_SCORES,
    CE_TEST_SCORES,
    TEACHER_DIR,
    TEACHER_PARITY,
)
from twinbert_search.training.recipe.context import Context, read_json, write_json
from twinbert_search.training.recipe.records import Query, ScoredRows, TeacherScores
from twinbert_search.training.teacher_onnx import OnnxCrossEncoder

__all__ = [
    "OnnxCrossEncoder",
    "distill_rows",
    "export_teacher",
    "step_scores",
    "step_teacher_rerank",
]


def export_teacher(folder: Path) -> dict[str, float]:
    """Write folder/teacher.onnx (+ .int8.onnx) from the saved teacher; parity against torch."""
    import warnings

    import torch

    from twinbert_search.training.export import eager_attention
    from twinbert_search.training.teacher import load_teacher
    from twinbert_search.training.tokenizer import to_torch

    scorer = load_teacher(folder)
    model = scorer.model.eval()
    pairs = [("what causes disease", "Protein misfolding is linked to disease. " * 20)] * 2
    pairs.append(("a", "b"))
    batch = to_torch(scorer.tokenizer.pad(scorer.tokenizer.encode_pairs(pairs)))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.no_grad(), warnings.catch_warnings(), eager_attention(model):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            tuple(batch[n] for n in names),
            str(folder / "teacher.onnx"),
            input_names=names,
            output_names=["logit"],
            dynamic_axes={**axes, "logit": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        expected = model(**batch).numpy()
    got = OnnxCrossEncoder(folder).score(pairs)
    from twinbert_search.training.export import quantize_int8

    quantize_int8(folder / "teacher.onnx", folder / "teacher.int8.onnx")
    got8 = OnnxCrossEncoder(folder, int8=True).score(pairs)
    return {
        "fp32_max_abs_diff": float(np.abs(got - expected).max()),
        "int8_max_abs_diff": float(np.abs(got8 - expected).max()),
    }


def distill_rows(ctx: Context, q: Query) -> list[int]:
    """Positives first, then the top recall candidates, `distill_candidates` (pseudo: own)."""
    cfg = ctx.cfg
    size = cfg.pseudo_candidates if q.split == "pseudo" else cfg.distill_candidates
    rows = [ctx.row_of[d] for d in q.positives]
    rows += [r for r in q.recall if r not in set(rows)]
    return rows[:size]


def step_scores(ctx: Context) -> dict[str, Any]:
    """Cross-encoder logits of the validation and distillation pairs."""
    return _score_splits(ctx, ("train", "pseudo", "val"), CE_SCORES)


def step_teacher_rerank(ctx: Context) -> dict[str, Any]:
    """The teacher's rerank stage on the test queries' top candidates, timed per query."""
    return _score_splits(ctx, ("test",), CE_TEST_SCORES)


def _score_splits(
    ctx: Context, splits: Sequence[str], filename: str, threads: int | None = None
) -> dict[str, Any]:
    """Score the splits' planned candidates not scored yet, saving at least every minute."""
    cfg = ctx.cfg
    parity_path = _exported_teacher(ctx.out / TEACHER_DIR)
    ce = OnnxCrossEncoder(ctx.out / TEACHER_DIR, threads, int8=cfg.teacher_int8)
    path = ctx.work / filename  # one file per step: the two steps may run side by side
    saved = TeacherScores.load(path, missing_ok=True)
    last = time.perf_counter()
    for q, rows in _plan(ctx, splits):
        if q.key in saved.rows:
            continue
        t0 = time.perf_counter()
        scores = ce.score([(q.text, ctx.doc_text(r)) for r in rows])
        dt = time.perf_counter() - t0
        saved.rows[q.key] = ScoredRows(list(rows), scores.tolist())
        slot = saved.timing.setdefault(q.split, {"queries": 0, "pairs": 0, "seconds": 0.0})
        slot["queries"] += 1
        slot["pairs"] += len(rows)
        slot["seconds"] += dt
        if time.perf_counter() - last > 60:
            saved.save(path)
            last = time.perf_counter()
    saved.save(path)
    timing = {k: v for k, v in saved.timing.items() if k in splits}
    return {"timing": timing, "parity": read_json(parity_path), "int8": cfg.teacher_int8}


def _exported_teacher(folder: Path) -> Path:
    """Export the teacher to ONNX once (refused when it diverges); its parity file."""
    parity_path = folder / TEACHER_PARITY
    if not parity_path.is_file():
        parity = export_teacher(folder)
        if parity["fp32_max_abs_diff"] > 1e-3:
            raise ConfigurationError(f"teacher ONNX export diverges ({parity})")
        write_json(parity_path, parity)
    return parity_path


def _plan(ctx: Context, splits: Sequence[str]) -> list[tuple[Query, list[int]]]:
    """Each query of `splits` with the rows to score, train first, then pseudo, val, test:
    validation its top `val_depth`, test its top `rerank_depth`, the others `distill_rows`."""
    cfg = ctx.cfg
    plan: list[tuple[str, int, Query, list[int]]] = []
    for qi, q in enumerate(ctx.load_candidates().queries):
        if q.split not in splits:
            continue
        if q.split == "val":
            rows = q.recall[: cfg.val_depth]
        elif q.split == "test":
            rows = q.recall[: cfg.rerank_depth]
        else:
            rows = distill_rows(ctx, q)
        plan.append((q.split, qi, q, rows))
    order = {"train": 0, "pseudo": 1, "val": 2, "test": 3}
    plan.sort(key=lambda p: (order[p[0]], p[1]))
    return [(q, rows) for _, _, q, rows in plan]
