"""Retrieval and tagging metrics for MuLan evaluation (numpy; no scikit-learn needed).

* `tagging(labels, scores, names)`: per-tag and macro / micro ROC-AUC and PR-AUC
  (`common.ranking`, sklearn's definitions).
* `retrieval(sim)`: sim [queries, items] with item i relevant to query i: R@k, mAP (one relevant
  item, so mAP = mean reciprocal rank), median rank, and their chance levels.
* `linear_probe(...)`: one-vs-rest logistic regression (L2, L-BFGS) on frozen embeddings.
"""
from __future__ import annotations

import numpy as np
from scipy import optimize

from common.ranking import average_precision, roc_auc


def tagging(labels: np.ndarray, scores: np.ndarray, names: list[str]) -> dict:
    """labels, scores: [clips, tags].  Per-tag ROC-AUC / PR-AUC, macro (mean over tags) and micro
    (all clip x tag pairs pooled), and the chance PR-AUC (the positive rate)."""
    per = {n: {"roc_auc": roc_auc(labels[:, j], scores[:, j]), "pr_auc": average_precision(labels[:, j], scores[:, j]),
               "positives": int(labels[:, j].sum())} for j, n in enumerate(names)}
    return {
        "macro_roc_auc": float(np.nanmean([v["roc_auc"] for v in per.values()])) if per else float("nan"),
        "macro_pr_auc": float(np.nanmean([v["pr_auc"] for v in per.values()])) if per else float("nan"),
        "micro_roc_auc": roc_auc(labels.ravel(), scores.ravel()),
        "micro_pr_auc": average_precision(labels.ravel(), scores.ravel()),
        "chance_macro_pr_auc": float(np.mean(labels.mean(0))) if per else float("nan"),
        "chance_roc_auc": 0.5,
        "num_tags": len(names),
        "per_tag": per,
    }


def retrieval(sim: np.ndarray, ks=(1, 5, 10)) -> dict:
    """sim [N, N]: query i's relevant item is item i.  Ranks are 1-based; ties count against."""
    n = sim.shape[0]
    pos = np.diagonal(sim)[:, None]
    ranks = 1 + np.sum(sim > pos, axis=1)
    out = {f"r@{k}": float(np.mean(ranks <= k)) for k in ks}
    out.update({f"chance_r@{k}": min(1.0, k / n) for k in ks})
    out["map"] = float(np.mean(1.0 / ranks))
    out["chance_map"] = float(np.mean(1.0 / np.arange(1, n + 1)))
    out["median_rank"] = float(np.median(ranks))
    out["chance_median_rank"] = (n + 1) / 2
    out["num_queries"] = n
    return out


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, l2: float = 1e-2,
                 max_iter: int = 500) -> np.ndarray:
    """One-vs-rest logistic regression, all tags fitted jointly (independent losses).

    x: [N, D] embeddings; y_train: [N, T] in {0, 1}.  Returns test scores [M, T] (logits).
    Features are standardised with the training statistics.
    """
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    xt, xs = (x_train - mu) / sd, (x_test - mu) / sd
    n, d = xt.shape
    t = y_train.shape[1]
    y = y_train.astype(np.float64)

    def f(theta):
        w, b = theta[: d * t].reshape(d, t), theta[d * t:]
        z = xt @ w + b
        loss = np.sum(np.logaddexp(0, z) - y * z) / n + 0.5 * l2 * np.sum(w * w)
        g = (1 / (1 + np.exp(-z)) - y) / n
        return loss, np.concatenate([(xt.T @ g + l2 * w).ravel(), g.sum(0)])

    res = optimize.minimize(f, np.zeros(d * t + t), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    w, b = res.x[: d * t].reshape(d, t), res.x[d * t:]
    return xs @ w + b
