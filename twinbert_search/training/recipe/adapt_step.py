"""Steps `adapt_in_domain` and `adapt`: `training.adapt.adapt` from `adapt_student`, on the
run's own corpus text and on the out-of-domain corpus text (never either's labels).

In domain, the students learn from the train queries' labels and remember their documents;
adapting one to the whole corpus (pseudo-queries, the teacher ensemble's scores of its own
hybrid recall) is what the served fusion is then tuned on, like any student's. Out of domain,
the adapted student is served on that collection beside the zero-shot ones (`ood`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from twinbert_search.training.data import ResumeMismatch
from twinbert_search.training.recipe.artifacts import OOD_SYSTEMS, TEACHER_DIR
from twinbert_search.training.recipe.config import (
    StudentSpec,
    in_domain_name,
    ood_adapted_name,
)
from twinbert_search.training.recipe.context import Context, read_json, write_json

__all__ = ["step_adapt", "step_adapt_in_domain"]

log = logging.getLogger(__name__)


def _adapt(ctx: Context, corpus: str | Path, out: Path, index_dir: Path) -> Any:
    from twinbert_search.training.adapt import adapt
    from twinbert_search.training.args import AdaptArgs

    cfg = ctx.cfg
    args = AdaptArgs(
        corpus,
        ctx.out / cfg.adapt_student,
        out,
        teacher=ctx.out / TEACHER_DIR,
        index_dir=index_dir,
        pseudo_queries=cfg.adapt_pseudo_queries,
        candidates=cfg.adapt_candidates,
        steps=cfg.adapt_steps,
        batch_size=cfg.student_batch,
        lr=cfg.student_lr,
        crossing_lr=cfg.crossing_lr,
        seed=cfg.seed,
        progress=False,
    )
    try:
        return adapt(args)
    except ResumeMismatch as exc:
        # The recipe owns `out`: a saved adaptation from other inputs (a re-tuned student's
        # fusion changes its candidates) is stale, not a run to protect. Start it over.
        log.info("adaptation inputs changed, starting over: %s", exc)
        return adapt(replace(args, resume=False))


def step_adapt_in_domain(ctx: Context) -> dict[str, Any]:
    """Adapt `adapt_student` to the run's own corpus text; tune its served fusion on the
    validation queries as every student's is (`store_rerank_fusion`)."""
    from twinbert_search.training.recipe.students import store_rerank_fusion

    cfg = ctx.cfg
    name = in_domain_name(cfg)
    report = _adapt(ctx, cfg.data, ctx.out / name, ctx.index_dir)
    fusion = store_rerank_fusion(ctx, StudentSpec(name))
    return {"adapt": report.to_dict(), "summary": report.lines(), "rerank_fusion": fusion}


def step_adapt(ctx: Context) -> dict[str, Any]:
    """Adapt `adapt_student` to the out-of-domain corpus (its text only); serve it there."""
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.training.recipe.ood import OodData, score_pairs, system_lists

    cfg = ctx.cfg
    data = OodData(ctx)
    name = ood_adapted_name(cfg)
    report = _adapt(ctx, data.root, ctx.out / name, data.index_dir)
    runtime = TwinBertRuntime.load(ctx.out / name, query_int8=True)
    lists = system_lists(data, runtime, cfg.rerank_depth, cfg.deep_depth)
    systems = read_json(data.work / OOD_SYSTEMS)
    systems[name] = lists
    write_json(data.work / OOD_SYSTEMS, systems)
    new = score_pairs(ctx, data, systems)
    return {"adapt": report.to_dict(), "summary": report.lines(), "teacher_pairs": new}
