"""The embedded store beside the engines users would pick instead, on the same vectors.

The same document vectors go into (a) the embedded store as shipped (`--ann auto`), (b)
OpenSearch's k-NN through `OpenSearchStore` (the `--backend opensearch` path; lucene HNSW, the
engine the Maven node carries) and (c) Elasticsearch's `dense_vector` kinds through
`ElasticsearchStore`. For each backend and k (100, and the rerank depth 1,000) the engine's
knob (embedded nprobe, OpenSearch ef_search, Elasticsearch num_candidates) is swept upward
until recall@100 against exact search reaches the target; at that knob the store's recall (as
the searcher calls it: the hits with their vectors) is timed, the engine's own `took` beside
the client's wall time, and the same kNN with `_source: false` (the engine's search alone).
Then the two-stage search through `Searcher` (encode + kNN 1,000 + rerank) at the k = 1,000
knob. One backend per command (a node at a time fits a small machine); rows accumulate in one
JSON file, `render` writes the BENCHMARKS.md section (`peers_report.py`):

    twinbert-search index ../shared/datasets/scifact --index-dir runs/peers-scifact --int8
    python benchmarks/peers.py knn --data scifact:runs/peers-scifact --backend embedded
    TWINBERT_OPENSEARCH_PORT=9290 scripts/opensearch-node.sh start
    python benchmarks/peers.py knn --data synthetic:100000 --backend opensearch \\
        --url http://127.0.0.1:9290
    python benchmarks/peers.py knn --data synthetic:100000 \\
        --backend elasticsearch:int8_hnsw --url http://127.0.0.1:9295
    python benchmarks/peers.py render --write BENCHMARKS.md

`sidecar` (`peers_sidecar.py`) measures `serve --backend opensearch` against the real node.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.peers_data import (  # noqa: E402
    VectorSet,
    load_scifact,
    load_synthetic,
    serving_runtime,
)
from benchmarks.suite import REPO, dir_bytes  # noqa: E402
from benchmarks.timing import machine, summary_ms  # noqa: E402
from twinbert_search.documents import Document  # noqa: E402
from twinbert_search.runtime import TwinBertRuntime  # noqa: E402
from twinbert_search.service.config import DEFAULT_VECTOR_CACHE_MB  # noqa: E402

TARGET = 0.95  # recall@100 every compared row must reach
FULL = 0.99  # share of k hits a kNN of k must return on average
DEPTHS = (100, 1000)
OPENSEARCH_ANN = "lucene:hnsw16:efc128:fp32:innerproduct"  # the product's m/efc, lucene engine
ES_KINDS = ("hnsw", "int8_hnsw", "bbq_hnsw")
NPROBES = (8, 16, 32, 64, 128, 256)
WARMUP = 5
DEFAULT_JSON = REPO / "runs" / "peers.json"


# --- pure helpers -------------------------------------------------------------------------


def recall_at(found: list[str], truth: list[str], depth: int) -> float:
    """Share of the exact top `depth` found in the first `depth` of `found`."""
    want = truth[:depth]
    if not want:
        return float("nan")
    return len(set(found[:depth]) & set(want)) / len(want)


def qualifies(row: dict[str, Any], k: int, target: float = TARGET) -> bool:
    """recall@100 reaches `target` and the kNN fills its depth: an IVF store probing too few
    lists returns fewer than k hits (on average at least FULL * k must come back)."""
    if row.get("error") is not None:
        return False
    return row["recall@100"] >= target and row.get("hits", k) >= FULL * k


def choose_knob(
    sweep: list[dict[str, Any]], k: int = 100, target: float = TARGET
) -> dict[str, Any] | None:
    """The first row (sweeps go from the cheapest knob up) that `qualifies`; else the best
    recall reached (its `met` False). None for an empty sweep."""
    rows = [r for r in sweep if r.get("error") is None]
    if not rows:
        return None
    for row in rows:
        if qualifies(row, k, target):
            return {**row, "met": True}
    return {**max(rows, key=lambda r: (r["recall@100"], r.get("hits", k))), "met": False}


def knob_values(backend: str, k: int, tuned: int | None = None) -> list[int | None]:
    """The knobs swept, cheapest first: nprobe for an IVF store, else the engine's breadth."""
    if backend == "embedded":
        return [None] if tuned is None else sorted({*NPROBES, tuned})
    return sorted({min(10_000, k * m) for m in (1, 2, 4, 8)})


