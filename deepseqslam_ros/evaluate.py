"""Offline evaluation (`deepseqslam-eval`): a checkpoint, or the SeqSLAM baseline, on a query traversal.

Ground truth: by default query frame j shows map frame j (same index = same place); `--query-truth`
gives the map frame of every query frame, `--truth-positions` its position in the map's frame.
The query never sees the reference's positions: it gets none, its own CSV, or simulated odometry.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backbones import LAYERS, Backbone, WeightsNotFoundError
from .checkpoint import Checkpoint, CheckpointError, PlaceMap, load_checkpoint
from .core import INDEX_SEARCH, INDEX_SEARCH_HELP, Localizer, MatchConfig, Recognition
from .descriptors import describe_traversal
from .metrics import hit_metrics, place_metrics, precision_recall, score_matrix_metrics
from .model import ModelConfig
from .seqslam import patch_normalised, sequence_scores
from .traversal import (DatasetMissingError, Traversal, load_frame_truth, load_positions, load_traversal,
                        traversal_positions)


@dataclass
class Truth:
    """Ground truth of a query traversal, one entry per query frame: the map frame it shows (-1 where
    unknown; default: the same index), or its true position in the map's frame with a tolerance in metres."""
    frames: np.ndarray | None = None
    positions: np.ndarray | None = None
    tolerance_m: float | None = None


def load_truth(n_frames: int, query_truth: str | None = None, truth_positions: str | None = None,
               tolerance_m: float | None = None) -> Truth:
    """Truth from --query-truth CSV (one map-frame index per query frame) or --truth-positions CSV
    (x,y per query frame, with --tolerance-m); without either, query frame i shows map frame i."""
    if truth_positions:
        if tolerance_m is None or tolerance_m <= 0:
            raise ValueError('--truth-positions needs --tolerance-m METRES > 0')
        return Truth(positions=load_positions(truth_positions, n_frames), tolerance_m=tolerance_m)
    if query_truth:
        return Truth(frames=load_frame_truth(query_truth, n_frames))
    return Truth(frames=np.arange(n_frames))


def answer_metrics(frames: np.ndarray, candidates: list[list[int]], best_scores: np.ndarray, truth: Truth,
                   tolerance: int, places: PlaceMap) -> dict:
    """Metrics of answers for the keyframes `frames` (offline, bag or live replay alike).

    Each answer is scored on the map frame aligned with its newest query frame. Answers whose truth
    is unknown (< 0) or outside the map `places` are not counted. `candidates`: top-K map frames, best first.
    """
    frames = np.asarray(frames, dtype=np.int64)
    ranked = np.array([c + [c[-1]] * (5 - len(c)) for c in candidates], dtype=np.int64).reshape(-1, 5)[:, :5]
    scores = np.asarray(best_scores, dtype=np.float64)
    if truth.positions is not None:
        map_positions = None if places.positions is None else places.positions.numpy()
        if map_positions is None or not np.isfinite(map_positions).all():
            raise ValueError('--truth-positions needs a map with positions (train with --reference-positions or '
                             'from a bag with odometry)')
        true_xy = truth.positions[frames]                                        # (Q, 2)
        near = np.linalg.norm(map_positions[ranked] - true_xy[:, None], axis=-1) <= truth.tolerance_m
        nearest = np.linalg.norm(map_positions[None] - true_xy[:, None], axis=-1).argmin(1)
        return hit_metrics(near, ranked == nearest[:, None], scores, truth.tolerance_m)
    true_frame = truth.frames[frames]
    keep = (true_frame >= 0) & (true_frame < len(places))
    return place_metrics(ranked[keep], scores[keep], true_frame[keep], tolerance)


def recognition_metrics(results: list[Recognition], truth: Truth, places: PlaceMap, tolerance: int) -> dict:
    return answer_metrics(np.array([r.frame for r in results]), [[p for p, _ in r.candidates] for r in results],
                          np.array([r.score for r in results]), truth, tolerance, places)


def evaluate_checkpoint(ckpt: Checkpoint, query: Traversal, positions: np.ndarray | None, tolerance: int,
                        match: MatchConfig | None = None, device: str = 'auto', progress: bool = True,
                        truth: Truth | None = None) -> tuple[dict, np.ndarray]:
    """Run a streaming session over the query; returns (metrics, (answers, map frames) score matrix).
    Truth defaults to the same index (query frame i shows map frame i)."""
    localizer = Localizer(ckpt, device, match)
    descriptors = describe_traversal(localizer.backbone, query, progress=progress)
    if ckpt.config.use_positions and positions is None:
        print('note: the model was trained with positions but the query has none; '
              'scoring with sequence matching only', file=sys.stderr)
    session = localizer.session()
    results = session.run(descriptors, positions)
    if not results:
        raise ValueError(f'no answers: the query {query.name} has fewer keyframes than seq_len={ckpt.config.seq_len}')
    metrics = recognition_metrics(results, truth or Truth(np.arange(len(query))), ckpt.places, tolerance)
    metrics['keyframes'] = session.keyframes
    return metrics, np.stack([r.scores for r in results])


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


