"""The cross-encoder teacher: train it on a BEIR folder, load it, and score (query, doc) pairs.

TwinBERT (Lu, Jiao, Zhang 2020) distils a full-interaction BERT, which reads query and
document together, into the twin encoders. Our teacher is a BERT backbone over
`[CLS] query [SEP] document [SEP]` with a pooling ([CLS] or mean) and a linear head giving one
relevance logit. Any local Hugging Face sequence-classification checkpoint can serve as the
teacher instead (one label: its logit; two labels: logit of class 1 minus class 0).

A teacher directory written by `train_teacher`:

    teacher.json        format version, pooling, max_length, base model, fingerprint, validation
    tokenizer.json      the tokenizer the teacher was trained with
    backbone/           HF checkpoint (config.json, model.safetensors)
    head.safetensors    pooling + linear head
    checkpoint/         latest training state, for resuming (state.pt)
    train_log.json      per-step losses and validation metrics
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from twinbert_search import __version__
from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, InputError, ModelError
from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.ingest.readers import Qrels
from twinbert_search.runtime.models import default_checkpoint
from twinbert_search.runtime.tokenization import TextTokenizer
from twinbert_search.training.data import (
    CHECKPOINT_DIR,
    Checkpointing,
    TrainingQuery,
    Validation,
    build_bm25,
    check_resume_config,
    load_checkpoint,
    load_training_data,
    mine_queries,
    split_validation,
)
from twinbert_search.training.modeling import BERT_LIKE, Pooling, bert_inputs, load_backbone
from twinbert_search.training.teacher_loop import fit_teacher
from twinbert_search.training.tokenizer import to_torch, tokenizer_file

__all__ = [
    "TEACHER_FILE",
    "CrossEncoder",
    "TeacherScorer",
    "load_teacher",
    "rerank_metrics",
    "train_teacher",
]

log = logging.getLogger(__name__)

TEACHER_FILE = "teacher.json"
TEACHER_FORMAT = 1
HEAD_FILE = "head.safetensors"
BACKBONE_DIR = "backbone"
TEACHER_POOLINGS = ("cls", "mean")
StepCallback = Callable[[int, float], None]


def _fingerprint(module: nn.Module, identity: Mapping[str, Any]) -> str:
    """sha256 over the identity and every weight: equal fingerprints score alike."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu()
        t = t.to(torch.float32) if t.is_floating_point() else t
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


