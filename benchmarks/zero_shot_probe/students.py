"""Student designs on validation only, then the designs chosen there on test and CACM.

grid    -> students_grid.json    (validation: val60, val60_no, 2-fold OOF on TUNE)
labels  -> students_labels.json  (the grid's best per query tower, + train labels, λ 0.5 / 2)
final P -> students_final{P}.json (the config starting with P that is best on OOF TUNE)
one CFG -> students_one{SUFFIX}.json (one config: validation and test)
The teacher is `teacher_weights` of the signals file (signals.json unless told otherwise).
"""

from __future__ import annotations

import common
import evallib
import numpy as np
import torch
from evallib import DS, fuse_z, mean_ndcg, splits, tune_ids
from student import Problem, fit, init_maps


class Runner:
    def __init__(self, signals_file: str = "signals.json"):
        self.sig = common.read_json(signals_file)
        self.teacher = {k: v for k, v in self.sig["teacher_weights"].items() if v}
        evallib.set_zmode(self.sig["zmode"])
        self.sf = DS("scifact")
        self.load_prf(self.sf)
        s = splits()
        labelled = sorted(set(s["train"]) | set(s["val"]))
        perm = np.random.default_rng(0).permutation(len(labelled))
        half = len(perm) // 2
        self.folds = [
            sorted(labelled[i] for i in perm[:half]),
            sorted(labelled[i] for i in perm[half:]),
        ]

    def load_prf(self, ds: DS) -> None:
        for t in self.sig.get("teacher_prf", {}):
            ds.S[f"{t}+prf"] = np.load(common.PATHS.cache / f"{ds.name}.{t}+prf.npy")

    def recall_weights(self, T):
        """Recall = z-fusion of BM25 and the query tower's cosine; its weight tuned on TUNE."""
        best = None
        for w in (0.5, 1.0, 1.5, 2.0):
            rw = {"bm25": 1.0, T: w}
            s = mean_ndcg(self.sf, tune_ids(), lambda i, rw=rw: fuse_z(self.sf, i, rw)[0])
            if best is None or s > best[0]:
                best = (s, rw)
        return best[1]

    def evaluate(self, cfg, train_q, eval_sets, refit_docs_ds=None):
        T, heads, mlp = cfg["T"], cfg["heads"], cfg["mlp"]
        rw, prf, sf = cfg["recall"], cfg.get("prf", []), self.sf
        p_train = Problem(sf, train_q, rw, self.teacher, T, heads, prf=prf)
        W0 = init_maps(sf, T, heads, [sf.qpos[q] for q in train_q])
        m = fit(
            p_train,
            W0,
            mlp=mlp,
            epochs=cfg.get("epochs", 40),
            label_weight=cfg.get("label_weight", 0.0),
        )
        out = {}
        for name, (ds, qids) in eval_sets.items():
            P = Problem(ds, qids, rw, self.teacher, T, heads, prf=prf)
            if refit_docs_ds is not None and ds is refit_docs_ds:
                # adapt: refit the heads on this corpus' doc vectors (no labels), keep the crossing
                W1 = init_maps(ds, T, heads, [], docs=True) if heads else {}
                for u in heads:
                    m.W[u].data = torch.tensor(W1[u])
            with torch.no_grad():
                s = m(P)
            st, te, rec = P.ndcg(s), P.ndcg(P.t), P.recall_ndcg()
            out[name] = {
                "student": round(st, 4),
                "teacher_same_cands": round(te, 4),
                "recall": round(rec, 4),
                "ratio": round(st / te, 4),
                "n": len(qids),
            }
        out["a"] = [round(float(x), 3) for x in m.a.detach()]
        return out

    def run_cfg(self, cfg):
        """val60 / val60_no (train on the 749) and 2-fold out-of-fold on TUNE."""
        s, sf = splits(), self.sf
        r = self.evaluate(cfg, s["train"], {"val60": (sf, s["val"]), "val60_no": (sf, s["val_no"])})
        oof = []
        for a, b in ((0, 1), (1, 0)):
            ev = sorted(set(self.folds[b]) & set(tune_ids()))
            oof.append(self.evaluate(cfg, self.folds[a], {"x": (sf, ev)})["x"])
        n = sum(o["n"] for o in oof)
        keys = ("student", "teacher_same_cands", "recall")
        r["oof_tune"] = {k: round(sum(o[k] * o["n"] for o in oof) / n, 4) for k in keys}
        r["oof_tune"]["ratio"] = round(
            r["oof_tune"]["student"] / r["oof_tune"]["teacher_same_cands"], 4
        )
        r["cfg"] = cfg
        return r


