"""Ranking metrics on scores (numpy): ROC-AUC and average precision, as scikit-learn defines them.

* `roc_auc(labels, scores)`: the Mann-Whitney U statistic with ties counted half (sklearn's
  `roc_auc_score`); nan when one class is empty.
* `roc_auc_of(pos, neg)`: the same from the scores of the positives and of the negatives.
* `average_precision(labels, scores)`: PR-AUC, step-wise over the distinct scores (sklearn's
  `average_precision_score`).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    y = np.asarray(labels, bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def roc_auc_of(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    return roc_auc(np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)], np.r_[pos, neg])


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    y = np.asarray(labels, bool)
    if not y.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    s, ys = np.asarray(scores)[order], y[order]
    # Group tied scores (sklearn's thresholds are the distinct scores).
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
