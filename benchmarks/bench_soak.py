"""Soak: the localizer node driven over real DDS (loopback) at 30 Hz for minutes; per minute, its
resident memory, frames published / processed / dropped, keyframe answers, map size and latency
(frame stamp -> answer received back) percentiles.

    .venv/bin/python benchmarks/bench_soak.py --minutes 30 [--mode localize|online] [--json OUT]

Frames are night_right at 640x480 rgb8, cycled (an online map therefore revisits every 200 frames).
Memory should be flat after warm-up in localize mode, and grow linearly with map frames online.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
from bench_node import frames, serialized_image  # noqa: E402
from ros_harness import Client, ros_env, start_localizer, stop  # noqa: E402

from deepseqslam_ros.backbones import Backbone  # noqa: E402
from deepseqslam_ros.traversal import gardens_point_root, load_traversal  # noqa: E402

os.environ.update(ros_env())


def resident_mb(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--minutes', type=float, default=30.0)
    parser.add_argument('--period', type=float, default=60.0, help='seconds per report row')
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--mode', choices=('localize', 'online'), default='localize')
    parser.add_argument('--checkpoint')
    parser.add_argument('--json')
    args = parser.parse_args()
    checkpoint = args.checkpoint
    if checkpoint is None:
        from deepseqslam_ros.train import train
        checkpoint = Path(tempfile.mkdtemp()) / 'soak.pt'
        root = gardens_point_root()
        train(load_traversal(root / 'day_left', root / 'gp_pos.csv'), checkpoint, Backbone('mobilenet_v2'),
              device='cpu', progress=False)
    fields = [serialized_image(image) for image in frames(200)]
    log = Path(tempfile.mkdtemp()) / 'node.log'
    node = start_localizer(log, checkpoint=checkpoint, image_topic='/soak/image', device='cpu', map_mode=args.mode,
                           diagnostics_period=1.0, loop_closure_gap=30.0)
    client = Client('/soak/image', image_reliable=False)
    rows = []
    try:
        if not client.wait_ready():
            sys.exit(f'node did not start:\n{log.read_text()}')
        start = time.perf_counter()
        published, row_start, answers_before = 0, start, 0
        before = {k: int(client.diagnostics().get(k, 0)) for k in ('frames_processed', 'problem_dropped')}
        print(f'mode {args.mode}, {args.rate:.0f} Hz, node resident memory at start {resident_mb(node.pid):.0f} MB')
        while time.perf_counter() - start < 60 * args.minutes:
            client.publish_serialized(time.time(), fields[published % len(fields)])
            published += 1
            client.spin(max(0.0, start + published / args.rate - time.perf_counter()))
            if time.perf_counter() - row_start >= args.period:
                diagnostics = client.diagnostics()
                now = {k: int(diagnostics.get(k, 0)) for k in before}
                outputs = client.received['candidates'][answers_before:]
                latencies = [a - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)
                             for m, a in zip(outputs, client.arrivals['candidates'][answers_before:])]
                p50, p95, worst = (np.percentile(latencies, q) * 1e3 for q in (50, 95, 100)) if latencies \
                    else (np.nan,) * 3
                rows.append({'minute': round((time.perf_counter() - start) / 60, 2), 'rss_mb': resident_mb(node.pid),
                             'published': published, 'processed': now['frames_processed'] - before['frames_processed'],
                             'dropped': now['problem_dropped'] - before['problem_dropped'],
                             'answers': len(client.received['candidates']),
                             'map_frames': int(diagnostics['map_frames']),
                             'p50_ms': p50, 'p95_ms': p95, 'max_ms': worst})
                print('  '.join(f'{k} {v:.1f}' if isinstance(v, float) else f'{k} {v}' for k, v in rows[-1].items()),
                      flush=True)
                row_start, answers_before = time.perf_counter(), len(client.received['candidates'])
        client.spin(2.0)
    finally:
        code = stop(node)
        client.close()
    if len(rows) > 2:
        warm, end = rows[1]['rss_mb'], rows[-1]['rss_mb']
        print(f'resident memory after warm-up {warm:.0f} MB, at the end {end:.0f} MB '
              f'({100 * (end / warm - 1):+.1f} %); '
              f'map frames {rows[1]["map_frames"]} -> {rows[-1]["map_frames"]}; dropped {rows[-1]["dropped"]} of '
              f'{rows[-1]["published"]}; node exit {code}')
    if args.json:
        Path(args.json).write_text(json.dumps({'mode': args.mode, 'exit': code, 'rows': rows}, indent=2) + '\n')
    return 0 if code == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
