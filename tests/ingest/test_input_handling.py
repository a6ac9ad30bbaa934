"""Real corpora (issue 19): title-only documents, empty records, empty and unfinished indexes.

Readers and the `index`, `search` and `eval` commands over the embedded store; the cluster
backends are in tests/stores/test_cluster_input_handling.py, the service in the service section
here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from twinbert_search.cli import main
from twinbert_search.documents import Document
from twinbert_search.errors import EmptyDocumentError, InputError, StoreError
from twinbert_search.ingest.indexing import IndexReport, index_documents
from twinbert_search.ingest.readers import load_beir, read_corpus
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.search import Searcher
from twinbert_search.service import ServiceConfig, create_app
from twinbert_search.stores.embedded import EmbeddedStore


def write(path: Path, lines: list[Any]) -> Path:
    """One record per line: dicts as JSON, strings verbatim."""
    text = "\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n"
    path.write_text(text)
    return path


TITLE_ONLY = {"_id": "t1", "title": "Extraction of roots by repeated subtraction", "text": ""}
BODY = [{"_id": f"b{i}", "title": "star", "text": f"the moon orbit {i}"} for i in range(3)]
EMPTY = [{"_id": "e1", "title": "", "text": " "}, {"_id": "e2", "text": ""}]


# --- readers: a title is content ----------------------------------------------------------------


def test_title_only_documents_in_every_format(tmp_path: Path) -> None:
    beir = write(tmp_path / "corpus.jsonl", [TITLE_ONLY, {"_id": "t2", "title": "T", "text": None}])
    assert [(d.id, d.title, d.text) for d in read_corpus(beir)] == [
        ("t1", TITLE_ONLY["title"], ""),
        ("t2", "T", ""),  # a null text is no text, as a null title is no title
    ]
    generic = write(
        tmp_path / "news.jsonl", [{"doc_id": "n1", "headline": "Head", "body": "", "lede": " "}]
    )
    fields = ("headline", "body", "lede")
    (doc,) = read_corpus(generic, id_field="doc_id", text_fields=fields, title_field="headline")
    assert (doc.title, doc.text, doc.encoding_text) == ("Head", "", "Head")
    tsv = write(tmp_path / "c.tsv", ["id\ttitle\ttext", "a\tA title\t", "b\tB\t  "])
    assert [(d.id, d.title, d.text) for d in read_corpus(tsv)] == [
        ("a", "A title", ""),
        ("b", "B", ""),
    ]
    assert not Document("x", "", title="T").is_empty and Document("x", " ", title=" ").is_empty


@pytest.mark.parametrize(
    ("name", "lines", "field"),
    [
        ("c.jsonl", [EMPTY[0]], "text"),
        ("c.tsv", ["e1\t \t "], "text"),
        ("c.tsv", ["e1\t"], "text"),
    ],
    ids=["jsonl", "tsv-3", "tsv-2"],
)
def test_an_empty_document_is_its_own_error(
    tmp_path: Path, name: str, lines: list[Any], field: str
) -> None:
    path = write(tmp_path / name, lines)
    with pytest.raises(EmptyDocumentError) as exc:
        list(read_corpus(path))
    assert (exc.value.line, exc.value.record_id, exc.value.field) == (1, "e1", field)
    assert isinstance(exc.value, InputError) and "empty" in str(exc.value)


def test_skipping_empty_documents_leaves_malformed_ones_to_on_error(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", [BODY[0], EMPTY[0], BODY[1], EMPTY[1], "{bad", BODY[2]])
    errors: list[InputError] = []
    read: list[str] = []
    with pytest.raises(InputError, match="malformed JSON"):  # on_error is still "raise"
        read.extend(d.id for d in read_corpus(path, on_empty="skip", errors=errors))
    assert read == ["b0", "b1"]
    assert [type(e) for e in errors] == [EmptyDocumentError, EmptyDocumentError]
    errors.clear()
    docs = list(read_corpus(path, on_empty="skip", on_error="skip", errors=errors))
    assert [d.id for d in docs] == ["b0", "b1", "b2"]
    assert [(type(e).__name__, e.line) for e in errors] == [
        ("EmptyDocumentError", 2),
        ("EmptyDocumentError", 4),
        ("InputError", 5),
    ]


def test_an_empty_documents_id_still_counts_for_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", [EMPTY[0], {"_id": "e1", "text": "now with text"}])
    with pytest.raises(InputError, match=r"c\.jsonl:2, id 'e1': duplicate id"):
        list(read_corpus(path, on_empty="skip", errors=[]))


def test_load_beir_takes_title_only_documents_and_refuses_empty_ones(tmp_path: Path) -> None:
    write(tmp_path / "corpus.jsonl", [TITLE_ONLY, BODY[0]])
    write(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "roots"}])
    (tmp_path / "qrels").mkdir()
    write(tmp_path / "qrels/test.tsv", ["query-id\tcorpus-id\tscore", "q1\tt1\t1"])
    corpus, _, _ = load_beir(tmp_path)
    assert sorted(corpus) == ["b0", "t1"]
    write(tmp_path / "corpus.jsonl", [TITLE_ONLY, *EMPTY])
    with pytest.raises(EmptyDocumentError, match=r"corpus\.jsonl:2, id 'e1'"):
        load_beir(tmp_path)  # training refuses such data (tests/training/test_teacher.py)


def test_the_report_counts_each_kind() -> None:
    empty = EmptyDocumentError("text is empty", source="c.jsonl", line=2, record_id="e")
    bad = InputError("malformed JSON", source="c.jsonl", line=3)
    assert IndexReport().skipped() == "0 skipped"
    assert IndexReport(errors=[empty, empty]).skipped() == "2 skipped: empty"
    assert IndexReport(errors=[bad]).skipped() == "1 skipped: malformed"
    report = IndexReport(errors=[empty, empty, bad])
    assert report.skipped() == "3 skipped: 2 empty, 1 malformed"
    assert report.to_dict()["skipped"] == {"empty": 2, "malformed": 1}
    assert report.to_dict()["errors"] == [str(bad)] and len(report.to_dict()["empty"]) == 2


# --- index: title-only indexed, empty skipped and counted ---------------------------------------


def index(runner: CliRunner, corpus: Path, index_dir: Path, model: Path, *extra: str) -> Result:
    args = ["index", str(corpus), "--index-dir", str(index_dir), "--model", str(model),
            "--no-progress", "--chunk-size", "2", *extra]  # fmt: skip
    return runner.invoke(main, args)


def search(runner: CliRunner, index_dir: Path, model: Path, query: str = "roots") -> Result:
    args = ["search", query, "--index-dir", str(index_dir), "--model", str(model), "--json"]
    return runner.invoke(main, args)


def test_index_takes_title_only_documents_and_skips_empty_ones(
    tiny_model: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    corpus = write(tmp_path / "corpus.jsonl", [TITLE_ONLY, *BODY[:2], *EMPTY, BODY[2]])
    result = index(runner, corpus, tmp_path / "ix", tiny_model)
    assert result.exit_code == 0, result.output
    assert "4 added" in result.stdout and "2 skipped: empty;" in result.stdout
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 2 and "corpus.jsonl:4, id 'e1'" in skipped[0]
    with EmbeddedStore.open(tmp_path / "ix") as store:
        assert sorted(store.all_ids()) == ["b0", "b1", "b2", "t1"]
        assert store.documents(["t1"])[0]["title"] == TITLE_ONLY["title"]
        assert store.unfinished_index_run() is None
    hits = json.loads(search(runner, tmp_path / "ix", tiny_model).stdout)["hits"]
    assert "t1" in {hit["id"] for hit in hits}

    again = index(runner, corpus, tmp_path / "ix", tiny_model, "--json")
    report = json.loads(again.stdout)
    assert report["skipped"] == {"empty": 2, "malformed": 0} and report["unchanged"] == 4
    assert len(report["empty"]) == 2 and report["errors"] == []


def test_strict_with_skip_errors_skips_empty_documents_as_errors(
    tiny_model: Path, tmp_path: Path
) -> None:
    corpus = write(tmp_path / "corpus.jsonl", [BODY[0], EMPTY[0], "not json", BODY[1]])
    runner = CliRunner()
    result = index(runner, corpus, tmp_path / "ix", tiny_model, "--strict", "--skip-errors")
    assert result.exit_code == 0, result.output
    assert "2 added" in result.stdout and "2 skipped: 1 empty, 1 malformed" in result.stdout
    stopped = index(runner, corpus, tmp_path / "ix2", tiny_model)
    assert stopped.exit_code == 3 and "corpus.jsonl:3" in stopped.stderr  # malformed still stops


# --- unfinished runs, empty stores, judged documents the store lacks -----------------------------


def warnings_of(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def test_a_run_stopped_by_a_bad_record_leaves_the_store_marked_until_one_completes(
    tiny_model: Path, tmp_path: Path
) -> None:
    runner, ix = CliRunner(), tmp_path / "ix"
    bad = write(tmp_path / "bad.jsonl", [TITLE_ONLY, BODY[0], "{oops", BODY[1]])
    assert index(runner, bad, ix, tiny_model).exit_code == 3
    manifest = json.loads((ix / "store.json").read_text())
    assert manifest["unfinished_run"]["started"]

    found = search(runner, ix, tiny_model)
    assert found.exit_code == 0 and {h["id"] for h in json.loads(found.stdout)["hits"]} == {
        "t1",
        "b0",
    }  # what was indexed before the bad record stays searchable
    (warning,) = warnings_of(found)
    assert f"{ix} is incomplete" in warning and "twinbert-search index" in warning
    assert found.stderr.count("incomplete") == 1

    good = write(tmp_path / "good.jsonl", [TITLE_ONLY, *BODY])
    assert index(runner, good, ix, tiny_model).exit_code == 0
    assert "unfinished_run" not in json.loads((ix / "store.json").read_text())
    assert warnings_of(search(runner, ix, tiny_model)) == []


def test_a_run_that_crashes_leaves_the_mark(tiny_model: Path, tmp_path: Path) -> None:
    runtime = TwinBertRuntime.load(tiny_model)

    class Crash(RuntimeError):
        pass

    def docs() -> Any:
        yield from (Document(d["_id"], d["text"], d["title"]) for d in BODY)
        raise Crash("the machine went away")

    with EmbeddedStore.create_or_open(tmp_path / "ix", dim=runtime.dim) as store:
        with pytest.raises(Crash):
            index_documents(docs(), store, runtime, progress=False, chunk_size=1)
        assert store.unfinished_index_run() is not None
        store.finalize()  # what the crashed run wrote, searchable (as a re-run would make it)
    with EmbeddedStore.open(tmp_path / "ix") as reader:
        assert reader.unfinished_index_run() is not None
        with EmbeddedStore.create_or_open(tmp_path / "ix") as writer:  # a later run, elsewhere
            index_documents([Document("b9", "text")], writer, runtime, progress=False)
        assert reader.unfinished_index_run() is None  # read afresh, as a server would


def eval_args(index_dir: Path, model: Path, queries: Path, qrels: Path) -> list[str]:
    return ["eval", "--index-dir", str(index_dir), "--model", str(model), "--queries",
            str(queries), "--qrels", str(qrels), "--no-progress", "--json"]  # fmt: skip


@pytest.fixture
def judged(tmp_path: Path) -> tuple[Path, Path]:
    queries = write(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "moon orbit"}])
    qrels = write(
        tmp_path / "qrels.tsv",
        ["query-id\tcorpus-id\tscore", "q1\tb1\t1", "q1\tgone1\t1", "q1\tgone2\t0"],
    )
    return queries, qrels


@pytest.mark.parametrize(
    ("lines", "reason"),
    [(EMPTY, "index a corpus"), (["{oops", BODY[0]], "did not complete")],
    ids=["only-empty-documents", "stopped-at-the-first-record"],
)
def test_search_and_eval_refuse_an_empty_store(
    tiny_model: Path,
    tmp_path: Path,
    judged: tuple[Path, Path],
    lines: list[Any],
    reason: str,
) -> None:
    runner, ix = CliRunner(), tmp_path / "ix"
    index(runner, write(tmp_path / "corpus.jsonl", lines), ix, tiny_model)
    for result in (
        search(runner, ix, tiny_model),
        runner.invoke(main, eval_args(ix, tiny_model, *judged)),
    ):
        assert result.exit_code == StoreError.exit_code, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error:") and "holds no documents" in line and reason in line
        assert result.stdout == ""


def test_eval_warns_about_judged_documents_the_store_lacks(
    tiny_model: Path, tmp_path: Path, judged: tuple[Path, Path]
) -> None:
    runner, ix = CliRunner(), tmp_path / "ix"
    index(runner, write(tmp_path / "corpus.jsonl", BODY), ix, tiny_model)
    result = runner.invoke(main, eval_args(ix, tiny_model, *judged))
    assert result.exit_code == 0, result.output
    (warning,) = warnings_of(result)
    assert "2 of the 3 documents the qrels judge are not in the store (1 of them judged" in warning
    assert json.loads(result.stdout)["queries"] == 1


def test_eval_warns_once_that_the_index_is_incomplete(
    tiny_model: Path, tmp_path: Path, judged: tuple[Path, Path]
) -> None:
    runner, ix = CliRunner(), tmp_path / "ix"
    index(runner, write(tmp_path / "corpus.jsonl", [*BODY, "{oops"]), ix, tiny_model)
    result = runner.invoke(main, eval_args(ix, tiny_model, *judged))
    assert result.exit_code == 0, result.output
    assert sum("is incomplete" in line for line in warnings_of(result)) == 1


# --- the service ---------------------------------------------------------------------------------


def gauge(client: TestClient) -> float:
    text = client.get("/metrics").text
    (line,) = [x for x in text.splitlines() if x.startswith("twinbert_index_incomplete ")]
    return float(line.split()[1])


def test_the_service_reports_an_incomplete_index_until_a_run_completes(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner, ix = CliRunner(), tmp_path / "ix"
    index(runner, write(tmp_path / "corpus.jsonl", [*BODY, "{oops"]), ix, tiny_model)
    config = ServiceConfig(index_dir=ix, model=tiny_model, workers=1, refresh_s=0)
    searcher = Searcher.open(ix, tiny_model)
    try:
        with caplog.at_level("WARNING", logger="twinbert_search.service.app"):
            client = TestClient(create_app(config, searcher))
            with client:
                ready = client.get("/readyz")
                assert ready.status_code == 200 and ready.json()["status"] == "ready"
                assert "is incomplete" in ready.json()["warning"]
                assert gauge(client) == 1.0
                client.get("/readyz")
                assert sum("is incomplete" in x for x in caplog.messages) == 1  # once, at start

                completed = index(runner, write(tmp_path / "ok.jsonl", BODY), ix, tiny_model)
                assert completed.exit_code == 0
                assert client.get("/readyz").json()["warning"] is None
                assert gauge(client) == 0.0
    finally:
        searcher.store.close()
