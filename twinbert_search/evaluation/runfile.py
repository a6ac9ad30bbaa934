"""TREC run files: `qid Q0 docid rank score tag`, one line per retrieved document.

Ranks follow `(-score, docid)`, as pyserini writes them, so the same results always give the
same file. Scores are written with `repr(float)`, the shortest text that reads back to the
same float, so reading a run never creates ties that were not there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from twinbert_search.errors import ConfigurationError, InputError

__all__ = ["Run", "rank_order", "read_run", "write_run"]

Run = dict[str, dict[str, float]]
Hits = Sequence[tuple[str, float]] | Mapping[str, float]


def rank_order(hits: Hits) -> list[tuple[str, float]]:
    """Return `(docid, score)` pairs sorted by `(-score, docid)`: the one deterministic order
    that run files use and that searchers should return."""
    pairs: Iterable[tuple[str, float]] = hits.items() if isinstance(hits, Mapping) else hits
    return sorted(((d, float(s)) for d, s in pairs), key=lambda p: (-p[1], p[0]))


def write_run(
    path_or_fileobj: str | os.PathLike[str] | TextIO,
    results: Mapping[str, Hits],
    tag: str,
) -> None:
    """Write `results` (per query, `(docid, score)` pairs or a docid->score mapping) as a TREC
    run: queries in sorted order, ranks from 1 in `rank_order`."""
    if not tag or any(c.isspace() for c in tag):
        raise ConfigurationError(f"run tag must be non-empty without whitespace, got {tag!r}")
    lines = []
    for qid in sorted(results):
        _check_token(qid, "qid", qid)
        for rank, (doc_id, score) in enumerate(rank_order(results[qid]), start=1):
            _check_token(doc_id, "docid", qid)
            if not math.isfinite(score):
                raise ValueError(f"score of doc {doc_id!r} for query {qid!r} is {score}")
            lines.append(f"{qid} Q0 {doc_id} {rank} {score!r} {tag}\n")
    if isinstance(path_or_fileobj, (str, os.PathLike)):
        with open(path_or_fileobj, "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(lines)
    else:
        path_or_fileobj.writelines(lines)


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run into `{qid: {docid: score}}`; any malformed line raises `InputError`."""
    source = str(path)
    if not Path(source).is_file():
        raise InputError("no such file", source=source)
    run: Run = {}
    first_seen: dict[tuple[str, str], int] = {}
    with open(source, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            cells = line.split()
            if not cells:
                continue
            if len(cells) != 6:
                raise InputError(
                    f"expected 6 columns (qid Q0 docid rank score tag), got {len(cells)}",
                    source=source,
                    line=lineno,
                )
            qid, _, doc_id, rank, score, _ = cells
            try:
                int(rank)
            except ValueError:
                raise InputError(
                    f"rank {rank!r} is not an integer",
                    source=source,
                    line=lineno,
                    record_id=qid,
                    field="rank",
                ) from None
            try:
                value = float(score)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise InputError(
                    f"score {score!r} is not a finite number",
                    source=source,
                    line=lineno,
                    record_id=qid,
                    field="score",
                )
            if (qid, doc_id) in first_seen:
                raise InputError(
                    f"doc {doc_id!r} retrieved twice (first at line {first_seen[qid, doc_id]})",
                    source=source,
                    line=lineno,
                    record_id=qid,
                    field="docid",
                )
            first_seen[qid, doc_id] = lineno
            run.setdefault(qid, {})[doc_id] = value
    return run


def _check_token(value: str, field: str, qid: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise InputError(
            f"{field} {value!r} is empty or contains whitespace; a run file cannot hold it",
            record_id=qid,
            field=field,
        )
