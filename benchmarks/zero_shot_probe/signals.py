"""Single signals, z-score vs RRF fusion, teacher weights tuned on TUNE, dense PRF, e5 check.

`signals` writes signals.json; `e5_check` writes e5_check.json and signals_e5teacher.json
(signals.json with TEACHER-e5's weights). Every choice is made on TUNE = val60 ∪ vbig
(SciFact train queries only); test and CACM are reported for the baselines and the choices.
"""

from __future__ import annotations

import itertools

import common
import evallib
import numpy as np
from evallib import DS, fuse_rrf, fuse_z, mean_ndcg, splits, tune_ids

GRID = (0.0, 0.5, 1.0, 2.0)
ZMODES = ("union", "own", "list")


class Evaluator:
    def __init__(self, towers):
        self.sf = DS("scifact", towers)
        self.cacm = DS("cacm", towers)
        s = splits()
        self.sets = {
            "tune": tune_ids(),
            "val60": s["val"],
            "val60_no": s["val_no"],
            "vbig": s["vbig"],
            "test_no": s["test_no"],
            "test_all": s["test"],
        }

    def all_evals(self, fn_sf, fn_cacm, sets=None):
        sets = sets or self.sets
        r = {k: round(mean_ndcg(self.sf, v, fn_sf), 4) for k, v in sets.items()}
        if fn_cacm is not None:
            r["cacm"] = round(mean_ndcg(self.cacm, splits()["cacm_q"], fn_cacm), 4)
        return r

    def fused(self, w, mode=None):
        """(SciFact, CACM) ranking functions of a z-fusion; CACM None when a signal is missing."""
        sf, cacm = self.sf, self.cacm
        ok = all(s in cacm.S for s, v in w.items() if v)
        return (
            lambda i: fuse_z(sf, i, w, mode=mode)[0],
            (lambda i: fuse_z(cacm, i, w, mode=mode)[0]) if ok else None,
        )


def add_prf(ds, tower, k, alpha, source, rows_idx=None):
    """Signal f"{tower}+prf": q' = q + alpha * mean(D[top-k of source(i)]) (rows_idx only)."""
    Q, D = ds.Q[tower], ds.D[tower]
    name = f"{tower}+prf"
    S = ds.S.get(name)
    if S is None or rows_idx is None:
        S = np.zeros_like(ds.S[tower])
    for i in rows_idx if rows_idx is not None else range(len(Q)):
        q = Q[i] + alpha * D[source(i)[:k]].mean(0)
        S[i] = D @ (q / np.linalg.norm(q))
    ds.S[name] = S
    ds.forget(name)
    return name


def fixed_rows(ev: Evaluator, sigs):
    """Singles and equal-weight fusions of every subset (z in three variants, RRF)."""
    sf, cacm = ev.sf, ev.cacm
    rows = {}
    for s in sigs:
        fc = (lambda i, s=s: cacm.top(s, i)) if s in cacm.S else None
        rows[f"single:{s}"] = ev.all_evals(lambda i, s=s: sf.top(s, i), fc)
    for r in range(2, len(sigs) + 1):
        for sub in itertools.combinations(sigs, r):
            w = {s: 1.0 for s in sub}
            for mode in ZMODES:
                rows[f"z-{mode}:" + "+".join(sub)] = ev.all_evals(*ev.fused(w, mode))
            okc = all(s in cacm.S for s in sub)
            fc = (lambda i, w=w: fuse_rrf(cacm, i, w)) if okc else None
            rows["rrf:" + "+".join(sub)] = ev.all_evals(lambda i, w=w: fuse_rrf(sf, i, w), fc)
    return rows


def tune_grid(ev: Evaluator, sigs, modes=ZMODES, need=None):
    """All weight vectors of GRID (largest weight 1 or 2) x z variants, sorted by TUNE nDCG."""
    best = []
    for ws in itertools.product(GRID, repeat=len(sigs)):
        if max(ws) not in (1.0, 2.0) or (need is not None and not ws[need]):
            continue
        w = dict(zip(sigs, ws, strict=True))
        for mode in modes:
            score = mean_ndcg(
                ev.sf, tune_ids(), lambda i, w=w, m=mode: fuse_z(ev.sf, i, w, mode=m)[0]
            )
            best.append((score, ws, mode))
    best.sort(reverse=True)
    return best


