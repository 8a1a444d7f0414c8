"""Offline evaluation (`deepseqslam-eval`): a checkpoint, or the SeqSLAM baseline, on a query traversal.

Ground truth: the query window that starts at frame j shows place j (same index = same place).
The query never sees the reference's positions: it gets none, its own CSV, or simulated odometry.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .backbones import POOLINGS, Backbone, WeightsNotFoundError
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .core import Localizer, MatchConfig, Recognition
from .descriptors import describe_traversal
from .metrics import place_metrics, precision_recall, score_matrix_metrics
from .seqslam import patch_normalised, sequence_scores
from .traversal import DatasetMissingError, Traversal, load_traversal, traversal_positions


def answer_metrics(frames: np.ndarray, candidates: list[list[int]], best_scores: np.ndarray,
                   frame_truth: np.ndarray, seq_len: int, n_places: int, tolerance: int) -> dict:
    """Metrics of answers for the windows ending at `frames` (offline, bag or live replay alike).

    A window's true place is the place of its first frame; windows whose true place is not in the
    map (or unknown, < 0) are not counted. `candidates`: each answer's top-K places, best first.
    """
    truth = frame_truth[np.asarray(frames) - seq_len + 1]
    keep = (truth >= 0) & (truth < n_places)
    ranked = np.array([c + [c[-1]] * (5 - len(c)) for c in candidates])[:, :5]   # pad K < 5
    return place_metrics(ranked[keep], np.asarray(best_scores)[keep], truth[keep], tolerance)


def recognition_metrics(results: list[Recognition], frame_truth: np.ndarray, ckpt: Checkpoint,
                        tolerance: int) -> dict:
    return answer_metrics(np.array([r.frame for r in results]), [[p for p, _ in r.candidates] for r in results],
                          np.array([r.score for r in results]), frame_truth, ckpt.config.seq_len,
                          ckpt.config.n_places, tolerance)


def evaluate_checkpoint(ckpt: Checkpoint, query: Traversal, positions: np.ndarray | None,
                        tolerance: int, match: MatchConfig | None = None, device: str = 'auto',
                        progress: bool = True) -> tuple[dict, np.ndarray]:
    """Run the streaming core over the query; returns (metrics, (Q, n_places) score matrix)."""
    localizer = Localizer(ckpt, device, match)
    descriptors = describe_traversal(localizer.backbone, query, progress=progress)
    if ckpt.config.use_positions and positions is None:
        print('note: the model was trained with positions but the query has none; '
              'scoring with sequence matching only', file=sys.stderr)
    results = localizer.run(descriptors, positions)
    metrics = recognition_metrics(results, np.arange(len(query)), ckpt, tolerance)
    return metrics, np.stack([r.scores for r in results])[:metrics['n_queries']]


def evaluate_seqslam(reference: Traversal, query: Traversal, seq_len: int, tolerance: int,
                     descriptor: str = 'cnn', backbone: Backbone | None = None, standardise: str = 'none',
                     progress: bool = True) -> tuple[dict, np.ndarray]:
    if descriptor == 'cnn':
        ref, qry = (describe_traversal(backbone, t, progress=progress) for t in (reference, query))
    else:
        ref, qry = patch_normalised(reference), patch_normalised(query)
    n_places = len(reference) - seq_len
    scores = sequence_scores(ref, qry, seq_len, n_places, standardise).numpy()[:n_places]  # true place exists
    return score_matrix_metrics(scores, np.arange(len(scores)), tolerance), scores


def save_plots(scores: np.ndarray, tolerance: int, folder: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    folder.mkdir(parents=True, exist_ok=True)
    truth = np.arange(len(scores))
    best = scores.argmax(1)
    precision, recall = precision_recall(np.abs(best - truth) <= tolerance, scores.max(1))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision)
    ax.set(xlabel='recall', ylabel='precision', xlim=(0, 1), ylim=(0, 1.02), title=title)
    fig.savefig(folder / 'pr_curve.png', dpi=100, bbox_inches='tight')
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(scores, cmap='viridis', aspect='auto')
    ax.set(xlabel='reference place', ylabel='query window', title=title)
    fig.savefig(folder / 'score_matrix.png', dpi=100, bbox_inches='tight')
    plt.close('all')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='deepseqslam-eval', description=__doc__.splitlines()[0])
    parser.add_argument('--method', choices=('deepseqslam', 'seqslam'), default='deepseqslam')
    parser.add_argument('--checkpoint', help='checkpoint from deepseqslam-train (method deepseqslam)')
    parser.add_argument('--reference', help='reference image folder (method seqslam)')
    parser.add_argument('--query', required=True, help='query image folder')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--query-positions', help="CSV of the query's own x,y per frame")
    group.add_argument('--simulate-odometry', type=int, metavar='SEED',
                       help='simulated odometry along --route with noise and drift')
    parser.add_argument('--route', help='route CSV that --simulate-odometry integrates')
    parser.add_argument('--tolerance', type=int, default=2, help='± places counted correct')
    parser.add_argument('--json', required=True, help='write metrics here')
    parser.add_argument('--plots', help='folder for pr_curve.png and score_matrix.png')
    parser.add_argument('--lstm-weight', type=float, default=MatchConfig.lstm_weight)
    parser.add_argument('--query-prior', type=float, default=MatchConfig.query_prior)
    parser.add_argument('--descriptor', choices=('cnn', 'patchnorm'), default='cnn', help='seqslam input')
    parser.add_argument('--backbone', default='mobilenet_v2', help='seqslam CNN')
    parser.add_argument('--pooling', choices=POOLINGS, default='global+strips', help='seqslam CNN pooling')
    parser.add_argument('--standardise', choices=('none', 'offline'), default='none',
                        help="seqslam: 'offline' standardises each traversal with its whole-traversal statistics")
    parser.add_argument('--seq-len', type=int, default=10, help='seqslam sequence length')
    parser.add_argument('--max-frames', type=int)
    parser.add_argument('--device', default='auto')
    args = parser.parse_args(argv)
    try:
        query = load_traversal(args.query, limit=args.max_frames)
        if args.method == 'seqslam':
            if not args.reference:
                parser.error('--method seqslam needs --reference DIR')
            reference = load_traversal(args.reference, limit=args.max_frames)
            backbone = Backbone(args.backbone, pooling=args.pooling) if args.descriptor == 'cnn' else None
            metrics, scores = evaluate_seqslam(reference, query, args.seq_len, args.tolerance,
                                               args.descriptor, backbone, args.standardise)
            name = f'SeqSLAM ({args.descriptor}, standardise={args.standardise})'
        else:
            if not args.checkpoint:
                parser.error('--method deepseqslam needs --checkpoint CKPT')
            ckpt = load_checkpoint(args.checkpoint)
            positions = traversal_positions(len(query), args.query_positions, args.simulate_odometry, args.route)
            match = MatchConfig(lstm_weight=args.lstm_weight, query_prior=args.query_prior)
            metrics, scores = evaluate_checkpoint(ckpt, query, positions, args.tolerance, match, args.device)
            name = 'DeepSeqSLAM'
            metrics['positions'] = ('csv' if args.query_positions else
                                    'none' if positions is None else f'simulated(seed={args.simulate_odometry})')
            metrics['lstm_weight'] = args.lstm_weight
    except (DatasetMissingError, WeightsNotFoundError, CheckpointError, ValueError, RuntimeError) as exc:
        print(f'deepseqslam-eval: error: {exc}', file=sys.stderr)
        return 2
    metrics.update(method=name, query=query.name)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(metrics, indent=2) + '\n')
    if args.plots:
        save_plots(scores, args.tolerance, Path(args.plots), f'{name}: {query.name}')
    print(f'{name} on {query.name}: ' + ', '.join(
        f'{k}={metrics[k]:.3f}' for k in ('recall@1', 'recall@5', 'auc', 'recall@100p', 'top1', 'top5'))
        + f', n_queries={metrics["n_queries"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
