"""Imported pretrained towers side by side (`twinbert-search models fetch`): the query side's
latency (fp32 and int8 graphs, 1 thread), the two int8 sources' cosine to fp32, and document
encoding docs/s. Towers take turns query by query and batch by batch, so a change in machine
load shifts them all alike.

    python benchmarks/pretrained_towers.py runs/models/bge-small-en-v1.5 runs/models/... \
        --queries ../shared/datasets/scifact/queries.jsonl \
        --corpus ../shared/datasets/scifact/corpus.jsonl --docs 256 --int8-jars
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import summary_ms
from twinbert_search.ingest.readers import read_corpus
from twinbert_search.manifest import ModelManifest
from twinbert_search.pretrained import tower_named
from twinbert_search.pretrained.importer import import_tower
from twinbert_search.pretrained.jar import local_jar
from twinbert_search.runtime.encoder import row_cosines
from twinbert_search.runtime.model import TwinBertRuntime


def _texts(path: Path, n: int) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row["text"] for row in rows[:n]]


def _jar_int8_cosine(model_dir: Path, queries: list[str], fp32: np.ndarray, tmp: Path) -> dict:
    """Min/mean cosine to fp32 of the `-q` jar's graph (wrapped as `models fetch` does)."""
    manifest = ModelManifest.load(model_dir)
    tower = tower_named(manifest.extra["pretrained"]["name"])
    jar = local_jar(tower.coordinates())
    q_jar = local_jar(tower.coordinates(quantized=True))
    if not (jar.is_file() and q_jar.is_file()):
        return {"skipped": "jars not in the local Maven repository"}
    out = tmp / tower.name
    import_tower(tower, out, jar=jar, int8="jar", int8_jar=q_jar)
    runtime = TwinBertRuntime.load(out, int8=True, threads=1)
    cos = row_cosines(runtime.encode_queries(queries), fp32)
    return {"min": float(cos.min()), "mean": float(cos.mean()), "p50_ms": _p50(runtime, queries)}


def _p50(runtime: TwinBertRuntime, queries: list[str]) -> float:
    for text in queries[:5]:
        runtime.encode_query(text)
    samples = []
    for text in queries:
        start = time.perf_counter()
        runtime.encode_query(text)
        samples.append((time.perf_counter() - start) * 1e3)
    return summary_ms(samples)["p50"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--n-queries", type=int, default=200)
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--int8-jars", action="store_true", help="Also the -q jars' graphs.")
    args = parser.parse_args()
    queries = _texts(args.queries, args.n_queries)
    docs = [
        d.encoding_text for _, d in zip(range(args.docs), read_corpus(args.corpus), strict=False)
    ]
    names = [m.name for m in args.models]
    fp32 = {n: TwinBertRuntime.load(m, threads=1) for n, m in zip(names, args.models, strict=True)}
    int8 = {
        n: TwinBertRuntime.load(m, int8=True, threads=1)
        for n, m in zip(names, args.models, strict=True)
    }
    lat: dict[str, dict[str, list[float]]] = {n: {"fp32": [], "int8": []} for n in names}
    for runtimes in (fp32, int8):
        for runtime in runtimes.values():
            for text in queries[:5]:
                runtime.encode_query(text)
    for text in queries:
        for n in names:
            for variant, runtimes in (("fp32", fp32), ("int8", int8)):
                start = time.perf_counter()
                runtimes[n].encode_query(text)
                lat[n][variant].append((time.perf_counter() - start) * 1e3)
    seconds = dict.fromkeys(names, 0.0)
    for start in range(0, len(docs), 32):
        for n in names:
            t0 = time.perf_counter()
            fp32[n].encode_documents(docs[start : start + 32])
            seconds[n] += time.perf_counter() - t0
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, model in zip(names, args.models, strict=True):
            ref = fp32[n].encode_queries(queries)
            cos = row_cosines(int8[n].encode_queries(queries), ref)
            result[n] = {
                "query_p50_ms": {v: summary_ms(lat[n][v])["p50"] for v in ("fp32", "int8")},
                "int8_quantize_cosine": {"min": float(cos.min()), "mean": float(cos.mean())},
                "docs_per_s_fp32_1_thread": len(docs) / seconds[n],
            }
            if args.int8_jars:
                result[n]["int8_jar"] = _jar_int8_cosine(model, queries, ref, Path(tmp))
    print(json.dumps({"queries": len(queries), "docs": len(docs), "towers": result}, indent=2))


if __name__ == "__main__":
    main()
