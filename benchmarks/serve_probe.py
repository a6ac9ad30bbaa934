"""Child process for the memory benchmark: load model + store, serve queries, report peak RSS.

Run by `search_ann.bench_memory` as `python -m benchmarks.serve_probe` from the repository
root; prints one JSON line. Peak RSS (VmHWM) counts resident pages of the memory-mapped store
arrays.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from benchmarks.suite import BenchConfig, load_runtime, query_texts, with_residual
from benchmarks.timing import summary_ms


def _rss_mib() -> float:
    """Peak RSS of this process image in MiB.

    VmHWM (Linux) belongs to this executable's address space; ru_maxrss can carry the high
    mark of the parent that forked us, so it is only the fallback.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--queries-file", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--combine", default="max")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from twinbert_search.search import Searcher
    from twinbert_search.stores.embedded import EmbeddedStore

    start_rss = _rss_mib()
    cfg = BenchConfig(
        model_dir=args.model,
        work_dir=args.store.parent,
        hidden=args.hidden,
        combine=args.combine,
        queries=args.queries_file,
        seed=args.seed,
    )
    base = load_runtime(cfg, int8=True, threads=args.threads)
    runtime = with_residual(base, cfg, args.combine)
    store = EmbeddedStore.open(args.store, with_documents=False)
    searcher = Searcher(runtime, store)
    texts = query_texts(cfg)
    searcher.search(texts[0], k=10, candidates=args.candidates)
    loaded_rss = _rss_mib()
    latencies = []
    for i in range(args.queries):
        t0 = time.perf_counter()
        searcher.search(texts[i % len(texts)], k=10, candidates=args.candidates)
        latencies.append((time.perf_counter() - t0) * 1e3)
    store.close()
    print(
        json.dumps(
            {
                "after_imports_mib": start_rss,
                "after_load_and_first_query_mib": loaded_rss,
                "peak_rss_mib": _rss_mib(),
                "queries": args.queries,
                "real_query_search_ms": summary_ms(latencies),
            }
        )
    )


if __name__ == "__main__":
    main()
