"""Step 9: every row of the table on the test queries, on the same recall candidates, then
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
from twinbert_search.training.recipe.report import RESULTS_JSON
from twinbert_search.training.recipe.scores import OnnxCrossEncoder
from twinbert_search.training.recipe.served import SERVED_RECALL, SERVED_SCORES, served_runtime
from twinbert_search.training.recipe.timing import (
    STUDENT_THREADS,
    block_timing,
    paired_timing,
    speedups,
)

if TYPE_CHECKING:
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


def step_evaluate(ctx: Context) -> dict[str, Any]:
    """Every row on the test queries, on the same recall candidates; the tables."""
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.search import Searcher
    from twinbert_search.stores.embedded.codecs import get_codec

    cfg = ctx.cfg
    cand = ctx.load_candidates()
    test = [(qi, q) for qi, q in enumerate(cand["queries"]) if q["split"] == "test"]
    qrels = {q["id"]: {d: 1 for d in q["positives"]} for _, q in test}
    saved = read_json(ctx.work / "ce_test_scores.json")
    teacher = read_json(ctx.work / "teacher_ensemble.json")
    stats = tuple(teacher["ce_stats"])
    depth, deep = cfg.rerank_depth, cfg.deep_depth
    recall_name = cand["recall"]
    ce_timing = saved["timing"].get("test", {})
    ce_ms = 1e3 * ce_timing.get("seconds", 0.0) / max(1, ce_timing.get("queries", 1))
    rows_out: list[dict[str, Any]] = []
    overlap = {q["id"]: bool(q.get("overlap")) for _, q in test}

    def add(
        name: str,
        run_rows: Mapping[str, list[int]],
        ms: float | None,
        note: str,
        section: str = "main",
    ) -> None:
        run = {qid: ranked(ctx, r) for qid, r in run_rows.items()}
        metrics = subset_metrics(qrels, run, overlap)
        rows_out.append(
            {"system": name, "section": section, **metrics, "rerank_ms": ms, "note": note}
        )

    add("BM25", {q["id"]: q["bm25"] for _, q in test}, None, "own ranking (bm25s)")
    add(
        "all-MiniLM-L6-v2 cosine (default model)",
        {q["id"]: q["dense"] for _, q in test},
        None,
        "own kNN over the index",
    )
    if recall_name != "dense":
        add(
            f"recall candidates: {recall_name} (RRF of BM25 and the default model)",
            {q["id"]: q["recall"] for _, q in test},
            None,
            "the list every rerank row below reranks",
        )
        add(
            "default model served (search --hybrid)",
            _default_served(ctx, test),
            None,
            "a cosine crossing keeps the hybrid order (`served_fusion`)",
        )
    ce_runs: dict[str, list[int]] = {}
    teacher_runs: dict[str, list[int]] = {}
    for _, q in test:
        entry = saved["rows"][f"test:{q['id']}"]
        rows = entry["rows"]
        f = teacher_features(ctx, f"test:{q['id']}", entry, stats)
        ce_runs[q["id"]] = with_tail(order_rows(rows, f["ce"], ctx.doc_ids), q["recall"])
        teacher_runs[q["id"]] = with_tail(
            order_rows(rows, combine(f, teacher["weights"]), ctx.doc_ids), q["recall"]
        )
    w = teacher["weights"]
    add(
        f"cross-encoder alone reranking top {depth}",
        ce_runs,
        ce_ms,
        "trained by this recipe" + (", int8 ONNX" if cfg.teacher_int8 else ""),
    )
    add(
        f"teacher reranking top {depth}",
        teacher_runs,
        ce_ms,
        f"the distilled teacher: {w['ce']} CE + {w['bm25']} BM25 + {w['dense']} cosine (z-scores)",
    )
    dvec = cand["dvec"]
    int8_codec = get_codec("int8")
    dvec8 = int8_codec.decode(int8_codec.encode(dvec))
    timings: dict[str, Any] = {}
    served: dict[str, bool] = {}
    for spec in cfg.students:
        folder = ctx.out / spec.name
        runtime = TwinBertRuntime.load(folder, threads=STUDENT_THREADS)
        # The frozen document tower: the base model's index serves the student as it is.
        searcher = Searcher.open(ctx.index_dir, model=folder)
        served[spec.name] = bool(searcher.search(test[0][1]["text"], k=3).hits)
        searcher.store.close()
        variants = []  # (row suffix, depth, stored vectors, runtime)
        for label, k in ((f"top {depth}", depth), (f"top {deep}", deep)):
            if spec.crossing == "cosine" and k != depth:
                continue
            variants.append((label, k, dvec, runtime))
            variants.append((f"{label} (int8 stored vectors)", k, dvec8, runtime))
        if (folder / "onnx" / "query_encoder.int8.onnx").is_file():
            runtime8 = TwinBertRuntime.load(folder, query_int8=True, threads=STUDENT_THREADS)
            variants.append((f"top {depth} (int8 query graph)", depth, dvec, runtime8))
        for label, k, vectors, rt in variants:
            rt.query_encoder.encode(["warm up"], 1)
            runs, enc_s, cross_s = {}, 0.0, 0.0
            for _, q in test:
                rows = q["recall"][:k]
                t0 = time.perf_counter()
                qv = rt.encode_query(q["text"])
                t1 = time.perf_counter()
                scores = rt.score(qv, vectors[rows])
                t2 = time.perf_counter()
                enc_s, cross_s = enc_s + t1 - t0, cross_s + t2 - t1
                runs[q["id"]] = with_tail(order_rows(rows, scores, ctx.doc_ids), q["recall"])
            ms = 1e3 * (enc_s + cross_s) / len(test)
            timings[f"{spec.name} {label}"] = {
                "query_encode_ms": 1e3 * enc_s / len(test),
                "crossing_ms": 1e3 * cross_s / len(test),
            }
            add(
                f"{spec.name} reranking {label}",
                runs,
                ms,
                f"{_crossing_label(spec)}, {spec.num_layers or 'all'} query layers, "
                f"{spec.pooling} pooling, {_loss_label(spec)}; time = its query tower "
                f"({STUDENT_THREADS} thread) "
                "+ crossing",
            )
        weight = _fusion_weight(folder)
        if weight is not None:
            queries = [q for _, q in test]
            runs, ms = _fused_runs(
                ctx, runtime, queries, {q["id"]: q["recall"] for q in queries}, weight
            )
            add(
                f"{spec.name} + BM25 reranking top {depth}",
                runs,
                ms,
                f"z(student logit) + {weight} z(BM25), weight tuned on validation; "
                "time = query tower + crossing + fusion",
            )
    paired = paired_timing(ctx, test[: cfg.timing_queries])
    served_timing = served_rows(ctx, add, ce_ms)
    if cfg.ood_data:
        from twinbert_search.training.recipe.ood import OodData, ood_runs

        data = OodData(ctx)
        ood_qrels = data.qrels()
        for name, run_rows, note in ood_runs(ctx, data):
            run = {
                q: [(data.doc_ids[r], float(-i)) for i, r in enumerate(v)]
                for q, v in run_rows.items()
            }
            rows_out.append(
                {
                    "system": name,
                    "section": "ood",
                    **subset_metrics(ood_qrels, run),
                    "rerank_ms": None,
                    "note": note,
                }
            )
    result = {
        "rows": rows_out,
        "paired_timing": paired,
        "served_timing": served_timing,
        "student_timings": timings,
        "students_served_from_base_index": served,
        "teacher_ms_per_query": ce_ms,
        "teacher_timing": ce_timing,
    }
    write_json(ctx.out / RESULTS_JSON, result)
    return result


def _default_served(
    ctx: Context, test: Sequence[tuple[int, dict[str, Any]]]
) -> dict[str, list[int]]:
    """The default model served with --hybrid: its hybrid list under its served fusion."""
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime.fusion import served_fusion
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.training.recipe.signals import served_lists

    cfg = ctx.cfg
    fusion = served_fusion(ModelManifest.load(ctx.base_model))
    lists = served_lists(
        ctx.collection(),
        TwinBertRuntime.load(ctx.base_model),
        [(q["id"], q["text"]) for _, q in test],
        depth=cfg.rerank_depth,
        recall_depth=cfg.deep_depth,
    )
    return {
        qid: with_tail(order_rows(x.rows, fusion.scores(**x.signals), ctx.doc_ids), rows)
        for qid, (rows, x) in lists.items()
    }


def _fused_runs(
    ctx: Context,
    runtime: TwinBertRuntime,
    test: Sequence[dict[str, Any]],
    lists: Mapping[str, Sequence[int]],
    weight: float,
    qvec: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, list[int]], float]:
    """Each query's top candidates of `lists` reranked by `lexical_fusion`, and the mean ms.

    Given `qvec` (served: recall computed the query vectors), the time is crossing + fusion;
    without it the student's query tower runs inside the timing too. BM25 scores come before
    the clock: hybrid recall has them already.
    """
    depth, dvec = ctx.cfg.rerank_depth, ctx.load_candidates()["dvec"]
    runs, seconds = {}, 0.0
    for q in test:
        ranked = list(lists[q["id"]])
        rows = ranked[:depth]
        bm25 = ctx.bm25.scores(q["text"])[rows]
        t0 = time.perf_counter()
        qv = runtime.encode_query(q["text"]) if qvec is None else qvec[q["id"]]
        scores = lexical_fusion(runtime.crossing.logits(qv, dvec[rows]), bm25, weight)
        seconds += time.perf_counter() - t0
        runs[q["id"]] = with_tail(order_rows(rows, scores, ctx.doc_ids), ranked)
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
    cand = ctx.load_candidates()
    test = [q for q in cand["queries"] if q["split"] == "test"]
    lists = read_json(ctx.work / SERVED_RECALL)
    scored = read_json(ctx.work / SERVED_SCORES)
    teacher = read_json(ctx.work / "teacher_ensemble.json")
    stats, weights = tuple(teacher["ce_stats"]), teacher["weights"]
    depth, dvec = cfg.rerank_depth, cand["dvec"]
    ce = OnnxCrossEncoder(
        ctx.out / "teacher", cfg.teacher_threads or 2, int8=cfg.teacher_int8, spinning=False
    )
    timings: dict[str, Any] = {}
    for spec in served_specs(cfg):
        runtime = served_runtime(ctx, spec)
        own = {qid: [int(r) for r in rows] for qid, rows in lists[spec.name].items()}
        vectors = runtime.encode_queries([q["text"] for q in test])
        qvec = {q["id"]: v for q, v in zip(test, vectors, strict=True)}
        add(
            f"recall: hybrid with {spec.name}'s query vector (RRF of BM25 and its kNN)",
            own,
            None,
            "served: the student's query vector recalls",
            "served",
        )
        teacher_runs, ce_runs, student_runs, cross_s = {}, {}, {}, 0.0
        for q in test:
            key, rows = f"test:{q['id']}", own[q["id"]][:depth]
            have = dict(zip(scored[key]["rows"], scored[key]["ce"], strict=True))
            f = teacher_features(ctx, key, {"rows": rows, "ce": [have[r] for r in rows]}, stats)
            teacher_runs[q["id"]] = with_tail(
                order_rows(rows, combine(f, weights), ctx.doc_ids), own[q["id"]]
            )
            ce_runs[q["id"]] = with_tail(order_rows(rows, f["ce"], ctx.doc_ids), own[q["id"]])
            t0 = time.perf_counter()
            scores = runtime.score(qvec[q["id"]], dvec[rows])
            cross_s += time.perf_counter() - t0
            student_runs[q["id"]] = with_tail(order_rows(rows, scores, ctx.doc_ids), own[q["id"]])
        add(
            f"teacher alone (cross-encoder) reranking top {depth} of {spec.name}'s recall",
            ce_runs,
            ce_ms,
            "served: the cross-encoder on the student's own candidates, no fusion",
            "served",
        )
        add(
            f"teacher reranking top {depth} of {spec.name}'s recall",
            teacher_runs,
            ce_ms,
            "served: the teacher on the student's own candidates",
            "served",
        )
        add(
            f"{spec.name} reranking top {depth} of its own recall",
            student_runs,
            1e3 * cross_s / len(test),
            "served: the recall's query vector reranks; time = crossing only",
            "served",
        )
        fused_runs, fusion_note = _served_fusion_runs(ctx, spec, runtime, test)
        add(
            f"{spec.name} served rerank (search --hybrid) of its own recall",
            fused_runs,
            None,
            f"served score: {fusion_note}",
            "served",
        )
        weight = _fusion_weight(ctx.out / spec.name)
        if weight is not None:
            fused_runs, ms = _fused_runs(ctx, runtime, test, own, weight, qvec)
            add(
                f"{spec.name} + BM25 reranking top {depth} of its own recall",
                fused_runs,
                ms,
                f"served: z(student logit) + {weight} z(BM25), weight tuned on validation; "
                "time = crossing + fusion",
                "served",
            )

        def teacher_run(q: dict[str, Any], rows_of: Mapping[str, list[int]] = own) -> None:
            ce.score([(q["text"], ctx.doc_text(r)) for r in rows_of[q["id"]][:depth]])

        def crossing(
            q: dict[str, Any],
            rt: TwinBertRuntime = runtime,
            qv: Mapping[str, np.ndarray] = qvec,
            rows_of: Mapping[str, list[int]] = own,
        ) -> None:
            rt.score(qv[q["id"]], dvec[rows_of[q["id"]][:depth]])

        def whole(
            q: dict[str, Any], rt: TwinBertRuntime = runtime, rows_of: Mapping[str, list[int]] = own
        ) -> None:
            rt.score(rt.encode_query(q["text"]), dvec[rows_of[q["id"]][:depth]])

        timed = test[: cfg.timing_queries]
        warm = test[-1] if len(test) > len(timed) else timed[0]
        systems = {"teacher": teacher_run, "crossing": crossing, "query tower + crossing": whole}
        timings[spec.name] = {"candidates": depth, **speedups(block_timing(systems, timed, warm))}
    return timings


def _served_fusion_runs(
    ctx: Context, spec: StudentSpec, runtime: TwinBertRuntime, test: Sequence[dict[str, Any]]
) -> tuple[dict[str, list[int]], str]:
    """The student's own hybrid recall reranked by its served fusion (`served_fusion`: the
    weights tuned on validation and kept in its manifest), as `Searcher.search` serves it."""
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime.fusion import served_fusion
    from twinbert_search.training.recipe.signals import served_lists

    cfg = ctx.cfg
    fusion = served_fusion(ModelManifest.load(ctx.out / spec.name))
    lists = served_lists(
        ctx.collection(),
        runtime,
        [(q["id"], q["text"]) for q in test],
        depth=cfg.rerank_depth,
        recall_depth=cfg.deep_depth,
    )
    runs = {
        qid: with_tail(order_rows(x.rows, fusion.scores(**x.signals), ctx.doc_ids), rows)
        for qid, (rows, x) in lists.items()
    }
    note = ", ".join(f"{w:g} x z({k})" for k, w in fusion.weights().items() if w)
    return runs, note + " (weights tuned on validation)"