def grid(run: Runner) -> dict:
    towers = run.sig["towers"]
    res = {}
    for T in [t for t in ("minilm", "bge") if t in towers]:
        rw = run.recall_weights(T)
        others = [u for u in towers if u != T]
        combos = [
            (h, p, m)
            for h in ([[]] + [[u] for u in others if u != "e5"])
            for p in ([], towers)
            for m in ((0, 16) if T == "minilm" else (0,))
        ]
        for heads, prf, mlp in combos:
            cfg = {"T": T, "heads": heads, "mlp": mlp, "recall": rw, "prf": prf}
            key = f"T={T} heads={'+'.join(heads) or '-'} prf={'+'.join(prf) or '-'} mlp={mlp}"
            r = run.run_cfg(cfg)
            res[key] = r
            print(key, r["val60"], r["val60_no"], r["oof_tune"], flush=True)
            common.write_json("students_grid.json", res)
    return res


def labels(run: Runner) -> dict:
    """The grid's best distilled config per query tower, with train labels beside the teacher."""
    g = common.read_json("students_grid.json")
    res = {}
    for T in ("minilm", "bge"):
        keys = [k for k in g if k.startswith(f"T={T} ")]
        base_key = max(keys, key=lambda k: g[k]["oof_tune"]["student"])
        for lw in (0.5, 2.0):
            r = run.run_cfg(dict(g[base_key]["cfg"], label_weight=lw))
            res[f"{base_key} label={lw}"] = r
            print(f"{base_key} label={lw}", r["val60"], r["val60_no"], r["oof_tune"], flush=True)
            common.write_json("students_labels.json", res)
    return res


def final(run: Runner, prefix: str) -> dict:
    g = common.read_json("students_grid.json")
    if common.PATHS.out("students_labels.json").exists():
        g.update(common.read_json("students_labels.json"))
    key = max((k for k in g if k.startswith(prefix)), key=lambda k: g[k]["oof_tune"]["student"])
    cfg = g[key]["cfg"]
    print("chosen on OOF validation:", key, flush=True)
    s, sf = splits(), run.sf
    cacm = DS("cacm")
    run.load_prf(cacm)
    sets = {
        "val60": (sf, s["val"]),
        "val60_no": (sf, s["val_no"]),
        "test_no": (sf, s["test_no"]),
        "test_all": (sf, s["test"]),
    }
    if all(u in cacm.S for u in [cfg["T"], *cfg["heads"], *run.teacher]):
        sets["cacm"] = (cacm, s["cacm_q"])
    r = run.evaluate(cfg, s["train"], sets)
    if "cacm" in sets:
        adapt = run.evaluate(cfg, s["train"], {"cacm": sets["cacm"]}, refit_docs_ds=cacm)
        r["cacm_adapt_heads"] = adapt["cacm"]
    r["chosen"] = key
    common.write_json(f"students_final{prefix.replace('=', '_').strip()}.json", r)
    return r


def one(run: Runner, cfg: dict, suffix: str) -> dict:
    """One config with this signals file's teacher: validation (val60, OOF TUNE) and test."""
    s, sf = splits(), run.sf
    r = run.run_cfg(cfg)
    cacm = DS("cacm")
    sets = {"test_no": (sf, s["test_no"]), "test_all": (sf, s["test"]), "cacm": (cacm, s["cacm_q"])}
    r.update(run.evaluate(cfg, s["train"], sets))
    adapt = run.evaluate(cfg, s["train"], {"cacm": (cacm, s["cacm_q"])}, refit_docs_ds=cacm)
    r["cacm_adapt_heads"] = adapt["cacm"]
    r["teacher"] = run.teacher
    common.write_json(f"students_one{suffix}.json", r)
    return r
