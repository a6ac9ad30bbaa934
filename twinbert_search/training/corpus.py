"""Training signal from a corpus alone: its documents, and pseudo-queries asked of them.

Users arrive with a corpus and rarely with labels. A pseudo-query is something a document
answers that the document itself supplies: its title, one of its sentences, or a handful of
its rarest words (keyphrases). Paired with the candidates hybrid recall returns for it, the
teacher's scores of those candidates are what a student learns (`training.adapt`), and the
fused BM25 + dense scores what a teacher's warm start regresses onto (the SciFact recipe).

`read_documents` reads a BEIR corpus leniently: a document with a title and an empty text
(CACM: 1,617 of 3,204) is a document of its title, where the strict ingest reader stops.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from twinbert_search.documents import Document
from twinbert_search.errors import ConfigurationError, InputError

__all__ = [
    "PSEUDO_KINDS",
    "PseudoQuery",
    "document_vectors",
    "keyphrase_query",
    "make_pseudo_queries",
    "read_documents",
]

PSEUDO_KINDS = ("title", "sentence", "keyphrase")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Function words that a keyphrase must not be made of (rare words are content words anyway;
# this list only stops the short ones a small corpus can make look rare).
_STOP_WORDS = (
    "a an and are as at be been but by can could did do does for from had has have how in into "
    "is it its may more most no not of on or our such than that the their them then there these "
    "they this those to was we were what when where which while who why will with would you "
    "also both each other some very using used use based between about over under"
)
_STOP = frozenset(_STOP_WORDS.split(" "))


def read_documents(path: str | Path) -> dict[str, Document]:
    """A BEIR corpus (a folder with corpus.jsonl, or the file) as documents by id.

    `_id` (or `id`), `title` and `text`; a document with neither title nor text is skipped, a
    duplicate id or malformed line is an `InputError` naming the line.
    """
    path = Path(path)
    source = path / "corpus.jsonl" if path.is_dir() else path
    if not source.is_file():
        raise InputError("corpus not found (a BEIR folder or a corpus.jsonl)", source=str(path))
    out: dict[str, Document] = {}
    with open(source, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"malformed JSON ({exc.msg})", source=str(source), line=lineno
                ) from None
            doc_id = str(obj.get("_id", obj.get("id", ""))).strip()
            if not doc_id:
                raise InputError("id is empty", source=str(source), line=lineno)
            if doc_id in out:
                raise InputError("duplicate id", source=str(source), line=lineno, record_id=doc_id)
            title = (obj.get("title") or "").strip()
            text = (obj.get("text") or "").strip()
            if title or text:
                out[doc_id] = Document(doc_id, text, title)
    if not out:
        raise InputError("corpus is empty", source=str(source))
    return out


@dataclass(frozen=True)
class PseudoQuery:
    """A query made from document `doc_id` (`kind`: title, sentence or keyphrase)."""

    id: str
    text: str
    doc_id: str
    kind: str


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def document_frequencies(corpus: Mapping[str, Document]) -> Counter[str]:
    """In how many documents each (lower-cased) word occurs."""
    df: Counter[str] = Counter()
    for doc in corpus.values():
        df.update(set(_words(doc.encoding_text)))
    return df


def keyphrase_query(
    doc: Document, df: Mapping[str, int], n_docs: int, *, words: int = 5
) -> str | None:
    """The document's `words` highest tf-idf content words, in their order of appearance."""
    tokens = [w for w in _words(doc.encoding_text) if w not in _STOP and len(w) > 2]
    if len(set(tokens)) < 3:
        return None
    tf = Counter(tokens)
    weight = {w: c * math.log(n_docs / (1 + df.get(w, 0))) for w, c in tf.items()}
    keep = set(sorted(weight, key=lambda w: (-weight[w], w))[:words])
    seen: list[str] = []
    for w in tokens:
        if w in keep and w not in seen:
            seen.append(w)
    return " ".join(seen)


def _sentences(doc: Document) -> list[str]:
    parts = [s.strip() for s in _SENTENCE_END.split(doc.text)]
    return [s for s in parts if 4 <= len(s.split()) <= 40]


def make_pseudo_queries(
    corpus: Mapping[str, Document],
    n: int,
    *,
    seed: int = 0,
    kinds: Sequence[str] = PSEUDO_KINDS,
) -> list[PseudoQuery]:
    """Up to `n` pseudo-queries from distinct documents, kinds taken in turn.

    Documents are visited in a seeded order; each gives the next kind in the rotation that it
    can give (a title needs two words, a sentence a multi-sentence text, a keyphrase three
    distinct content words), so the kinds stay balanced on a corpus where many documents
    have a title only.
    """
    unknown = [k for k in kinds if k not in PSEUDO_KINDS]
    if unknown or not kinds:
        raise ConfigurationError(f"pseudo-query kinds must be among {PSEUDO_KINDS}, got {kinds}")
    if n <= 0:
        return []
    ids = sorted(corpus)
    df = document_frequencies(corpus) if "keyphrase" in kinds else Counter()
    rng = np.random.default_rng([seed, 271828])
    out: list[PseudoQuery] = []
    turn = 0
    for row in rng.permutation(len(ids)):
        doc = corpus[ids[int(row)]]
        for offset in range(len(kinds)):
            kind = kinds[(turn + offset) % len(kinds)]
            text = _pseudo_text(doc, kind, df, len(ids), rng)
            if text:
                out.append(PseudoQuery(f"pseudo:{kind}:{doc.id}", text, doc.id, kind))
                turn = (turn + offset + 1) % len(kinds)
                break
        if len(out) == n:
            break
    return out


def _pseudo_text(
    doc: Document, kind: str, df: Mapping[str, int], n_docs: int, rng: np.random.Generator
) -> str | None:
    if kind == "title":
        # A title-only document asked for its own title is a string match: no signal.
        return doc.title if doc.text and len(doc.title.split()) >= 2 else None
    if kind == "sentence":
        options = _sentences(doc)
        if len(options) < 2:  # a one-sentence document asked for itself: string matching
            return None
        return options[int(rng.integers(len(options)))]
    return keyphrase_query(doc, df, n_docs)


def document_vectors(
    runtime: Any,
    docs: Mapping[str, Document],
    ids: Sequence[str],
    work: Path,
    index_dir: str | Path | None,
    progress: bool,
) -> np.ndarray:
    """The stored vectors of `ids` by `runtime`: from `index_dir` when that embedded index holds
    this model's vectors, else encoded by its document tower; kept under `work` for a rerun."""
    hashes = [docs[d].content_hash for d in ids]
    identity = json.dumps([runtime.fingerprint, hashes], sort_keys=True)
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    path = work / f"doc_vectors.{key}.npy"
    if path.is_file():
        return np.load(path)
    vectors = None
    if index_dir is not None:
        from twinbert_search.stores.embedded import EmbeddedStore

        store = EmbeddedStore.open(index_dir, with_documents=False)
        try:
            store.ensure_model(runtime.fingerprint)
            vectors = np.asarray(store.fetch(list(ids)).vectors, dtype=np.float32)
        finally:
            store.close()
    if vectors is None or len(vectors) != len(ids):
        bar = tqdm(total=len(ids), disable=not progress, desc="encoding documents", unit="doc")
        vectors = runtime.encode_documents(
            [docs[d].encoding_text for d in ids], progress=bar.update
        )
        bar.close()
    np.save(path, vectors.astype(np.float32))
    return np.load(path)
