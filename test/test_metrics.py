import numpy as np
import pytest

from deepseqslam_ros.metrics import place_metrics, score_matrix_metrics


def test_hand_computed_case():
    # 4 queries, true places 0..3, tolerance 1
    ranked = np.array([[0, 5, 6, 7, 8],    # exact: correct, top1
                       [2, 1, 9, 9, 9],    # off by one: correct within tolerance, top5 only
                       [7, 8, 9, 2, 1],    # wrong at rank 1, true place at rank 4
                       [9, 8, 7, 6, 5]])   # wrong everywhere
    scores = np.array([0.9, 0.5, 0.8, 0.1])
    m = place_metrics(ranked, scores, np.arange(4), tolerance=1)
    assert m['recall@1'] == 0.5
    assert m['recall@5'] == 0.75
    assert m['top1'] == 0.25 and m['top5'] == 0.75
    # by score: q0 (hit) q2 (miss) q1 (hit) q3 (miss): precision 1, 1/2, 2/3, 2/4; recall .25 .25 .5 .5
    assert m['auc'] == pytest.approx(0.25 * 1 + 0.25 * 2 / 3)
    assert m['recall@100p'] == 0.25
    assert m['n_queries'] == 4


def test_perfect_and_score_matrix():
    scores = np.eye(6) + 0.01 * np.random.default_rng(0).random((6, 6))
    m = score_matrix_metrics(scores, np.arange(6), tolerance=0)
    assert m['recall@1'] == m['auc'] == m['recall@100p'] == m['top1'] == 1.0


def test_no_precision_one_point():
    m = place_metrics(np.array([[3], [1]]), np.array([1.0, 0.5]), np.arange(2), tolerance=0)
    assert m['recall@100p'] == 0.0 and m['recall@1'] == 0.5
