"""The SciFact recipe: teacher, distilled TwinBERT students, index and quality table, on CPU.

One call runs the whole chain, step by step, each step recording its wall time in
`OUT/recipe_state.json`; a rerun skips finished steps, so a killed run resumes where it
stopped. Steps:

1. `index`       the default model's embedded index of the corpus (reused when given)
2. `candidates`  query vectors, BM25 scores, recall lists (dense, BM25, hybrid RRF)
3. `teacher`     a cross-encoder fine-tuned from the default checkpoint: listwise loss on the
                 labels (positive vs BM25 + dense hard negatives) plus a KL term towards the
                 fused BM25 + bi-encoder ranking (a cheap strong signal), checkpoint picked
                 on a validation split carved from the train queries
4. `scores`      cross-encoder logits for the validation and distillation candidates
5. `ensemble`    the teacher actually distilled: cross-encoder, BM25 and bi-encoder scores
                 fused with weights tuned on the validation split (weights may zero out the
                 cross-encoder; the table names what won)
6. `students`    TwinBERT-res and TwinBERT-cos with a FROZEN document tower (the default
                 model's), so the index's stored vectors are the students' document vectors:
                 only query towers and crossing layers learn, from the teacher's scores
7. `teacher_rerank` the cross-encoder on the test queries' top candidates, timed per query
8. `served`      each student as a search serves it: its own query vector recalls (hybrid with
                 BM25) and reranks; the teacher scores those candidates too
9. `evaluate`    every row on the same test candidates, then the served rows (each student's
                 own recall, with the teacher on the same list); results.json (results.md: CLI)

Scores are z-normalised per query over its recall candidates (BM25, cosine) or globally (the
cross-encoder logit), so the fusion weights are comparable across queries.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinbert_search.errors import ConfigurationError
from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.evaluation.provenance import cpu_model
from twinbert_search.manifest import CrossingConfig
from twinbert_search.runtime.crossing import lexical_fusion

__all__ = ["RecipeConfig", "StudentSpec", "run_recipe"]

log = logging.getLogger(__name__)

STATE_FILE = "recipe_state.json"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
METRICS = ("ndcg@10", "mrr@10", "recall@100")
RRF_K = 60
STUDENT_THREADS = 1  # a student's one short query runs fastest on one ONNX Runtime thread here


@dataclass
class StudentSpec:
    """One student to distil: crossing type, query-tower depth, pooling, loss temperature."""

    name: str
    crossing: str = "residual"
    combine: str = "max"
    num_layers: int | None = None
    pooling: str = "mean"
    temperature: float = 1.0
    pseudo: bool = True
    steps: int | None = None
    hidden: int | None = None  # residual hidden size; None: CrossingConfig's default
    # Weight of a listwise loss on the qrels' positives added to the distillation loss
    # (the true labels beside the teacher's soft ones); 0 distils from the teacher alone.
    label_weight: float = 0.0
    distill_weight: float = 1.0  # weight of the teacher's (KL) term; 0 trains on labels alone


def default_students() -> list[StudentSpec]:
    # The validation winners of `exploration_grid` (RESULTS.md): the residual block over q * d
    # (which starts as the cosine crossing), weighted pooling, train queries only, 400 steps
    # over 30 teacher-scored candidates per query, and the qrels' labels beside the teacher's
    # scores (KL + 2 x label loss). The second residual student keeps the paper's max
    # combination, to compare; the cosine student is the recall-only TwinBERT.
    residual = {"hidden": 128, "pooling": "weighted", "pseudo": False, "label_weight": 2.0}
    return [
        StudentSpec("twinbert-res", combine="mul", **residual),
        StudentSpec("twinbert-res-max", combine="max", **residual),
        StudentSpec("twinbert-cos", "cosine", pooling="mean", label_weight=2.0),
    ]


@dataclass
class RecipeConfig:
    """Every setting of a recipe run (recorded in results.json)."""

    data: str
    out: str
    index: str | None = None  # an existing embedded index of the corpus by the base model
    base_model: str | None = None  # default: the default model (all-MiniLM-L6-v2 TwinBERT)
    checkpoint: str | None = None  # default: the all-MiniLM-L6-v2 checkpoint
    seed: int = 0
    validation_queries: int = 60
    recall: str = "auto"  # dense | hybrid | auto (the better Recall@100 on validation)
    rerank_depth: int = 100
    deep_depth: int = 1000
    # teacher
    teacher_steps: int = 300  # validation nDCG@10 still rising at 300 (0.40 at 20, 0.62 at 280)
    teacher_queries_per_step: int = 3
    teacher_group: int = 8
    teacher_negative_depth: int = 30
    teacher_lr: float = 4e-5
    teacher_max_length: int = 128
    teacher_pooling: str = "mean"
    teacher_fused_weight: float = 1.0
    teacher_eval_every: int = 20
    teacher_val_depth: int = 10
    val_depth: int = 30
    teacher_int8: bool = True
    timing_queries: int = 30  # test queries timed back to back, teacher vs students
    teacher_threads: int | None = None
    # distillation
    distill_candidates: int = 30  # teacher-scored candidates per train query (KL over them)
    pseudo_queries: int = 200
    pseudo_candidates: int = 8
    student_steps: int = 400
    student_batch: int = 16
    student_lr: float = 5e-5
    crossing_lr: float = 1e-3
    students: list[StudentSpec] = field(default_factory=default_students)
    max_query_length: int = 64

    @property
    def out_dir(self) -> Path:
        return Path(self.out)


# --- small helpers ---------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _zscore(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (x - ref.mean()) / max(float(ref.std()), 1e-6)


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """Reciprocal rank fusion of ranked row lists, ties broken by row."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking, start=1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (k + rank)
    return [r for r, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(scores))
    part = np.argpartition(-scores, n - 1)[:n]
    return part[np.lexsort((part, -scores[part]))]


def machine() -> dict[str, Any]:
    """nproc and CPU model, for every figure's provenance."""
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform()}


