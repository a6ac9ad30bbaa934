"""Feasibility of a TwinBERT student distilled from the ensemble teacher (torch, CPU).

Query time: ONE query tower T (frozen here) -> q_T; linear heads W_u map q_T into each other
stored tower's space u (the stored document vector is the concatenation of the towers' doc
vectors); BM25 comes with the recall. Crossing over the recall's top-100 candidates:
  s = sum_k a_k * feature_k  (+ optional MLP over the scalar features)
features: z(BM25), z(cos_T), z(cos(W_u q_T, d_u)) for u in heads.
Fitted to the teacher's scores (listwise KL) on SciFact TRAIN queries' candidates only.

Used by students.py (`probe.py students ...`).
"""

from __future__ import annotations

import numpy as np
import torch
from evallib import DS, fuse_z, ndcg10, z

torch.set_num_threads(1)


def zt(x):  # z-score along the last axis
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True).clamp_min(1e-9)


def ridge_map(X, Y, lam=1e-2):
    """W (dx x dy) minimising |XW - Y|^2 + lam|W|^2."""
    A = X.T @ X + lam * len(X) * np.eye(X.shape[1])
    return np.linalg.solve(A, X.T @ Y).astype(np.float32)


class Problem:
    """Candidates and features of a set of queries of one collection."""

    def __init__(self, ds: DS, qids, recall_w, teacher_w, T, heads, S=None, prf=()):
        self.ds, self.qids, self.T, self.heads = ds, list(qids), T, heads
        idx = [ds.qpos[q] for q in self.qids]
        self.cand = np.stack([fuse_z(ds, i, recall_w)[0][:100] for i in idx])
        S = S or ds.S
        self.t = torch.tensor(
            np.stack(
                [
                    sum(w * z(S[s][i][c]) for s, w in teacher_w.items() if w)
                    for i, c in zip(idx, self.cand, strict=True)
                ]
            ),
            dtype=torch.float32,
        )
        pairs = list(zip(idx, self.cand, strict=True))
        f32 = torch.float32
        self.f_bm = torch.tensor(np.stack([z(ds.S["bm25"][i][c]) for i, c in pairs]), dtype=f32)
        self.f_cos = torch.tensor(np.stack([z(ds.S[T][i][c]) for i, c in pairs]), dtype=f32)
        self.q = torch.tensor(ds.Q[T][idx])
        self.d = {u: torch.tensor(ds.D[u][self.cand]) for u in heads}  # (n, 100, 384)
        self.recall_order = self.cand
        self.pos = torch.tensor(
            np.stack(
                [
                    ds.rel[q][c] > 0 if q in ds.rel else np.zeros(len(c), bool)
                    for q, c in zip(self.qids, self.cand, strict=True)
                ]
            ),
            dtype=torch.float32,
        )
        # query-time PRF features: similarity of each candidate to the mean of the recall's
        # top-3 stored vectors in tower u's space (no extra query encoding)
        self.prf = list(prf)
        fp = []
        for u in self.prf:
            Du = ds.D[u][self.cand]  # (n, 100, 384)
            c = Du[:, :3].mean(1)
            c /= np.linalg.norm(c, axis=1, keepdims=True)
            x = np.einsum("nd,ncd->nc", c, Du)
            fp.append((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True))
        self.f_prf = torch.tensor(np.stack(fp, -1), dtype=torch.float32) if fp else None

    def ndcg(self, scores):
        order = torch.argsort(scores, dim=1, descending=True).numpy()
        rows = zip(self.qids, self.cand, order, strict=True)
        return float(np.mean([ndcg10(self.ds.rel[q], c[o]) for q, c, o in rows]))

    def recall_ndcg(self):
        rows = zip(self.qids, self.cand, strict=True)
        return float(np.mean([ndcg10(self.ds.rel[q], c) for q, c in rows]))


class Student(torch.nn.Module):
    def __init__(self, heads, W0, mlp=0, nprf=0):
        super().__init__()
        self.heads = heads
        self.W = torch.nn.ParameterDict({u: torch.nn.Parameter(torch.tensor(W0[u])) for u in heads})
        nf = 2 + len(heads) + nprf
        self.a = torch.nn.Parameter(torch.ones(nf))
        self.mlp = (
            torch.nn.Sequential(torch.nn.Linear(nf, mlp), torch.nn.GELU(), torch.nn.Linear(mlp, 1))
            if mlp
            else None
        )
        if self.mlp is not None:
            torch.nn.init.zeros_(self.mlp[2].weight)
            torch.nn.init.zeros_(self.mlp[2].bias)

    def feats(self, P, sl):
        fs = [P.f_bm[sl], P.f_cos[sl]]
        for u in self.heads:
            qu = torch.nn.functional.normalize(P.q[sl] @ self.W[u], dim=-1)
            fs.append(zt(torch.einsum("nd,ncd->nc", qu, P.d[u][sl])))
        F = torch.stack(fs, -1)  # (n, 100, F)
        if P.f_prf is not None:
            F = torch.cat([F, P.f_prf[sl]], -1)
        return F

    def forward(self, P, sl=slice(None)):
        F = self.feats(P, sl)
        s = (F * self.a).sum(-1)
        if self.mlp is not None:
            s = s + self.mlp(F).squeeze(-1)
        return s


def fit(
    P: Problem,
    W0,
    mlp=0,
    epochs=40,
    lr=1e-3,
    lr_w=3e-4,
    tau=1.0,
    seed=0,
    log=None,
    label_weight=0.0,
):
    torch.manual_seed(seed)
    m = Student(P.heads, W0, mlp, len(P.prf))
    groups = [{"params": [m.a], "lr": lr}]
    if P.heads:
        groups.append({"params": list(m.W.parameters()), "lr": lr_w})
    if m.mlp is not None:
        groups.append({"params": list(m.mlp.parameters()), "lr": lr})
    opt = torch.optim.Adam(groups)
    n = len(P.qids)
    rng = np.random.default_rng(seed)
    for ep in range(epochs):
        perm = rng.permutation(n)
        for b in range(0, n, 32):
            sl = torch.tensor(perm[b : b + 32])
            s = m(P, sl)
            target = torch.softmax(P.t[sl] / tau, -1)
            loss = -(target * torch.log_softmax(s / tau, -1)).sum(-1).mean()
            if label_weight:
                pos = P.pos[sl]
                has = pos.sum(-1) > 0
                if has.any():
                    ls = torch.log_softmax(s[has], -1)
                    lab = pos[has] / pos[has].sum(-1, keepdim=True)
                    loss = loss + label_weight * (-(lab * ls).sum(-1).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
        if log is not None and (ep + 1) % 10 == 0:
            log(ep + 1, float(loss))
    return m


def init_maps(ds: DS, T, heads, train_q_idx, lam=1e-2, docs=True):
    """Ridge maps q_T -> q_u from train query vectors (+ doc vectors of the corpus, unlabelled)."""
    W0 = {}
    for u in heads:
        X = [ds.Q[T][train_q_idx]]
        Y = [ds.Q[u][train_q_idx]]
        if docs:
            X.append(ds.D[T])
            Y.append(ds.D[u])
        W0[u] = ridge_map(np.concatenate(X), np.concatenate(Y), lam)
    return W0
