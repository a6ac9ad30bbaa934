"""The sidecar's cost on an engine: `serve --backend opensearch` against the real node.

Two measurements, both against an index `peers.py knn --keep` left on the node:

- under load: N clients (`load_test.run_clients`) POST /search (k 10, rerank of 100
  candidates, query cache off) for T seconds; CPU seconds of the sidecar process and of the
  node process (/proc/<pid>/stat utime + stime, before and after) per request answered;
- added latency: sequential requests, each paired with the same kNN sent to the engine
  directly (the body the sidecar's store sends: 100 hits with their vectors, or with the
  vector cache on (`--vector-cache-mb`, the sidecar's default) ids and versions); per request, the
  sidecar's wall time less its query encoding (its own `encode` span) less the engine's
  `took` for that kNN. The sidecar's spans (recall, rerank, documents) say where it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from typing import Any

import httpx
import numpy as np
import orjson
import urllib3

from benchmarks import load_test
from benchmarks.suite import REPO
from benchmarks.timing import machine, summary_ms

PAYLOAD = {"k": 10, "candidates": 100}


def node_pid(url: str) -> int:
    nodes = httpx.get(f"{url}/_nodes/process", timeout=30).json()["nodes"]
    return int(next(iter(nodes.values()))["process"]["id"])


def server_args(args: argparse.Namespace) -> argparse.Namespace:
    """What `load_test.start_server` reads: the sidecar on the node, query cache off."""
    return argparse.Namespace(
        backend="opensearch",
        url=args.url,
        alias=args.alias,
        log_level="warning",
        cache_size=0,
        vector_cache_mb=args.vector_cache_mb,
        rerank_budget_ms=250.0,
        model=None,
        threads=args.threads,
        workers=None,
    )


def under_load(
    base: str, texts: list[str], args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, Any]:
    """N clients for T seconds after a warm-up; latency and CPU ms per request by process."""
    asyncio.run(load_test.run_clients(base, texts, args.concurrency, 3.0, PAYLOAD, None, 30))
    stats = load_test.Stats()
    before = {name: load_test.cpu_seconds(pid) for name, pid in pids.items()}
    wall = asyncio.run(
        load_test.run_clients(base, texts, args.concurrency, args.duration, PAYLOAD, stats, 30)
    )
    used = {name: load_test.cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    summary = load_test.summarize(stats, wall)
    ok = max(1, summary["ok"])
    return {
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        **{k: summary[k] for k in ("requests", "ok", "errors", "rps", "p50_ms", "p99_ms")},
        "server_ms": summary["server_ms"],
        "cpu_s": used,
        "cpu_ms_per_request": {name: s * 1e3 / ok for name, s in used.items()},
    }


def paired(base: str, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Per request: sidecar wall - its encode span - the engine's took for the same kNN."""
    from benchmarks.peers import Engine
    from twinbert_search.runtime import TwinBertRuntime
    from twinbert_search.runtime.models import resolve_model
    from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore

    runtime = TwinBertRuntime.load(resolve_model(None, build_default=True), threads=1)
    # the kNN the sidecar sends: ids and versions only once its vector cache is on
    store = OpenSearchStore(
        ConnectionOptions(args.url), alias=args.alias, vector_cache_mb=args.vector_cache_mb
    )
    engine = Engine("opensearch", store)
    spans: dict[str, list[float]] = {
        k: [] for k in ("wall", "wall_httpx", "encode", "recall", "rerank", "documents", "total")
    }
    spans["took"] = []
    bare: list[float] = []  # one bare POST of the same kNN body: wall - took
    pool = urllib3.PoolManager()
    with httpx.Client(base_url=base, timeout=30) as client:

        def by_urllib3(text: str) -> dict[str, Any]:  # the client the floor is measured with
            data = orjson.dumps({"query": text, **PAYLOAD})
            headers = {"content-type": "application/json"}
            return orjson.loads(
                pool.request("POST", f"{base}/search", body=data, headers=headers).data
            )

        def by_httpx(text: str) -> dict[str, Any]:  # a convenient client: more of its own cost
            return client.post("/search", json={"query": text, **PAYLOAD}).json()

        for i in range(args.probes + 5):
            text = texts[i % len(texts)]
            walls = {}
            for name, call in (("wall", by_urllib3), ("wall_httpx", by_httpx))[
                :: 1 if i % 2 else -1
            ]:
                start = time.perf_counter()
                answer = call(text)
                walls[name] = (time.perf_counter() - start) * 1e3
                if name == "wall":
                    body = answer
            engine.tooks.clear()
            vector = runtime.encode_query(text)
            engine.store.recall(vector, PAYLOAD["candidates"])
            bare_ms = bare_round_trip(pool, args, store, vector)
            if i < 5:  # warm-up
                continue
            bare.append(bare_ms)
            for name, wall in walls.items():
                spans[name].append(wall)
            spans["took"].append(engine.tooks[-1])
            for name in ("encode", "recall", "rerank", "documents", "total"):
                spans[name].append(body["timings_ms"].get(name, float("nan")))
    engine.store.close()
    arrays = {name: np.asarray(values) for name, values in spans.items()}
    added = arrays["wall"] - arrays["encode"] - arrays["took"]
    return {
        "probes": args.probes,
        "spans_ms": {name: summary_ms(values) for name, values in arrays.items()},
        "added_over_took_ms": summary_ms(added),
        "added_over_took_httpx_ms": summary_ms(
            arrays["wall_httpx"] - arrays["encode"] - arrays["took"]
        ),
        "recall_span_over_took_ms": summary_ms(arrays["recall"] - arrays["took"]),
        "http_and_framework_ms": summary_ms(arrays["wall"] - arrays["total"]),
        "bare_round_trip_over_took_ms": summary_ms(np.asarray(bare)),
    }


def bare_round_trip(pool: Any, args: argparse.Namespace, store: Any, vector: np.ndarray) -> float:
    """The floor under any client: the store's kNN body POSTed with urllib3 alone (no client
    library, no parsing beyond `took`), its wall time less the engine's `took`."""
    _, scoring = store._read_setup()
    body = store._lean(store._knn_body(vector, PAYLOAD["candidates"], None, scoring))
    data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    start = time.perf_counter()
    answer = pool.request(
        "POST",
        f"{args.url}/{args.alias}/_search",
        body=data,
        headers={"content-type": "application/json"},
    )
    wall = (time.perf_counter() - start) * 1e3
    return wall - float(orjson.loads(answer.data)["took"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = load_test.read_queries(args.beir / "queries.jsonl")
    port = load_test.free_port()
    base = f"http://127.0.0.1:{port}"
    before = machine(REPO)
    with open(os.devnull, "w") as log:
        server = load_test.start_server(server_args(args), port, log)
        try:
            load_test.wait_ready(base, server, load_test.READY_TIMEOUT_S)
            pids = {"sidecar": server.pid, "node": node_pid(args.url)}
            load = under_load(base, texts, args, pids)
            pairs = paired(base, texts, args)
        finally:
            load_test.stop_server(server)
    return {
        "url": args.url,
        "alias": args.alias,
        "payload": PAYLOAD,
        "vector_cache_mb": args.vector_cache_mb,
        "load": load,
        "paired": pairs,
        "machine": before | {"load_after": [round(x, 2) for x in os.getloadavg()]},
        "command": shlex.join(["python", "benchmarks/peers.py", *sys.argv[1:]]),
    }
