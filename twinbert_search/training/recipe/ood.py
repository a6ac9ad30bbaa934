"""Steps `ood` and `adapt`: every model zero-shot on an out-of-domain collection (CACM), and a
student adapted to that collection's corpus text by `training.adapt`.

The collection's qrels are read by `ood_rows` only, for the final table: never for training,
tuning, calibration or checkpoint choice. Everything else (fusion weights, the teacher's
ensemble weights, checkpoints) comes from the in-domain run, as a user's new corpus would get.

`ood`: the base model's embedded index of the corpus (title-only documents included, read by
`training.corpus.read_documents`), each query's BM25, dense and hybrid lists, every student's
own served lists with the fusion signals, and the teacher's scores of every top candidate.
`adapt` (`adapt_step`): `training.adapt.adapt` on the corpus from `adapt_student`, its served
lists and the teacher's scores of any new pair.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.runtime.fusion import RerankFusion, zscore
from twinbert_search.training.recipe.artifacts import (
    DOC_VECTORS,
    OOD_CE,
    OOD_DIR,
    OOD_INDEX_DIR,
    OOD_OWN,
    OOD_SYSTEMS,
    TEACHER_DIR,
)
from twinbert_search.training.recipe.config import served_specs
from twinbert_search.training.recipe.context import Context, read_json, top, top_matches, write_json
from twinbert_search.training.recipe.records import Ensemble
from twinbert_search.training.recipe.signals import Collection, recall_label, served_lists

if TYPE_CHECKING:
    from twinbert_search.runtime.model import TwinBertRuntime

__all__ = ["OOD_DIR", "OodData", "ood_runs", "score_pairs", "step_ood", "system_lists"]

log = logging.getLogger(__name__)


class OodData:
    """The out-of-domain collection: documents as rows, BM25, queries, and its index."""

    def __init__(self, ctx: Context) -> None:
        from twinbert_search.ingest.readers import read_queries
        from twinbert_search.training.corpus import read_documents
        from twinbert_search.training.data import build_bm25

        if not ctx.cfg.ood_data:
            raise ConfigurationError("no out-of-domain collection configured (ood_data)")
        self.root = Path(ctx.cfg.ood_data)
        self.corpus = read_documents(self.root)
        self.doc_ids = sorted(self.corpus)
        self.queries = [(q.id, q.text) for q in read_queries(self.root / "queries.jsonl")]
        self.bm25 = build_bm25({d: self.corpus[d] for d in self.doc_ids})
        self.work = ctx.work / OOD_DIR
        self.index_dir = ctx.out / OOD_INDEX_DIR

    def text(self, row: int) -> str:
        return self.corpus[self.doc_ids[row]].encoding_text

    def collection(self) -> Collection:
        return Collection(self.doc_ids, np.load(self.work / DOC_VECTORS), self.bm25, self.text)

    def qrels(self) -> dict[str, dict[str, int]]:
        """The test judgements: for `ood_rows`' final table only."""
        from twinbert_search.ingest.readers import read_qrels

        judged = read_qrels(self.root / "qrels" / "test.tsv")
        return {q: docs for q, docs in judged.items() if any(r > 0 for r in docs.values())}


def _build_index(ctx: Context, data: OodData) -> np.ndarray:
    """The base model's embedded index of the corpus (a user's `index`), and its vectors."""
    from twinbert_search.ingest.indexing import index_documents
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.stores.embedded import EmbeddedStore

    runtime = TwinBertRuntime.load(ctx.base_model)
    store = EmbeddedStore.create_or_open(data.index_dir, dim=runtime.dim, codec="float32")
    try:
        index_documents((data.corpus[d] for d in data.doc_ids), store, runtime, progress=False)
        store.finalize()
        vectors = np.asarray(store.fetch(data.doc_ids).vectors, dtype=np.float32)
    finally:
        store.close()
    return vectors


def system_lists(
    data: OodData, runtime: TwinBertRuntime, depth: int, recall_depth: int
) -> dict[str, Any]:
    lists = served_lists(
        data.collection(), runtime, data.queries, depth=depth, recall_depth=recall_depth
    )
    return {
        qid: {
            "recall": rows,
            "rows": served.rows,
            "signals": {k: v.tolist() for k, v in served.signals.items()},
        }
        for qid, (rows, served) in lists.items()
    }


def score_pairs(ctx: Context, data: OodData, systems: Mapping[str, Mapping[str, Any]]) -> int:
    """The teacher's logits of every system's top candidates not scored yet (resumable)."""
    from twinbert_search.training.teacher_onnx import OnnxCrossEncoder

    path = data.work / OOD_CE
    saved: dict[str, dict[str, float]] = read_json(path) if path.is_file() else {}
    ce = None
    new = 0
    for qid, text in data.queries:
        have = saved.setdefault(qid, {})
        want = {r for lists in systems.values() for r in lists[qid]["rows"]}
        need = sorted(r for r in want if str(r) not in have)
        if not need:
            continue
        if ce is None:
            ce = OnnxCrossEncoder(ctx.out / TEACHER_DIR, ctx.cfg.teacher_threads, int8=True)
        scores = ce.score([(text, data.text(r)) for r in need])
        have.update({str(r): float(s) for r, s in zip(need, scores, strict=True)})
        new += len(need)
    write_json(path, saved)
    return new


