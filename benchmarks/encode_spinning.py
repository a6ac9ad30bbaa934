"""What ONNX Runtime's spinning threads buy a served query encode, and what they burn.

    python benchmarks/encode_spinning.py [--queries 200] [--gap-ms 10] [--repeats 2]

A service encodes one query, then does other work (the recall, other requests) before the
next. Each variant runs in a fresh process (a session's threads would otherwise spin on
while another is timed): the default model's int8 query graph encodes SciFact queries one at
a time, each followed by a `--gap-ms` sleep, and the process's CPU time in that gap is what
its idle threads burnt. Variants: 2 threads spinning (ONNX Runtime's default), 2 threads
not spinning (`serve`'s default), 1 thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.suite import REPO
from benchmarks.timing import machine

VARIANTS = {"2 threads, spinning": (2, True), "2 threads, no spinning": (2, False)}
VARIANTS["1 thread"] = (1, False)
QUERIES = REPO.parent / "shared" / "datasets" / "scifact" / "queries.jsonl"


def child(threads: int, spinning: bool, queries: int, gap_ms: float) -> dict[str, float]:
    """One variant in this process: encode p50 and CPU ms burnt per gap (median)."""
    from twinbert_search.runtime import TwinBertRuntime
    from twinbert_search.runtime.models import resolve_model

    runtime = TwinBertRuntime.load(
        resolve_model(None, build_default=True), int8=True, threads=threads, spinning=spinning
    )
    if QUERIES.is_file():
        texts = [json.loads(line)["text"] for line in QUERIES.open()][:queries]
    else:
        texts = [line.strip() for line in (REPO / "examples/sample/queries.jsonl").open()]
    encode, burnt = [], []
    for i in range(queries + 20):
        start = time.perf_counter()
        runtime.encode_query(texts[i % len(texts)])
        took = (time.perf_counter() - start) * 1e3
        cpu = time.process_time()
        time.sleep(gap_ms / 1e3)
        if i >= 20:  # warm-up
            encode.append(took)
            burnt.append((time.process_time() - cpu) * 1e3)
    return {"encode_p50_ms": float(np.median(encode)), "burnt_cpu_ms": float(np.median(burnt))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--gap-ms", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=2, help="each variant's processes, in turn")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        threads, spinning = int(args.child[0]), args.child[1] == "1"
        print(json.dumps(child(threads, spinning, args.queries, args.gap_ms)))
        return
    rows = []
    for repeat in range(args.repeats):
        for name, (threads, spinning) in VARIANTS.items():
            command = [sys.executable, __file__, "--queries", str(args.queries)]
            command += ["--gap-ms", str(args.gap_ms), "--child", str(threads), str(int(spinning))]
            out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
            rows.append({"variant": name, "repeat": repeat, **json.loads(out.stdout)})
    m = machine(REPO)
    print(f"{m['date_utc']}, {m['cpu']} ({m['cpu_count']} cores), commit {m['git']['commit'][:7]}")
    print(f"| variant | encode p50 ms | CPU ms burnt in the {args.gap_ms:g} ms after an encode |")
    print("|---|---|---|")
    for name in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]
        enc = " / ".join(f"{r['encode_p50_ms']:.2f}" for r in mine)
        burnt = " / ".join(f"{r['burnt_cpu_ms']:.2f}" for r in mine)
        print(f"| {name} | {enc} | {burnt} |")


if __name__ == "__main__":
    main()
