"""TREC run files: deterministic tie-breaking, exact round trip, and located read errors."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest

from twinbert_search.errors import ConfigurationError, InputError
from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.evaluation.runfile import rank_order, read_run, write_run

RESULTS = {
    "q2": [("d2", 1.0), ("d1", 1.0), ("d3", 2.5)],
    "q10": [("x", 0.1 + 0.2)],
}
EXPECTED = (
    "q10 Q0 x 1 0.30000000000000004 run1\n"
    "q2 Q0 d3 1 2.5 run1\n"
    "q2 Q0 d1 2 1.0 run1\n"
    "q2 Q0 d2 3 1.0 run1\n"
)


def test_write_run_sorts_queries_and_breaks_ties_by_docid() -> None:
    buffer = io.StringIO()
    write_run(buffer, RESULTS, tag="run1")
    assert buffer.getvalue() == EXPECTED


def test_write_run_is_independent_of_input_order() -> None:
    outputs = set()
    for perm in itertools.permutations(RESULTS["q2"]):
        buffer = io.StringIO()
        write_run(buffer, {"q10": RESULTS["q10"], "q2": list(perm)}, tag="run1")
        outputs.add(buffer.getvalue())
    assert outputs == {EXPECTED}


def test_mapping_input_and_rank_order() -> None:
    buffer = io.StringIO()
    write_run(buffer, {qid: dict(hits) for qid, hits in RESULTS.items()}, tag="run1")
    assert buffer.getvalue() == EXPECTED
    assert rank_order({"b": 1.0, "a": 1.0, "c": 3.0}) == [("c", 3.0), ("a", 1.0), ("b", 1.0)]


def test_round_trip_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    write_run(path, RESULTS, tag="run1")
    assert path.read_text() == EXPECTED
    assert read_run(path) == {"q2": {"d3": 2.5, "d1": 1.0, "d2": 1.0}, "q10": {"x": 0.1 + 0.2}}


def test_evaluating_the_file_matches_evaluating_the_results(tmp_path: Path) -> None:
    qrels = {"q2": {"d1": 1}, "q10": {"x": 1}}
    path = tmp_path / "run.trec"
    write_run(path, RESULTS, tag="run1")
    ranked = {qid: rank_order(hits) for qid, hits in RESULTS.items()}
    assert evaluate(qrels, read_run(path)) == evaluate(qrels, ranked)
    assert evaluate(qrels, ranked, ["mrr@10"]) == {"mrr@10": (1.0 + 0.5) / 2}


@pytest.mark.parametrize("tag", ["", "my run"])
def test_bad_tag(tag: str) -> None:
    with pytest.raises(ConfigurationError, match="tag"):
        write_run(io.StringIO(), RESULTS, tag=tag)


def test_ids_with_whitespace_and_non_finite_scores_are_refused() -> None:
    with pytest.raises(InputError, match="docid 'a b'"):
        write_run(io.StringIO(), {"q": [("a b", 1.0)]}, tag="t")
    with pytest.raises(ValueError, match="nan"):
        write_run(io.StringIO(), {"q": [("a", float("nan"))]}, tag="t")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("q1 Q0 d2 2 0.5", "expected 6 columns"),
        ("q1 Q0 d2 two 0.5 t", "rank 'two'"),
        ("q1 Q0 d2 2 high t", "score 'high'"),
        ("q1 Q0 d2 2 nan t", "score 'nan'"),
        ("q1 Q0 d1 2 0.5 t", "retrieved twice (first at line 1)"),
    ],
)
def test_read_run_errors_name_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "run.trec"
    path.write_text(f"q1 Q0 d1 1 1.0 t\n{line}\n")
    with pytest.raises(InputError) as exc:
        read_run(path)
    assert exc.value.line == 2
    assert f"{path}:2" in str(exc.value)
    assert reason in str(exc.value)
