"""Smoke test of the benchmark suite at tiny sizes: structure and report, never timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks import report, run
from benchmarks.synthetic import ClusteredSphere
from benchmarks.teacher_timing import recipe_max_length
from twinbert_search.cli import main
from twinbert_search.runtime.openvino import openvino_available

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "examples" / "sample" / "corpus.jsonl"


def test_synthetic_vectors_are_unit_clustered_and_reproducible() -> None:
    sphere = ClusteredSphere(dim=16, centers=8, topics=2)
    docs = sphere.document_matrix(500)
    np_docs = ClusteredSphere(dim=16, centers=8, topics=2).document_matrix(500)
    assert docs.shape == (500, 16) and (docs == np_docs).all()
    assert abs(float((docs**2).sum(axis=1).mean()) - 1.0) < 1e-5
    queries = sphere.queries(20)
    assert queries.shape == (20, 16)
    # Clustered: a query's best document is far closer than an average one.
    sims = queries @ docs.T
    assert float(sims.max(axis=1).mean()) > float(sims.mean()) + 0.3


def test_report_section_replaces_only_its_markers(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    other = "<!-- other:start -->\nkeep me\n<!-- other:end -->\n"
    out.write_text("# Benchmarks\n\n" + other)
    report.write_section(out, "first")
    report.write_section(out, "second")
    text = out.read_text()
    assert other in text
    assert text.count(report.START) == 1 and "second" in text and "first" not in text


def test_suite_runs_end_to_end_at_tiny_sizes(tiny_model: Path, tmp_path: Path) -> None:
    out, results_path = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    argv = [
        "--quick",
        "--reps",
        "3",
        "--model",
        str(tiny_model),
        "--sizes",
        "300,800",
        "--ann",
        "ivf8",
        "--hidden",
        "16",
        "--index-docs",
        "12",
        "--corpus",
        str(SAMPLE_CORPUS),
        "--out",
        str(out),
        "--json",
        str(results_path),
        "--work-dir",
        str(tmp_path / "work"),
        "--only",
        "encoding,rerank,search,indexing,memory,ann",
        "--ann-compare",
        "hnsw8,efc=20;ivf8",
        "--ann-compare-size",
        "400",
    ]
    assert run.main(argv) == 0
    results = json.loads(results_path.read_text())
    assert results["command"].startswith("python benchmarks/run.py --quick --reps 3")
    assert {"cpu", "cpu_count", "load_before", "load_after"} <= set(results["machine"])

    rows = results["encoding"]["rows"]
    assert {(r["graph"], r["threads"]) for r in rows} == {
        ("fp32", 1),
        ("fp32", 2),
        ("int8", 1),
        ("int8", 2),
    }
    assert all(r["p50"] > 0 and r["p99"] >= r["p50"] for r in rows)
    assert -1.0 <= results["encoding"]["int8_fp32_cosine"]["min"] <= 1.0 + 1e-6

    rerank = results["rerank"]
    assert {(r["combine"], r["candidates"]) for r in rerank["crossing"]} == {
        (c, n) for c in ("max", "concat") for n in (100, 1000)
    }
    legacy = [r for r in rerank["crossing"] if r["output_relu"]]
    assert {(r["combine"], r["candidates"]) for r in legacy} == {("max", 100), ("max", 1000)}
    int8 = [r for r in rerank["crossing"] if r["int8"]]  # the int8 crossing graph
    assert {(r["combine"], r["candidates"]) for r in int8} == {("max", 100), ("max", 1000)}
    assert results["config"]["crossing_int8"]  # end-to-end search scores with it
    # The teacher as the recipe runs it (int8 ONNX at the recipe's length), timed against
    # TwinBERT-res on the same BM25-recalled candidates: per depth, one row holds both.
    teacher = rerank["teacher"]
    assert teacher["graph"] == "int8 ONNX" and teacher["kind"].startswith("base checkpoint")
    assert teacher["max_length"] == recipe_max_length() == 128
    assert teacher["candidates_from"] == "BM25 over sample/corpus.jsonl"
    depths = [r["candidates"] for r in teacher["rows"]]
    assert len(depths) == 2 and all(0 < d <= 300 for d in depths)  # the corpus has 300
    assert [r["candidates"] for r in rerank["ratios"]] == depths
    assert all(r["teacher"]["p50"] > 0 and r["twinbert"]["p50"] > 0 for r in teacher["rows"])
    assert all(r["teacher_over_crossing"] > 0 for r in rerank["ratios"])

    search = results["search"]
    assert [r["size"] for r in search] == [300, 800]
    for row in search:
        assert row["ann"].startswith("ivf")
        assert 0.0 <= row["recall_at_100"] <= 1.0
        assert 0.0 <= row["exact_top100_in_candidates"] <= 1.0
        assert set(row["latency_ms"]) == {"encode", "recall", "rerank", "total", "fetch"}
        assert row["alt_hidden"]["hidden"] == 256 and row["alt_hidden"]["total"]["p50"] > 0
        assert row["build_s"] > 0 and row["snapshot_bytes"] > 0
    assert search[-1]["recall_at_100"] > 0.5  # a broken recall would be near 0

    assert [w["knob"] for w in search[-1]["nprobe_sweep"]] == [
        f"nprobe={n}" for n in (8, 16, 32, 64)
    ]
    assert {r["spec"] for r in results["ann_choice"]["rows"]} == {"hnsw8,efc=20", "ivf8"}

    assert results["memory"]["store_size"] == 800
    assert results["memory"]["peak_rss_mib"] >= results["memory"]["after_imports_mib"] > 0

    indexing = results["indexing"]
    fastest = indexing["fastest"].removesuffix("-float32")
    assert [r["name"] for r in indexing["rows"]] == [
        "naive",
        "optimized-float32",
        *(["openvino-float32"] if openvino_available() else []),
        f"{fastest}-float16",
        f"{fastest}-int8",
    ]
    assert {r["graph"] for r in indexing["rows"]} <= {"fp32", "int8", "openvino-int8"}
    by_codec = {r["codec"]: r for r in indexing["rows"] if r["name"].startswith(fastest)}
    assert (
        by_codec["float16"]["codec_bytes_per_vector"] * 2
        == by_codec["float32"]["codec_bytes_per_vector"]
    )
    for cos in indexing["cosine_to_naive"].values():  # same model, other graphs
        assert cos["min"] > 0.9

    text = out.read_text()
    assert text.count(report.START) == 1 and text.count(report.END) == 1
    headings = ("### Targets", "### Query encoding", "### Rerank", "### End-to-end", "### Choosing")
    for heading in headings:
        assert heading in text
    assert results["command"] in text
    targets = {t.name: t for t in report.check_targets(results)}
    assert targets["ANN recall@100 at 1M"].met is None  # not run at this size


def test_cli_bench_finds_the_suite_of_this_checkout() -> None:
    from twinbert_search.cli.bench import suite_script

    assert suite_script() == Path(run.__file__).resolve()


def _fake_suite(root: Path, exit_code: int = 0) -> Path:
    """A benchmarks/run.py that records its arguments and working directory."""
    script = root / "benchmarks" / "run.py"
    script.parent.mkdir(parents=True)
    script.write_text(
        "import json, os, sys\n"
        "open(os.path.join(os.path.dirname(__file__), 'args.json'), 'w').write("
        "json.dumps([sys.argv[1:], os.getcwd()]))\n"
        f"sys.exit({exit_code})\n"
    )
    return script


def test_cli_bench_looks_for_the_suite_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twinbert_search.cli import bench
    from twinbert_search.errors import ConfigurationError

    option, env, cwd, checkout = (_fake_suite(tmp_path / n) for n in ("a", "b", "c", "d"))
    monkeypatch.chdir(cwd.parents[1])
    monkeypatch.setenv(bench.ENV_SUITE, str(env.parent))  # its folder will do
    monkeypatch.setattr(bench, "PACKAGE_CHECKOUT", checkout.parents[1])
    assert bench.suite_script(option) == option
    assert bench.suite_script(option.parent) == option
    assert bench.suite_script() == env
    monkeypatch.delenv(bench.ENV_SUITE)
    assert bench.suite_script() == cwd
    monkeypatch.chdir(tmp_path)
    assert bench.suite_script() == checkout
    checkout.unlink()
    with pytest.raises(ConfigurationError) as missing:
        bench.suite_script()
    message = str(missing.value)
    assert "\n" not in message and "source repository" in message
    for tried in (
        "--suite",
        bench.ENV_SUITE,
        str(tmp_path / "benchmarks" / "run.py"),
        str(checkout),
    ):
        assert tried in message
    # A suite named explicitly is never passed over for another one.
    monkeypatch.setenv(bench.ENV_SUITE, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigurationError, match=bench.ENV_SUITE):
        bench.suite_script()


def test_cli_bench_runs_the_suite_from_its_repository(tmp_path: Path) -> None:
    script = _fake_suite(tmp_path / "repo", exit_code=3)
    result = CliRunner().invoke(
        main, ["bench", "--quick", "--suite", str(script), "--sizes", "100", "--help"]
    )
    assert result.exit_code == 3, result.output
    args, cwd = json.loads((script.parent / "args.json").read_text())
    assert args == ["--quick", "--sizes", "100", "--help"]
    assert Path(cwd).resolve() == (tmp_path / "repo").resolve()
    missing = CliRunner().invoke(main, ["bench", "--suite", str(tmp_path / "none")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: --suite: no benchmark")


def test_teacher_and_twinbert_rerank_the_same_recalled_documents(
    tmp_path: Path, monkeypatch
) -> None:
    import numpy as np

    from benchmarks import teacher_timing
    from benchmarks.suite import BenchConfig

    scored_pairs: list[list[tuple[str, str]]] = []
    scored_docs: list[list[str]] = []

    class Teacher:
        batch_size = 32

        def score(self, pairs):
            scored_pairs.append(list(pairs))
            return np.zeros(len(pairs), np.float32)

    class Student:
        """Vectors that say which document they encode, to see what the crossing scored."""

        def __init__(self) -> None:
            self.texts: list[str] = []

        def encode_documents(self, texts):
            self.texts = list(texts)
            return np.arange(len(texts), dtype=np.float32)[:, None]

        def encode_query(self, text):
            return np.zeros(1, np.float32)

        def score(self, query, vectors):
            scored_docs.append([self.texts[int(v[0])] for v in vectors])
            return np.zeros(len(vectors), np.float32)

    info = {"checkpoint": "x", "kind": "k", "graph": "g", "max_length": 1, "threads": 2}
    monkeypatch.setattr(teacher_timing, "recipe_teacher", lambda cfg, rt: (Teacher(), info))
    cfg = BenchConfig(model_dir=tmp_path, work_dir=tmp_path, corpus=SAMPLE_CORPUS)
    cfg.teacher_reps, cfg.rerank_reps = 2, 4
    out = teacher_timing.bench_teacher(cfg, None, Student())
    teacher_docs = [[doc for _, doc in pairs] for pairs in scored_pairs if len(pairs) > 32]
    # every set of documents the teacher reranked, the crossing reranked too
    assert teacher_docs and all(docs in scored_docs for docs in teacher_docs)
    assert len(out["teacher"]["rows"]) == 2 and out["teacher"]["rows"][0]["queries"] == 2
