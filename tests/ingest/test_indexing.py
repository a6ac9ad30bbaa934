"""The indexing job and the `index` command: incremental runs, kills, bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import WORDS, build_tiny_model
from twinbert_search.cli import main
from twinbert_search.documents import Document
from twinbert_search.errors import ModelMismatchError
from twinbert_search.ingest.indexing import index_documents
from twinbert_search.runtime import TwinBertRuntime
from twinbert_search.stores.embedded import EmbeddedStore


def make_docs(n: int, seed: int = 0) -> list[Document]:
    import random

    rng = random.Random(seed)
    return [
        Document(
            id=f"doc{i:05d}",
            title=" ".join(rng.choices(WORDS, k=3)),
            text=" ".join(rng.choices(WORDS, k=rng.randint(5, 30))),
            metadata={"topic": rng.choice(["a", "b"])},
        )
        for i in range(n)
    ]


def write_jsonl(path: Path, docs: list[Document]) -> Path:
    with path.open("w") as f:
        for d in docs:
            f.write(
                json.dumps({"_id": d.id, "title": d.title, "text": d.text, "metadata": d.metadata})
                + "\n"
            )
    return path


def stored_ids(index_dir: Path) -> list[str]:
    with EmbeddedStore.open(index_dir, read_only=True) as store:
        return store.all_ids()


def test_incremental_reindex(tiny_model: Path, tmp_path: Path) -> None:
    runtime = TwinBertRuntime.load(tiny_model)
    docs = make_docs(40)
    with EmbeddedStore.create_or_open(tmp_path / "ix", dim=runtime.dim) as store:
        first = index_documents(docs, store, runtime, progress=False, chunk_size=16)
        assert (first.added, first.updated, first.unchanged) == (40, 0, 0)
        changed = [*docs[:39], Document(docs[39].id, "a brand new text", docs[39].title)]
        second = index_documents(changed, store, runtime, progress=False)
        assert (second.added, second.updated, second.unchanged) == (0, 1, 39)
        third = index_documents(changed[:30], store, runtime, progress=False, prune=True)
        assert third.deleted == 10
        assert sorted(store.all_ids()) == sorted(d.id for d in docs[:30])


def test_refuses_vectors_from_another_model(
    tiny_model: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    runtime = TwinBertRuntime.load(tiny_model)
    other = TwinBertRuntime.load(
        build_tiny_model(tiny_checkpoint, tmp_path / "other", pooling="cls")
    )
    assert other.fingerprint != runtime.fingerprint
    with EmbeddedStore.create_or_open(tmp_path / "ix", dim=runtime.dim) as store:
        index_documents(make_docs(10), store, runtime, progress=False)
        with pytest.raises(ModelMismatchError):
            index_documents(make_docs(12), store, other, progress=False)
        assert len(store.all_ids()) == 10


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "twinbert_search.cli", *args],
        capture_output=True,
        text=True,
    )


def test_sigkill_midway_then_rerun_indexes_every_document_once(
    tiny_model: Path, tmp_path: Path
) -> None:
    docs = make_docs(3000, seed=1)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", docs)
    index_dir = tmp_path / "ix"
    args = ["index", str(corpus), "--index-dir", str(index_dir), "--model", str(tiny_model),
            "--chunk-size", "50", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "twinbert_search.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = index_dir / "docs.sqlite"
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                    committed = con.execute("select count(*) from docs").fetchone()[0]
            except sqlite3.Error:
                committed = 0
            if committed >= 200:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "indexing finished before it could be killed; enlarge the corpus"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < committed < len(docs)
    manifest = json.loads((index_dir / "store.json").read_text())
    assert manifest["unfinished_run"]["started"]  # readers are told the index is incomplete

    rerun = _cli([*args, "--json"])
    assert rerun.returncode == 0, rerun.stderr
    assert "unfinished_run" not in json.loads((index_dir / "store.json").read_text())
    report = json.loads(rerun.stdout)
    assert report["unchanged"] >= committed and report["added"] == len(docs) - report["unchanged"]
    ids = stored_ids(index_dir)
    assert len(ids) == len(set(ids)) == len(docs)
    assert set(ids) == {d.id for d in docs}


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _index(runner: CliRunner, corpus: Path, index_dir: Path, model: Path, *extra: str):
    return runner.invoke(
        main,
        ["index", str(corpus), "--index-dir", str(index_dir), "--model", str(model),
         "--no-progress", "--chunk-size", "2", *extra],
    )  # fmt: skip


GOOD = [
    json.dumps({"_id": f"g{i}", "title": "star", "text": f"the moon orbit {i}"}) for i in range(3)
]


@pytest.mark.parametrize(
    ("bad_line", "expected", "flags"),
    [
        ('{"_id": "x1", "text": ', "malformed JSON", ()),
        (json.dumps({"title": "no id", "text": "the sun"}), "_id", ()),
        (json.dumps({"_id": "x2", "title": "t"}), "text", ()),
        # an empty document is skipped by default (tests/ingest/test_input_handling.py);
        # --strict stops
        (json.dumps({"_id": "x3", "text": "   "}), "x3", ("--strict",)),
        (json.dumps({"_id": "g0", "text": "duplicate"}), "g0", ()),
    ],
    ids=["malformed-json", "missing-id", "missing-text", "empty-text-strict", "duplicate-id"],
)
def test_bad_record_stops_with_one_line_and_keeps_what_was_indexed(
    runner: CliRunner,
    tiny_model: Path,
    tmp_path: Path,
    bad_line: str,
    expected: str,
    flags: tuple[str, ...],
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join([*GOOD, bad_line, GOOD[0].replace("g0", "after")]) + "\n")
    result = _index(runner, corpus, tmp_path / "ix", tiny_model, *flags)
    assert result.exit_code == 3
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message
    assert expected in message and "corpus.jsonl:4" in message
    assert sorted(stored_ids(tmp_path / "ix")) == ["g0", "g1", "g2"]  # searchable, nothing lost


def test_invalid_utf8_names_the_line(runner: CliRunner, tiny_model: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(("\n".join(GOOD) + "\n").encode() + b'{"_id": "u", "text": "\xff\xfe"}\n')
    result = _index(runner, corpus, tmp_path / "ix", tiny_model)
    assert result.exit_code == 3
    assert "corpus.jsonl:4" in result.stderr and "UTF-8" in result.stderr
    assert len(stored_ids(tmp_path / "ix")) == 3


def test_skip_errors_indexes_the_rest(runner: CliRunner, tiny_model: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join([GOOD[0], "not json", GOOD[1], GOOD[2]]) + "\n")
    result = _index(runner, corpus, tmp_path / "ix", tiny_model, "--skip-errors")
    assert result.exit_code == 0, result.output
    assert "skipped:" in result.stderr and "corpus.jsonl:2" in result.stderr
    assert len(stored_ids(tmp_path / "ix")) == 3


def test_index_dir_from_another_model_is_refused(
    runner: CliRunner, tiny_model: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(GOOD) + "\n")
    assert _index(runner, corpus, tmp_path / "ix", tiny_model).exit_code == 0
    other = build_tiny_model(tiny_checkpoint, tmp_path / "other", pooling="cls")
    result = _index(runner, corpus, tmp_path / "ix", other)
    assert result.exit_code == 4
    assert "built with model" in result.stderr
    assert len(stored_ids(tmp_path / "ix")) == 3


def test_missing_model_directory(runner: CliRunner, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(GOOD) + "\n")
    result = _index(runner, corpus, tmp_path / "ix", tmp_path / "nope")
    assert result.exit_code == 2
    assert "model directory not found" in result.stderr