def prf_search(ev: Evaluator, towers, wbest, out):
    """Dense PRF grid per tower on TUNE (feedback from its own list or the tuned fusion's)."""
    sf, tune = ev.sf, tune_ids()
    tune_idx = [sf.qpos[q] for q in tune]
    fused_cache: dict = {}

    def fused_src(ds, w):
        def f(i):
            key = (ds.name, i)
            if key not in fused_cache:
                fused_cache[key] = fuse_z(ds, i, w)[0]
            return fused_cache[key]

        return f

    prf, best_prf = {}, {}
    for t in towers:
        base = mean_ndcg(sf, tune, lambda i, t=t: sf.top(t, i))
        best_prf[t] = (base, None)
        for src in ("own", "fused"):
            for k in (3, 5, 10):
                for a in (0.5, 1.0, 2.0):
                    own = lambda i, t=t: sf.top(t, i)  # noqa: E731
                    name = add_prf(
                        sf, t, k, a, own if src == "own" else fused_src(sf, wbest), tune_idx
                    )
                    s1 = mean_ndcg(sf, tune, lambda i, name=name: sf.top(name, i))
                    prf[f"{t}|{src}|k{k}|a{a}"] = round(s1, 4)
                    if s1 > best_prf[t][0]:
                        best_prf[t] = (s1, (src, k, a))
        print(t, "base", round(base, 4), "best prf", best_prf[t], flush=True)
    out["prf_grid"] = prf
    out["prf_best"] = {t: [round(v[0], 4), v[1]] for t, v in best_prf.items()}
    # Each tower whose PRF beat it alone on TUNE is replaced by its PRF signal, on both
    # collections; weights re-tuned on TUNE.
    for ds in (sf, ev.cacm):
        for t in towers:
            if best_prf[t][1] and t in ds.S:
                src, k, a = best_prf[t][1]
                own = lambda i, t=t, ds=ds: ds.top(t, i)  # noqa: E731
                add_prf(ds, t, k, a, own if src == "own" else fused_src(ds, wbest))
    return [f"{t}+prf" if best_prf[t][1] else t for t in towers], best_prf


def run_signals(towers=("minilm", "bge")) -> dict:
    ev = Evaluator(towers)
    towers = [t for t in towers if t in ev.sf.S]
    sigs = ["bm25", *towers]
    out: dict = {"tune_size": len(tune_ids()), "towers": towers}
    rows = fixed_rows(ev, sigs)
    out["fixed"] = rows
    for k, v in rows.items():
        print(f"{k:40s} {v}", flush=True)
    best = tune_grid(ev, sigs)
    out["grid_top"] = [(round(s, 4), dict(zip(sigs, ws, strict=True)), m) for s, ws, m in best[:15]]
    print("grid top:", out["grid_top"][:8])
    wbest = dict(zip(sigs, best[0][1], strict=True))
    evallib.set_zmode(best[0][2])  # the z variant chosen on TUNE is used from here on
    out["zmode"] = evallib.ZMODE
    out["tuned_weights"] = wbest
    out["teacher_weights"] = wbest
    out["tuned"] = ev.all_evals(*ev.fused(wbest))
    print("tuned", wbest, out["tuned"], flush=True)
    psigs, best_prf = prf_search(ev, towers, wbest, out)
    if psigs != towers:
        sigs2 = ["bm25", *psigs]
        best2 = []
        for ws in itertools.product(GRID, repeat=len(sigs2)):
            if not any(ws) or max(ws) not in (1.0, 2.0):
                continue
            w = dict(zip(sigs2, ws, strict=True))
            best2.append((mean_ndcg(ev.sf, tune_ids(), lambda i, w=w: fuse_z(ev.sf, i, w)[0]), ws))
        best2.sort(reverse=True)
        w2 = dict(zip(sigs2, best2[0][1], strict=True))
        out["tuned_prf_weights"] = w2
        out["tuned_prf"] = ev.all_evals(*ev.fused(w2))
        print("tuned+prf", w2, out["tuned_prf"], flush=True)
        if out["tuned_prf"]["tune"] > out["tuned"]["tune"]:
            out["teacher_weights"] = w2
            out["teacher_prf"] = {t: best_prf[t][1] for t in towers if best_prf[t][1]}
    for ds in (ev.sf, ev.cacm):
        for t in towers:
            if f"{t}+prf" in ds.S:
                np.save(common.PATHS.cache / f"{ds.name}.{t}+prf.npy", ds.S[f"{t}+prf"])
    common.write_json("signals.json", out)
    return out


def e5_check() -> dict:
    """e5 as a single signal and as a 4th teacher signal (z variant fixed by signals.json)."""
    sig = common.read_json("signals.json")
    evallib.set_zmode(sig["zmode"])
    ev = Evaluator(("minilm", "bge", "e5"))
    sf, cacm = ev.sf, ev.cacm
    sets = {k: v for k, v in ev.sets.items() if k != "vbig"}
    out = {"single:e5": ev.all_evals(lambda i: sf.top("e5", i), lambda i: cacm.top("e5", i), sets)}
    print(out, flush=True)
    sigs = ["bm25", "minilm", "bge", "e5"]
    best = tune_grid(ev, sigs, modes=(sig["zmode"],), need=3)
    w = dict(zip(sigs, best[0][1], strict=True))
    out["grid_top_with_e5"] = [
        (round(s, 4), dict(zip(sigs, ws, strict=True))) for s, ws, _ in best[:5]
    ]
    out["teacher_without_e5_tune"] = sig["tuned"]["tune"]
    out["best_with_e5"] = {"weights": w, **ev.all_evals(*ev.fused(w), sets)}
    eq = dict.fromkeys(sigs, 1.0)
    out["z:bm25+minilm+bge+e5 equal"] = ev.all_evals(*ev.fused(eq), sets)
    common.write_json("e5_check.json", out)
    sig["teacher_weights"] = w
    sig["teacher_prf"] = {}
    common.write_json("signals_e5teacher.json", sig)
    print(out, flush=True)
    return out