class Context:
    """What every step reads: the data, the base model, the step artefacts under OUT/work."""

    def __init__(self, cfg: RecipeConfig) -> None:
        from twinbert_search.runtime.models import default_checkpoint, resolve_model
        from twinbert_search.training.data import load_training_data

        self.cfg = cfg
        self.out = cfg.out_dir
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.train = load_training_data(cfg.data, "train")
        self.test = load_training_data(cfg.data, "test")
        self.corpus = self.train.corpus
        self.doc_ids = sorted(self.corpus)
        self.row_of = {d: i for i, d in enumerate(self.doc_ids)}
        self.base_model = (
            Path(cfg.base_model) if cfg.base_model else resolve_model(None, build_default=True)
        )
        self.checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint()
        self._bm25 = None

    @property
    def index_dir(self) -> Path:
        return Path(self.cfg.index) if self.cfg.index else self.out / "index"

    @property
    def bm25(self):
        from twinbert_search.training.data import build_bm25

        if self._bm25 is None:
            ordered = {d: self.corpus[d] for d in self.doc_ids}
            self._bm25 = build_bm25(ordered)
        return self._bm25

    def doc_text(self, row: int) -> str:
        return self.corpus[self.doc_ids[row]].encoding_text

    # artefacts of the candidates step
    def load_candidates(self) -> dict[str, Any]:
        if not hasattr(self, "_cand"):
            self._cand = _read_json(self.work / "queries.json")
            self._cand["qvec"] = np.load(self.work / "query_vectors.npy")
            self._cand["dvec"] = np.load(self.work / "doc_vectors.npy")
            self._cand["pos"] = {q["id"]: i for i, q in enumerate(self._cand["queries"])}
        return self._cand

    def features(self, qi: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """z-scored BM25 and cosine of query `qi` for doc rows (stats over its top candidates)."""
        cand = self.load_candidates()
        q = cand["queries"][qi]
        ref = np.asarray(q["recall"][: self.cfg.rerank_depth], dtype=np.int64)
        bm = self.bm25.scores(q["text"]).astype(np.float32)
        cos = cand["dvec"] @ cand["qvec"][qi]
        return {
            "bm25": _zscore(bm[rows], bm[ref]).astype(np.float32),
            "dense": _zscore(cos[rows], cos[ref]).astype(np.float32),
        }


# --- step 1: index ---------------------------------------------------------------------------


def step_index(ctx: Context) -> dict[str, Any]:
    """Reuse the given index of the base model, or build one with it."""
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.stores.embedded import EmbeddedStore

    runtime = TwinBertRuntime.load(ctx.base_model)
    if (ctx.index_dir / "store.json").is_file():
        store = EmbeddedStore.open(ctx.index_dir)
        try:
            store.ensure_model(runtime.fingerprint)
            count = store.info.count
        finally:
            store.close()
        if count != len(ctx.corpus):
            raise ConfigurationError(
                f"{ctx.index_dir} holds {count} documents, the corpus {len(ctx.corpus)}"
            )
        return {"index": str(ctx.index_dir), "reused": True, "documents": count}
    from twinbert_search.ingest.indexing import index_documents

    store = EmbeddedStore.create_or_open(ctx.index_dir, dim=runtime.dim, codec="float32")
    try:
        report = index_documents(
            (ctx.corpus[d] for d in ctx.doc_ids), store, runtime, progress=False
        )
        store.finalize()
    finally:
        store.close()
    return {"index": str(ctx.index_dir), "reused": False, **report.to_dict()}


# --- step 2: candidates ----------------------------------------------------------------------


def step_candidates(ctx: Context) -> dict[str, Any]:
    """Query sets, query and document vectors, recall lists; pick the recall for reranking."""
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.stores.embedded import EmbeddedStore
    from twinbert_search.training.data import pseudo_queries, split_validation

    cfg = ctx.cfg
    store = EmbeddedStore.open(ctx.index_dir, with_documents=False)
    try:
        dvec = np.ascontiguousarray(store.fetch(ctx.doc_ids).vectors, dtype=np.float32)
    finally:
        store.close()
    train_ids, val_ids = split_validation(
        ctx.train.labelled_query_ids(), max_queries=cfg.validation_queries, seed=cfg.seed
    )
    queries: list[dict[str, Any]] = []
    for split, ids, data in (
        ("train", train_ids, ctx.train),
        ("val", val_ids, ctx.train),
        ("test", ctx.test.labelled_query_ids(), ctx.test),
    ):
        for qid in ids:
            queries.append(
                {
                    "id": qid,
                    "text": data.queries[qid].text,
                    "split": split,
                    "positives": list(data.positives(qid)),
                }
            )
    for pq in pseudo_queries(ctx.corpus, cfg.pseudo_queries, ctx.bm25, depth=1, seed=cfg.seed):
        queries.append(
            {"id": pq.id, "text": pq.text, "split": "pseudo", "positives": list(pq.positives)}
        )
    runtime = TwinBertRuntime.load(ctx.base_model)
    qvec = runtime.encode_queries([q["text"] for q in queries])
    depth_of = {"test": cfg.deep_depth}
    for i, q in enumerate(queries):
        depth = max(depth_of.get(q["split"], cfg.rerank_depth), cfg.rerank_depth)
        dense = _top(dvec @ qvec[i], depth).tolist()
        sparse = _top(ctx.bm25.scores(q["text"]), depth).tolist()
        q["dense"], q["bm25"] = dense, sparse
        q["hybrid"] = rrf([dense, sparse])[:depth]
    # The rerank candidates: the recall with the better Recall@100 on validation queries.
    val = [q for q in queries if q["split"] == "val"]
    qrels = {q["id"]: {d: 1 for d in q["positives"]} for q in val}
    recall_val = {}
    for kind in ("dense", "bm25", "hybrid"):
        run = {q["id"]: _ranked(ctx, q[kind]) for q in val}
        recall_val[kind] = evaluate(qrels, run, ("recall@100", "ndcg@10"))
    choice = cfg.recall
    if choice == "auto":
        choice = max(("dense", "hybrid"), key=lambda k: recall_val[k]["recall@100"])
    if choice not in ("dense", "hybrid", "bm25"):
        raise ConfigurationError(f"recall must be dense, hybrid, bm25 or auto, got {choice!r}")
    for q in queries:
        q["recall"] = q[choice]
    np.save(ctx.work / "doc_vectors.npy", dvec)
    np.save(ctx.work / "query_vectors.npy", qvec)
    _write_json(ctx.work / "queries.json", {"queries": queries, "recall": choice})
    counts = {s: sum(q["split"] == s for q in queries) for s in ("train", "val", "test", "pseudo")}
    return {"recall": choice, "validation": recall_val, "queries": counts}


def _ranked(ctx: Context, rows: Sequence[int]) -> list[tuple[str, float]]:
    return [(ctx.doc_ids[r], float(len(rows) - i)) for i, r in enumerate(rows)]


# --- step 3: teacher -------------------------------------------------------------------------


def _group(ctx: Context, q: dict[str, Any], size: int, depth: int, rng) -> list[int]:
    """One positive then hard negatives from the recall list (BM25 + dense via hybrid)."""
    pos_rows = [ctx.row_of[d] for d in q["positives"]]
    positive = pos_rows[int(rng.integers(len(pos_rows)))]
    pool = [r for r in q["hybrid"][:depth] if r not in set(pos_rows)]
    picks = rng.choice(len(pool), size=min(size - 1, len(pool)), replace=False)
    return [positive, *(pool[int(i)] for i in sorted(picks))]


def step_teacher(ctx: Context) -> dict[str, Any]:
    """Fine-tune the cross-encoder; keep the best checkpoint by validation nDCG@10."""
    import torch
    from torch.nn import functional as F

    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.data import batch_indices, linear_schedule, step_rng
    from twinbert_search.training.teacher import CrossEncoder
    from twinbert_search.training.tokenizer import to_torch, tokenizer_file

    cfg = ctx.cfg
    cand = ctx.load_candidates()
    train = [i for i, q in enumerate(cand["queries"]) if q["split"] == "train"]
    val = [i for i, q in enumerate(cand["queries"]) if q["split"] == "val"]
    torch.manual_seed(cfg.seed)
    if cfg.teacher_threads:
        torch.set_num_threads(cfg.teacher_threads)
    model = CrossEncoder.from_checkpoint(ctx.checkpoint, cfg.teacher_pooling)
    tok_path = tokenizer_file(ctx.checkpoint)
    tok = TextTokenizer.from_file(tok_path, cfg.teacher_max_length)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.teacher_lr, weight_decay=0.01)
    sched = linear_schedule(opt, cfg.teacher_steps, max(1, cfg.teacher_steps // 10))
    out = ctx.out / "teacher"

    def logits(pairs: list[tuple[str, str]]) -> torch.Tensor:
        return model(**to_torch(tok.pad(tok.encode_pairs(pairs))))

    def validate() -> dict[str, float]:
        model.eval()
        run, qrels = {}, {}
        with torch.no_grad():
            for qi in val:
                q = cand["queries"][qi]
                rows = q["recall"][: cfg.teacher_val_depth]
                s = logits([(q["text"], ctx.doc_text(r)) for r in rows]).numpy()
                run[q["id"]] = {ctx.doc_ids[r]: float(v) for r, v in zip(rows, s, strict=True)}
                qrels[q["id"]] = {d: 1 for d in q["positives"]}
        model.train()
        return evaluate(qrels, run, ("ndcg@10",))

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start = time.perf_counter()
    model.train()
    for step in range(cfg.teacher_steps):
        rng = step_rng(cfg.seed, step, 3)
        pairs, fused = [], []
        for i in batch_indices(len(train), cfg.teacher_queries_per_step, step, cfg.seed):
            qi = train[i]
            q = cand["queries"][qi]
            rows = _group(ctx, q, cfg.teacher_group, cfg.teacher_negative_depth, rng)
            pairs += [(q["text"], ctx.doc_text(r)) for r in rows]
            f = ctx.features(qi, np.asarray(rows))
            fused.append(f["bm25"] + f["dense"])
        s = logits(pairs).view(-1, cfg.teacher_group)
        target = torch.zeros(s.shape[0], dtype=torch.long)  # the positive comes first
        loss = F.cross_entropy(s, target)
        if cfg.teacher_fused_weight > 0:
            soft = torch.softmax(torch.from_numpy(np.stack(fused)), -1)
            kl = F.kl_div(torch.log_softmax(s, -1), soft, reduction="batchmean")
            loss = loss + cfg.teacher_fused_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        record: dict[str, Any] = {"step": step + 1, "loss": float(loss.detach())}
        done = step + 1
        if val and (done % cfg.teacher_eval_every == 0 or done == cfg.teacher_steps):
            record["val_ndcg@10"] = validate()["ndcg@10"]
            if best is None or record["val_ndcg@10"] > best["val_ndcg@10"]:
                best = {"step": done, "val_ndcg@10": record["val_ndcg@10"]}
                model.save(
                    out, tok_path, max_length=cfg.teacher_max_length, extra={"training": best}
                )
        history.append(record)
        log.info("teacher step %d loss %.4f %s", done, record["loss"], record.get("val_ndcg@10"))
    if best is None:
        best = {"step": cfg.teacher_steps}
        model.save(out, tok_path, max_length=cfg.teacher_max_length, extra={"training": best})
    _write_json(out / "train_log.json", history)
    return {"best": best, "seconds_training": time.perf_counter() - start, "history": history}


# --- step 4: cross-encoder scores ------------------------------------------------------------


class OnnxCrossEncoder:
    """The teacher's ONNX graph: (query, document) pairs -> logits, in length-sorted batches."""

    def __init__(
        self,
        folder: Path,
        threads: int | None = None,
        batch_size: int = 32,
        *,
        int8: bool = False,
        spinning: bool = True,
    ) -> None:
        from twinbert_search.runtime.encoder import make_session
        from twinbert_search.runtime.tokenization import TextTokenizer

        meta = _read_json(folder / "teacher.json")
        self.tokenizer = TextTokenizer.from_file(folder / "tokenizer.json", meta["max_length"])
        graph = "teacher.int8.onnx" if int8 else "teacher.onnx"
        self.session = make_session(folder / graph, threads, spinning=spinning)
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.batch_size = batch_size

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        enc = self.tokenizer.encode_pairs(pairs)
        order = np.argsort([-len(e.ids) for e in enc], kind="stable")
        out = np.zeros(len(pairs), np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer.pad([enc[i] for i in rows])
            feed = {k: v for k, v in batch.items() if k in self._inputs}
            out[rows] = self.session.run(None, feed)[0].reshape(-1)
        return out


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
    from twinbert_search.training.export import _quantize

    _quantize(folder / "teacher.onnx", folder / "teacher.int8.onnx")
    got8 = OnnxCrossEncoder(folder, int8=True).score(pairs)
    return {
        "fp32_max_abs_diff": float(np.abs(got - expected).max()),
        "int8_max_abs_diff": float(np.abs(got8 - expected).max()),
    }


def _distill_rows(ctx: Context, q: dict[str, Any]) -> list[int]:
    """Positives first, then the top recall candidates, `distill_candidates` (pseudo: own)."""
    cfg = ctx.cfg
    size = cfg.pseudo_candidates if q["split"] == "pseudo" else cfg.distill_candidates
    rows = [ctx.row_of[d] for d in q["positives"]]
    rows += [r for r in q["recall"] if r not in set(rows)]
    return rows[:size]


def step_scores(ctx: Context) -> dict[str, Any]:
    """Cross-encoder logits of the validation and distillation pairs."""
    return _score_splits(ctx, ("train", "pseudo", "val"), "ce_scores.json")


def step_teacher_rerank(ctx: Context) -> dict[str, Any]:
    """The teacher's rerank stage on the test queries' top candidates, timed per query."""
    return _score_splits(ctx, ("test",), "ce_test_scores.json")


def _score_splits(
    ctx: Context, splits: Sequence[str], filename: str, threads: int | None = None
) -> dict[str, Any]:
    cfg = ctx.cfg
    folder = ctx.out / "teacher"
    parity_path = folder / "onnx_parity.json"
    if not parity_path.is_file():
        parity = export_teacher(folder)
        if parity["fp32_max_abs_diff"] > 1e-3:
            raise ConfigurationError(f"teacher ONNX export diverges ({parity})")
        _write_json(parity_path, parity)
    ce = OnnxCrossEncoder(folder, threads, int8=cfg.teacher_int8)
    cand = ctx.load_candidates()
    path = ctx.work / filename  # one file per step: the two steps may run side by side
    saved: dict[str, Any] = _read_json(path) if path.is_file() else {"rows": {}, "timing": {}}
    plan: list[tuple[str, int, list[int]]] = []
    for qi, q in enumerate(cand["queries"]):
        if q["split"] not in splits:
            continue
        if q["split"] == "val":
            rows = q["recall"][: cfg.val_depth]
        elif q["split"] == "test":
            rows = q["recall"][: cfg.rerank_depth]
        else:
            rows = _distill_rows(ctx, q)
        plan.append((q["split"], qi, rows))
    order = {"train": 0, "pseudo": 1, "val": 2, "test": 3}
    plan.sort(key=lambda p: (order[p[0]], p[1]))
    timing = saved["timing"]
    last = time.perf_counter()
    for split, qi, rows in plan:
        q = cand["queries"][qi]
        key = f"{split}:{q['id']}"
        if key in saved["rows"]:
            continue
        t0 = time.perf_counter()
        scores = ce.score([(q["text"], ctx.doc_text(r)) for r in rows])
        dt = time.perf_counter() - t0
        saved["rows"][key] = {"rows": list(rows), "ce": scores.tolist()}
        slot = timing.setdefault(split, {"queries": 0, "pairs": 0, "seconds": 0.0})
        slot["queries"] += 1
        slot["pairs"] += len(rows)
        slot["seconds"] += dt
        if time.perf_counter() - last > 60:
            _write_json(path, saved)
            last = time.perf_counter()
    _write_json(path, saved)
    timing = {k: v for k, v in timing.items() if k in splits}
    return {"timing": timing, "parity": _read_json(parity_path), "int8": cfg.teacher_int8}


# --- step 5: ensemble teacher ----------------------------------------------------------------


WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)


def _ce_stats(saved: Mapping[str, Any]) -> tuple[float, float]:
    vals = np.concatenate([np.asarray(v["ce"]) for k, v in saved.items() if k.startswith("val:")])
    return float(vals.mean()), max(float(vals.std()), 1e-6)


def teacher_features(
    ctx: Context, key: str, entry: Mapping[str, Any], ce_stats: tuple[float, float]
) -> dict[str, np.ndarray]:
    cand = ctx.load_candidates()
    qi = cand["pos"][key.split(":", 1)[1]]
    rows = np.asarray(entry["rows"], dtype=np.int64)
    f = ctx.features(qi, rows)
    f["ce"] = ((np.asarray(entry["ce"], np.float32) - ce_stats[0]) / ce_stats[1]).astype(np.float32)
    return f


def combine(features: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    return sum(w * features[k] for k, w in weights.items() if w)


def step_ensemble(ctx: Context) -> dict[str, Any]:
    """Tune the fusion weights (CE, BM25, cosine) on the validation queries' candidates."""
    saved = _read_json(ctx.work / "ce_scores.json")["rows"]
    stats = _ce_stats(saved)
    cand = ctx.load_candidates()
    val = {k: v for k, v in saved.items() if k.startswith("val:")}
    feats = {k: teacher_features(ctx, k, v, stats) for k, v in val.items()}
    qrels = {}
    for k in val:
        qid = k.split(":", 1)[1]
        qrels[qid] = {d: 1 for d in cand["queries"][cand["pos"][qid]]["positives"]}

    def score(weights: Mapping[str, float]) -> dict[str, float]:
        run = {}
        for k, v in val.items():
            s = combine(feats[k], weights)
            if isinstance(s, int):
                s = np.zeros(len(v["rows"]), np.float32)
            run[k.split(":", 1)[1]] = {
                ctx.doc_ids[r]: float(x) for r, x in zip(v["rows"], s, strict=True)
            }
        return evaluate(qrels, run, ("ndcg@10", "mrr@10"))

    grid = []
    for wc in WEIGHT_GRID:
        for wb in WEIGHT_GRID:
            for wd in WEIGHT_GRID:
                if wc == wb == wd == 0 or max(wc, wb, wd) != 1.0:
                    continue  # scale-free: one weight is 1
                w = {"ce": wc, "bm25": wb, "dense": wd}
                grid.append({"weights": w, **score(w)})
    best = max(grid, key=lambda g: (g["ndcg@10"], g["mrr@10"]))
    singles = {
        "cross-encoder": score({"ce": 1.0}),
        "bm25 (on candidates)": score({"bm25": 1.0}),
        "bi-encoder (on candidates)": score({"dense": 1.0}),
        "bm25 + bi-encoder": score({"bm25": 1.0, "dense": 1.0}),
    }
    teacher = {"weights": best["weights"], "ce_stats": list(stats)}
    _write_json(ctx.work / "teacher_ensemble.json", teacher)
    return {"teacher": teacher, "best_val": best, "validation": singles, "grid": grid}


# --- step 6: students ------------------------------------------------------------------------


def _teacher_targets(ctx: Context) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (doc rows, teacher scores) for every scored query, under the tuned ensemble."""
    saved = _read_json(ctx.work / "ce_scores.json")["rows"]
    teacher = _read_json(ctx.work / "teacher_ensemble.json")
    stats = tuple(teacher["ce_stats"])
    out = {}
    for key, entry in saved.items():
        f = teacher_features(ctx, key, entry, stats)
        out[key] = (np.asarray(entry["rows"], np.int64), combine(f, teacher["weights"]))
    return out


def student_loss(scores, teacher, positives, spec: StudentSpec):
    """One query's loss over its candidates: `distill_weight` x KL(teacher || student) at
    `spec.temperature`, plus `label_weight` x `label_listwise` on its qrels' positives (0 for
    a list without one)."""
    import torch
    from torch.nn import functional as F

    from twinbert_search.training.losses import label_listwise

    loss = spec.distill_weight * F.kl_div(
        torch.log_softmax(scores / spec.temperature, -1),
        torch.softmax(teacher / spec.temperature, -1),
        reduction="sum",
    )
    if spec.label_weight:
        loss = loss + spec.label_weight * label_listwise(scores, positives)
    return loss


def train_student(
    ctx: Context,
    spec: StudentSpec,
    targets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    save: bool = True,
) -> dict[str, Any]:
    """Distil one student with a frozen document tower; save and export it to OUT/SPEC.NAME.

    Listwise loss: KL divergence between the teacher's and the student's softmax over each
    query's candidates at `spec.temperature` (plus `spec.label_weight` x the labels'); the
    checkpoint with the best validation nDCG@10 (on the validation queries' candidates) is
    kept, then Platt-scaled on those candidates (`calibration`): the listwise losses leave the
    logits' level free, and the served probabilities must not saturate.
    `save=False` only trains and validates.
    """
    import torch

    from twinbert_search.manifest import ModelManifest
    from twinbert_search.runtime.tokenization import TextTokenizer
    from twinbert_search.training.calibration import fit_platt
    from twinbert_search.training.crossing import build_crossing, fold_affine
    from twinbert_search.training.data import batch_indices, linear_schedule
    from twinbert_search.training.export import export_model
    from twinbert_search.training.modeling import Tower, TwinBert, load_backbone
    from twinbert_search.training.tokenizer import tokenizer_file, torch_batch

    cfg = ctx.cfg
    cand = ctx.load_candidates()
    base = ModelManifest.load(ctx.base_model)
    torch.manual_seed(cfg.seed)
    query = Tower(
        load_backbone(ctx.checkpoint, spec.num_layers), spec.pooling, None, base.normalize
    )
    doc = TwinBert.load(ctx.base_model).doc_tower  # the base model's, exactly
    for p in doc.parameters():
        p.requires_grad_(False)
    crossing_cfg = CrossingConfig(spec.crossing, spec.combine)
    if spec.hidden is not None:
        crossing_cfg.hidden = spec.hidden
    crossing = build_crossing(crossing_cfg, query.dim)
    manifest = ModelManifest(
        dim=query.dim,
        pooling=spec.pooling,
        normalize=base.normalize,
        shared_towers=False,
        num_layers=query.backbone.config.num_hidden_layers,
        max_query_length=cfg.max_query_length,
        max_doc_length=base.max_doc_length,
        crossing=crossing_cfg,
        base_model=str(ctx.checkpoint),
    )
    model = TwinBert(query, doc, crossing, manifest)
    tok = TextTokenizer.from_file(tokenizer_file(ctx.checkpoint), cfg.max_query_length)
    dvec = torch.from_numpy(cand["dvec"])
    splits = ("train", "pseudo") if spec.pseudo else ("train",)
    keys = sorted(k for k in targets if k.split(":", 1)[0] in splits)
    val_keys = sorted(k for k in targets if k.startswith("val:"))
    text = {k: cand["queries"][cand["pos"][k.split(":", 1)[1]]]["text"] for k in targets}
    steps = spec.steps or cfg.student_steps
    positive_mask = {}  # key -> which of its candidate rows are qrels positives
    for k in [*keys, *val_keys]:
        pos = set(cand["queries"][cand["pos"][k.split(":", 1)[1]]]["positives"])
        rows = targets[k][0]
        positive_mask[k] = torch.tensor([ctx.doc_ids[r] in pos for r in rows], dtype=torch.bool)
    params = [p for p in query.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": params, "lr": cfg.student_lr},
            {"params": list(crossing.parameters()), "lr": cfg.crossing_lr},
        ],
        weight_decay=0.01,
    )
    sched = linear_schedule(opt, steps, max(1, steps // 10))

    def student_scores(batch_keys: Sequence[str]) -> list[torch.Tensor]:
        qv = query(**torch_batch(tok, [text[k] for k in batch_keys]))
        out = []
        for i, k in enumerate(batch_keys):
            rows = torch.from_numpy(targets[k][0])
            d = dvec[rows]
            out.append(crossing(qv[i : i + 1].expand(len(rows), -1), d))
        return out

    def validate() -> float:
        query.eval()
        crossing.eval()
        run, qrels = {}, {}
        with torch.no_grad():
            for start in range(0, len(val_keys), 64):
                part = val_keys[start : start + 64]
                for k, s in zip(part, student_scores(part), strict=True):
                    qid = k.split(":", 1)[1]
                    rows = targets[k][0]
                    run[qid] = {ctx.doc_ids[r]: float(x) for r, x in zip(rows, s, strict=True)}
                    pos = cand["queries"][cand["pos"][qid]]["positives"]
                    qrels[qid] = {d: 1 for d in pos}
        query.train()
        crossing.train()
        return evaluate(qrels, run, ("ndcg@10",))["ndcg@10"]

    def calibrate(cal_keys: Sequence[str]) -> dict[str, Any]:
        """Platt-scale the crossing on these queries' labelled candidates (see calibration)."""
        query.eval()
        crossing.eval()
        logits, labels = [], []
        with torch.no_grad():
            for start in range(0, len(cal_keys), 64):
                part = cal_keys[start : start + 64]
                for k, s in zip(part, student_scores(part), strict=True):
                    logits += s.tolist()
                    labels += positive_mask[k].tolist()
        before = [min(logits), max(logits)] if logits else []
        try:
            a, b = fit_platt(np.asarray(logits), np.asarray(labels, np.float64))
        except ValueError as exc:  # e.g. no labelled pair: leave the logits as trained
            return {"skipped": str(exc)}
        fold_affine(crossing, a, b)
        return {"a": a, "b": b, "pairs": len(logits), "logit_range_before": before}

    history: list[dict[str, float]] = []
    best_val, best_state = validate() if val_keys else 0.0, None
    history.append({"step": 0, "val_ndcg@10": best_val})
    eval_every = max(1, steps // 8)
    query.train()
    for step in range(steps):
        batch_keys = [keys[i] for i in batch_indices(len(keys), cfg.student_batch, step, cfg.seed)]
        losses = []
        for k, s in zip(batch_keys, student_scores(batch_keys), strict=True):
            t = torch.from_numpy(np.asarray(targets[k][1], np.float32))
            losses.append(student_loss(s, t, positive_mask[k], spec))
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params + list(crossing.parameters()), 1.0)
        opt.step()
        sched.step()
        if val_keys and ((step + 1) % eval_every == 0 or step + 1 == steps):
            v = validate()
            history.append({"step": step + 1, "loss": float(loss.detach()), "val_ndcg@10": v})
            if best_state is None or v >= best_val:
                best_val = v
                best_state = {
                    "query": {k: x.clone() for k, x in query.state_dict().items()},
                    "crossing": {k: x.clone() for k, x in crossing.state_dict().items()},
                    "step": step + 1,
                }
    if best_state is not None:
        query.load_state_dict(best_state["query"])
        crossing.load_state_dict(best_state["crossing"])
    calibration = calibrate(val_keys or keys)
    if not save:
        return {"val_ndcg@10": best_val, "history": history}
    model.eval()
    folder = ctx.out / spec.name
    model.manifest.extra["distillation"] = {
        "teacher": _read_json(ctx.work / "teacher_ensemble.json"),
        "spec": asdict(spec),
        "best_step": None if best_state is None else best_state["step"],
        "calibration": calibration,
        "frozen_document_tower": str(ctx.base_model),
    }
    # The document tower is the base model's, frozen: its stored vectors serve this model.
    model.manifest.document_fingerprint = base.document_fingerprint or base.fingerprint
    model.save(folder, tokenizer_file(ctx.checkpoint))
    report = export_model(folder, int8=True)
    return {"val_ndcg@10": best_val, "history": history, "export": report.lines()}


def tune_lexical_fusion(ctx: Context, runtime) -> dict[str, Any]:
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
    targets = _teacher_targets(ctx)
    done_path = ctx.work / "students.json"
    done = _read_json(done_path) if done_path.is_file() else {}
    for spec in ctx.cfg.students:
        manifest = ctx.out / spec.name / "manifest.json"
        if spec.name in done and manifest.is_file():
            trained = _read_json(manifest)["extra"].get("distillation", {}).get("spec")
            if trained == asdict(spec):
                continue  # a changed spec retrains that student only
        t0 = time.perf_counter()
        done[spec.name] = train_student(ctx, spec, targets)
        done[spec.name]["lexical_fusion"] = _store_lexical_fusion(ctx, ctx.out / spec.name)
        done[spec.name]["seconds"] = time.perf_counter() - t0
        _write_json(done_path, done)
    keys = ("val_ndcg@10", "seconds", "lexical_fusion")
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


# --- step 7: evaluate ------------------------------------------------------------------------


def _with_tail(reranked: Sequence[int], recall: Sequence[int]) -> list[int]:
    """The reranked candidates, then the rest of the recall list in its order."""
    seen = set(reranked)
    return [*reranked, *(r for r in recall if r not in seen)]


def _order(rows: Sequence[int], scores: np.ndarray, doc_ids: Sequence[str]) -> list[int]:
    return [rows[i] for i in sorted(range(len(rows)), key=lambda i: (-scores[i], doc_ids[rows[i]]))]


def step_evaluate(ctx: Context) -> dict[str, Any]:
    """Every row on the test queries, on the same recall candidates; the tables."""
    from twinbert_search.runtime.model import TwinBertRuntime
    from twinbert_search.search import Searcher
    from twinbert_search.stores.codecs import get_codec

    cfg = ctx.cfg
    cand = ctx.load_candidates()
    test = [(qi, q) for qi, q in enumerate(cand["queries"]) if q["split"] == "test"]
    qrels = {q["id"]: {d: 1 for d in q["positives"]} for _, q in test}
    saved = _read_json(ctx.work / "ce_test_scores.json")
    teacher = _read_json(ctx.work / "teacher_ensemble.json")
    stats = tuple(teacher["ce_stats"])
    depth, deep = cfg.rerank_depth, cfg.deep_depth
    recall_name = cand["recall"]
    ce_timing = saved["timing"].get("test", {})
    ce_ms = 1e3 * ce_timing.get("seconds", 0.0) / max(1, ce_timing.get("queries", 1))
    rows_out: list[dict[str, Any]] = []

    def add(name: str, run_rows: Mapping[str, list[int]], ms: float | None, note: str) -> None:
        run = {qid: _ranked(ctx, r) for qid, r in run_rows.items()}
        rows_out.append(
            {"system": name, **evaluate(qrels, run, METRICS), "rerank_ms": ms, "note": note}
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
    ce_runs: dict[str, list[int]] = {}
    teacher_runs: dict[str, list[int]] = {}
    for _, q in test:
        entry = saved["rows"][f"test:{q['id']}"]
        rows = entry["rows"]
        f = teacher_features(ctx, f"test:{q['id']}", entry, stats)
        ce_runs[q["id"]] = _with_tail(_order(rows, f["ce"], ctx.doc_ids), q["recall"])
        teacher_runs[q["id"]] = _with_tail(
            _order(rows, combine(f, teacher["weights"]), ctx.doc_ids), q["recall"]
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
                runs[q["id"]] = _with_tail(_order(rows, scores, ctx.doc_ids), q["recall"])
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
    paired = _paired_timing(ctx, test[: cfg.timing_queries])
    served_timing = _served_rows(ctx, add, ce_ms)
    result = {
        "rows": rows_out,
        "paired_timing": paired,
        "served_timing": served_timing,
        "student_timings": timings,
        "students_served_from_base_index": served,
        "teacher_ms_per_query": ce_ms,
        "teacher_timing": ce_timing,
    }
    _write_json(ctx.out / RESULTS_JSON, result)
    return result


def _fused_runs(
    ctx: Context,
    runtime,
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
        runs[q["id"]] = _with_tail(_order(rows, scores, ctx.doc_ids), ranked)
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


TIMING_BLOCK = 5  # queries per turn when systems are timed in alternating blocks


def block_timing(
    systems: Mapping[str, Callable[[Any], object]],
    queries: Sequence[Any],
    warm: Any,
    block: int = TIMING_BLOCK,
) -> dict[str, Any]:
    """Time every system on the same queries, each in its steady state, in alternating blocks.

    The systems take turns block by block, the order reversed every other block, so drift in
    the machine's load falls on all of them alike. Before its block a system runs once,
    untimed, on `warm` (a query outside the timed set): a serving process answers query after
    query, so its weights are in cache, while here the other systems ran in between. That first
    call is reported apart, as the cold cost ('cold_ms_per_call').
    """
    names = list(systems)
    samples: dict[str, list[float]] = {n: [] for n in names}
    cold: dict[str, list[float]] = {n: [] for n in names}
    for b, start in enumerate(range(0, len(queries), block)):
        part = queries[start : start + block]
        for name in names if b % 2 == 0 else names[::-1]:
            run = systems[name]
            t0 = time.perf_counter()
            run(warm)
            cold[name].append(1e3 * (time.perf_counter() - t0))
            for q in part:
                t0 = time.perf_counter()
                run(q)
                samples[name].append(1e3 * (time.perf_counter() - t0))
    return {
        "queries": len(queries),
        "block": block,
        "ms_per_query": {k: float(np.mean(v)) if v else 0.0 for k, v in samples.items()},
        "p50_ms_per_query": {k: float(np.median(v)) if v else 0.0 for k, v in samples.items()},
        "cold_ms_per_call": {k: float(np.mean(v)) if v else 0.0 for k, v in cold.items()},
    }


def _speedups(timing: dict[str, Any], teacher: str = "teacher") -> dict[str, Any]:
    mean, p50 = timing["ms_per_query"], timing["p50_ms_per_query"]
    timing["speedup"] = {k: mean[teacher] / max(v, 1e-9) for k, v in mean.items() if k != teacher}
    timing["speedup_p50"] = {k: p50[teacher] / max(v, 1e-9) for k, v in p50.items() if k != teacher}
    return timing


def _paired_timing(ctx: Context, queries: Sequence[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Teacher and students on the same queries and candidates (`block_timing`).

    A student's rerank stage here is its query tower plus the crossing over the stored vectors
    of the same candidates (these candidates were recalled with the default model's query
    vector); it is timed with its fp32 query graph and its int8 one. Each side runs as it runs
    fastest here: the teacher's batches of 32 pairs on 2 ONNX Runtime threads, a student's one
    short query on 1 (`STUDENT_THREADS`). No session spin-waits after a run, so none holds the
    cores the next one needs.
    """
    from twinbert_search.runtime.model import TwinBertRuntime

    cfg = ctx.cfg
    cand = ctx.load_candidates()
    ce = OnnxCrossEncoder(
        ctx.out / "teacher", cfg.teacher_threads or 2, int8=cfg.teacher_int8, spinning=False
    )
    depth = cfg.rerank_depth

    def teacher(q: dict[str, Any]) -> None:
        ce.score([(q["text"], ctx.doc_text(r)) for r in q["recall"][:depth]])

    def student(runtime: TwinBertRuntime) -> Callable[[dict[str, Any]], None]:
        def run(q: dict[str, Any]) -> None:
            runtime.score(runtime.encode_query(q["text"]), cand["dvec"][q["recall"][:depth]])

        return run

    systems: dict[str, Callable[[dict[str, Any]], None]] = {"teacher": teacher}
    for spec in cfg.students:
        folder = ctx.out / spec.name
        systems[spec.name] = student(_student_runtime(folder, False))
        if (folder / "onnx" / "query_encoder.int8.onnx").is_file():
            systems[f"{spec.name} (int8 query graph)"] = student(_student_runtime(folder, True))
    test = [q for q in cand["queries"] if q["split"] == "test"]
    timed = [q for _, q in queries]
    warm = next((q for q in reversed(test) if q not in timed), timed[0])
    return {"candidates": depth, **_speedups(block_timing(systems, timed, warm))}


def _student_runtime(folder: Path, int8: bool):
    from twinbert_search.runtime.model import TwinBertRuntime

    return TwinBertRuntime.load(folder, query_int8=int8, threads=STUDENT_THREADS, spinning=False)


# --- step 8: served --------------------------------------------------------------------------


SERVED_RECALL = "served_recall.json"
SERVED_SCORES = "ce_served_scores.json"


def _served_runtime(ctx: Context, spec: StudentSpec):
    """The student as served: its int8 query graph when exported (the fast one), else fp32."""
    folder = ctx.out / spec.name
    return _student_runtime(folder, (folder / "onnx" / "query_encoder.int8.onnx").is_file())


def _served_lists(ctx: Context, runtime, test: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Hybrid recall with the student's own query vector: its exact kNN fused with BM25 (RRF),
    built as `candidates` builds the default model's, which `Searcher.search(hybrid=True)`
    does over an index."""
    cfg, cand = ctx.cfg, ctx.load_candidates()
    qvec = runtime.encode_queries([q["text"] for q in test])
    out = {}
    for j, q in enumerate(test):
        dense = _top(cand["dvec"] @ qvec[j], cfg.deep_depth).tolist()
        out[q["id"]] = rrf([dense, q["bm25"]])[: cfg.deep_depth]
    return out


def step_served(ctx: Context) -> dict[str, Any]:
    """TwinBERT as served: one query encoding recalls and reranks; the teacher on its list.

    In `evaluate`'s main table every student reranks the default model's recall, so its own
    query tower is an extra cost of its rerank stage. A search over the student's index
    encodes the query once, with the student's tower, and that vector both recalls and feeds
    the crossing layer. This step builds each student's own hybrid recall for the test queries
    and has the teacher score the top candidates of those lists too (pairs already scored in
    `teacher_rerank` are reused), so the teacher and the student are compared on the same
    candidates there as well.
    """
    cfg = ctx.cfg
    cand = ctx.load_candidates()
    test = [q for q in cand["queries"] if q["split"] == "test"]
    lists = {
        spec.name: _served_lists(ctx, _served_runtime(ctx, spec), test) for spec in cfg.students
    }
    _write_json(ctx.work / SERVED_RECALL, lists)
    known = _read_json(ctx.work / "ce_test_scores.json")["rows"]
    path = ctx.work / SERVED_SCORES
    saved: dict[str, Any] = _read_json(path) if path.is_file() else {}
    ce = None
    new_pairs, seconds, last = 0, 0.0, time.perf_counter()
    for q in test:
        key = f"test:{q['id']}"
        have = dict(zip(known[key]["rows"], known[key]["ce"], strict=True))
        if key in saved:
            have.update(zip(saved[key]["rows"], saved[key]["ce"], strict=True))
        wanted = {r for rows in lists.values() for r in rows[q["id"]][: cfg.rerank_depth]}
        need = sorted(wanted - have.keys())
        if need:
            if ce is None:
                ce = OnnxCrossEncoder(
                    ctx.out / "teacher", cfg.teacher_threads, int8=cfg.teacher_int8
                )
            t0 = time.perf_counter()
            scores = ce.score([(q["text"], ctx.doc_text(r)) for r in need])
            seconds += time.perf_counter() - t0
            have.update(zip(need, scores.tolist(), strict=True))
            new_pairs += len(need)
        saved[key] = {"rows": list(have), "ce": list(have.values())}
        if time.perf_counter() - last > 60:
            _write_json(path, saved)
            last = time.perf_counter()
    _write_json(path, saved)
    return {"new_pairs": new_pairs, "scoring_seconds": seconds}


def _served_rows(ctx: Context, add: Callable[..., None], ce_ms: float) -> dict[str, Any]:
    """Rows and timings of the served setting (`step_served`), for `step_evaluate`."""
    cfg = ctx.cfg
    cand = ctx.load_candidates()
    test = [q for q in cand["queries"] if q["split"] == "test"]
    lists = _read_json(ctx.work / SERVED_RECALL)
    scored = _read_json(ctx.work / SERVED_SCORES)
    teacher = _read_json(ctx.work / "teacher_ensemble.json")
    stats, weights = tuple(teacher["ce_stats"]), teacher["weights"]
    depth, dvec = cfg.rerank_depth, cand["dvec"]
    ce = OnnxCrossEncoder(
        ctx.out / "teacher", cfg.teacher_threads or 2, int8=cfg.teacher_int8, spinning=False
    )
    timings: dict[str, Any] = {}
    for spec in cfg.students:
        runtime = _served_runtime(ctx, spec)
        own = {qid: [int(r) for r in rows] for qid, rows in lists[spec.name].items()}
        vectors = runtime.encode_queries([q["text"] for q in test])
        qvec = {q["id"]: v for q, v in zip(test, vectors, strict=True)}
        add(
            f"recall: hybrid with {spec.name}'s query vector (RRF of BM25 and its kNN)",
            own,
            None,
            "served: the student's query vector recalls",
        )
        teacher_runs, student_runs, cross_s = {}, {}, 0.0
        for q in test:
            key, rows = f"test:{q['id']}", own[q["id"]][:depth]
            have = dict(zip(scored[key]["rows"], scored[key]["ce"], strict=True))
            f = teacher_features(ctx, key, {"rows": rows, "ce": [have[r] for r in rows]}, stats)
            teacher_runs[q["id"]] = _with_tail(
                _order(rows, combine(f, weights), ctx.doc_ids), own[q["id"]]
            )
            t0 = time.perf_counter()
            scores = runtime.score(qvec[q["id"]], dvec[rows])
            cross_s += time.perf_counter() - t0
            student_runs[q["id"]] = _with_tail(_order(rows, scores, ctx.doc_ids), own[q["id"]])
        add(
            f"teacher reranking top {depth} of {spec.name}'s recall",
            teacher_runs,
            ce_ms,
            "served: the teacher on the student's own candidates",
        )
        add(
            f"{spec.name} reranking top {depth} of its own recall",
            student_runs,
            1e3 * cross_s / len(test),
            "served: the recall's query vector reranks; time = crossing only",
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
            )

        def teacher_run(q: dict[str, Any], rows_of: Mapping[str, list[int]] = own) -> None:
            ce.score([(q["text"], ctx.doc_text(r)) for r in rows_of[q["id"]][:depth]])

        def crossing(q: dict[str, Any], rt=runtime, qv=qvec, rows_of=own) -> None:
            rt.score(qv[q["id"]], dvec[rows_of[q["id"]][:depth]])

        def whole(q: dict[str, Any], rt=runtime, rows_of=own) -> None:
            rt.score(rt.encode_query(q["text"]), dvec[rows_of[q["id"]][:depth]])

        timed = test[: cfg.timing_queries]
        warm = test[-1] if len(test) > len(timed) else timed[0]
        systems = {"teacher": teacher_run, "crossing": crossing, "query tower + crossing": whole}
        timings[spec.name] = {"candidates": depth, **_speedups(block_timing(systems, timed, warm))}
    return timings


def _ratio_text(timing: Mapping[str, Any], name: str) -> str:
    mean, p50 = timing["ms_per_query"], timing["p50_ms_per_query"]
    return (
        f"{timing['speedup'][name]:.0f}x cheaper than the teacher (means {mean[name]:.2f} vs "
        f"{mean['teacher']:.0f} ms/query; medians {p50[name]:.2f} vs {p50['teacher']:.0f} ms, "
        f"{timing['speedup_p50'][name]:.0f}x; timed in alternating blocks of {timing['block']})"
    )


def render_markdown(state: Mapping[str, Any], command: str) -> str:
    """results.md: the table, the reference points, wall time, machine and command."""
    res = state["steps"]["evaluate"]["result"]
    m = state["machine"]
    lines = [
        "| system | nDCG@10 | MRR@10 | Recall@100 | rerank ms/query | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        ms = "-" if r["rerank_ms"] is None else f"{r['rerank_ms']:.2f}"
        lines.append(
            f"| {r['system']} | {r['ndcg@10']:.4f} | {r['mrr@10']:.4f} | "
            f"{r['recall@100']:.4f} | {ms} | {r['note']} |"
        )
    paired = res.get("paired_timing", {})
    for name in paired.get("speedup", {}):
        lines.append(
            f"\n{name}: rerank stage {_ratio_text(paired, name)} "
            f"({paired['queries']} test queries x {paired['candidates']} candidates of the "
            "default model's recall; the student's time is its query tower + crossing)."
        )
    for student, timing in res.get("served_timing", {}).items():
        parts = [f"{name}: {_ratio_text(timing, name)}" for name in timing["speedup"]]
        lines.append(
            f"\nServed {student} (its own recall, {timing['candidates']} candidates): "
            + "; ".join(parts)
            + "."
        )
    # A student kept from an earlier pass still cost its training time: count every student.
    seconds = {k: v["seconds"] for k, v in state["steps"].items()}
    students = state["steps"].get("students", {}).get("result", {})
    if students:
        seconds["students"] = sum(v["seconds"] for v in students.values())
    wall = sum(seconds.values())
    per_step = ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items())
    lines += [
        "",
        "Published reference points (nDCG@10, SciFact test): BM25 0.665; BM25 + MiniLM "
        "cross-encoder 0.688; all-MiniLM-L6-v2 0.645.",
        "",
        f"Recipe wall time: {wall / 60:.1f} min (minutes per step: {per_step}).",
        f"Machine: {m['nproc']} CPU cores, {m['cpu']} ({m['platform']}).",
        f"Command: `{command}`",
    ]
    return "\n".join(lines) + "\n"


# --- the runner ------------------------------------------------------------------------------


def _steps() -> list[tuple[str, Callable[[Context], dict[str, Any]]]]:
    return [
        ("index", step_index),
        ("candidates", step_candidates),
        ("teacher", step_teacher),
        ("scores", step_scores),
        ("ensemble", step_ensemble),
        ("students", step_students),
        ("teacher_rerank", step_teacher_rerank),
        ("served", step_served),
        ("evaluate", step_evaluate),
    ]


STEP_NAMES = (
    "index",
    "candidates",
    "teacher",
    "scores",
    "ensemble",
    "students",
    "teacher_rerank",
    "served",
    "evaluate",
)


# Direct inputs of each step: `redo` also forgets every step that depends on a redone one.
DEPENDS: dict[str, tuple[str, ...]] = {
    "index": (),
    "candidates": ("index",),
    "teacher": ("candidates",),
    "scores": ("teacher",),
    "ensemble": ("scores",),
    "students": ("ensemble",),
    "teacher_rerank": ("teacher",),
    "served": ("students", "teacher_rerank"),
    "evaluate": ("students", "teacher_rerank", "ensemble", "served"),
}


def _dependents(name: str) -> set[str]:
    out = {name}
    changed = True
    while changed:
        changed = False
        for step, deps in DEPENDS.items():
            if step not in out and out.intersection(deps):
                out.add(step)
                changed = True
    return out


def _check_steps(names: Sequence[str]) -> None:
    for name in names:
        if name not in STEP_NAMES:
            raise ConfigurationError(f"unknown step {name!r} (steps: {', '.join(STEP_NAMES)})")


def run_recipe(
    cfg: RecipeConfig,
    *,
    until: str | None = None,
    redo: Sequence[str] = (),
    only: Sequence[str] = (),
    on_step: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the recipe; return the state.

    `until` stops after that step; `redo` forgets those steps and the steps depending on
    them, so they run again; `only` runs just those steps (their inputs must be done), so an
    independent step can run in a second process. The state file is re-read before each
    write, so such processes do not lose each other's steps.
    """
    _check_steps([*([until] if until else []), *redo, *only])
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    state: dict[str, Any] = _read_json(state_path) if state_path.is_file() else {"steps": {}}
    forget: set[str] = set().union(*(_dependents(n) for n in redo)) if redo else set()
    for name in forget:
        state["steps"].pop(name, None)
    state["config"] = _config_dict(cfg)
    state["machine"] = machine()
    _write_json(state_path, state)
    ctx = Context(cfg)
    for name, fn in _steps():
        if name in state["steps"] or (only and name not in only):
            continue
        missing = [d for d in DEPENDS[name] if d not in state["steps"]]
        if missing:
            raise ConfigurationError(f"step {name} needs {', '.join(missing)} first")
        log.info("recipe step %s", name)
        t0 = time.perf_counter()
        result = fn(ctx)
        entry = {
            "seconds": time.perf_counter() - t0,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "result": result,
        }
        state = _read_json(state_path)
        state["steps"][name] = entry
        _write_json(state_path, state)
        if on_step is not None:
            on_step(name, entry)
        if name == until:
            break
    return state


def _config_dict(cfg: RecipeConfig) -> dict[str, Any]:
    return asdict(cfg)


def config_from_dict(data: Mapping[str, Any]) -> RecipeConfig:
    data = dict(data)
    students = [StudentSpec(**s) for s in data.pop("students", [])] or default_students()
    return RecipeConfig(students=students, **data)


def exploration_grid(steps: int = 400) -> list[StudentSpec]:
    """One change at a time from the recipe's TwinBERT-res (residual/mul, hidden 128, weighted
    pooling, train queries, KL + 2 x label loss), at the recipe's 400 steps: the loss mix, the
    combination (the paper's max and concat against mul) and the cosine crossing.

    An earlier grid (query depth, pooling, temperature, pseudo-queries; RESULTS.md) fixed the
    other settings; it is in the history of this function.
    """
    base = {"hidden": 128, "pooling": "weighted", "pseudo": False, "steps": steps}
    return [
        StudentSpec("res-mul-label2", combine="mul", label_weight=2.0, **base),
        StudentSpec("res-mul-distill-only", combine="mul", **base),
        StudentSpec(
            "res-mul-labels-only", combine="mul", label_weight=1.0, distill_weight=0.0, **base
        ),
        StudentSpec("res-mul-label1", combine="mul", label_weight=1.0, **base),
        StudentSpec("res-mul-label4", combine="mul", label_weight=4.0, **base),
        StudentSpec("res-max-label2", combine="max", label_weight=2.0, **base),
        StudentSpec("res-concat-label2", combine="concat", label_weight=2.0, **base),
        StudentSpec("cos-mean-label2", "cosine", pooling="mean", label_weight=2.0, steps=steps),
    ]


def explore_students(cfg: RecipeConfig, specs: Sequence[StudentSpec] | None = None) -> Path:
    """Train each spec (no export) and record its validation nDCG@10 in OUT/explore.json."""
    ctx = Context(cfg)
    targets = _teacher_targets(ctx)
    path = ctx.out / "explore.json"
    done = _read_json(path) if path.is_file() else {}
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
        _write_json(path, done)
    return path
