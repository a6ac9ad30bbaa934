"""Run the CPU benchmark suite and write BENCHMARKS.md (its own marked section) plus JSON.

    python benchmarks/run.py [--sizes 10000,100000,1000000] [--quick] [--out BENCHMARKS.md]

Every number lands in one JSON file and one markdown section, with the exact command line and
the machine, so a result can always be traced to the command that reproduces it. `--check`
exits with status 1 when a target of the performance issue is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import encode_rerank, indexing_speed, report, search_ann, suite
from benchmarks.timing import machine

SECTIONS = ("encoding", "rerank", "search", "memory", "ann", "indexing")
ANN_CHOICES = "hnsw32,efc=40;hnsw16,efc=40;hnsw32,efc=40,sq8;ivf2048;ivf2048,sq8"
QUICK = {
    "encode_queries": 30,
    "search_queries": 30,
    "rerank_reps": 30,
    "teacher_reps": 1,
    "index_docs": 64,
}


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"--sizes needs positive integers, got {text!r}")
    return sizes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=_sizes, default=None, help="store sizes (default 10k,100k,1M)")
    p.add_argument(
        "--quick", action="store_true", help="few repetitions (and 10k docs unless --sizes)"
    )
    p.add_argument("--out", type=Path, default=suite.REPO / "BENCHMARKS.md")
    p.add_argument(
        "--json", type=Path, default=None, help="results (default: benchmarks/results.json)"
    )
    p.add_argument("--model", type=Path, default=None, help="model directory (default model)")
    p.add_argument("--teacher", type=Path, default=None, help="cross-encoder checkpoint")
    p.add_argument("--no-teacher", action="store_true", help="skip the teacher timing")
    p.add_argument("--ann", default="auto", help="ANN index string for the search stores")
    p.add_argument("--codec", default="float32", choices=suite.CODECS)
    p.add_argument("--hidden", type=int, default=128, help="residual crossing hidden size")
    p.add_argument("--combine", default="max", choices=("max", "concat"))
    p.add_argument(
        "--serve-threads",
        type=int,
        default=1,
        help="query-encoder ORT threads in the serving path (search, memory)",
    )
    p.add_argument(
        "--float-crossing",
        action="store_true",
        help="end-to-end search with the numpy float crossing, not the int8 graph",
    )
    p.add_argument("--index-docs", type=int, default=None)
    p.add_argument("--reps", type=int, default=None, help="cap every repetition count at N")
    p.add_argument("--corpus", type=Path, default=None, help="BEIR corpus.jsonl for indexing")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"sections, of {','.join(SECTIONS)} (default: all)",
    )
    p.add_argument("--ann-compare", default=ANN_CHOICES, help="';'-separated index strings")
    p.add_argument(
        "--ann-compare-size", type=int, default=None, help="default 100k (10k with --quick)"
    )
    p.add_argument("--work-dir", type=Path, default=None, help="scratch (default: a temp dir)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return p


def _config(args: argparse.Namespace, work_dir: Path) -> suite.BenchConfig:
    from twinbert_search.runtime.models import resolve_model

    cfg = suite.BenchConfig(
        model_dir=Path(resolve_model(args.model, build_default=True)),
        work_dir=work_dir,
        sizes=args.sizes or ([10_000] if args.quick else [10_000, 100_000, 1_000_000]),
        ann=args.ann,
        codec=args.codec,
        hidden=args.hidden,
        combine=args.combine,
        teacher=args.teacher,
        corpus=args.corpus,
        serve_threads=args.serve_threads,
        crossing_int8=not args.float_crossing,
    )
    if args.quick:
        for key, value in QUICK.items():
            setattr(cfg, key, value)
    if args.no_teacher:
        cfg.teacher_reps = 0
    if args.index_docs:
        cfg.index_docs = args.index_docs
    if args.reps:
        for key in ("encode_queries", "search_queries", "rerank_reps", "teacher_reps"):
            setattr(cfg, key, max(1, min(getattr(cfg, key), args.reps)))
    return cfg


def _default_json(out: Path) -> Path:
    """benchmarks/results.json for the repository's BENCHMARKS.md, else beside --out."""
    if out.resolve() == (suite.REPO / "BENCHMARKS.md").resolve():
        return suite.REPO / "benchmarks" / "results.json"
    return out.with_name("benchmarks-results.json")


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    cfg: suite.BenchConfig,
    sections: list[str],
    command: str,
    ann_compare: tuple[int, list[str]] | None = None,
) -> dict[str, Any]:
    """Every requested section in order; returns the results document."""
    from twinbert_search.stores.embedded.ann import parse_ann_spec

    parse_ann_spec(cfg.ann)  # fail before the long work, not after
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": command,
        "machine": machine(suite.REPO),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
    serving = suite.load_runtime(cfg, int8=True, threads=cfg.serve_threads)
    results["dim"] = serving.dim
    if "encoding" in sections:
        _log("query encoding")
        results["encoding"] = encode_rerank.bench_encoding(cfg)
    if "rerank" in sections:
        _log("rerank: crossing vs teacher")
        results["rerank"] = encode_rerank.bench_rerank(cfg, serving)
    if "search" in sections or "memory" in sections:
        results["search"] = []
        for size in cfg.sizes:
            _log(f"search at {size:,} documents")
            row = search_ann.bench_search_size(
                cfg, size, suite.with_residual(serving, cfg, cfg.combine)
            )
            results["search"].append(row)
            _log(
                f"  {row['ann']}: build {row['build_s']:.1f} s, recall@100 "
                f"{row['recall_at_100']:.4f}, p50 {row['latency_ms']['total']['p50']:.2f} ms"
            )
            if "memory" in sections:  # every size: the targets are at 1M and at 10M
                _log(f"  peak memory of a process serving {size:,} documents")
                memory = search_ann.bench_memory(cfg, Path(row["store_path"]), cfg.search_queries)
                row["memory"] = {"store_size": size, **memory}
                results["memory"] = row["memory"]  # the largest, last
                _log(f"  peak RSS {memory['peak_rss_mib']:.0f} MiB")
            if size != cfg.sizes[-1]:
                shutil.rmtree(row["store_path"], ignore_errors=True)
        if "search" not in sections:
            del results["search"]
    if "ann" in sections and ann_compare:
        size, specs = ann_compare
        _log(f"ANN index strings at {size:,} documents: {', '.join(specs)}")
        results["ann_choice"] = search_ann.bench_ann_choice(cfg, size, specs)
    if "indexing" in sections:
        _log("indexing throughput")
        results["indexing"] = indexing_speed.bench_indexing(cfg)
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser().error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    argv_used = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/run.py", *argv_used])
    scratch = args.work_dir or Path(tempfile.mkdtemp(prefix="twinbert-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        specs = [s.strip() for s in args.ann_compare.split(";") if s.strip()]
        compare_size = args.ann_compare_size or (10_000 if args.quick else 100_000)
        results = run(_config(args, scratch), sections, command, (compare_size, specs))
    finally:
        if args.work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    json_path = args.json or _default_json(args.out)
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    report.write_section(args.out, report.render(results))
    targets = report.check_targets(results)
    for t in targets:
        print(f"{t.name}: {t.measured} (target {t.target}): {report.mark(t.met)}")
    print(f"wrote {args.out} and {json_path}")
    missed = any(t.met is False for t in targets)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
