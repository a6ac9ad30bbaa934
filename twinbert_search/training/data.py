"""Training data for the teacher and the student, and the bookkeeping that makes runs resumable.

Supervision comes from a BEIR folder: each judged query with its relevant documents
(positives) and hard negatives, BM25's top documents that are not judged relevant. Pseudo-
queries add weak supervision from the corpus alone: a document's title or one of its
sentences, asked as a query of its own document and paired with BM25 candidates.

Every random choice draws from a generator seeded by (seed, step, stream), never from a
global state, so the batch of step s is the same whether the run started at 0 or resumed at
s. That is what makes an interrupted run finish with exactly the weights of an uninterrupted
one; the checkpoint helpers at the end hold the rest (weights, optimizer, schedule, torch RNG).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from twinbert_search.documents import Document, Query
from twinbert_search.errors import ConfigurationError, InputError, ModelError
from twinbert_search.ingest.readers import Qrels, load_beir, validate_qrels
from twinbert_search.stores.embedded.bm25 import BM25Index

__all__ = [
    "CHECKPOINT_DIR",
    "Checkpointing",
    "ResumeMismatch",
    "TrainingData",
    "TrainingQuery",
    "Validation",
    "batch_indices",
    "build_bm25",
    "check_resume_config",
    "linear_schedule",
    "load_checkpoint",
    "load_training_data",
    "mine_queries",
    "pseudo_queries",
    "pseudo_query_text",
    "sample_group",
    "save_checkpoint",
    "split_validation",
    "step_rng",
]

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
PSEUDO_PREFIX = "pseudo:"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class TrainingData:
    """A BEIR split whose qrels are checked against the corpus and the queries."""

    corpus: dict[str, Document]
    queries: dict[str, Query]
    qrels: Qrels
    source: str

    def positives(self, query_id: str) -> tuple[str, ...]:
        """Documents judged relevant (score > 0), in sorted order for determinism."""
        return tuple(sorted(d for d, rel in self.qrels.get(query_id, {}).items() if rel > 0))

    def labelled_query_ids(self) -> list[str]:
        """Queries with at least one positive, sorted: the only ones that can be trained on."""
        return sorted(qid for qid in self.queries if self.positives(qid))


def load_training_data(data_dir: str | Path, split: str = "train") -> TrainingData:
    """Read a BEIR folder's corpus, queries and `qrels/<split>.tsv`, rejecting unknown ids.

    Unlike evaluation (where BEIR tolerates judged documents missing from the corpus), training
    must fail: an unknown id would silently drop a positive pair.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError("data directory not found", source=str(root))
    corpus, queries, qrels = load_beir(root, split)
    source = str(root / "qrels" / f"{split}.tsv")
    if not corpus:
        raise InputError("corpus is empty", source=str(root / "corpus.jsonl"))
    validate_qrels(qrels, query_ids=queries, doc_ids=corpus, source=source)
    data = TrainingData(corpus, queries, qrels, source)
    if not data.labelled_query_ids():
        raise InputError("no query has a relevant document (score > 0)", source=source)
    return data


