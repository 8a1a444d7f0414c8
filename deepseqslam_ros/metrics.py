"""Place recognition metrics. Query i's true place is truth[i]; a prediction within ±tolerance
places of it (or within a distance of its true position) is correct. Every scored query has a true
place in the map (queries without one are left out by the caller)."""
from __future__ import annotations

import numpy as np


def precision_recall(correct: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PR curve from sweeping a threshold over each query's best score (highest first)."""
    order = np.argsort(-scores, kind='stable')
    hits = np.cumsum(correct[order])
    precision = hits / np.arange(1, len(order) + 1)
    recall = hits / len(order)
    return precision, recall


def place_metrics(ranked: np.ndarray, scores: np.ndarray, truth: np.ndarray, tolerance: int) -> dict:
    """ranked: (Q, K>=5 or fewer) places best first; scores: (Q,) best score; truth: (Q,).

    recall@1/@5: a correct place among the first 1/5 candidates. auc: area under the PR curve,
    as the sum of precision at each recall step. recall@100p: the largest recall with precision 1.
    top1/top5: the reference code's exact-class accuracy (no tolerance).
    """
    ranked, truth = np.asarray(ranked), np.asarray(truth)[:, None]
    return hit_metrics(np.abs(ranked - truth) <= tolerance, ranked == truth, scores, tolerance)


def hit_metrics(near: np.ndarray, exact: np.ndarray, scores: np.ndarray, tolerance: float) -> dict:
    """near/exact: (Q, K) whether each ranked candidate is correct within tolerance / exactly."""
    correct = near[:, 0]
    precision, recall = precision_recall(correct, np.asarray(scores, dtype=np.float64))
    perfect = recall[precision >= 1.0]
    return {
        'recall@1': float(correct.mean()),
        'recall@5': float(near[:, :5].any(1).mean()),
        'auc': float(np.sum(np.diff(recall, prepend=0.0) * precision)),
        'recall@100p': float(perfect.max()) if len(perfect) else 0.0,
        'top1': float(exact[:, 0].mean()),
        'top5': float(exact[:, :5].any(1).mean()),
        'n_queries': int(len(near)),
        'tolerance': tolerance,
    }


def score_matrix_metrics(scores: np.ndarray, truth: np.ndarray, tolerance: int) -> dict:
    """Metrics from a (Q, n_places) score matrix (higher is better)."""
    ranked = np.argsort(-scores, axis=1, kind='stable')[:, :5]
    return place_metrics(ranked, scores[np.arange(len(scores)), ranked[:, 0]], truth, tolerance)
