"""BM25 + RM3 (Anserini style: feedback docs, feedback terms, original-query weight).

Grid on TUNE; the best setting's score matrices are cached (scifact.rm3.npy, cacm.rm3.npy) and
the grid goes to rm3.json. In the probe RM3 lost to BM25 on TUNE and is not used further.
"""

from __future__ import annotations

import common
import numpy as np
import scipy.sparse as sp
from common import load_corpus, load_queries
from evallib import DS, mean_ndcg, tune_ids


def build(ds):
    import bm25s
    from bm25s.tokenization import Tokenizer

    _, texts = load_corpus(ds)
    tok = Tokenizer(stopwords="en")
    tids = tok.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
    r = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    vocab = tok.get_vocab_dict()
    r.index((tids, vocab), show_progress=False)
    rows = np.repeat(np.arange(len(tids)), [len(t) for t in tids])
    cols = np.concatenate([np.asarray(t, dtype=np.int64) for t in tids])
    shape = (len(tids), max(vocab.values()) + 1)
    tf = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=shape)
    tf.sum_duplicates()
    dl = np.asarray(tf.sum(1)).ravel()
    qtok = Tokenizer(stopwords="en")
    qtok.word_to_id = r.vocab_dict
    return r, tf, dl, qtok


def rm3_scores(built, text, base, fb_docs, fb_terms, w_orig, cache):
    r, tf, dl, qtok = built
    q = qtok.tokenize([text], update_vocab=False, return_as="ids", show_progress=False)[0]
    if not len(q):
        return base
    top = np.argsort(-base)[:fb_docs]
    dw = base[top] / max(base[top].sum(), 1e-9)
    rel = (sp.diags(dw / np.maximum(dl[top], 1)) @ tf[top]).sum(0).A.ravel()
    terms = np.argsort(-rel)[:fb_terms]
    fw = rel[terms] / rel[terms].sum()
    qw: dict[int, float] = {}
    for t in q:
        qw[int(t)] = qw.get(int(t), 0) + 1.0 / len(q)
    w = {t: w_orig * v for t, v in qw.items()}
    for t, v in zip(terms, fw, strict=True):
        w[int(t)] = w.get(int(t), 0) + (1 - w_orig) * v
    out = np.zeros_like(base)
    for t, v in w.items():
        if t not in cache:
            cache[t] = r.get_scores([t])
        out += v * cache[t]
    return out


def run_rm3() -> dict:
    tune = tune_ids()
    sf = DS("scifact", towers=())
    built = {d: build(d) for d in ("scifact", "cacm")}
    texts = {d: list(load_queries(d).values()) for d in built}
    caches: dict[str, dict] = {d: {} for d in built}

    def matrix(d, ds, params):
        return np.stack(
            [
                rm3_scores(built[d], t, ds.S["bm25"][i], *params, caches[d])
                for i, t in enumerate(texts[d])
            ]
        )

    res, grid = {}, [(k, n, w) for k in (5, 10) for n in (10, 20) for w in (0.5, 0.7)]
    tune_idx = [sf.qpos[q] for q in tune]
    for params in grid:
        S = np.zeros_like(sf.S["bm25"])
        for i in tune_idx:
            S[i] = rm3_scores(
                built["scifact"], texts["scifact"][i], sf.S["bm25"][i], *params, caches["scifact"]
            )
        sf.S["rm3"] = S
        sf.forget("rm3")
        res[str(params)] = round(mean_ndcg(sf, tune, lambda i: sf.top("rm3", i)), 4)
        print(params, res[str(params)], flush=True)
    best = max(grid, key=lambda p: res[str(p)])
    bm25 = round(mean_ndcg(sf, tune, lambda i: sf.top("bm25", i)), 4)
    print("bm25 tune", bm25, "best rm3", best, res[str(best)])
    np.save(common.PATHS.cache / "scifact.rm3.npy", matrix("scifact", sf, best))
    np.save(common.PATHS.cache / "cacm.rm3.npy", matrix("cacm", DS("cacm", towers=()), best))
    out = {"grid": res, "chosen": str(best)}
    common.write_json("rm3.json", out)
    return out
