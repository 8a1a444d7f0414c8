"""Robot runs: recall@1 / auc of night_right driven at other speeds, camera rates and with stops,
against a day_left map, with and without (noisy, drifting) odometry. Offline, same machine, one run.

    .venv/bin/python benchmarks/bench_speed.py [--checkpoint CKPT] [--warps same,fast2] [--seeds 1,2] [--json OUT]
    .venv/bin/python benchmarks/bench_speed.py --nordland [--seeds 1,2]   # Nordland part 1: winter against a
                                                                            # summer map, vision-only (no positions)

Each warp is re-rendered from the dataset with fresh sensor noise per frame (warps.py); each seed
draws other noise, stops and speed phases. Scored on the map frame aligned with each keyframe's
newest query frame, tolerance 2 map frames.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deepseqslam_ros.backbones import Backbone
from deepseqslam_ros.checkpoint import load_checkpoint
from deepseqslam_ros.core import Localizer, MatchConfig
from deepseqslam_ros.descriptors import describe_traversal
from deepseqslam_ros.evaluate import Truth, recognition_metrics
from deepseqslam_ros.train import train
from deepseqslam_ros.traversal import (data_root, gardens_point_root, load_positions, load_traversal,
                                       simulate_odometry)
from deepseqslam_ros.warps import WARPS, describe_run, make_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', help='day_left map with its positions (default: trained here, 1,000 steps: '
                                             'its window embedding retrieves places)')
    parser.add_argument('--query', default='night_right')
    parser.add_argument('--warps', default=','.join(WARPS))
    parser.add_argument('--seeds', default='1', help='warp seeds (noise, stops, speed phase), e.g. 1,2,3,4')
    parser.add_argument('--nordland', action='store_true',
                        help='Nordland part 1 winter against a summer map (default checkpoint trained here)')
    parser.add_argument('--json')
    args = parser.parse_args()
    torch.set_num_threads(2)
    backbone = Backbone('mobilenet_v2')
    if args.nordland:
        root, route = data_root() / 'nordland_64x32_part1', None
        reference, query = load_traversal(root / 'summer'), load_traversal(root / 'winter')
    else:
        root = gardens_point_root()
        route = load_positions(root / 'gp_pos.csv', 200)
        reference, query = load_traversal(root / 'day_left', root / 'gp_pos.csv'), load_traversal(root / args.query)
    path = Path(args.checkpoint or f'runs/bench_speed_{"nordland" if args.nordland else "map"}.pt')
    if not path.is_file():
        train(reference, path, backbone, device='cpu', progress=False)
    ckpt = load_checkpoint(path)
    modes = ('odometry', 'vision-only') if route is not None else ('vision-only',)
    rows = []
    seeds = [int(s) for s in args.seeds.split(',')]
    runs = [('clean', seeds[0])] + [(warp, seed) for seed in seeds for warp in args.warps.split(',')]
    for warp, seed in runs:
        if warp == 'clean':   # the dataset's own frames, no re-rendering: today's benchmark
            descriptors, view = describe_traversal(backbone, query, progress=False), np.arange(len(query))
            odometry, stamps = None if route is None else simulate_odometry(route, 0), np.arange(len(query)) / 10.0
        else:
            run = make_run(query, warp, route, odometry_seed=0, seed=seed)
            descriptors = describe_run(backbone, run)
            view, odometry, stamps = run.view, run.odometry, run.stamps
        for mode in modes:
            localizer = Localizer(ckpt, 'cpu', MatchConfig(), backbone=backbone)
            t0 = time.perf_counter()
            answers = localizer.run(descriptors, odometry if mode == 'odometry' else None, stamps)
            ms = 1e3 * (time.perf_counter() - t0) / len(descriptors)
            metrics = recognition_metrics(answers, Truth(view), ckpt.places, 2)
            rows.append({'warp': warp, 'seed': seed, 'mode': mode, 'frames': len(descriptors),
                         'keyframes': len(answers) + 9, 'recall@1': metrics['recall@1'], 'auc': metrics['auc'],
                         'ms_per_frame': ms})
            print(f'{warp:8s} seed {seed} {mode:11s} frames {len(descriptors):4d} answers {len(answers):4d} '
                  f'recall@1 {metrics["recall@1"]:.3f} auc {metrics["auc"]:.3f}  {ms:.2f} ms/frame', flush=True)
    for mode in modes:
        for seed in seeds:
            mine = [r for r in rows if r['mode'] == mode and r['seed'] == seed and r['warp'] != 'clean']
            same = next((r['recall@1'] for r in mine if r['warp'] == 'same'), float('nan'))
            worst = min(mine, key=lambda r: r['recall@1'])
            print(f'{mode} seed {seed}: worst warp {worst["warp"]} recall@1 {worst["recall@1"]:.3f}, same-speed '
                  f'(re-rendered) {same:.3f}, worst - same {worst["recall@1"] - same:+.3f}')
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
