"""What any Python sidecar adds over the engine's `took`, before it does any work of its own.

    python benchmarks/sidecar_floor.py --url http://127.0.0.1:9290 --alias side [--probes 300]

Issue 28 asks the sidecar to add at most 1.5 ms p50 over the engine's `took`. Two floors
bound what is possible on a machine, each timed with the same urllib3 client, sequentially,
the variants interleaved query by query (the same kNN bodies the served store sends):

- `bare`: the kNN body POSTed to the engine directly: the engine's work outside `took`
  (reading the request, writing the answer), loopback, and `took`'s truncation to whole ms;
- `null sidecar`: the same body POSTed to an ASGI app under uvicorn (uvloop, httptools: what
  `serve` runs) that forwards it to the engine with urllib3 and returns the engine's answer
  unparsed: one more loopback hop and the HTTP server, no FastAPI, no encoding, no parsing.

Each row is wall time less that request's own `took`. The null sidecar is the least a
sidecar in Python can add; `peers.py sidecar` measures the real one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import urllib3

if __package__ in (None, ""):  # run as a script: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import load_test
from benchmarks.suite import REPO
from benchmarks.timing import machine, summary_ms


def null_sidecar(engine_url: str) -> Any:
    """An ASGI app that forwards the request body to `engine_url` and returns the answer."""
    pool = urllib3.PoolManager(maxsize=4)
    headers = {"content-type": "application/json"}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = pool.request("POST", engine_url, body=body, headers=headers).data
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


def start_null_sidecar(engine_url: str, port: int) -> subprocess.Popen:
    """The null sidecar in a process of its own (as `serve` runs), ready to answer."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--url", engine_url], cwd=REPO
    )
    deadline = time.time() + 30
    pool = urllib3.PoolManager()
    while True:
        try:
            pool.request("POST", f"http://127.0.0.1:{port}/", body=b"{}", retries=False)
            return server
        except urllib3.exceptions.HTTPError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("the null sidecar did not start") from None
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:9290")
    parser.add_argument("--alias", default="side")
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument(
        "--queries", type=Path, default=Path("../shared/datasets/scifact/queries.jsonl")
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:  # the null sidecar's own process: --url is the engine's
        import uvicorn

        uvicorn.run(null_sidecar(args.url), host="127.0.0.1", port=args.serve, log_level="warning")
        return

    from twinbert_search.runtime import TwinBertRuntime
    from twinbert_search.runtime.models import resolve_model
    from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore

    before = machine(REPO)
    runtime = TwinBertRuntime.load(resolve_model(None, build_default=True), threads=1)
    store = OpenSearchStore(ConnectionOptions(args.url), alias=args.alias, vector_cache_mb=256)
    _, scoring = store._read_setup()
    texts = load_test.read_queries(args.queries)[: args.probes + 20]
    bodies = [
        orjson.dumps(
            store._lean(store._knn_body(v, 100, None, scoring)), option=orjson.OPT_SERIALIZE_NUMPY
        )
        for v in runtime.encode_queries(texts)
    ]
    store.close()
    engine = f"{args.url}/{args.alias}/_search"
    port = load_test.free_port()
    server = start_null_sidecar(engine, port)
    pool = urllib3.PoolManager()
    targets = {"bare": engine, "null sidecar": f"http://127.0.0.1:{port}/"}
    added: dict[str, list[float]] = {name: [] for name in targets}
    headers = {"content-type": "application/json"}
    try:
        for i, body in enumerate(bodies):
            for name in list(targets)[:: 1 if i % 2 else -1]:
                start = time.perf_counter()
                answer = pool.request("POST", targets[name], body=body, headers=headers).data
                wall = (time.perf_counter() - start) * 1e3
                if i >= 20:  # warm-up
                    added[name].append(wall - float(orjson.loads(answer)["took"]))
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {
        "added_over_took_ms": {k: summary_ms(np.asarray(v)) for k, v in added.items()},
        "machine": before | {"load_after": [round(x, 2) for x in os.getloadavg()]},
        "command": f"python benchmarks/sidecar_floor.py --url {args.url} --alias {args.alias} "
        f"--probes {args.probes}",
    }
    for name, stats in result["added_over_took_ms"].items():
        print(f"{name:13s} added over took p50 {stats['p50']:.2f} ms, p99 {stats['p99']:.2f} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
