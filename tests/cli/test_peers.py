"""The peers benchmark's pure parts: recall, the knob a sweep chooses, exact truth, the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import peers, peers_report
from benchmarks.peers_data import exact_truth


def test_recall_counts_the_exact_top_depth_within_the_first_depth_found() -> None:
    truth = ["a", "b", "c", "d"]
    assert peers.recall_at(["a", "x", "b", "c"], truth, 2) == 0.5
    assert peers.recall_at(["d", "c", "b", "a"], truth, 4) == 1.0
    assert np.isnan(peers.recall_at(["a"], [], 1))


def test_the_cheapest_knob_reaching_the_target_is_chosen_else_the_best_reached() -> None:
    sweep = [
        {"knob": 8, "recall@100": 0.90},
        {"knob": 16, "error": "refused"},
        {"knob": 32, "recall@100": 0.96},
        {"knob": 64, "recall@100": 0.99},
    ]
    assert peers.choose_knob(sweep) == {"knob": 32, "recall@100": 0.96, "met": True}
    below = peers.choose_knob([*sweep[:2], {"knob": 32, "recall@100": 0.93}])
    assert below == {"knob": 32, "recall@100": 0.93, "met": False}
    assert peers.choose_knob([{"knob": 8, "error": "refused"}]) is None
    # a kNN of 1,000 that returns 870 hits on average does not fill the rerank depth
    short = [{"knob": 16, "recall@100": 0.97, "hits": 870.0}, {"knob": 32, "recall@100": 0.98}]
    assert peers.choose_knob(short, 1000)["knob"] == 32


def test_knobs_go_from_the_cheapest_up() -> None:
    assert peers.knob_values("opensearch", 100) == [100, 200, 400, 800]
    assert peers.knob_values("elasticsearch", 2000) == [2000, 4000, 8000, 10_000]
    assert peers.knob_values("embedded", 100) == [None]  # an exact store has no knob
    assert peers.knob_values("embedded", 100, tuned=24) == [8, 16, 24, 32, 64, 128, 256]


def test_exact_truth_orders_the_best_first() -> None:
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((50, 8)).astype(np.float32)
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    rows = exact_truth(docs, queries, 10)
    assert (rows == np.argsort(-(queries @ docs.T), axis=1)[:, :10]).all()


def test_the_section_replaces_its_own_markers_only(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nkept\n")
    peers_report.write_section(path, f"{peers_report.BEGIN}\none\n{peers_report.END}")
    peers_report.write_section(path, f"{peers_report.BEGIN}\ntwo\n{peers_report.END}")
    text = path.read_text()
    assert "kept" in text and "two" in text and "one" not in text


def _side(added: float, commit: str) -> dict:
    summary = {"p50": added}
    names = ("wall", "encode", "took", "recall", "rerank", "documents", "total")
    spans = {k: {"p50": 1.0} for k in names}
    return {
        "alias": "a",
        "load": {
            **{"concurrency": 4, "duration_s": 20.0, "ok": 9, "errors": 0, "rps": 1.0},
            **{"p50_ms": 2.0, "p99_ms": 3.0, "cpu_ms_per_request": {"sidecar": 1, "node": 2}},
        },
        "paired": {
            "probes": 9,
            "spans_ms": spans,
            "added_over_took_ms": summary,
            "recall_span_over_took_ms": summary,
            "http_and_framework_ms": summary,
        },
        "machine": {
            "load_before": [1.0],
            "load_after": [1.0],
            "git": {"commit": commit, "dirty": False},
            "date_utc": "2026-12-07T02:12:43+00:00",
            "cpu": "AMD EPYC",
            "cpu_count": 2,
        },
        "command": "python benchmarks/peers.py sidecar",
    }


def test_the_sidecar_paragraph_shows_the_run_before_and_the_recall_step_by_step() -> None:
    side = _side(20.0, "after")
    side["before"] = _side(60.0, "before")
    row = {"took": 1.0, "http": 2.0, "json": 3.0, "orjson": 0.5, "candidates": 1.2, "kbytes": 9}
    keys = [
        f"{alias}/{serializer}/{source}"
        for alias in ("old", "new")
        for serializer in ("json", "orjson")
        for source in ("list", "true")
    ]
    side["wire"] = {
        "n": 100,
        "queries": 30,
        "load": [[1.0], [1.0]],
        "raw": {"old": row, "new": row},
        "recall": {key: {"recall": 5.0, "took": 1.0} for key in keys},
    }
    text = "\n".join(peers_report.sidecar_lines(side))
    assert "adds p50 20.00 ms" in text and "**missed**" in text
    assert "commit before, alias `a`, vector cache off): added p50 60.00 ms (3.0x this" in text
    assert "all three 5.0 ms (took 1.0)" in text
    assert "Where the added 20.0 ms go" in text and "loopback 1.0 ms in a bare POST" in text
    assert "Before" not in "\n".join(peers_report.sidecar_lines(_side(1.0, "x")))


def test_with_the_vector_cache_the_floor_says_what_is_left() -> None:
    side = _side(6.0, "after") | {"vector_cache_mb": 256}
    side["paired"]["bare_round_trip_over_took_ms"] = {"p50": 1.9}
    text = "\n".join(peers_report.sidecar_lines(side))
    assert "with the vector cache (256 MB" in text
    assert "exceeds the took by p50 1.90 ms" in text
    assert "nothing is left for its HTTP server" in text
    side["paired"]["bare_round_trip_over_took_ms"] = {"p50": 0.5}
    assert "leaves the sidecar 1.0 ms for" in "\n".join(peers_report.sidecar_lines(side))