def rss_mib(pid: int | str = "self") -> float | None:
    """VmRSS of a process in MiB (None where /proc has no such process)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- backends -----------------------------------------------------------------------------


def open_backend(spec: str, url: str | None, vs: VectorSet, work: Path) -> Any:
    """A new, empty store of the backend: `embedded`, `opensearch[:<ann>]` or
    `elasticsearch:<kind>`; a cluster index of the same name is deleted first."""
    name, _, option = spec.partition(":")
    alias = f"peers-{vs.name}-{name}-{option.replace(':', '-').replace('_', '-')}".rstrip("-")
    if name == "embedded":
        from twinbert_search.stores.embedded import EmbeddedStore

        path = work / alias
        if path.exists():
            import shutil

            shutil.rmtree(path)
        return EmbeddedStore.create_or_open(
            path, dim=vs.vectors.shape[1], codec="float32", ann=option or "auto", bm25=False
        )
    if url is None:
        raise SystemExit(f"--backend {spec} needs --url")
    if name == "opensearch":
        from twinbert_search.stores.opensearch import ConnectionOptions, OpenSearchStore
        from twinbert_search.stores.opensearch.index_options import IndexOptions

        store: Any = OpenSearchStore(
            ConnectionOptions(url, timeout=300),
            alias=alias,
            index_options=IndexOptions.parse(option or OPENSEARCH_ANN, replicas=0),
        )
    elif name == "elasticsearch":
        from twinbert_search.stores import elasticsearch as es

        store = es.ElasticsearchStore(
            es.ConnectionOptions(url, timeout=300),
            alias=alias,
            index_options=es.IndexOptions.parse(option or "int8_hnsw", replicas=0),
        )
    else:
        raise SystemExit(f"unknown backend {spec!r}")
    names = store.generations.concrete_indices(alias)
    if names:
        store.client.indices.delete(index=",".join(names))
    return store


def ingest(store: Any, vs: VectorSet, fingerprint: str, batch: int = 1000) -> float:
    """Every vector (with its crossing data and text) upserted, then `finalize()`: seconds."""
    start = time.perf_counter()
    for lo in range(0, len(vs.ids), batch):
        hi = lo + batch
        docs = [
            Document(id=i, title=t, text=x)
            for i, t, x in zip(vs.ids[lo:hi], vs.titles[lo:hi], vs.texts[lo:hi], strict=True)
        ]
        pre = None if vs.precomputed is None else vs.precomputed[lo:hi]
        store.upsert(docs, vs.vectors[lo:hi], model_fingerprint=fingerprint, precomputed=pre)
    store.finalize()
    return time.perf_counter() - start


# --- measuring ----------------------------------------------------------------------------


class Engine:
    """One backend's store, its knob, and the engine's `took` of every search it sends."""

    def __init__(self, spec: str, store: Any, repeats: int = 1) -> None:
        self.spec = spec
        self.repeats = repeats
        self.backend = spec.partition(":")[0]
        self.store = store
        self.tooks: list[float] = []
        if self.backend != "embedded":
            inner = store._client_search

            def search(index: str, body: dict[str, Any], params: dict[str, Any]) -> Any:
                response = inner(index, body, params)
                self.tooks.append(float(response["took"]))
                return response

            store._client_search = search

    def faiss_index(self) -> Any:
        return self.store._reader.loaded().index

    def tuned(self) -> int | None:
        """The embedded IVF index's own nprobe (tuned at build); None otherwise."""
        if self.backend != "embedded":
            return None
        return int(self.faiss_index().nprobe) if hasattr(self.faiss_index(), "nprobe") else None

    def set_knob(self, knob: int | None) -> None:
        if self.backend == "embedded":
            if knob is not None:
                self.faiss_index().nprobe = knob
        elif self.backend == "opensearch":
            self.store.ef_search = knob
        else:
            self.store.num_candidates = knob

    def knn_alone(self, vector: np.ndarray, k: int, knob: int | None) -> None:
        """The kNN without the hits' stored fields (the engine's search and ids alone)."""
        if self.backend == "embedded":
            from twinbert_search.stores.embedded import ann as ann_lib

            ann_lib.search(self.faiss_index(), vector, k, nprobe=knob)
            return
        store = self.store
        _, scoring = store._read_setup()
        body = store._knn_body(np.asarray(vector, np.float32), k, None, scoring)
        body["_source"] = False
        store._search(body, "kNN alone")


