"""The 10M-over-1M ratio measured in one process, the two stores' queries interleaved.

`run.py --sizes 1000000,10000000` times the 1M store, then the 10M one, minutes apart; on a
shared machine the speed drifts between the halves, and their ratio with it (BENCHMARKS.md,
"The store at 1M and 10M with auto,sq8d": query encoding, which no index touches, ran 20%
slower in one half). Here both stores are open in one process and each query runs on both,
back to back, in alternating order, so a slow minute slows both sides alike.

    python benchmarks/scale_pair.py build --work-dir runs/scale-pair --ann auto,sq8d
    python benchmarks/scale_pair.py time --work-dir runs/scale-pair --json runs/scale-pair-1.json
    python benchmarks/scale_pair.py render runs/scale-pair-*.json

`build` writes each store once with its exact top-100 (kept as `truth-N.npy`); `time` is one
run (open both, warm up, time, then the peak RSS of a fresh process serving the largest
store); `render` prints the markdown rows. The pipeline timed is `run.py`'s search section:
encode (int8, one thread) + kNN 1,000 + residual rerank of the 1,000 (int8 graph).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import search_ann, suite
from benchmarks.synthetic import ClusteredSphere
from benchmarks.timing import machine, summary_ms

PARTS = ("encode", "recall", "rerank", "total")


def _log(message: str) -> None:
    print(f"[scale-pair {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _config(args: argparse.Namespace) -> suite.BenchConfig:
    from twinbert_search.runtime.models import resolve_model

    return suite.BenchConfig(
        model_dir=Path(resolve_model(args.model, build_default=True)),
        work_dir=args.work_dir,
        sizes=args.sizes,
        ann=args.ann,
        codec=args.codec,
        search_queries=args.queries,
    )


def _queries(dim: int, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The warm-up and the measured queries, as `search_ann.bench_search_size` draws them."""
    warmup, measured = np.split(ClusteredSphere(dim=dim, seed=seed).queries(2 * n), 2)
    return warmup, measured


def build(args: argparse.Namespace) -> None:
    """Each store once, with the exact top-100 of every measured query."""
    from twinbert_search.stores.embedded.ann import RunningTopK

    cfg = _config(args)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    dim = suite.cfg_dim(cfg)
    _, queries = _queries(dim, cfg.seed, cfg.search_queries)
    runtime = suite.load_runtime(cfg, int8=True, threads=1)
    for size in cfg.sizes:
        _log(f"building {size:,} documents ({cfg.ann}, {cfg.codec})")
        sphere = ClusteredSphere(dim=dim, seed=cfg.seed)
        top = RunningTopK(queries, min(1000, size))
        built = suite.build_store(
            args.work_dir / f"store-{size}", sphere.documents(size), runtime, cfg, observe=top.add
        )
        truth, similarity = search_ann._truth(top, min(suite.RECALL_K, size))
        np.save(args.work_dir / f"truth-{size}.npy", truth)
        meta = {**built, "size": size, "similarity": similarity, "config": vars_json(args)}
        (args.work_dir / f"build-{size}.json").write_text(json.dumps(meta, indent=2) + "\n")
        _log(
            f"  {built['ann']}: ingest {built['ingest_s']:.0f} s, finalize {built['build_s']:.0f} s"
        )