class CrossEncoder(nn.Module):
    """BERT over a (query, document) pair -> pooling -> dropout -> linear -> one logit."""

    def __init__(self, backbone: nn.Module, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in TEACHER_POOLINGS:
            raise ConfigurationError(
                f"teacher pooling must be one of {TEACHER_POOLINGS}, got {pooling!r}"
            )
        config = backbone.config
        self.backbone = backbone
        self.pooling = Pooling(config.hidden_size, pooling)
        self.dropout = nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1))
        self.head = nn.Linear(config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.head.bias)

    @property
    def pooling_mode(self) -> str:
        return self.pooling.mode

    @classmethod
    def from_checkpoint(cls, path: str | Path, pooling: str = "cls") -> CrossEncoder:
        """A fresh head on a local BERT-family checkpoint (raises ModelError otherwise)."""
        return cls(load_backbone(path).float(), pooling)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pair batch -> logits (batch,)."""
        inputs = bert_inputs(self.backbone.config, input_ids, attention_mask, token_type_ids)
        tokens = self.backbone(**inputs).last_hidden_state
        pooled = self.pooling(tokens, attention_mask)
        return self.head(self.dropout(pooled)).squeeze(-1)

    def fingerprint(self) -> str:
        return _fingerprint(self, {"kind": "cross-encoder", "pooling": self.pooling_mode})

    def save(
        self,
        folder: str | Path,
        tokenizer_path: str | Path,
        *,
        max_length: int,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write a teacher directory (backbone/, head, tokenizer.json, then teacher.json)."""
        import transformers

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(folder / BACKBONE_DIR), safe_serialization=True)
        head = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        head.update({f"pooling.{k}": v for k, v in self.pooling.state_dict().items()})
        save_file({k: v.detach().cpu().contiguous() for k, v in head.items()}, folder / HEAD_FILE)
        shutil.copyfile(tokenizer_path, folder / "tokenizer.json")
        meta = {
            "format_version": TEACHER_FORMAT,
            "kind": "cross-encoder",
            "pooling": self.pooling_mode,
            "max_length": max_length,
            "fingerprint": self.fingerprint(),
            "versions": {
                "twinbert_search": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            **dict(extra or {}),
        }
        (folder / TEACHER_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> tuple[CrossEncoder, dict[str, Any]]:
        """A teacher directory written by `save`, with its teacher.json."""
        folder = Path(folder)
        meta = _read_teacher_json(folder)
        model = cls(load_backbone(folder / BACKBONE_DIR).float(), meta.get("pooling", "cls"))
        state = load_file(str(folder / HEAD_FILE))
        for name, module in (("head", model.head), ("pooling", model.pooling)):
            sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            module.load_state_dict(sub)
        return model, meta


def _read_teacher_json(folder: Path) -> dict[str, Any]:
    path = folder / TEACHER_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable teacher manifest ({exc})", path=str(path)) from None
    if meta.get("format_version", TEACHER_FORMAT) > TEACHER_FORMAT:
        raise ModelError(
            f"{path}: teacher format {meta['format_version']} is newer than this "
            f"twinbert-search ({__version__}) understands; upgrade twinbert-search",
            path=str(path),
        )
    if not (folder / HEAD_FILE).is_file() or not (folder / BACKBONE_DIR).is_dir():
        raise ModelError(
            f"{folder}: incomplete teacher directory (needs {BACKBONE_DIR}/ and {HEAD_FILE})",
            path=str(folder),
        )
    return meta


class SequenceClassifier(nn.Module):
    """A Hugging Face sequence-classification model reduced to one relevance logit."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_labels = int(model.config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = bert_inputs(self.model.config, input_ids, attention_mask, token_type_ids)
        logits = self.model(**inputs).logits
        return logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]


def _load_sequence_classifier(path: Path, config: Any) -> SequenceClassifier:
    from transformers import AutoModelForSequenceClassification

    if config.model_type not in BERT_LIKE:
        raise ModelError(
            f"{path}: model_type {config.model_type!r} is not BERT-like "
            f"(supported: {', '.join(BERT_LIKE)})",
            path=str(path),
        )
    if config.num_labels not in (1, 2):
        raise ModelError(
            f"{path}: a teacher needs 1 or 2 labels (relevance), this one has {config.num_labels}",
            path=str(path),
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), config=config, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load weights ({exc})", path=str(path)) from None
    return SequenceClassifier(model.float())


class TeacherScorer:
    """Scores (query, document) pairs with a teacher, in length-sorted batches, without grad.

    `fingerprint` identifies the scores (weights and max_length), so cached scores are reused
    only for the very teacher that produced them.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: TextTokenizer,
        model_fingerprint: str,
        batch_size: int = 32,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.fingerprint = hashlib.sha256(
            f"{model_fingerprint}:{tokenizer.max_length}".encode()
        ).hexdigest()

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    def score(self, pairs: Sequence[tuple[str, str]], *, progress: bool = False) -> np.ndarray:
        """Logits (float32, one per pair, in input order)."""
        for i, (query, doc) in enumerate(pairs):
            if not query.strip() or not doc.strip():
                side = "query" if not query.strip() else "document"
                raise InputError(f"pair {i} has an empty {side} text")
        out = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return out
        encodings = self.tokenizer.encode_pairs(pairs)
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        was_training = self.model.training
        self.model.eval()
        bar = tqdm(
            total=len(pairs), disable=not progress, desc="teacher scores", unit="pair", leave=False
        )
        try:
            with torch.no_grad():
                for start in range(0, len(order), self.batch_size):
                    rows = order[start : start + self.batch_size]
                    batch = to_torch(self.tokenizer.pad([encodings[i] for i in rows]))
                    out[rows] = self.model(**batch).float().numpy()
                    bar.update(len(rows))
        finally:
            bar.close()
            self.model.train(was_training)
        return out


def load_teacher(
    path: str | Path, *, max_length: int | None = None, batch_size: int = 32
) -> TeacherScorer:
    """A scorer from our teacher directory or a local HF sequence-classification checkpoint.

    `max_length` defaults to the length the teacher was trained with (ours) or 256 (HF),
    capped by the backbone's position embeddings.
    """
    from transformers import AutoConfig

    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"teacher directory not found: {path}", path=str(path))
    if (path / TEACHER_FILE).is_file():
        model, meta = CrossEncoder.load(path)
        positions = model.backbone.config.max_position_embeddings
        length = min(max_length or int(meta.get("max_length", 256)), positions)
        fingerprint = model.fingerprint()
    else:
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is neither a twinbert-search teacher ({TEACHER_FILE}) nor a Hugging "
                "Face checkpoint (config.json)",
                path=str(path),
            )
        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: unreadable config.json ({exc})", path=str(path)) from None
        architectures = config.architectures or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise ModelError(
                f"{path} is not a sequence-classification checkpoint (architectures: "
                f"{', '.join(architectures) or 'none'}); train a teacher from it with "
                "`twinbert-search teacher train --checkpoint`",
                path=str(path),
            )
        model = _load_sequence_classifier(path, config)
        length = min(max_length or 256, config.max_position_embeddings)
        fingerprint = _fingerprint(model, {"kind": "hf-sequence-classification"})
    if length < 8:
        raise ConfigurationError(f"teacher max_length must be at least 8, got {length}")
    tokenizer = TextTokenizer.from_file(tokenizer_file(path), length)
    return TeacherScorer(model.eval(), tokenizer, fingerprint, batch_size)


