"""Where a cluster recall's time goes, and what each wire change buys (OpenSearch).

For N query vectors against two aliases holding the same documents (`--old`: vectors written
as 17-digit doubles, before `vector_to_list` wrote the shortest float32 digits; `--new`:
written since), each query runs every variant in turn, so the load of the shared machine
falls on all of them alike. Medians in ms:

- raw: the store's kNN body POSTed with httpx (no gzip): the engine's `took`, the answer's
  bytes, the wall time to its last byte, parsing it with the stdlib json and with orjson,
  building the Candidates from the parsed hits;
- recall: the store's whole `recall` (client, serializer, HTTP, Candidates) for each of
  serializer (stdlib json, as opensearch-py ships / orjson) x `_source` (a field list, as
  before / `true`) x alias, with the engine's `took` of that same request.

    python benchmarks/recall_wire.py --url http://127.0.0.1:9290 --old wire-old --new wire-new
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from typing import Any

import httpx
import numpy as np

from twinbert_search.stores.cluster.schema import SOURCE_FIELDS

LIST_SOURCE = {"includes": list(SOURCE_FIELDS)}  # what recalls asked for before


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1e3, 2)


def make_store(url: str, alias: str, serializer: str, source: str) -> Any:
    from opensearchpy.serializer import JSONSerializer

    from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore

    kwargs = {"serializer": JSONSerializer()} if serializer == "json" else {}
    store = OpenSearchStore(ConnectionOptions(url, client_kwargs=kwargs), alias=alias)
    tooks: list[float] = []
    search = store._client_search

    def client_search(index: str, body: dict[str, Any], params: dict[str, Any]) -> Any:
        if source == "list":
            body = {**body, "_source": LIST_SOURCE}
        answer = search(index, body, params)
        tooks.append(answer["took"] / 1e3)
        return answer

    store._client_search = client_search  # type: ignore[method-assign]
    store.tooks = tooks
    return store


def run(args: argparse.Namespace) -> dict[str, Any]:
    import orjson

    aliases = {"old": args.old, "new": args.new}
    stores = {
        (a, ser, src): make_store(args.url, alias, ser, src)
        for (a, alias), ser, src in itertools.product(
            aliases.items(), ("json", "orjson"), ("list", "true")
        )
    }
    probe = stores[("new", "orjson", "true")]
    dim, scoring = probe._read_setup()
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((args.queries + 3, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    raw: dict[str, dict[str, list[float]]] = {
        a: {k: [] for k in ("took", "bytes", "http", "json", "orjson", "candidates")}
        for a in aliases
    }
    walls: dict[tuple[str, str, str], list[float]] = {key: [] for key in stores}
    load_before = [round(x, 2) for x in os.getloadavg()]
    with httpx.Client(base_url=args.url, timeout=30) as http:
        for i, q in enumerate(queries):
            for a, alias in aliases.items():
                body = probe._knn_body(q, args.n, None, scoring)
                start = time.perf_counter()
                answer = http.post(
                    f"/{alias}/_search",
                    content=json.dumps({**body, "_source": LIST_SOURCE}),
                    headers={"content-type": "application/json", "accept-encoding": "identity"},
                ).content
                http_s = time.perf_counter() - start
                start = time.perf_counter()
                parsed = json.loads(answer)
                json_s = time.perf_counter() - start
                start = time.perf_counter()
                orjson.loads(answer)
                orjson_s = time.perf_counter() - start
                start = time.perf_counter()
                probe._knn_candidates(parsed["hits"]["hits"], dim, q, scoring)
                cand_s = time.perf_counter() - start
                if i >= 3:
                    row = raw[a]
                    row["took"].append(parsed["took"] / 1e3)
                    row["bytes"].append(len(answer) / 1e3)  # median_ms: KB
                    row["http"].append(http_s)
                    row["json"].append(json_s)
                    row["orjson"].append(orjson_s)
                    row["candidates"].append(cand_s)
            for key, store in stores.items():
                start = time.perf_counter()
                store.recall(q, args.n)
                if i >= 3:
                    walls[key].append(time.perf_counter() - start)
    recalls = {
        "/".join(key): {
            "recall": median_ms(walls[key]),
            "took": median_ms(store.tooks[3:]),
        }
        for key, store in stores.items()
    }
    for store in stores.values():
        store.close()
    raw_out = {a: {k: median_ms(v) for k, v in row.items()} for a, row in raw.items()}
    for row in raw_out.values():
        row["kbytes"] = row.pop("bytes") / 1e3
    return {
        "n": args.n,
        "queries": args.queries,
        "raw": raw_out,
        "recall": recalls,
        "load": [load_before, [round(x, 2) for x in os.getloadavg()]],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--old", required=True, help="an alias indexed before the short vectors")
    p.add_argument("--new", required=True, help="the same documents indexed since")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--queries", type=int, default=30)
    print(json.dumps(run(p.parse_args()), indent=1))


if __name__ == "__main__":
    main()