def vars_json(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"}


def time_run(args: argparse.Namespace) -> None:
    """One run: both stores open, every query on both in alternating order."""
    from twinbert_search.search import Searcher
    from twinbert_search.stores.embedded import EmbeddedStore
    from twinbert_search.stores.embedded import ann as ann_lib

    metas = sorted(
        (json.loads(p.read_text()) for p in args.work_dir.glob("build-*.json")),
        key=lambda m: m["size"],
    )
    if len(metas) < 2:
        raise SystemExit(f"{args.work_dir}: run `build` first (need two store sizes)")
    sizes = [m["size"] for m in metas]
    built_with = metas[0]["config"]
    args.ann, args.codec, args.model = built_with["ann"], built_with["codec"], args.model
    args.sizes, args.queries = sizes, built_with["queries"]
    cfg = _config(args)
    results: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/scale_pair.py", *sys.argv[1:]]),
        "machine": machine(suite.REPO),
        "builds": metas,
    }
    serving = suite.with_residual(
        suite.load_runtime(cfg, int8=True, threads=cfg.serve_threads), cfg, cfg.combine
    )
    dim = serving.dim
    warmup, queries = _queries(dim, cfg.seed, cfg.search_queries)
    texts = suite.query_texts(cfg)
    stores = {
        s: EmbeddedStore.open(args.work_dir / f"store-{s}", with_documents=False) for s in sizes
    }
    searchers = {s: Searcher(serving, stores[s]) for s in sizes}

    def timed(size: int, text: str, vector: np.ndarray) -> tuple[float, dict[str, float]]:
        t0 = time.perf_counter()
        serving.encode_query(text)  # for real; recall uses the synthetic vector
        t1 = time.perf_counter()
        result = searchers[size].search(
            text, k=10, candidates=cfg.candidates, query_vector=vector, fetch_documents=False
        )
        total = (time.perf_counter() - t0) * 1e3
        return total, {
            "encode": (t1 - t0) * 1e3,
            "recall": result.timings_ms["recall"],
            "rerank": result.timings_ms["rerank"],
        }

    try:
        _log(f"warm-up: {len(warmup)} queries on each of {sizes}")
        for i, vector in enumerate(warmup):
            for size in sizes:
                timed(size, texts[i % len(texts)], vector)
        parts: dict[int, dict[str, list[float]]] = {s: {p: [] for p in PARTS} for s in sizes}
        _log(f"timing {len(queries)} queries on each store, in alternating order")
        for i, vector in enumerate(queries):
            order = sizes if i % 2 == 0 else sizes[::-1]
            for size in order:
                total, spans = timed(size, texts[i % len(texts)], vector)
                parts[size]["total"].append(total)
                for name, value in spans.items():
                    parts[size][name].append(value)
        rows = []
        for meta in metas:
            size = meta["size"]
            truth = np.load(args.work_dir / f"truth-{size}.npy")
            hits = 0
            for i, vector in enumerate(queries):
                found = stores[size].recall(vector, truth.shape[1])
                hits += len({int(d[1:]) for d in found.ids} & set(truth[i].tolist()))
            snapshot = next(
                p
                for p in (args.work_dir / f"store-{size}" / "snapshots").iterdir()
                if not p.name.startswith(".")
            )
            index = ann_lib.load_index(snapshot / "ann.faiss", mmap=True)
            rows.append(
                {
                    "size": size,
                    "ann": meta["ann"],
                    "nprobe": int(getattr(index, "nprobe", 0)),  # tuned at build
                    "recall_at_100": hits / truth.size,
                    "latency_ms": {p: summary_ms(parts[size][p]) for p in PARTS},
                }
            )
            del index
    finally:
        for store in stores.values():
            store.close()
    small, large = rows[0], rows[-1]
    paired = np.asarray(parts[large["size"]]["total"]) / np.asarray(parts[small["size"]]["total"])
    results["rows"] = rows
    results["ratio_p50"] = large["latency_ms"]["total"]["p50"] / small["latency_ms"]["total"]["p50"]
    results["ratio_paired_median"] = float(np.median(paired))
    if not args.no_memory:
        _log(f"peak RSS of a fresh process serving {large['size']:,} documents")
        large["memory"] = search_ann.bench_memory(
            cfg, args.work_dir / f"store-{large['size']}", cfg.search_queries
        )
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    _log(
        f"ratio of p50s {results['ratio_p50']:.2f} "
        f"(paired median {results['ratio_paired_median']:.2f}); wrote {args.json}"
    )


def render(paths: list[Path]) -> str:
    """Markdown rows, one per run: the two stores' p50s, their ratio, recall and memory."""
    lines = [
        "| run (UTC start, commit) | load before / after | e2e p50 1M | e2e p50 10M (p99) | "
        "ratio of p50s (paired median) | 10M encode / recall / rerank p50 | recall@100 1M / 10M "
        "(nprobe) | peak RSS 10M |",
        "|---|---|---:|---:|---:|---|---|---:|",
    ]
    for path in paths:
        doc = json.loads(path.read_text())
        m = doc["machine"]
        small, large = doc["rows"][0], doc["rows"][-1]
        lat = large["latency_ms"]
        rss = large.get("memory", {}).get("peak_rss_mib")
        commit = m["git"]["commit"][:7] + (" (dirty)" if m["git"]["dirty"] else "")
        lines.append(
            f"| {m['date_utc'][11:16]}, {commit} | {m['load_before'][0]:.1f} / "
            f"{m['load_after'][0]:.1f} | {small['latency_ms']['total']['p50']:.2f} | "
            f"{lat['total']['p50']:.2f} ({lat['total']['p99']:.2f}) | "
            f"{doc['ratio_p50']:.2f} ({doc['ratio_paired_median']:.2f}) | "
            f"{lat['encode']['p50']:.2f} / {lat['recall']['p50']:.2f} / "
            f"{lat['rerank']['p50']:.2f} | "
            f"{small['recall_at_100']:.4f} / {large['recall_at_100']:.4f} "
            f"({small['nprobe']}, {large['nprobe']}) | "
            + (f"{rss:,.0f} MiB |" if rss is not None else "- |")
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the stores and their exact top-100")
    b.add_argument("--work-dir", type=Path, required=True)
    b.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1_000_000, 10_000_000]
    )
    b.add_argument("--ann", default="auto,sq8d")
    b.add_argument("--codec", default="int8", choices=suite.CODECS)
    b.add_argument("--queries", type=int, default=200, help="measured queries (as many warm up)")
    b.add_argument("--model", type=Path, default=None)
    b.set_defaults(func=build)
    t = sub.add_parser("time", help="one interleaved timing run over the built stores")
    t.add_argument("--work-dir", type=Path, required=True)
    t.add_argument("--json", type=Path, required=True)
    t.add_argument("--model", type=Path, default=None)
    t.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child process")
    t.set_defaults(func=time_run)
    r = sub.add_parser("render", help="markdown rows from the runs' JSON")
    r.add_argument("runs", type=Path, nargs="+")
    r.set_defaults(func=lambda a: print(render(a.runs)))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
