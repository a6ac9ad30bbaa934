"""Platt scaling: turn a ranker's logits into probabilities that mean something.

Listwise losses (softmax KL, softmax over labelled positives) are blind to a constant added to
every logit, so a student trained with them can end with logits anywhere: the SciFact recipe's
first residual/mul student scored every candidate between 57 and 75, where the logistic is 1.0
even in float64, and a rerank by probability became a tie. Fitting p = sigmoid(a * logit + b)
on labelled candidates, and folding a and b into the crossing's output layer, keeps the ranking
(a > 0) and gives probabilities a caller can threshold.
"""

from __future__ import annotations

import numpy as np


def fit_platt(
    logits: np.ndarray, labels: np.ndarray, *, l2: float = 1e-3, iterations: int = 100
) -> tuple[float, float]:
    """(a, b) maximising the likelihood of `labels` (0/1) under sigmoid(a * logits + b).

    Newton's method on standardised logits with a small L2 term (so separable data still
    converges); `a` is forced positive, since a calibration must not reverse a ranking.
    """
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or len(x) == 0:
        raise ValueError(f"logits {x.shape} and labels {y.shape} must be equal and non-empty")
    if y.min() == y.max():
        raise ValueError("labels must contain both relevant (1) and non-relevant (0) pairs")
    mean, std = float(x.mean()), max(float(x.std()), 1e-12)
    features = np.stack([(x - mean) / std, np.ones_like(x)], axis=1)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(features @ w, -700, 700)))
        grad = features.T @ (p - y) + l2 * w
        hess = (features * (p * (1 - p))[:, None]).T @ features + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    a = max(float(w[0]) / std, 1e-6)
    return a, float(w[1]) - a * mean
