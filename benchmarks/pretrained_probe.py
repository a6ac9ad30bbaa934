"""Which pooling and prefixes suit an imported tower: dense nDCG@10 by exact search, for every
combination of pooling (mean, CLS) and the card's query / document prefixes (on or off), from
one pass over the corpus per document prefix (the jar's token-embedding graph, 1 thread).

A check of a catalogue record against its model card, on a collection's test queries: use it
to find a mistake (a wrong pooling, a forgotten prefix), never to choose what the card says.

    python benchmarks/pretrained_probe.py e5-small-v2 ../shared/datasets/cacm
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from twinbert_search.evaluation.metrics import evaluate
from twinbert_search.ingest.readers import read_corpus, read_qrels, read_queries
from twinbert_search.pretrained import tower_named
from twinbert_search.pretrained.jar import Jar, local_jar
from twinbert_search.runtime.tokenization import TextTokenizer


def _pooled(session: ort.InferenceSession, tok: TextTokenizer, texts: list[str]) -> dict:
    """Unit vectors of `texts` under each pooling, batches sorted by length."""
    enc = tok.encode(texts)
    order = np.argsort([-len(e.ids) for e in enc], kind="stable")
    out = {}
    rows: dict[str, list[np.ndarray]] = {"mean": [], "cls": []}
    names = {i.name for i in session.get_inputs()}
    for start in range(0, len(order), 32):
        batch = tok.pad([enc[i] for i in order[start : start + 32]])
        hidden = session.run(None, {k: v for k, v in batch.items() if k in names})[0]
        mask = batch["attention_mask"][..., None]
        rows["mean"].append((hidden * mask).sum(1) / mask.sum(1))
        rows["cls"].append(hidden[:, 0])
    for pooling, parts in rows.items():
        vectors = np.empty((len(texts), parts[0].shape[1]), np.float32)
        vectors[order] = np.concatenate(parts)
        out[pooling] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("data", type=Path, help="BEIR folder (corpus, queries, qrels/test.tsv)")
    args = parser.parse_args()
    tower = tower_named(args.name)
    graph_name, tok_name = tower.members()
    jar = Jar(local_jar(tower.coordinates()), artifact=tower.coordinates())
    docs = list(read_corpus(args.data / "corpus.jsonl"))
    qrels = read_qrels(args.data / "qrels" / "test.tsv")
    queries = [q for q in read_queries(args.data / "queries.jsonl") if q.id in qrels]
    with tempfile.TemporaryDirectory() as tmp:
        graph = jar.extract(graph_name, Path(tmp) / graph_name)
        tok_path = jar.extract(tok_name, Path(tmp) / tok_name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        q_tok = TextTokenizer.from_file(tok_path, tower.max_query_length)
        d_tok = TextTokenizer.from_file(tok_path, tower.max_doc_length)
        rows = []
        d_prefixes = sorted({"", tower.document_prefix})
        q_prefixes = sorted({"", tower.query_prefix})
        doc_vectors = {
            p: _pooled(session, d_tok, [p + d.encoding_text for d in docs]) for p in d_prefixes
        }
        for qp in q_prefixes:
            q_vectors = _pooled(session, q_tok, [qp + q.text for q in queries])
            for dp in d_prefixes:
                for pooling in ("mean", "cls"):
                    scores = q_vectors[pooling] @ doc_vectors[dp][pooling].T
                    top = np.argsort(-scores, axis=1)[:, :100]
                    run = {
                        q.id: [(docs[j].id, float(scores[i, j])) for j in top[i]]
                        for i, q in enumerate(queries)
                    }
                    ndcg = evaluate(qrels, run, ["ndcg@10"])["ndcg@10"]
                    rows.append({"query_prefix": qp, "document_prefix": dp, "pooling": pooling,
                                 "ndcg@10": round(ndcg, 4)})  # fmt: skip
    print(json.dumps({"tower": tower.name, "data": str(args.data), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