def split_validation(
    query_ids: Sequence[str], *, fraction: float = 0.1, max_queries: int = 50, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Carve a seeded validation set from the training queries: (train ids, validation ids).

    At least one query stays for training; with a single query there is no validation set.
    """
    if not 0 <= fraction < 1:
        raise ConfigurationError(f"validation fraction must be in [0, 1), got {fraction}")
    ids = sorted(query_ids)
    n_val = 0 if len(ids) < 2 or fraction == 0 else max(1, round(fraction * len(ids)))
    n_val = min(n_val, max_queries, len(ids) - 1)
    order = np.random.default_rng([seed, 7919]).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    held = set(val)
    return [q for q in ids if q not in held], val


@dataclass(frozen=True)
class TrainingQuery:
    """A query with its positives and its BM25 ranking (which may contain the positives)."""

    id: str
    text: str
    positives: tuple[str, ...]
    bm25: tuple[str, ...]
    pseudo: bool = False

    @property
    def hard_negatives(self) -> tuple[str, ...]:
        """BM25's ranking without the positives: lexically close, judged not relevant."""
        pos = set(self.positives)
        return tuple(d for d in self.bm25 if d not in pos)


def build_bm25(corpus: Mapping[str, Document]) -> BM25Index:
    """BM25 over each document's encoding text (title + text), in corpus order."""
    ids = list(corpus)
    return BM25Index.build(ids, (corpus[d].encoding_text for d in ids))


def mine_queries(
    data: TrainingData, query_ids: Iterable[str], index: BM25Index, *, depth: int
) -> list[TrainingQuery]:
    """Judged queries with their positives and BM25 top-`depth` (the hard-negative pool)."""
    out = []
    for qid in query_ids:
        text = data.queries[qid].text
        ranked = tuple(doc_id for doc_id, _ in index.search(text, depth))
        out.append(TrainingQuery(qid, text, data.positives(qid), ranked))
    return out


def pseudo_query_text(doc: Document, rng: np.random.Generator) -> str | None:
    """The title or one sentence (4-40 words) of `doc`, as a query for it; None if neither."""
    options = []
    if len(doc.title.split()) >= 2:
        options.append(doc.title.strip())
    sentences = [s.strip() for s in _SENTENCE_END.split(doc.text)]
    candidates = [s for s in sentences if 4 <= len(s.split()) <= 40]
    # A one-sentence document asked for itself teaches nothing beyond string matching.
    if len(sentences) > 1:
        options.extend(candidates)
    if not options:
        return None
    return options[int(rng.integers(len(options)))]


def pseudo_queries(
    corpus: Mapping[str, Document], n: int, index: BM25Index, *, depth: int, seed: int = 0
) -> list[TrainingQuery]:
    """Up to `n` pseudo-queries, each with its source document as the only positive.

    Weak supervision: the teacher's scores, not this pairing, are what the student learns, so
    a pseudo-query whose source is not its best match still yields useful soft labels.
    """
    if n <= 0:
        return []
    ids = sorted(corpus)
    rng = np.random.default_rng([seed, 104729])
    out = []
    for row in rng.permutation(len(ids)):
        doc = corpus[ids[row]]
        text = pseudo_query_text(doc, rng)
        if text is None:
            continue
        ranked = tuple(doc_id for doc_id, _ in index.search(text, depth))
        out.append(TrainingQuery(PSEUDO_PREFIX + doc.id, text, (doc.id,), ranked, pseudo=True))
        if len(out) == n:
            break
    return out


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The generator for one step's random choices; independent of any earlier step."""
    return np.random.default_rng([seed, step, stream])


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Items of step `step`: positions [step*B, (step+1)*B) of a stream of seeded epochs.

    Each epoch is a fresh permutation of range(n), so every item is seen once per epoch, and
    the batch of any step is computed without replaying the steps before it.
    """
    if n < 1 or batch_size < 1:
        raise ConfigurationError(f"need items and a positive batch size, got {n} and {batch_size}")
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch, 15485863]).permutation(n)
        take = min(batch_size - len(out), n - offset)
        out.extend(int(i) for i in perm[offset : offset + take])
        pos += take
    return out


def sample_group(
    query: TrainingQuery,
    n_negatives: int,
    rng: np.random.Generator,
    corpus_ids: Sequence[str],
) -> tuple[str, list[str]]:
    """One positive and up to `n_negatives` distinct hard negatives for `query`.

    When BM25 found too few negatives, random corpus documents that are not positives fill
    the group, so small corpora still train with the requested group size when possible.
    """
    positive = query.positives[int(rng.integers(len(query.positives)))]
    pool = list(query.hard_negatives)
    if len(pool) >= n_negatives:
        picks = rng.choice(len(pool), size=n_negatives, replace=False)
        return positive, [pool[int(i)] for i in sorted(picks)]
    taken = set(pool) | set(query.positives)
    rest = [d for d in corpus_ids if d not in taken]
    extra = min(n_negatives - len(pool), len(rest))
    if extra:
        pool += [rest[int(i)] for i in sorted(rng.choice(len(rest), size=extra, replace=False))]
    return positive, pool


# --- run bookkeeping shared by teacher training and distillation -----------------------------


class Validation(NamedTuple):
    """One evaluation during training: the score the loop maximises, and what to log with it.

    The caller decides both, so the loop picks checkpoints the same way whatever it measures
    (`train_teacher`: the teacher reranking BM25; the recipe: nDCG@10 on its recall lists).
    """

    score: float
    record: dict[str, Any]


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often a training loop saves its state, and the settings a resume must
    match (`check_resume_config`)."""

    folder: Path
    every: int
    config: Mapping[str, Any]


def linear_schedule(optimizer: Any, steps: int, warmup_steps: int) -> Any:
    """Linear warmup to the base learning rate, then linear decay towards zero at `steps`."""
    from torch.optim.lr_scheduler import LambdaLR

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (steps - step) / max(1, steps - warmup_steps))

    return LambdaLR(optimizer, factor)


def save_checkpoint(folder: str | Path, state: dict[str, Any]) -> Path:
    """Write a training state atomically, so a kill during the write keeps the previous one."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The training state saved in `folder`, or None when there is none."""
    import torch

    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a damaged file
        raise ModelError(
            f"{path}: unreadable training checkpoint ({type(exc).__name__}); "
            "delete it or start over with resume disabled (--no-resume)",
            path=str(path),
        ) from None


class ResumeMismatch(ConfigurationError):
    """A saved run's settings differ from this call's: resuming would mix two runs."""


def check_resume_config(
    saved: Mapping[str, Any], current: Mapping[str, Any], folder: str | Path
) -> None:
    """Refuse to resume a run whose settings differ: its schedule and data would not match."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise ResumeMismatch(
                f"{folder} holds a run with {key}={saved.get(key)!r}, not {current.get(key)!r}; "
                "use another output directory or start over with --no-resume"
            )


def resume_state(
    folder: str | Path, run_config: Mapping[str, Any], resume: bool
) -> dict[str, Any] | None:
    """The state to resume from (None: start afresh), refused when its settings differ.

    Every entry point resumes the same way: the saved state only with `resume`, and only
    for the very run it was saved by (`check_resume_config`).
    """
    state = load_checkpoint(folder) if resume else None
    if state is not None:
        check_resume_config(state["config"], run_config, folder)
    return state