def rerank_metrics(
    scorer: TeacherScorer,
    queries: Sequence[TrainingQuery],
    corpus: Mapping[str, Document],
    qrels: Qrels,
) -> dict[str, dict[str, float]]:
    """nDCG@10 and MRR@10 of BM25's ranking and of the teacher reranking it, per system."""
    pairs = [(q.text, corpus[d].encoding_text) for q in queries for d in q.bm25]
    scores = iter(scorer.score(pairs).tolist())
    judged = {q.id: qrels[q.id] for q in queries}
    bm25_run = {q.id: [(d, float(len(q.bm25) - r)) for r, d in enumerate(q.bm25)] for q in queries}
    rerank = {q.id: {d: next(scores) for d in q.bm25} for q in queries}
    metrics = ("ndcg@10", "mrr@10")
    return {
        "bm25": evaluate(judged, bm25_run, metrics),
        "teacher": evaluate(judged, rerank, metrics),
    }


def _replace_teacher(
    model: CrossEncoder, out_dir: Path, tokenizer_path: Path, max_length: int, extra: dict
) -> None:
    """Swap a new teacher into out_dir; teacher.json goes last, so it marks a complete dir."""
    tmp = out_dir / ".teacher.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, tokenizer_path, max_length=max_length, extra=extra)
    (out_dir / TEACHER_FILE).unlink(missing_ok=True)
    for name in (BACKBONE_DIR, HEAD_FILE, "tokenizer.json"):
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
    os.replace(tmp / TEACHER_FILE, out_dir / TEACHER_FILE)
    shutil.rmtree(tmp, ignore_errors=True)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ConfigurationError(f"{name} must be positive, got {value}")


