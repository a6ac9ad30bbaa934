"""Step `evaluate`: every row of the table on the test queries, on the same recall candidates, then
the served rows (each student's own recall, the teacher on the same list); results.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinbert_search.evaluation.metrics import evaluate_per_query
from twinbert_search.manifest import CrossingConfig
from twinbert_search.runtime.crossing import lexical_fusion
from twinbert_search.training.recipe.artifacts import CE_TEST_SCORES, RESULTS_JSON, TEACHER_DIR
from twinbert_search.training.recipe.config import StudentSpec, served_specs
from twinbert_search.training.recipe.context import (
    Context,
    order_rows,
    ranked,
    read_json,
    with_tail,
    write_json,
)
from twinbert_search.training.recipe.ensemble import combine, teacher_features
from twinbert_search.training.recipe.records import Ensemble, Query, ScoredRows, TeacherScores
from twinbert_search.training.recipe.scores import OnnxCrossEncoder
from twinbert_search.training.recipe.served import (
    SERVED_RECALL,
    SERVED_SCORES,
    read_served_scores,
    served_runtime,
)
from twinbert_search.training.recipe.signals import recall_label
from twinbert_search.training.recipe.timing import (
    STUDENT_THREADS,
    block_timing,
    paired_timing,
    speedups,
)

if TYPE_CHECKING:
    from twinbert_search.runtime.fusion import RerankFusion
    from twinbert_search.runtime.model import TwinBertRuntime

__all__ = ["METRICS", "SUBSETS", "step_evaluate", "subset_metrics"]

METRICS = ("ndcg@10", "mrr@10", "recall@100")
SUBSETS = ("overlap", "no_overlap")


def subset_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Any],
    overlap: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """METRICS over every query, and with `overlap` (query id -> whether a positive was a
    training positive) over the overlap and no-overlap queries too ("subsets")."""
    per_query = evaluate_per_query(qrels, run, METRICS)
    ids = list(per_query)

    def mean(keep: list[str]) -> dict[str, float]:
        return {m: float(np.mean([per_query[q][m] for q in keep])) for m in METRICS}

    out: dict[str, Any] = {**mean(ids), "queries": len(ids)}
    if overlap is not None:
        out["subsets"] = {}
        for subset, flag in (("overlap", True), ("no_overlap", False)):
            keep = [q for q in ids if bool(overlap.get(q)) == flag]
            if keep:
                out["subsets"][subset] = {**mean(keep), "queries": len(keep)}
    return out


class _Table:
    """The rows of results.json as they are built: each a system's run on the test queries,
    its metrics (split by overlap), rerank time and note, in a section of the table."""

    def __init__(self, ctx: Context, test: Sequence[Query]) -> None:
        self.ctx = ctx
        self.qrels = {q.id: q.qrels() for q in test}
        self.overlap = {q.id: bool(q.overlap) for q in test}
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        name: str,
        run_rows: Mapping[str, list[int]],
        ms: float | None,
        note: str,
        section: str = "main",
    ) -> None:
        run = {qid: ranked(self.ctx, r) for qid, r in run_rows.items()}
        metrics = subset_metrics(self.qrels, run, self.overlap)
        self.rows.append(
            {"system": name, "section": section, **metrics, "rerank_ms": ms, "note": note}
        )


def step_evaluate(ctx: Context) -> dict[str, Any]:
    """Every row on the test queries, on the same recall candidates; the tables."""
    cfg = ctx.cfg
    test = ctx.split("test")
    ce_timing = TeacherScores.load(ctx.work / CE_TEST_SCORES).timing.get("test", {})
    ce_ms = 1e3 * ce_timing.get("seconds", 0.0) / max(1, ce_timing.get("queries", 1))
    table = _Table(ctx, test)
    _recall_rows(ctx, table, test)
    _teacher_rows(ctx, table, test, ce_ms)
    timings, served = _student_rows(ctx, table, test)
    paired = paired_timing(ctx, test[: cfg.timing_queries])
    served_timing = served_rows(ctx, table.add, ce_ms)
    if cfg.ood_data:
        table.rows += _ood_rows(ctx)
    result = {
        "rows": table.rows,
        "paired_timing": paired,
        "served_timing": served_timing,
        "student_timings": timings,
        "students_served_from_base_index": served,
        "teacher_ms_per_query": ce_ms,
        "teacher_timing": ce_timing,
    }
    write_json(ctx.out / RESULTS_JSON, result)
    return result


def _recall_rows(ctx: Context, table: _Table, test: Sequence[Query]) -> None:
    """The recall stages on their own: BM25, the default model's kNN, the rerank candidates
    (when hybrid) and the default model served with --hybrid."""
    table.add("BM25", {q.id: q.bm25 for q in test}, None, "own ranking (bm25s)")
    table.add(
        "all-MiniLM-L6-v2 cosine (default model)",
        {q.id: q.dense for q in test},
        None,
        "own kNN over the index",
    )
    recall_name = ctx.load_candidates().recall
    if recall_name != "dense":
        table.add(
            f"recall candidates: {recall_name} (RRF of BM25 and the default model)",
            {q.id: q.recall for q in test},
            None,
            "the list every rerank row below reranks",
        )
        table.add(
            "default model served (search --hybrid)",
            _default_served(ctx, test),
            None,
            "a cosine crossing keeps the hybrid order (`served_fusion`)",
        )


def _teacher_rows(ctx: Context, table: _Table, test: Sequence[Query], ce_ms: float) -> None:
    """The cross-encoder alone and the distilled ensemble reranking the recall candidates."""
    saved = TeacherScores.load(ctx.work / CE_TEST_SCORES)
    teacher = Ensemble.load(ctx.work)
    ce_runs: dict[str, list[int]] = {}
    teacher_runs: dict[str, list[int]] = {}
    for q in test:
        entry = saved.of(q)
        f = teacher_features(ctx, q.key, entry, teacher.ce_stats)
        ce_runs[q.id] = with_tail(order_rows(entry.rows, f["ce"], ctx.doc_ids), q.recall)
        fused = combine(f, teacher.weights)
        teacher_runs[q.id] = with_tail(order_rows(entry.rows, fused, ctx.doc_ids), q.recall)
    depth, w = ctx.cfg.rerank_depth, teacher.weights
    table.add(
        f"cross-encoder alone reranking top {depth}",
        ce_runs,
        ce_ms,
        "trained by this recipe" + (", int8 ONNX" if ctx.cfg.teacher_int8 else ""),
    )
    table.add(
        f"teacher reranking top {depth}",
        teacher_runs,
        ce_ms,
        f"the distilled teacher: {w['ce']} CE + {w['bm25']} BM25 + {w['dense']} cosine (z-scores)",
    )


def _student_rows(
    ctx: Context, table: _Table, test: Sequence[Query]
) -> tuple[dict[str, Any], dict[str, bool]]:
    """Each student reranking the same candidates, in every variant (depth, int8 stored
    vectors, int8 query graph) and fused with BM25 when tuned; its per-stage timings, and
    whether the base index serves it."""
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.search import Searcher

    depth = ctx.cfg.rerank_depth
    timings: dict[str, Any] = {}
    served: dict[str, bool] = {}
    for spec in ctx.cfg.students:
        folder = ctx.out / spec.name
        runtime = TwinBertRuntime.load(folder, threads=STUDENT_THREADS)
        # The frozen document tower: the base model's index serves the student as it is.
        searcher = Searcher.open(ctx.index_dir, model=folder)
        served[spec.name] = bool(searcher.search(test[0].text, k=3).hits)
        searcher.store.close()
        for label, k, vectors, rt in _variants(ctx, spec, runtime):
            runs, enc_s, cross_s = _rerank(ctx, test, k, vectors, rt)
            timings[f"{spec.name} {label}"] = {
                "query_encode_ms": 1e3 * enc_s / len(test),
                "crossing_ms": 1e3 * cross_s / len(test),
            }
            table.add(
                f"{spec.name} reranking {label}",
                runs,
                1e3 * (enc_s + cross_s) / len(test),
                f"{_crossing_label(spec)}, {spec.num_layers or 'all'} query layers, "
                f"{spec.pooling} pooling, {_loss_label(spec)}; time = its query tower "
                f"({STUDENT_THREADS} thread) "
                "+ crossing",
            )
        weight = _fusion_weight(folder)
        if weight is not None:
            lists = {q.id: q.recall for q in test}
            runs, ms = _fused_runs(ctx, runtime, test, lists, weight)
            table.add(
                f"{spec.name} + BM25 reranking top {depth}",
                runs,
                ms,
                f"z(student logit) + {weight} z(BM25), weight tuned on validation; "
                "time = query tower + crossing + fusion",
            )
    return timings, served


def _variants(
    ctx: Context, spec: StudentSpec, runtime: TwinBertRuntime
) -> list[tuple[str, int, np.ndarray, TwinBertRuntime]]:
    """(row suffix, depth, stored vectors, runtime) of each way a student is measured: top
    rerank_depth and (residual crossings) deep_depth, with float and int8 stored vectors, and
    its int8 query graph when exported."""
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.stores.embedded.codecs import get_codec

    depth, deep = ctx.cfg.rerank_depth, ctx.cfg.deep_depth
    dvec = ctx.load_candidates().dvec
    int8_codec = get_codec("int8")
    dvec8 = int8_codec.decode(int8_codec.encode(dvec))
    variants = []
    for label, k in ((f"top {depth}", depth), (f"top {deep}", deep)):
        if spec.crossing == "cosine" and k != depth:
            continue
        variants.append((label, k, dvec, runtime))
        variants.append((f"{label} (int8 stored vectors)", k, dvec8, runtime))
    folder = ctx.out / spec.name
    if (folder / "onnx" / "query_encoder.int8.onnx").is_file():
        runtime8 = TwinBertRuntime.load(folder, query_int8=True, threads=STUDENT_THREADS)
        variants.append((f"top {depth} (int8 query graph)", depth, dvec, runtime8))
    return variants


def _rerank(
    ctx: Context, test: Sequence[Query], k: int, vectors: np.ndarray, rt: TwinBertRuntime
) -> tuple[dict[str, list[int]], float, float]:
    """The student reranking each query's top `k` recall candidates: the runs, and the
    seconds spent in its query tower and in the crossing (after one warm-up call)."""
    rt.query_encoder.encode(["warm up"], 1)
    runs, enc_s, cross_s = {}, 0.0, 0.0
    for q in test:
        rows = q.recall[:k]
        t0 = time.perf_counter()
        qv = rt.encode_query(q.text)
        t1 = time.perf_counter()
        scores = rt.score(qv, vectors[rows])
        t2 = time.perf_counter()
        enc_s, cross_s = enc_s + t1 - t0, cross_s + t2 - t1
        runs[q.id] = with_tail(order_rows(rows, scores, ctx.doc_ids), q.recall)
    return runs, enc_s, cross_s


def _ood_rows(ctx: Context) -> list[dict[str, Any]]:
    """The out-of-domain table: every system on that collection, scored by its qrels."""
    from twinbert_search.training.recipe.ood import OodData, ood_runs

    data = OodData(ctx)
    ood_qrels = data.qrels()
    rows = []
    for name, run_rows, note in ood_runs(ctx, data):
        run = {
            q: [(data.doc_ids[r], float(-i)) for i, r in enumerate(v)] for q, v in run_rows.items()
        }
        rows.append(
            {
                "system": name,
                "section": "ood",
                **subset_metrics(ood_qrels, run),
                "rerank_ms": None,
                "note": note,
            }
        )
    return rows


def _default_served(ctx: Context, test: Sequence[Query]) -> dict[str, list[int]]:
    """The default model served with --hybrid: its hybrid list under its served fusion."""
    from twinbert_search.runtime.model import TwinBertRuntime

    runtime = TwinBertRuntime.load(ctx.base_model)
    return _served_runs(ctx, ctx.base_model, runtime, test)[0]


def _served_runs(
    ctx: Context, folder: Path, runtime: TwinBertRuntime, test: Sequence[Query]
) -> tuple[dict[str, list[int]], RerankFusion]:
    """The model's own hybrid recall reranked by its served fusion (`served_fusion`: the
    weights tuned on validation and kept in its manifest), as `Searcher.search` serves it."""
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime.fusion import served_fusion
    from twinbert_search.training.recipe.signals import served_lists

    cfg = ctx.cfg
    fusion = served_fusion(ModelManifest.load(folder))
    lists = served_lists(
        ctx.collection(),
        runtime,
        [(q.id, q.text) for q in test],
        depth=cfg.rerank_depth,
        recall_depth=cfg.deep_depth,
    )
    runs = {
        qid: with_tail(order_rows(x.rows, fusion.scores(**x.signals), ctx.doc_ids), rows)
        for qid, (rows, x) in lists.items()
    }
    return runs, fusion


def _fused_runs(
    ctx: Context,
    runtime: TwinBertRuntime,
    test: Sequence[Query],
    lists: Mapping[str, Sequence[int]],
    weight: float,
    qvec: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, list[int]], float]:
    """Each query's top candidates of `lists` reranked by `lexical_fusion`, and the mean ms.

    Given `qvec` (served: recall computed the query vectors), the time is crossing + fusion;
    without it the student's query tower runs inside the timing too. BM25 scores come before
    the clock: hybrid recall has them already.
    """
    depth, dvec = ctx.cfg.rerank_depth, ctx.load_candidates().dvec
    runs, seconds = {}, 0.0
    for q in test:
        ranked = list(lists[q.id])
        rows = ranked[:depth]
        bm25 = ctx.bm25.scores(q.text)[rows]
        t0 = time.perf_counter()
        qv = runtime.encode_query(q.text) if qvec is None else qvec[q.id]
        scores = lexical_fusion(runtime.crossing.logits(qv, dvec[rows]), bm25, weight)
        seconds += time.perf_counter() - t0
        runs[q.id] = with_tail(order_rows(rows, scores, ctx.doc_ids), ranked)
    return runs, 1e3 * seconds / max(1, len(test))


def _fusion_weight(folder: Path) -> float | None:
    """The BM25 weight tuned for this student (None: not tuned, or tuned to zero)."""
    from twinbert_search.manifest import ModelManifest

    tuned = ModelManifest.load(folder).extra.get("lexical_fusion") or {}
    weight = tuned.get("bm25_weight")
    return float(weight) if weight else None


def _crossing_label(spec: StudentSpec) -> str:
    if spec.crossing == "cosine":
        return "cosine"
    return f"residual/{spec.combine}, hidden {spec.hidden or CrossingConfig.hidden}"


def _loss_label(spec: StudentSpec) -> str:
    if not spec.label_weight:
        return "teacher's scores only"
    if not spec.distill_weight:
        return "labels only"
    return f"teacher's scores + {spec.label_weight:g} x labels"


def served_rows(ctx: Context, add: Callable[..., None], ce_ms: float) -> dict[str, Any]:
    """Rows and timings of the served setting (`step_served`), for `step_evaluate`."""
    cfg = ctx.cfg
    test = ctx.split("test")
    lists = read_json(ctx.work / SERVED_RECALL)
    scored = read_served_scores(ctx.work / SERVED_SCORES)
    teacher = Ensemble.load(ctx.work)
    ce = OnnxCrossEncoder(
        ctx.out / TEACHER_DIR, cfg.teacher_threads or 2, int8=cfg.teacher_int8, spinning=False
    )
    timings: dict[str, Any] = {}
    for spec in served_specs(cfg):
        runtime = served_runtime(ctx, spec)
        own = {qid: [int(r) for r in rows] for qid, rows in lists[spec.name].items()}
        vectors = runtime.encode_queries([q.text for q in test])
        qvec = {q.id: v for q, v in zip(test, vectors, strict=True)}
        served = _Served(ctx, spec, runtime, test, own, qvec)
        served.add_rows(add, scored, teacher, ce_ms)
        timings[spec.name] = served.timing(ce)
    return timings


class _Served:
    """One model as served on the test queries: its own recall lists and query vectors."""

    def __init__(
        self,
        ctx: Context,
        spec: StudentSpec,
        runtime: TwinBertRuntime,
        test: list[Query],
        own: dict[str, list[int]],
        qvec: dict[str, np.ndarray],
    ) -> None:
        self.ctx, self.spec, self.runtime = ctx, spec, runtime
        self.test, self.own, self.qvec = test, own, qvec
        self.depth = ctx.cfg.rerank_depth

    def _order(self, q: Query, rows: list[int], scores: np.ndarray) -> list[int]:
        return with_tail(order_rows(rows, scores, self.ctx.doc_ids), self.own[q.id])

    def add_rows(
        self,
        add: Callable[..., None],
        scored: Mapping[str, ScoredRows],
        teacher: Ensemble,
        ce_ms: float,
    ) -> None:
        """Its recall; the teacher alone and the ensemble on that recall; the student's
        crossing, served fusion and (when tuned) BM25 fusion reranking it."""
        ctx, name, depth = self.ctx, self.spec.name, self.depth
        dvec = ctx.load_candidates().dvec
        from twinbert_search.manifest import ModelManifest

        fused_by = recall_label(ModelManifest.load(ctx.out / name).extra, depth)
        add(
            f"recall: hybrid with {name}'s query vector ({fused_by})",
            self.own,
            None,
            "served: the student's query vector recalls",
            "served",
        )
        teacher_runs, ce_runs, student_runs, cross_s = {}, {}, {}, 0.0
        for q in self.test:
            rows = self.own[q.id][:depth]
            have = scored[q.key].by_row()
            entry = ScoredRows(rows, [have[r] for r in rows])
            f = teacher_features(ctx, q.key, entry, teacher.ce_stats)
            teacher_runs[q.id] = self._order(q, rows, combine(f, teacher.weights))
            ce_runs[q.id] = self._order(q, rows, f["ce"])
            t0 = time.perf_counter()
            scores = self.runtime.score(self.qvec[q.id], dvec[rows])
            cross_s += time.perf_counter() - t0
            student_runs[q.id] = self._order(q, rows, scores)
        add(
            f"teacher alone (cross-encoder) reranking top {depth} of {name}'s recall",
            ce_runs,
            ce_ms,
            "served: the cross-encoder on the student's own candidates, no fusion",
            "served",
        )
        add(
            f"teacher reranking top {depth} of {name}'s recall",
            teacher_runs,
            ce_ms,
            "served: the teacher on the student's own candidates",
            "served",
        )
        add(
            f"{name} reranking top {depth} of its own recall",
            student_runs,
            1e3 * cross_s / len(self.test),
            "served: the recall's query vector reranks; time = crossing only",
            "served",
        )
        self._add_fused(add)

    def _add_fused(self, add: Callable[..., None]) -> None:
        """The served fusion (search --hybrid) and the tuned BM25 fusion of its own recall."""
        ctx, name, depth = self.ctx, self.spec.name, self.depth
        runs, fusion = _served_runs(ctx, ctx.out / name, self.runtime, self.test)
        note = ", ".join(f"{w:g} x z({k})" for k, w in fusion.weights().items() if w)
        add(
            f"{name} served rerank (search --hybrid) of its own recall",
            runs,
            None,
            f"served score: {note} (weights tuned on validation)",
            "served",
        )
        weight = _fusion_weight(ctx.out / name)
        if weight is not None:
            runs, ms = _fused_runs(ctx, self.runtime, self.test, self.own, weight, self.qvec)
            add(
                f"{name} + BM25 reranking top {depth} of its own recall",
                runs,
                ms,
                f"served: z(student logit) + {weight} z(BM25), weight tuned on validation; "
                "time = crossing + fusion",
                "served",
            )

    def timing(self, ce: OnnxCrossEncoder) -> dict[str, Any]:
        """The teacher, the crossing alone and query tower + crossing on the same top
        candidates, timed in alternating blocks (`block_timing`)."""
        ctx, rt, depth = self.ctx, self.runtime, self.depth
        dvec = ctx.load_candidates().dvec

        def teacher_run(q: Query) -> None:
            ce.score([(q.text, ctx.doc_text(r)) for r in self.own[q.id][:depth]])

        def crossing(q: Query) -> None:
            rt.score(self.qvec[q.id], dvec[self.own[q.id][:depth]])

        def whole(q: Query) -> None:
            rt.score(rt.encode_query(q.text), dvec[self.own[q.id][:depth]])

        timed = self.test[: ctx.cfg.timing_queries]
        warm = self.test[-1] if len(self.test) > len(timed) else timed[0]
        systems = {"teacher": teacher_run, "crossing": crossing, "query tower + crossing": whole}
        return {"candidates": depth, **speedups(block_timing(systems, timed, warm))}