def add_match_arguments(parser: argparse.ArgumentParser) -> None:
    """Keyframe and speed options shared by deepseqslam-eval and deepseqslam-bag eval."""
    d = MatchConfig()
    parser.add_argument('--keyframe-distance', type=float, default=d.keyframe_distance,
                        help="odometry travel between keyframes (map units); 0 = the map's median spacing")
    parser.add_argument('--keyframe-change', type=float, default=d.keyframe_change,
                        help="vision-only: fraction of the map's median frame-to-frame change that makes a keyframe")
    parser.add_argument('--min-speed', type=float, default=d.min_speed, help='vision-only: slowest relative speed')
    parser.add_argument('--max-speed', type=float, default=d.max_speed, help='vision-only: fastest relative speed')
    parser.add_argument('--mean-window', type=float, default=d.mean_window,
                        help="keyframes the query's running descriptor mean weighs (it follows light, weather, season)")
    parser.add_argument('--retrieval-limit', type=int, default=d.retrieval_limit,
                        help='maps with more frames verify only the places the index retrieves; smaller ones score '
                             'every place (0: retrieval for every map)')
    parser.add_argument('--compact-limit', type=int, default=d.compact_limit,
                        help='maps with more frames keep and verify with compact descriptors only')
    parser.add_argument('--tracking-scan-every', type=int, default=d.tracking_scan_every,
                        help='while tracking, the indexes are scanned only every Nth keyframe; 1 = every keyframe')
    parser.add_argument('--index-search', choices=INDEX_SEARCH, default=d.index_search,
                        help=INDEX_SEARCH_HELP)


def match_config(args: argparse.Namespace, **more) -> MatchConfig:
    return MatchConfig(keyframe_distance=args.keyframe_distance, keyframe_change=args.keyframe_change,
                       min_speed=args.min_speed, max_speed=args.max_speed, mean_window=args.mean_window,
                       retrieval_limit=args.retrieval_limit, compact_limit=args.compact_limit,
                       tracking_scan_every=args.tracking_scan_every,
                       index_search=args.index_search, **more)


def save_plots(scores: np.ndarray, tolerance: int, folder: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    folder.mkdir(parents=True, exist_ok=True)
    scores = np.where(np.isfinite(scores), scores, np.nan)
    truth = np.arange(len(scores))
    best = np.nanargmax(scores, 1)
    precision, recall = precision_recall(np.abs(best - truth) <= tolerance, np.nanmax(scores, 1))
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
    parser.add_argument('--tolerance', type=int, default=2, help='± map frames counted correct')
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument('--query-truth', help='CSV: the map frame index each query frame shows (default: same index)')
    truth.add_argument('--truth-positions', help="CSV: x,y of each query frame in the map's frame (with --tolerance-m)")
    parser.add_argument('--tolerance-m', type=float, help='with --truth-positions: metres counted correct')
    parser.add_argument('--json', required=True, help='write metrics here')
    parser.add_argument('--plots', help='folder for pr_curve.png and score_matrix.png')
    parser.add_argument('--lstm-weight', type=float, default=MatchConfig.lstm_weight)
    parser.add_argument('--query-prior', type=float, default=MatchConfig.query_prior)
    add_match_arguments(parser)
    parser.add_argument('--descriptor', choices=('cnn', 'patchnorm'), default='cnn', help='seqslam input')
    parser.add_argument('--backbone', default='mobilenet_v2', help='seqslam CNN')
    parser.add_argument('--layer', choices=LAYERS, default=ModelConfig.layer, help='seqslam CNN feature map')
    parser.add_argument('--pooling', default=ModelConfig.pooling, help='seqslam CNN pooling')
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
            backbone = None if args.descriptor != 'cnn' else \
                Backbone(args.backbone, pooling=args.pooling, layer=args.layer)
            metrics, scores = evaluate_seqslam(reference, query, args.seq_len, args.tolerance,
                                               args.descriptor, backbone, args.standardise)
            name = f'SeqSLAM ({args.descriptor}, standardise={args.standardise})'
        else:
            if not args.checkpoint:
                parser.error('--method deepseqslam needs --checkpoint CKPT')
            ckpt = load_checkpoint(args.checkpoint)
            positions = traversal_positions(len(query), args.query_positions, args.simulate_odometry, args.route)
            match = match_config(args, lstm_weight=args.lstm_weight, query_prior=args.query_prior)
            truth = load_truth(len(query), args.query_truth, args.truth_positions, args.tolerance_m)
            metrics, scores = evaluate_checkpoint(ckpt, query, positions, args.tolerance, match, args.device,
                                                  truth=truth)
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