def step_ood(ctx: Context) -> dict[str, Any]:
    """Index the out-of-domain corpus with the base model; recall and served lists; scores."""
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.training.recipe.served import served_runtime

    cfg = ctx.cfg
    data = OodData(ctx)
    data.work.mkdir(parents=True, exist_ok=True)
    np.save(data.work / DOC_VECTORS, _build_index(ctx, data))
    coll = data.collection()
    base = TwinBertRuntime.load(ctx.base_model)
    qvec = base.encode_queries([text for _, text in data.queries])
    own = {
        qid: {
            "bm25": top_matches(data.bm25.scores(text), cfg.deep_depth).tolist(),
            "dense": top(coll.vectors @ qv, cfg.deep_depth).tolist(),
        }
        for (qid, text), qv in zip(data.queries, qvec, strict=True)
    }
    write_json(data.work / OOD_OWN, own)
    systems = {"default": system_lists(data, base, cfg.rerank_depth, cfg.deep_depth)}
    for spec in served_specs(cfg):
        runtime = served_runtime(ctx, spec)
        systems[spec.name] = system_lists(data, runtime, cfg.rerank_depth, cfg.deep_depth)
    write_json(data.work / OOD_SYSTEMS, systems)
    new = score_pairs(ctx, data, systems)
    return {"documents": len(data.doc_ids), "queries": len(data.queries), "teacher_pairs": new}


def _served_fusion(ctx: Context, name: str) -> tuple[RerankFusion, str]:
    """The model's served rerank fusion and how its hybrid recall is fused (a label)."""
    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime.fusion import served_fusion

    folder = ctx.base_model if name == "default" else ctx.out / name
    manifest = ModelManifest.load(folder)
    return served_fusion(manifest), recall_label(manifest.extra, ctx.cfg.rerank_depth)


def ood_runs(ctx: Context, data: OodData) -> list[tuple[str, dict[str, list[int]], str]]:
    """(system, ranked rows by query, note) for every out-of-domain row of the table."""
    from twinbert_search.training.recipe.context import order_rows, with_tail

    cfg = ctx.cfg
    own = read_json(data.work / OOD_OWN)
    systems = read_json(data.work / OOD_SYSTEMS)
    ce = read_json(data.work / OOD_CE)
    teacher = Ensemble.load(ctx.work)
    (mean, std), w = teacher.ce_stats, teacher.weights
    depth = cfg.rerank_depth
    out: list[tuple[str, dict[str, list[int]], str]] = [
        ("BM25", {q: v["bm25"] for q, v in own.items()}, "own ranking (bm25s)"),
        ("default model, cosine kNN", {q: v["dense"] for q, v in own.items()}, "own kNN"),
    ]
    for name, lists in systems.items():
        label = "the default model" if name == "default" else name
        fusion, fused_by = _served_fusion(ctx, name)
        runs: dict[str, dict[str, list[int]]] = {k: {} for k in ("ce", "ens", "cross", "served")}
        for q, v in lists.items():
            rows, sig = v["rows"], {k: np.asarray(x) for k, x in v["signals"].items()}
            logit = np.asarray([ce[q][str(r)] for r in rows], np.float64)
            scores = {
                "ce": logit,
                "ens": w["ce"] * (logit - mean) / std
                + w["bm25"] * zscore(sig["bm25"])
                + w["dense"] * zscore(sig["cosine"]),
                "cross": sig["crossing"],
                "served": fusion.scores(**sig),
            }
            for key, value in scores.items():
                runs[key][q] = with_tail(order_rows(rows, value, data.doc_ids), v["recall"])
        weights = ", ".join(f"{k} {x:g}" for k, x in fusion.weights().items() if x)
        out += [
            (
                f"recall: hybrid with {label}'s query vector",
                {q: v["recall"] for q, v in lists.items()},
                fused_by,
            ),
            (
                f"teacher alone (cross-encoder) on top {depth} of {label}'s recall",
                runs["ce"],
                "no fusion",
            ),
            (
                f"teacher ensemble on top {depth} of {label}'s recall",
                runs["ens"],
                "in-domain weights",
            ),
            (f"{label}: crossing alone, top {depth} of its recall", runs["cross"], "no fusion"),
            (
                f"{label}: served rerank (search --hybrid), top {depth}",
                runs["served"],
                f"fusion {weights}",
            ),
        ]
    return out