def train_teacher(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    steps: int = 1000,
    batch_size: int = 8,
    lr: float = 2e-5,
    negatives: int = 3,
    max_length: int = 192,
    pooling: str = "cls",
    seed: int = 0,
    eval_every: int = 200,
    checkpoint_every: int | None = None,
    validation_queries: int = 50,
    rerank_depth: int = 20,
    bm25_depth: int = 50,
    warmup_fraction: float = 0.1,
    resume: bool = True,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> Path:
    """Fine-tune a cross-encoder teacher with BCE on labelled pairs; return out_dir.

    Each step takes `batch_size` training queries, each with one positive and `negatives`
    hard negatives from BM25's top `bm25_depth`. Every `eval_every` steps the teacher reranks
    BM25's top `rerank_depth` of a seeded validation split (up to `validation_queries` of the
    train queries) and out_dir keeps the best teacher by nDCG@10. The training state is saved
    to out_dir/checkpoint every `checkpoint_every` steps (default: `eval_every`); with
    `resume`, rerunning the same call continues from it. `on_step(step, loss)` runs after each
    step's bookkeeping (tests raise from it to simulate an interruption). The loop itself is
    `fit_teacher`, which the SciFact recipe drives with its own candidates and loss.
    """
    _check_positive(
        steps=steps, batch_size=batch_size, lr=lr, negatives=negatives, eval_every=eval_every
    )
    checkpoint_every = checkpoint_every or eval_every
    _check_positive(checkpoint_every=checkpoint_every, rerank_depth=rerank_depth)
    if pooling not in TEACHER_POOLINGS:
        raise ConfigurationError(
            f"teacher pooling must be one of {TEACHER_POOLINGS}, got {pooling!r}"
        )
    if max_length < 8:
        raise ConfigurationError(f"max_length must be at least 8, got {max_length}")
    checkpoint = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    out_dir = Path(out_dir)

    data = load_training_data(data_dir, "train")
    index = build_bm25(data.corpus)
    train_ids, val_ids = split_validation(
        data.labelled_query_ids(), max_queries=validation_queries, seed=seed
    )
    train_q = mine_queries(data, train_ids, index, depth=bm25_depth)
    val_q = mine_queries(data, val_ids, index, depth=rerank_depth)

    torch.manual_seed(seed)
    model = CrossEncoder.from_checkpoint(checkpoint, pooling)
    tok_path = tokenizer_file(checkpoint)
    max_length = min(max_length, model.backbone.config.max_position_embeddings)
    tokenizer = TextTokenizer.from_file(tok_path, max_length)
    run_config = {
        "checkpoint": str(checkpoint.resolve()),
        "data": str(Path(data_dir).resolve()),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "negatives": negatives,
        "max_length": max_length,
        "pooling": pooling,
        "seed": seed,
        "eval_every": eval_every,
        "validation_queries": validation_queries,
        "rerank_depth": rerank_depth,
        "bm25_depth": bm25_depth,
        "warmup_fraction": warmup_fraction,
    }
    ckpt_dir = out_dir / CHECKPOINT_DIR
    state = load_checkpoint(ckpt_dir) if resume else None
    if state is not None:
        check_resume_config(state["config"], run_config, ckpt_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scorer = TeacherScorer(model, tokenizer, "training")

    def save_best(step: int, metrics: dict) -> None:
        extra = {
            "base_model": str(checkpoint),
            "training": {"step": step, "steps": steps, "seed": seed, "validation": metrics},
        }
        _replace_teacher(model, out_dir, tok_path, max_length, extra)

    def validate() -> Validation:
        metrics = rerank_metrics(scorer, val_q, data.corpus, data.qrels)
        ndcg, bm25 = metrics["teacher"]["ndcg@10"], metrics["bm25"]["ndcg@10"]
        log.info("validation ndcg@10 %.4f (bm25 %.4f)", ndcg, bm25)
        return Validation(ndcg, {"validation": metrics})

    fit = fit_teacher(
        model,
        tokenizer,
        train_q,
        data.corpus,
        steps=steps,
        batch_size=batch_size,
        negatives=negatives,
        lr=lr,
        warmup_steps=max(1, round(warmup_fraction * steps)),
        seed=seed,
        corpus_ids=sorted(data.corpus),
        validate=validate if val_q else None,
        eval_every=eval_every,
        on_best=lambda best, result: save_best(best["step"], result.record["validation"]),
        checkpoint=Checkpointing(ckpt_dir, checkpoint_every, run_config),
        state=state,
        progress=progress,
        on_step=on_step,
    )
    if not (out_dir / TEACHER_FILE).is_file():
        # No validation split, or a kill inside the final swap: the last weights.
        save_best(steps, {})
    log_path = out_dir / "train_log.json"
    log_path.write_text(json.dumps({"best": fit.best, "history": fit.history}, indent=1) + "\n")
    return out_dir
