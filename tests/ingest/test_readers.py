"""Readers: happy paths for each format, and every malformed-record case named precisely."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from twinbert_search.documents import Document, Query
from twinbert_search.errors import ConfigurationError, InputError
from twinbert_search.ingest.readers import (
    load_beir,
    read_corpus,
    read_qrels,
    read_queries,
    validate_qrels,
)

SCIFACT = Path(__file__).resolve().parents[2].parent / "shared/datasets/scifact"


def write_lines(path: Path, lines: list[str | bytes | dict]) -> Path:
    """Write one record per line; dicts as JSON, bytes verbatim (for invalid UTF-8)."""
    out = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        out += (line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n"
    path.write_bytes(out)
    return path


GOOD = {"_id": "d1", "title": "T", "text": "body"}


# --- happy paths ------------------------------------------------------------------------------


def test_beir_jsonl_reads_title_text_metadata_and_int_ids(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "corpus.jsonl",
        [
            {"_id": "d1", "title": " A title ", "text": "  some  text ", "metadata": {"y": 1}},
            {"_id": 7, "title": "", "text": "untitled"},
            {"_id": "d3", "text": "no title key", "metadata": None},
        ],
    )
    docs = list(read_corpus(path))
    assert docs == [
        # Stripped at the ends only; inner whitespace is kept.
        Document(id="d1", text="some  text", title="A title", metadata={"y": 1}),
        Document(id="7", text="untitled"),
        Document(id="d3", text="no title key"),
    ]


def test_directory_means_beir_folder(tmp_path: Path) -> None:
    write_lines(tmp_path / "corpus.jsonl", [GOOD])
    assert [d.id for d in read_corpus(tmp_path)] == ["d1"]


def test_generic_jsonl_first_field_is_title_rest_joined(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "news.json",
        [{"doc_id": "n1", "headline": "Head", "body": " Body. ", "summary": "Sum."}],
    )
    (doc,) = read_corpus(
        path, id_field="doc_id", text_fields=("headline", "body", "summary"), title_field="headline"
    )
    assert (doc.id, doc.title, doc.text) == ("n1", "Head", "Body. Sum.")
    # When the first field is not the title field, every field is body text.
    (doc,) = read_corpus(path, id_field="doc_id", text_fields=("body", "summary"))
    assert (doc.title, doc.text) == ("", "Body. Sum.")


def test_tsv_two_and_three_columns_with_header(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.tsv", ["id\ttext", "a\tfirst doc", "b\tTitle B\tsecond doc\r"])
    docs = list(read_corpus(path))
    assert docs == [Document("a", "first doc"), Document("b", "second doc", title="Title B")]


def test_tsv_without_header_keeps_first_row(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.tsv", ["x1\tfirst", "x2\tsecond"])
    assert [d.id for d in read_corpus(path)] == ["x1", "x2"]


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "corpus.txt", ["a\ttext"])
    with pytest.raises(ConfigurationError, match="format"):
        read_corpus(path)
    assert [d.id for d in read_corpus(path, fmt="tsv")] == ["a"]


def test_missing_file_fails_at_call_not_at_iteration(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as exc:
        read_corpus(tmp_path / "absent.jsonl")
    assert exc.value.source == str(tmp_path / "absent.jsonl")


def test_blank_lines_and_bom_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n\n  \n")
    assert [d.id for d in read_corpus(path)] == ["d1"]


# --- malformed records ------------------------------------------------------------------------

# (second line of the file, expected record_id, expected field, text in the reason)
BAD_JSONL = [
    pytest.param('{"_id": "d2", "text": ', None, None, "malformed JSON", id="malformed-json"),
    pytest.param('["d2", "text"]', None, None, "JSON object", id="non-object"),
    pytest.param({"id": "d2", "text": "x"}, None, "_id", "missing id field", id="missing-id"),
    pytest.param({"_id": 2.5, "text": "x"}, None, "_id", "string or integer", id="float-id"),
    pytest.param({"_id": None, "text": "x"}, None, "_id", "string or integer", id="null-id"),
    pytest.param({"_id": True, "text": "x"}, None, "_id", "string or integer", id="bool-id"),
    pytest.param({"_id": " ", "text": "x"}, None, "_id", "id is empty", id="empty-id"),
    pytest.param({"_id": "d2", "title": "T"}, "d2", "text", "missing field", id="missing-text"),
    pytest.param({"_id": "d2", "text": " \t"}, "d2", "text", "empty", id="blank-text"),
    pytest.param({"_id": "d2", "text": 5}, "d2", "text", "string", id="non-string-text"),
    pytest.param({"_id": "d2", "title": 1, "text": "x"}, "d2", "title", "string", id="int-title"),
    pytest.param(
        {"_id": "d2", "text": "x", "metadata": [1]}, "d2", "metadata", "object", id="metadata"
    ),
    pytest.param(b'{"_id": "d2", "text": "caf\xe9"}', None, None, "UTF-8", id="invalid-utf8"),
    pytest.param({"_id": "d1", "text": "again"}, "d1", None, "line 1", id="duplicate-id"),
]


@pytest.mark.parametrize(("bad", "record_id", "field", "reason"), BAD_JSONL)
def test_bad_jsonl_record_names_file_line_id_and_field(
    tmp_path: Path, bad: str | bytes | dict, record_id: str | None, field: str | None, reason: str
) -> None:
    path = write_lines(tmp_path / "corpus.jsonl", [GOOD, bad, {"_id": "d3", "text": "ok"}])
    with pytest.raises(InputError) as exc:
        list(read_corpus(path))
    err = exc.value
    assert (err.source, err.line, err.record_id, err.field) == (str(path), 2, record_id, field)
    message = str(err)
    assert f"{path}:2" in message
    assert reason in message
    if record_id is not None:
        assert repr(record_id) in message
    if field is not None:
        assert repr(field) in message


def test_empty_title_alone_is_fine(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [{"_id": "d", "title": "  ", "text": "x"}])
    assert next(read_corpus(path)).title == ""


def test_duplicate_reports_both_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [GOOD, {"_id": "d2", "text": "x"}, GOOD])
    with pytest.raises(
        InputError, match=r"c\.jsonl:3, id 'd1': duplicate id \(first seen at line 1"
    ):
        list(read_corpus(path))


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [("d2", None, "got 1"), ("d2\ta\tb\tc", None, "got 4"), ("d2\t ", "text", "empty")],
)
def test_bad_tsv_row_names_line(tmp_path: Path, row: str, field: str | None, reason: str) -> None:
    path = write_lines(tmp_path / "c.tsv", ["d1\tgood", row])
    with pytest.raises(InputError, match=reason) as exc:
        list(read_corpus(path))
    assert (exc.value.line, exc.value.field) == (2, field)
    assert f"{path}:2" in str(exc.value)


def test_skip_mode_continues_and_collects(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "c.jsonl",
        [
            GOOD,
            "not json",
            {"_id": "d2", "text": ""},
            b"\xff\xfe",
            GOOD,
            {"_id": "d3", "text": "z"},
        ],
    )
    errors: list[InputError] = []
    docs = list(read_corpus(path, on_error="skip", errors=errors))
    assert [d.id for d in docs] == ["d1", "d3"]
    assert [e.line for e in errors] == [2, 3, 4, 5]
    assert "duplicate" in str(errors[-1])


def test_skip_mode_without_list_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_lines(tmp_path / "c.jsonl", ["{", GOOD])
    with caplog.at_level(logging.WARNING, logger="twinbert_search.ingest.readers"):
        assert [d.id for d in read_corpus(path, on_error="skip")] == ["d1"]
    assert f"{path}:1" in caplog.text


def test_invalid_on_error_is_a_configuration_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [GOOD])
    with pytest.raises(ConfigurationError):
        read_corpus(path, on_error="ignore")  # type: ignore[arg-type]


# --- queries and qrels ------------------------------------------------------------------------


def test_read_queries_jsonl_and_tsv(tmp_path: Path) -> None:
    jsonl = write_lines(tmp_path / "queries.jsonl", [{"_id": 1, "text": " why? ", "metadata": {}}])
    tsv = write_lines(tmp_path / "q.tsv", ["qid\ttext", "q1\twhat"])
    assert read_queries(tmp_path) == [Query("1", "why?")]
    assert read_queries(jsonl) == [Query("1", "why?")]
    assert read_queries(tsv) == [Query("q1", "what")]


def test_read_queries_errors_and_skip(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "q.jsonl",
        [{"_id": "q1", "text": "a"}, {"_id": "q2"}, {"_id": "q1", "text": "b"}],
    )
    with pytest.raises(InputError, match=r"q\.jsonl:2, id 'q2', field 'text'"):
        read_queries(path)
    errors: list[InputError] = []
    assert read_queries(path, on_error="skip", errors=errors) == [Query("q1", "a")]
    assert [e.line for e in errors] == [2, 3]


def test_read_qrels_beir_with_header_and_trec(tmp_path: Path) -> None:
    beir = write_lines(
        tmp_path / "test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td2\t0"]
    )
    trec = write_lines(tmp_path / "qrels.txt", ["q1 0 d1 2", "q2 0 d9 1", "q1 0 d1 2"])
    assert read_qrels(beir) == {"q1": {"d1": 1, "d2": 0}}
    assert read_qrels(trec) == {"q1": {"d1": 2}, "q2": {"d9": 1}}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("q2\td2\t1.5", "score '1.5' is not an integer"),
        ("q2\td2\tyes", "score 'yes' is not an integer"),
        ("q2\td2", "got 2"),
        ("q1\td1\t0", "different score (first at line 2)"),
    ],
)
def test_read_qrels_errors_name_line(tmp_path: Path, row: str, reason: str) -> None:
    path = write_lines(tmp_path / "test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1", row])
    with pytest.raises(InputError) as exc:
        read_qrels(path)
    assert exc.value.line == 3
    assert f"{path}:3" in str(exc.value)
    assert reason in str(exc.value)


def test_validate_qrels_names_first_unknown_id() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1, "dX": 1}}
    validate_qrels(qrels, query_ids={"q1", "q2"}, doc_ids={"d1", "d2", "dX"}, source="train.tsv")
    with pytest.raises(InputError, match=r"train\.tsv, id 'q2', field 'query-id'"):
        validate_qrels(qrels, query_ids={"q1"}, doc_ids={"d1", "d2", "dX"}, source="train.tsv")
    with pytest.raises(InputError, match=r"id 'dX', field 'corpus-id'.*'q2'") as exc:
        validate_qrels(qrels, query_ids={"q1", "q2"}, doc_ids={"d1", "d2"}, source="train.tsv")
    assert exc.value.record_id == "dX"


# --- BEIR folders -----------------------------------------------------------------------------


def make_beir(root: Path) -> Path:
    write_lines(root / "corpus.jsonl", [GOOD, {"_id": "d2", "title": "", "text": "two"}])
    write_lines(
        root / "queries.jsonl",
        [{"_id": "q1", "text": "one"}, {"_id": "q2", "text": "two"}, {"_id": "q3", "text": "x"}],
    )
    (root / "qrels").mkdir()
    write_lines(root / "qrels/test.tsv", ["query-id\tcorpus-id\tscore", "q2\td2\t1"])
    write_lines(root / "qrels/train.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1"])
    return root


def test_load_beir_restricts_queries_to_split(tmp_path: Path) -> None:
    corpus, queries, qrels = load_beir(make_beir(tmp_path))
    assert sorted(corpus) == ["d1", "d2"]
    assert queries == {"q2": Query("q2", "two")}
    assert qrels == {"q2": {"d2": 1}}
    assert list(load_beir(tmp_path, split="train")[1]) == ["q1"]


def test_load_beir_unknown_split_or_query(tmp_path: Path) -> None:
    make_beir(tmp_path)
    with pytest.raises(InputError, match=r"split 'dev' \(available: test, train\)"):
        load_beir(tmp_path, split="dev")
    write_lines(tmp_path / "qrels/test.tsv", ["query-id\tcorpus-id\tscore", "q9\td2\t1"])
    with pytest.raises(InputError, match="id 'q9'"):
        load_beir(tmp_path)


@pytest.mark.scifact
def test_scifact_counts() -> None:
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    corpus, queries, qrels = load_beir(SCIFACT, split="test")
    assert len(corpus) == 5183
    assert len(queries) == 300
    assert sum(len(docs) for docs in qrels.values()) == 339
