"""Read user corpora, queries and qrels, failing with errors that point at the bad record.

Every malformed record raises `InputError` naming the file, the 1-based line, the record id
when known and the field, so a user can fix the data without reading our code. With
`on_error="skip"` bad records are dropped and appended to the caller's `errors` list instead,
so a long indexing job can finish and report everything at the end.

A document's content is its title plus its text: a title alone is a document (CACM has 1,617
of them). One with neither is `EmptyDocumentError`, which `on_empty="skip"` drops (into
`errors` too) while malformed records still follow `on_error`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from twinbert_search.documents import Document, Query
from twinbert_search.errors import ConfigurationError, EmptyDocumentError, InputError

__all__ = [
    "Qrels",
    "load_beir",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "validate_qrels",
]

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]
Format = Literal["auto", "jsonl", "tsv"]
OnError = Literal["raise", "skip"]
OnEmpty = Literal["error", "skip"]
PathLike = str | os.PathLike[str]

_CORPUS_HEADER_IDS = frozenset({"id", "_id", "doc_id"})
_QUERY_HEADER_IDS = frozenset({"id", "_id", "qid", "query_id", "query-id"})
_QRELS_HEADER_IDS = frozenset({"query-id", "query_id", "qid"})


def read_corpus(
    path: PathLike,
    *,
    fmt: Format = "auto",
    id_field: str = "_id",
    text_fields: Sequence[str] = ("title", "text"),
    title_field: str = "title",
    on_error: OnError = "raise",
    errors: list[InputError] | None = None,
    on_empty: OnEmpty = "error",
) -> Iterator[Document]:
    """Stream the documents of a BEIR folder, a JSONL file or a TSV file.

    JSONL: when `text_fields[0] == title_field` and there are more fields, that first field is
    the (optional) title and the rest are the body; otherwise every field is body. Body fields
    must be present, strings or null; their stripped values are joined with one space. A null
    title or metadata counts as absent; `metadata`, when present, must be an object. TSV rows
    are `id<TAB>text` or `id<TAB>title<TAB>text`, with an optional header whose first cell is
    `id`, `_id` or `doc_id`. Blank lines are ignored. Duplicate ids are errors (in skip mode
    the first occurrence wins).

    A record with an empty body but a title is a document; one with neither raises
    `EmptyDocumentError` (an `InputError`, so `on_error` applies), or with `on_empty="skip"`
    is dropped and appended to `errors` (logged without a list) whatever `on_error` says.

    Path and option problems raise at once; record problems are raised (or collected) as the
    iterator reaches them.
    """
    _check_on_error(on_error)
    if on_empty not in ("error", "skip"):
        raise ConfigurationError(f"on_empty must be 'error' or 'skip', got {on_empty!r}")
    source = _resolve(path, "corpus.jsonl")
    kind = _detect_format(source, fmt)
    if kind == "jsonl":
        if not text_fields:
            raise ConfigurationError("text_fields must name at least one field")
        fields = tuple(text_fields)
        has_title = len(fields) > 1 and fields[0] == title_field
        body_fields = fields[1:] if has_title else fields

        def parse(lineno: int, line: str) -> Document:
            obj = _json_object(source, lineno, line)
            doc_id = _record_id(obj, id_field, source, lineno)
            title = _optional_str(obj, title_field, source, lineno, doc_id) if has_title else ""
            parts = []
            for name in body_fields:
                if name not in obj:
                    raise _err(f"missing field {name!r}", source, lineno, doc_id, name)
                value = obj[name]
                if value is None:  # null: no text, as a null title is no title
                    continue
                if not isinstance(value, str):
                    raise _err("must be a string", source, lineno, doc_id, name)
                if value.strip():
                    parts.append(value.strip())
            metadata = obj.get("metadata")
            if metadata is not None and not isinstance(metadata, dict):
                raise _err("metadata must be a JSON object", source, lineno, doc_id, "metadata")
            doc = Document(id=doc_id, text=" ".join(parts), title=title, metadata=metadata or {})
            return _nonempty(doc, source, lineno, "+".join(body_fields), has_title)

    else:

        def parse(lineno: int, line: str) -> Document:
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) not in (2, 3):
                raise _err(
                    f"expected 2 or 3 tab-separated columns (id, [title,] text), got {len(cells)}",
                    source,
                    lineno,
                )
            doc_id = _tsv_id(cells[0], source, lineno)
            title = cells[1].strip() if len(cells) == 3 else ""
            doc = Document(id=doc_id, text=cells[-1].strip(), title=title)
            return _nonempty(doc, source, lineno, "text", len(cells) == 3)

    header = _CORPUS_HEADER_IDS if kind == "tsv" else frozenset()
    return _records(source, parse, header, on_error, errors, on_empty)


def read_queries(
    path: PathLike,
    *,
    fmt: Format = "auto",
    id_field: str = "_id",
    text_field: str = "text",
    on_error: OnError = "raise",
    errors: list[InputError] | None = None,
) -> list[Query]:
    """Read BEIR `queries.jsonl` (or a folder holding it) or a `qid<TAB>text` TSV.

    Same error discipline as `read_corpus`; a TSV header is recognised by a first cell of
    `id`, `_id`, `qid`, `query_id` or `query-id`.
    """
    _check_on_error(on_error)
    source = _resolve(path, "queries.jsonl")
    kind = _detect_format(source, fmt)

    def parse(lineno: int, line: str) -> Query:
        if kind == "jsonl":
            obj = _json_object(source, lineno, line)
            qid = _record_id(obj, id_field, source, lineno)
            if text_field not in obj:
                raise _err(f"missing field {text_field!r}", source, lineno, qid, text_field)
            text = obj[text_field]
            if not isinstance(text, str):
                raise _err("must be a string", source, lineno, qid, text_field)
        else:
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) != 2:
                raise _err(
                    f"expected 2 tab-separated columns (qid, text), got {len(cells)}",
                    source,
                    lineno,
                )
            qid = _tsv_id(cells[0], source, lineno)
            text = cells[1]
        if not text.strip():
            raise _err("text is empty", source, lineno, qid, text_field)
        return Query(id=qid, text=text.strip())

    header = _QUERY_HEADER_IDS if kind == "tsv" else frozenset()
    return list(_records(source, parse, header, on_error, errors))


def read_qrels(path: PathLike) -> Qrels:
    """Read relevance judgements: BEIR TSV (`query-id corpus-id score`, header optional) or
    TREC qrels (`qid 0 docid rel`), told apart per line by the column count.

    Columns are split on tabs when the line has one, else on whitespace. Any bad line raises:
    a wrong judgement silently changes every metric, so there is no skip mode. A repeated
    (query, doc) pair is accepted only when it repeats the same score.
    """
    source = _resolve(path, None)
    qrels: Qrels = {}
    first_seen: dict[tuple[str, str], int] = {}
    for lineno, line in _decoded_lines(source):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")] if "\t" in line else line.split()
        if not first_seen and not qrels and cells[0].lower() in _QRELS_HEADER_IDS:
            continue
        if len(cells) == 3:
            qid, doc_id, score = cells
        elif len(cells) == 4:
            qid, _, doc_id, score = cells
        else:
            raise _err(
                f"expected 3 columns (query-id corpus-id score) or 4 (qid 0 docid rel), "
                f"got {len(cells)}",
                source,
                lineno,
            )
        if not qid or not doc_id:
            raise _err("empty id", source, lineno)
        try:
            rel = int(score)
        except ValueError:
            raise _err(f"score {score!r} is not an integer", source, lineno, qid, "score") from None
        key = (qid, doc_id)
        if key in first_seen and qrels[qid][doc_id] != rel:
            raise _err(
                f"doc {doc_id!r} judged again with a different score "
                f"(first at line {first_seen[key]})",
                source,
                lineno,
                qid,
                "score",
            )
        first_seen.setdefault(key, lineno)
        qrels.setdefault(qid, {})[doc_id] = rel
    return qrels


def validate_qrels(
    qrels: Mapping[str, Mapping[str, int]],
    *,
    query_ids: Collection[str],
    doc_ids: Collection[str],
    source: str | None = None,
) -> None:
    """Raise `InputError` naming the first query id, then doc id, of `qrels` that is unknown.

    Training must reject such qrels: an unknown id would silently drop a positive pair.
    """
    unknown_q = [qid for qid in qrels if qid not in query_ids]
    if unknown_q:
        raise InputError(
            f"query id not found in the queries ({len(unknown_q)} unknown in all)",
            source=source,
            record_id=unknown_q[0],
            field="query-id",
        )
    unknown_d = [(q, d) for q, docs in qrels.items() for d in docs if d not in doc_ids]
    if unknown_d:
        qid, doc_id = unknown_d[0]
        raise InputError(
            f"corpus id {doc_id!r} of query {qid!r} not found in the corpus "
            f"({len(unknown_d)} unknown in all)",
            source=source,
            record_id=doc_id,
            field="corpus-id",
        )


def load_beir(
    folder: PathLike, split: str = "test"
) -> tuple[dict[str, Document], dict[str, Query], Qrels]:
    """Load a BEIR folder: corpus, the queries judged in `qrels/<split>.tsv`, and those qrels.

    Every judged query must exist in queries.jsonl (it could not be searched otherwise). Judged
    doc ids missing from the corpus are allowed, as in BEIR: they only lower recall. Title-only
    documents are documents; an empty one is an error (training refuses such data).
    """
    root = Path(folder)
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise InputError(
            f"no qrels for split {split!r} (available: {', '.join(splits) or 'none'})",
            source=str(qrels_path),
        )
    qrels = read_qrels(qrels_path)
    queries = {q.id: q for q in read_queries(root / "queries.jsonl")}
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise InputError(
            f"query id not found in queries.jsonl ({len(missing)} unknown in all)",
            source=str(qrels_path),
            record_id=missing[0],
            field="query-id",
        )
    corpus = {d.id: d for d in read_corpus(root / "corpus.jsonl")}
    return corpus, {qid: queries[qid] for qid in qrels}, qrels


# --- internals -------------------------------------------------------------------------------


def _err(
    reason: str,
    source: str,
    line: int,
    record_id: str | None = None,
    field: str | None = None,
) -> InputError:
    return InputError(reason, source=source, line=line, record_id=record_id, field=field)


def _nonempty(doc: Document, source: str, line: int, field: str, has_title: bool) -> Document:
    """`doc`, unless it has neither title nor text (then `EmptyDocumentError`)."""
    if not doc.is_empty:
        return doc
    reason = "empty document: no title, and text is empty" if has_title else "text is empty"
    raise EmptyDocumentError(reason, source=source, line=line, record_id=doc.id, field=field)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ConfigurationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _resolve(path: PathLike, folder_file: str | None) -> str:
    p = Path(path)
    if p.is_dir() and folder_file is not None:
        p = p / folder_file
    if not p.is_file():
        raise InputError("no such file", source=str(p))
    return str(p)


def _detect_format(source: str, fmt: str) -> str:
    if fmt in ("jsonl", "tsv"):
        return fmt
    if fmt != "auto":
        raise ConfigurationError(f"format must be 'auto', 'jsonl' or 'tsv', got {fmt!r}")
    suffix = Path(source).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".tsv":
        return "tsv"
    raise ConfigurationError(
        f"cannot tell the format of {source} from its extension; pass the format (jsonl or tsv)"
    )


def _decoded_lines(source: str) -> Iterator[tuple[int, str | InputError]]:
    """Yield (1-based line number, text); bytes are decoded per line so a bad one is placed."""
    with open(source, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, _err(f"invalid UTF-8 at byte {exc.start}", source, lineno)


def _records(
    source: str,
    parse: Callable[[int, str], Any],
    header_ids: frozenset[str],
    on_error: OnError,
    errors: list[InputError] | None,
    on_empty: OnEmpty = "error",
) -> Iterator[Any]:
    """Parse each non-blank line, enforce unique ids, and raise or collect the failures.

    An empty document's id counts as seen (a later record with it is a duplicate), and a
    duplicate that is also empty is reported as the duplicate.
    """
    seen: dict[str, int] = {}
    first = True
    for lineno, line in _decoded_lines(source):
        try:
            if isinstance(line, InputError):
                raise line
            if not line.strip():
                continue
            if first and line.split("\t", 1)[0].strip().lower() in header_ids:
                first = False
                continue
            first = False
            empty: EmptyDocumentError | None = None
            try:
                record = parse(lineno, line)
                record_id = record.id
            except EmptyDocumentError as exc:
                empty, record_id = exc, exc.record_id
            if record_id in seen:
                raise _err(
                    f"duplicate id (first seen at line {seen[record_id]})",
                    source,
                    lineno,
                    record_id,
                )
            seen[record_id] = lineno
            if empty is not None:
                if on_empty == "error":
                    raise empty
                _skipped(empty, errors)
                continue
        except InputError as exc:
            if on_error == "raise":
                raise
            _skipped(exc, errors)
            continue
        yield record


def _skipped(exc: InputError, errors: list[InputError] | None) -> None:
    if errors is not None:
        errors.append(exc)
    else:
        logger.warning("skipped %s record: %s", _kind(exc), exc)


def _kind(exc: InputError) -> str:
    return "empty" if isinstance(exc, EmptyDocumentError) else "bad"


def _json_object(source: str, lineno: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _err(f"malformed JSON: {exc.msg} (column {exc.colno})", source, lineno) from None
    if not isinstance(obj, dict):
        raise _err(f"expected a JSON object, got {type(obj).__name__}", source, lineno)
    return obj


def _record_id(obj: Mapping[str, Any], id_field: str, source: str, lineno: int) -> str:
    if id_field not in obj:
        raise _err(f"missing id field {id_field!r}", source, lineno, field=id_field)
    value = obj[id_field]
    # bool is an int subclass, but `true` is never a meaningful id.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _err(
            f"id must be a string or integer, got {type(value).__name__}",
            source,
            lineno,
            field=id_field,
        )
    if not value.strip():
        raise _err("id is empty", source, lineno, field=id_field)
    return value


def _tsv_id(cell: str, source: str, lineno: int) -> str:
    doc_id = cell.strip()
    if not doc_id:
        raise _err("id is empty", source, lineno, field="id")
    return doc_id


def _optional_str(
    obj: Mapping[str, Any], name: str, source: str, lineno: int, record_id: str
) -> str:
    value = obj.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _err("must be a string", source, lineno, record_id, name)
    return value.strip()
