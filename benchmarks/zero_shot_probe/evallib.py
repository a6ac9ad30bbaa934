"""Signals, fusion (z-score / RRF over top-k lists) and nDCG@10 for the probe."""

from __future__ import annotations

import json
from functools import cache

import common
import numpy as np
from common import load_qrels

DEPTH = 100
# The z variant in use; `signals` chooses it on TUNE and later steps read it from signals.json.
ZMODE = "union"


def set_zmode(mode: str) -> None:
    global ZMODE
    ZMODE = mode


@cache
def splits() -> dict:
    with open(common.PATHS.cache / "splits.json") as f:
        return json.load(f)


def tune_ids() -> list[str]:
    """TUNE = val60 ∪ vbig: the validation queries every choice is made on."""
    s = splits()
    return sorted(set(s["val"]) | set(s["vbig"]))


class DS:
    """One collection: per-signal full score matrices (queries x docs) and qrels."""

    def __init__(self, name: str, towers=("minilm", "bge", "e5")):
        cache_dir = common.PATHS.cache
        self.name = name
        self.qids = splits()[name]["qids"]
        self.dids = splits()[name]["dids"]
        self.qpos = {q: i for i, q in enumerate(self.qids)}
        self.dpos = {d: i for i, d in enumerate(self.dids)}
        self.S: dict[str, np.ndarray] = {"bm25": np.load(cache_dir / f"{name}.bm25.npy")}
        self.Q: dict[str, np.ndarray] = {}
        self.D: dict[str, np.ndarray] = {}
        for t in towers:
            try:
                q = np.load(cache_dir / f"{name}.{t}.q.npy")
                d = np.load(cache_dir / f"{name}.{t}.d.npy")
            except FileNotFoundError:
                continue
            self.Q[t], self.D[t] = q, d
            self.S[t] = q @ d.T
        if name == "scifact":
            self.qrels = {**load_qrels(name, "train"), **load_qrels(name, "test")}
        else:
            self.qrels = load_qrels(name, "test")
        # relevance rows of the judged queries
        self.rel = {}
        for q, docs in self.qrels.items():
            r = np.zeros(len(self.dids), np.float32)
            for d, v in docs.items():
                if d in self.dpos and v > 0:
                    r[self.dpos[d]] = v
            self.rel[q] = r
        self._top: dict = {}

    def top(self, sig: str, i: int, k: int = DEPTH) -> np.ndarray:
        key = (sig, i)
        if key not in self._top:
            s = self.S[sig][i]
            p = np.argpartition(-s, k)[:k]
            self._top[key] = p[np.argsort(-s[p], kind="stable")]
        return self._top[key][:k]

    def forget(self, sig: str) -> None:
        """Drop the cached top lists of a signal whose scores changed."""
        self._top = {k: v for k, v in self._top.items() if k[0] != sig}


def ndcg10(rel: np.ndarray, ranking: np.ndarray, k: int = 10) -> float:
    g = rel[ranking[:k]]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((g * disc[: len(g)]).sum())
    ideal = np.sort(rel[rel > 0])[::-1][:k]
    idcg = float((ideal * disc[: len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else 0.0


def z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-9)


def candidates(ds: DS, i: int, sigs) -> np.ndarray:
    return np.unique(np.concatenate([ds.top(s, i) for s in sigs]))


def fuse_z(ds: DS, i: int, weights: dict[str, float], cand=None, S=None, mode=None):
    """Weighted sum of z-scores over the union of the signals' top-100 lists.

    mode "union": each signal z-scored over the union (its true score for every candidate);
    "own": mean/std of the signal's own top-100, applied to every candidate;
    "list": as "own" but a candidate outside the signal's list gets the list's lowest z
    (what a fusion of returned lists, without rescoring, can do).
    """
    S = S or ds.S
    mode = mode or ZMODE
    sigs = [s for s, w in weights.items() if w]
    if cand is None:
        cand = candidates(ds, i, sigs)
    tot = np.zeros(len(cand))
    for s in sigs:
        x = S[s][i]
        if mode == "union":
            tot += weights[s] * z(x[cand])
            continue
        top = ds.top(s, i) if S is ds.S else np.argsort(-x)[:DEPTH]
        ref = x[top]
        zz = (x[cand] - ref.mean()) / max(float(ref.std()), 1e-9)
        if mode == "list":
            inside = np.isin(cand, top)
            zz[~inside] = float(zz[inside].min()) if inside.any() else 0.0
        tot += weights[s] * zz
    return cand[np.argsort(-tot, kind="stable")], tot


def fuse_rrf(ds: DS, i: int, weights: dict[str, float], k: int = 60):
    sigs = [s for s, w in weights.items() if w]
    sc: dict[int, float] = {}
    for s in sigs:
        for r, d in enumerate(ds.top(s, i)):
            sc[int(d)] = sc.get(int(d), 0.0) + weights[s] / (k + r + 1)
    items = sorted(sc.items(), key=lambda x: -x[1])
    return np.array([d for d, _ in items])


def mean_ndcg(ds: DS, qids, rank_fn) -> float:
    return float(np.mean([ndcg10(ds.rel[q], rank_fn(ds.qpos[q])) for q in qids]))