def ordered_ids(found: Any) -> list[str]:
    order = np.argsort(-np.asarray(found.recall_scores), kind="stable")
    return [found.ids[i] for i in order]


def timed_pass(engine: Engine, vs: VectorSet, call: Callable[[int], Any]) -> dict[str, Any]:
    """`call(i)` for every query after a warm-up, `engine.repeats` passes (a backend whose
    queries take milliseconds is sampled more, so a burst of load moves its p50 less): client
    wall and engine `took` summaries, and the first pass's results."""
    for i in range(min(WARMUP, len(vs.queries))):
        call(i)
    engine.tooks.clear()
    walls, results = [], []
    for rep in range(engine.repeats):
        for i in range(len(vs.queries)):
            start = time.perf_counter()
            found = call(i)
            walls.append((time.perf_counter() - start) * 1e3)
            if rep == 0:
                results.append(found)
    tooks = list(engine.tooks)
    return {
        "wall_ms": summary_ms(walls),
        "took_ms": summary_ms(tooks) if tooks else None,
        "results": results,
    }


def measure_knob(engine: Engine, vs: VectorSet, k: int, knob: int | None) -> dict[str, Any]:
    """recall@100 and recall@k against exact search, and latency, at one knob."""
    engine.set_knob(knob)
    try:
        done = timed_pass(engine, vs, lambda i: engine.store.recall(vs.queries[i], k))
    except Exception as exc:  # an engine refusing a knob is a row, not the end of the run
        return {"knob": knob, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    ids = [ordered_ids(found) for found in done.pop("results")]
    return {
        "knob": knob,
        "hits": float(np.mean([len(found) for found in ids])),
        "recall@100": float(
            np.mean([recall_at(f, t, 100) for f, t in zip(ids, vs.truth, strict=True)])
        ),
        f"recall@{k}": float(
            np.mean([recall_at(f, t, k) for f, t in zip(ids, vs.truth, strict=True)])
        ),
        **done,
    }


def sweep(engine: Engine, vs: VectorSet, k: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Knobs from the cheapest up until recall@100 reaches TARGET; the chosen row, and at
    its knob the kNN without stored fields."""
    rows = []
    for knob in knob_values(engine.backend, k, engine.tuned()):
        row = measure_knob(engine, vs, k, knob)
        rows.append(row)
        log(f"  k={k} knob={knob}: {_brief(row)}")
        if qualifies(row, k):
            break
    chosen = choose_knob(rows, k)
    alone = None
    if chosen is not None:
        knob = chosen["knob"]
        engine.set_knob(knob)
        alone = timed_pass(engine, vs, lambda i: engine.knn_alone(vs.queries[i], k, knob))
        alone.pop("results")
    return {"sweep": rows, "chosen": chosen, "knn_alone": alone, "tuned": engine.tuned()}


def _brief(row: dict[str, Any]) -> str:
    if row.get("error"):
        return row["error"]
    took = row["took_ms"]["p50"] if row.get("took_ms") else float("nan")
    return (
        f"recall@100 {row['recall@100']:.4f}, wall p50 {row['wall_ms']['p50']:.2f} ms, "
        f"took p50 {took:.1f} ms"
    )


def two_stage(
    runtime: TwinBertRuntime, engine: Engine, vs: VectorSet, knob: int | None
) -> dict[str, Any]:
    """encode + kNN 1,000 + rerank of the 1,000 through `Searcher`, per stage."""
    from twinbert_search.search import Searcher

    engine.set_knob(knob)
    searcher = Searcher(runtime, engine.store)
    parts: dict[str, list[float]] = {"encode": [], "recall": [], "rerank": [], "total": []}

    def call(i: int) -> None:
        text = vs.query_texts[i]
        t0 = time.perf_counter()
        runtime.encode_query(text)  # for real; the kNN takes the set's query vector
        t1 = time.perf_counter()
        result = searcher.search(
            text, k=10, candidates=1000, query_vector=vs.queries[i], fetch_documents=False
        )
        parts["encode"].append((t1 - t0) * 1e3)
        parts["recall"].append(result.timings_ms["recall"])
        parts["rerank"].append(result.timings_ms["rerank"])
        parts["total"].append((time.perf_counter() - t0) * 1e3)

    timed_pass(engine, vs, call)
    share = np.asarray(parts["rerank"][WARMUP:]) / np.asarray(parts["total"][WARMUP:])
    return {
        "knob": knob,
        **{name: summary_ms(values[WARMUP:]) for name, values in parts.items()},
        "rerank_share_p50": float(np.median(share)),
    }


def node_memory(url: str, alias: str) -> dict[str, Any]:
    """The node's heap (used, max), its process RSS (/proc, the node runs here), and the
    index's size on disk and segment count."""
    import httpx

    stats = httpx.get(f"{url}/_nodes/stats/jvm", timeout=30).json()["nodes"]
    node = next(iter(stats.values()))
    info = httpx.get(f"{url}/_nodes/process", timeout=30).json()["nodes"]
    pid = next(iter(info.values()))["process"]["id"]
    index = httpx.get(f"{url}/{alias}/_stats/store,segments", timeout=30).json()["_all"]
    mem = node["jvm"]["mem"]
    return {
        "heap_used_mib": mem["heap_used_in_bytes"] / 2**20,
        "heap_max_mib": mem["heap_max_in_bytes"] / 2**20,
        "node_rss_mib": rss_mib(pid),
        "node_pid": pid,
        "index_mib": index["primaries"]["store"]["size_in_bytes"] / 2**20,
        "segments": index["primaries"]["segments"]["count"],
    }


# --- one backend on one vector set ----------------------------------------------------------


def log(message: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_vectors(args: argparse.Namespace, runtime: TwinBertRuntime) -> VectorSet:
    kind, _, where = args.data.partition(":")
    if kind == "scifact":
        return load_scifact(
            Path(where or REPO / "runs" / "peers-scifact"), runtime, args.beir, args.queries
        )
    if kind == "synthetic":
        return load_synthetic(int(where.replace("_", "") or 100_000), runtime, args.queries)
    raise SystemExit(f"--data is scifact:<index-dir> or synthetic:<size>, got {args.data!r}")


def reopen_embedded(store: Any) -> Any:
    """The built store opened read-only, without documents, as `Searcher.open` serves it."""
    from twinbert_search.stores.embedded import EmbeddedStore

    path = store.path
    store.close()
    return EmbeddedStore.open(path, with_documents=False)


def reused(args: argparse.Namespace, vs: VectorSet) -> tuple[Any, float | None]:
    """With --reuse, the embedded store an earlier run built (and that run's ingest time)."""
    from twinbert_search.stores.embedded import EmbeddedStore

    path = args.work_dir / f"peers-{vs.name}-embedded"
    if not args.reuse or args.backend != "embedded" or not path.is_dir():
        return None, None
    rows = json.loads(args.json.read_text()) if args.json.is_file() else []
    done = [r for r in rows if r["backend"] == "embedded" and r["data"] == vs.name]
    log(f"reusing {path}")
    return EmbeddedStore.open(path, with_documents=False), (done[-1]["ingest_s"] if done else None)


def run_knn(args: argparse.Namespace) -> dict[str, Any]:
    """Ingest one vector set into one backend, sweep, time, and measure memory."""
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    before = machine(REPO)
    runtime = serving_runtime(args.model, work, residual=args.crossing == "residual")
    log(f"vectors {args.data}")
    vs = load_vectors(args, runtime)
    rss_before = rss_mib()
    store, ingest_s = reused(args, vs)
    if store is None:
        store = open_backend(args.backend, args.url, vs, work)
        log(f"ingest {len(vs.ids):,} vectors into {args.backend}")
        ingest_s = ingest(store, vs, runtime.fingerprint)
        log(f"  {ingest_s:.1f} s")
        if args.backend == "embedded":
            store = reopen_embedded(store)
    engine = Engine(args.backend, store, args.repeats)
    result: dict[str, Any] = {
        "backend": args.backend,
        "data": vs.name,
        "docs": len(vs.ids),
        "queries": len(vs.queries),
        "repeats": args.repeats,
        "ann": store.info.ann,
        "crossing": args.crossing,
        "ingest_s": ingest_s,
        "knn": {},
    }
    try:
        for k in DEPTHS:
            result["knn"][str(k)] = sweep(engine, vs, k, log)
        chosen = result["knn"]["1000"]["chosen"]
        log("two-stage search through Searcher")
        result["two_stage"] = two_stage(runtime, engine, vs, chosen["knob"] if chosen else None)
        if args.backend == "embedded":
            result["memory"] = {
                "process_rss_mib": rss_mib(),
                "store_rss_mib": (rss_mib() or 0) - (rss_before or 0),
                "index_mib": dir_bytes(store.path) / 2**20,
            }
        else:
            result["memory"] = node_memory(args.url, store.alias)
    finally:
        if args.backend != "embedded" and not args.keep:
            names = store.generations.concrete_indices(store.alias)
            if names:
                store.client.indices.delete(index=",".join(names))
        store.close()
    result["machine"] = before | {"load_after": [round(x, 2) for x in os.getloadavg()]}
    result["command"] = shlex.join(["python", "benchmarks/peers.py", *sys.argv[1:]])
    return result


def run_summary(row: dict[str, Any]) -> dict[str, Any]:
    """What a replaced run leaves in its successor's `earlier`: when, the load, k = 1,000."""
    part = row["knn"].get("1000") or {}
    chosen, alone = part.get("chosen") or {}, part.get("knn_alone") or {}
    return {
        "date_utc": row["machine"]["date_utc"],
        "load_before": row["machine"]["load_before"][0],
        "knob": chosen.get("knob"),
        "wall_p50_ms": (chosen.get("wall_ms") or {}).get("p50"),
        "alone_wall_p50_ms": (alone.get("wall_ms") or {}).get("p50"),
        "took_p50_ms": (chosen.get("took_ms") or {}).get("p50"),
        "alone_took_p50_ms": (alone.get("took_ms") or {}).get("p50"),
    }


def save(path: Path, row: dict[str, Any], key: tuple[str, ...] = ("backend", "data")) -> None:
    """Add a result to the JSON list; an earlier one of the same backend and data is replaced,
    its k = 1,000 figures kept in the new row's `earlier`."""
    rows = json.loads(path.read_text()) if path.is_file() else []
    same = [r for r in rows if tuple(r.get(k) for k in key) == tuple(row.get(k) for k in key)]
    for old in same:
        row["earlier"] = [*old.get("earlier", []), run_summary(old)]
    rows = [r for r in rows if r not in same]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([*rows, row], indent=1) + "\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    knn = sub.add_parser("knn", help="one backend on one vector set")
    knn.add_argument("--data", required=True, help="scifact:<index-dir> or synthetic:<size>")
    knn.add_argument(
        "--backend", required=True, help="embedded, opensearch[:<ann>], elasticsearch:<kind>"
    )
    knn.add_argument("--url", default=None, help="the node (a cluster backend)")
    knn.add_argument("--beir", type=Path, default=REPO.parent / "shared/datasets/scifact")
    knn.add_argument("--queries", type=int, default=100, help="queries (SciFact: the first)")
    knn.add_argument("--repeats", type=int, default=1, help="timed passes over the queries")
    knn.add_argument("--model", type=Path, default=None)
    knn.add_argument(
        "--crossing",
        choices=("residual", "model"),
        default="residual",
        help="rerank with a residual crossing of the shipped shape, or the model's own",
    )
    knn.add_argument("--work-dir", type=Path, default=REPO / "runs" / "peers")
    knn.add_argument("--keep", action="store_true", help="keep the cluster index")
    knn.add_argument(
        "--reuse", action="store_true", help="embedded: the store an earlier run built"
    )
    knn.add_argument("--json", type=Path, default=DEFAULT_JSON)
    side = sub.add_parser("sidecar", help="serve --backend opensearch against the node")
    side.add_argument("--url", required=True)
    side.add_argument("--alias", required=True, help="an index kept by `knn --keep`")
    side.add_argument("--beir", type=Path, default=REPO.parent / "shared/datasets/scifact")
    side.add_argument("--concurrency", type=int, default=4)
    side.add_argument("--duration", type=float, default=20.0)
    side.add_argument("--probes", type=int, default=100, help="sequential paired requests")
    side.add_argument(
        "--vector-cache-mb",
        type=float,
        default=DEFAULT_VECTOR_CACHE_MB,
        help="the sidecar's vector cache (0: every recall carries its vectors)",
    )
    side.add_argument(
        "--threads", type=int, default=None, help="the sidecar's ONNX Runtime threads (serve's)"
    )
    side.add_argument("--json", type=Path, default=REPO / "runs" / "peers-sidecar.json")
    side.add_argument(
        "--before", type=Path, default=None, help="an earlier run's JSON, shown beside this one"
    )
    side.add_argument(
        "--wire", type=Path, default=None, help="benchmarks/recall_wire.py's JSON, shown too"
    )
    render = sub.add_parser("render", help="write the BENCHMARKS.md section")
    render.add_argument("--json", type=Path, default=DEFAULT_JSON)
    render.add_argument("--sidecar-json", type=Path, default=REPO / "runs" / "peers-sidecar.json")
    render.add_argument("--write", type=Path, default=None, help="BENCHMARKS.md to update")
    render.add_argument("--note", action="append", default=[], help="a line for the notes")
    render.add_argument(
        "--sidecar-only",
        action="store_true",
        help="replace only the sidecar sub-section of --write with --sidecar-json",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "knn":
        result = run_knn(args)
        save(args.json, result)
        log(f"wrote {args.json}")
    elif args.command == "sidecar":
        from benchmarks import peers_sidecar

        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = peers_sidecar.run(args)
        for key in ("before", "wire"):
            if getattr(args, key) is not None:
                result[key] = json.loads(getattr(args, key).read_text())
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.json}")
    else:
        from benchmarks import peers_report

        if args.sidecar_only:
            side = json.loads(args.sidecar_json.read_text())
            if args.write is None:
                print("\n".join(peers_report.sidecar_lines(side)))
            else:
                peers_report.write_sidecar(args.write, side)
            return 0
        rows = json.loads(args.json.read_text())
        section = peers_report.render(rows, args.sidecar_json, args.note)
        if args.write is None:
            print(section)
        else:
            peers_report.write_section(args.write, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
