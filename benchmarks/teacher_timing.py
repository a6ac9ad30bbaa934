"""The teacher against TwinBERT-res on the same recalled candidates, as the product runs both.

The teacher is timed in the recipe's configuration (`RecipeConfig`: its exported int8 ONNX
graph at its sequence length, batches of 32 pairs on 2 ONNX Runtime threads, no spin-wait),
as RESULTS.md's paired timing does: a trained teacher directory (`--teacher DIR` holding
`teacher.json` and `teacher.int8.onnx`), else the model's base checkpoint with a random head,
exported the same way (the same graph and cost; only its scores would differ).

Candidates are recalled, not invented: BM25 over the benchmark corpus (`corpus_path`) gives
each query its top 100 or 1,000 documents. The teacher scores those (query, document text)
pairs; TwinBERT-res encodes the query and scores the same documents' stored vectors (encoded
once beforehand, as at ingest) with the crossing layer as served.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suite import BenchConfig, corpus_path, query_texts, read_jsonl_texts
from benchmarks.timing import sample_ms, summary_ms
from twinbert_search.runtime.model import TwinBertRuntime

DEPTHS = (100, 1000)


def recipe_max_length() -> int:
    """The recipe's teacher sequence length, read from its config rather than repeated."""
    from twinbert_search.training.recipe.config import RecipeConfig

    return next(f.default for f in fields(RecipeConfig) if f.name == "teacher_max_length")


def recipe_teacher(cfg: BenchConfig, runtime: TwinBertRuntime) -> tuple[Any, dict[str, Any]]:
    """The teacher as the recipe serves it, and what it is (for the report)."""
    from twinbert_search.training.teacher_onnx import OnnxCrossEncoder

    given = Path(cfg.teacher) if cfg.teacher else None
    if given and (given / "teacher.json").is_file() and (given / "teacher.int8.onnx").is_file():
        folder, kind, origin = given, "trained teacher", given
    else:
        origin = given or Path(runtime.manifest.base_model)
        folder, kind = cfg.work_dir / "teacher", "base checkpoint with a random head"
        if not (folder / "teacher.int8.onnx").is_file():
            _export_random_head(origin, folder)
    meta = json.loads((folder / "teacher.json").read_text())
    scorer = OnnxCrossEncoder(folder, threads=2, int8=True, spinning=False)
    info = {
        "checkpoint": str(origin),
        "kind": kind,
        "graph": "int8 ONNX",
        "max_length": int(meta["max_length"]),
        "threads": 2,
        "batch_size": scorer.batch_size,
    }
    return scorer, info


def _export_random_head(base: Path, folder: Path) -> None:
    """A cross-encoder on `base` with an untrained head, exported as the recipe exports its
    teacher (`recipe.scores.export_teacher`): same graph, same cost."""
    from twinbert_search.training.recipe.scores import export_teacher
    from twinbert_search.training.teacher import CrossEncoder
    from twinbert_search.training.tokenizer import tokenizer_file

    model = CrossEncoder.from_checkpoint(base)
    model.save(folder, tokenizer_file(base), max_length=recipe_max_length())
    export_teacher(folder)


def recalled_candidates(cfg: BenchConfig, texts: list[str]) -> tuple[list[str], list[list[int]]]:
    """Document texts of the corpus and, per query, the rows BM25 recalls (deepest depth)."""
    from twinbert_search.stores.embedded.bm25 import BM25Index

    rows = read_jsonl_texts(corpus_path(cfg))
    docs = [f"{r.get('title', '')} {r.get('text', '')}".strip() for r in rows]
    ids = [str(i) for i in range(len(docs))]
    index = BM25Index.build(ids, iter(docs))
    depth = min(max(DEPTHS), len(docs))
    return docs, [[int(i) for i, _ in index.search(text, depth)] for text in texts]


def bench_teacher(
    cfg: BenchConfig, runtime: TwinBertRuntime, student: TwinBertRuntime
) -> dict[str, Any]:
    """Per-query p50/p99 of the teacher and of TwinBERT-res (query encode + crossing) on the
    same recalled candidates at each depth, and their ratios."""
    scorer, info = recipe_teacher(cfg, runtime)
    queries = query_texts(cfg)[: max(1, cfg.teacher_reps)]
    docs, recalled = recalled_candidates(cfg, queries)
    needed = sorted({row for rows in recalled for row in rows})
    vectors = dict(zip(needed, student.encode_documents([docs[r] for r in needed]), strict=True))
    rows, ratios = [], []
    for depth in DEPTHS:
        timed = queries if depth == DEPTHS[0] else queries[:1]  # 1,000 pairs: seconds each
        cands = [recalled[i][:depth] for i in range(len(timed))]
        pairs = [[(q, docs[r]) for r in c] for q, c in zip(timed, cands, strict=True)]
        stored = [np.stack([vectors[r] for r in c]) for c in cands]
        scorer.score(pairs[0][:32])  # warm-up
        teacher = summary_ms(sample_ms(lambda i, p=pairs: scorer.score(p[i % len(p)]), len(timed)))

        encoded = [student.encode_query(t) for t in timed]

        def twinbert(i: int, t: list[str] = timed, s: list[np.ndarray] = stored) -> None:
            j = i % len(t)
            student.score(student.encode_query(t[j]), s[j])

        def crossing(i: int, q: list[np.ndarray] = encoded, s: list[np.ndarray] = stored) -> None:
            j = i % len(q)
            student.score(q[j], s[j])

        both = summary_ms(sample_ms(twinbert, cfg.rerank_reps, warmup=5))
        alone = summary_ms(sample_ms(crossing, cfg.rerank_reps, warmup=5))
        found = len(cands[0])
        rows.append(
            {"candidates": found, "queries": len(timed), "teacher": teacher, "twinbert": both}
        )
        ratios.append(
            {
                "combine": cfg.combine,
                "candidates": found,
                "teacher_over_crossing": teacher["p50"] / alone["p50"],
                "teacher_over_encode_plus_crossing": teacher["p50"] / both["p50"],
            }
        )
    corpus = corpus_path(cfg)
    return {
        "teacher": {
            **info,
            "candidates_from": f"BM25 over {corpus.parent.name}/{corpus.name}",
            "rows": rows,
        },
        "ratios": ratios,
    }
