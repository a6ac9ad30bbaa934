"""Smoke test of `benchmarks/scale_pair.py` at tiny sizes: structure and report, never timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import scale_pair


def test_two_stores_built_once_then_timed_interleaved_and_rendered(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("twinbert_search.stores.embedded.ann_spec.AUTO_HNSW_THRESHOLD", 500)
    work = tmp_path / "pair"
    common = ["--work-dir", str(work), "--model", str(tiny_model)]
    assert scale_pair.main(["build", *common, "--sizes", "600,1800", "--queries", "8"]) == 0
    builds = {p.name for p in work.iterdir()}
    assert {"store-600", "store-1800", "truth-600.npy", "truth-1800.npy"} <= builds
    out = tmp_path / "run-1.json"
    assert scale_pair.main(["time", *common, "--json", str(out), "--no-memory"]) == 0
    run = json.loads(out.read_text())
    small, large = run["rows"]
    assert (small["size"], large["size"]) == (600, 1800)
    assert large["ann"].startswith("ivf") and large["ann"].endswith(",sq8d")  # auto, unit vectors
    for row in run["rows"]:
        assert row["latency_ms"]["total"]["n"] == 8  # every measured query on both stores
        assert 0.0 < row["recall_at_100"] <= 1.0
    assert run["ratio_p50"] > 0 and run["ratio_paired_median"] > 0
    table = scale_pair.render([out, out])
    assert table.count("\n") == 3 and "| - |" in table  # header, rule, two rows; no RSS run
