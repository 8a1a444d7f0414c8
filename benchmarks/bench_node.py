"""Localizer node over real DDS (loopback) vs the bare backbone, same machine, same run.

Publishes pre-serialized 640x480 rgb8 Gardens Point frames (as a bag player does) at 30 Hz, then
faster than the node can go (flat out,
120 Hz), to the node's console script; prints sustained processed frames/s, p50/p95 latency
(stamp -> output received back), drops, and the ratio to the bare backbone's frames/s.

    .venv/bin/python benchmarks/bench_node.py [--seconds 10] [--checkpoint CKPT]
"""
import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
from ros_harness import Client, ros_env, start_localizer, stop  # noqa: E402

from deepseqslam_ros.backbones import Backbone  # noqa: E402
from deepseqslam_ros.image_conversion import rgb_to_image_fields  # noqa: E402
from deepseqslam_ros.traversal import gardens_point_root, load_traversal  # noqa: E402

os.environ.update(ros_env())


def frames(n):
    night = load_traversal(gardens_point_root() / 'night_right')
    return [cv2.resize(night.image(i % len(night)), (640, 480)) for i in range(n)]


def bare_backbone_fps(images, batch):
    backbone = Backbone('mobilenet_v2')
    backbone.describe(images[:batch])
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        backbone.describe(images[i:i + batch])
    return len(images) / (time.perf_counter() - start)


def processed(client) -> int:
    return int(client.diagnostics().get('frames_processed', 0))


def run_phase(client, fields, rate, seconds):
    """Publish frames stamped with the wall clock at `rate` Hz for `seconds`, wait for the node to
    drain; returns (seconds from first frame to the last processed one, frames processed, answers
    (keyframes), stamp -> answer latencies). Throughput counts frames; answers come on keyframes."""
    before, count = len(client.received['candidates']), processed(client)
    first = time.time()
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        client.publish_serialized(time.time(), fields[i % len(fields)])
        client.spin(max(0.0, start + (i + 1) / rate - time.perf_counter()))
    last, changed = processed(client), time.time()
    while time.time() - changed < 1.5:   # drain: until frames_processed has not moved for 1.5 s
        client.spin(0.05)
        if processed(client) != last:
            last, changed = processed(client), time.time()
    outputs, arrivals = client.received['candidates'][before:], client.arrivals['candidates'][before:]
    latencies = [arrived - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)
                 for m, arrived in zip(outputs, arrivals)]
    return changed - first, last - count, outputs, latencies


def cpu_seconds(pid) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def serialized_image(rgb) -> bytearray:
    """A 640x480 rgb8 sensor_msgs/Image, serialized once (publishing it then costs a copy only)."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    fields = rgb_to_image_fields(rgb)
    msg = Image(**{k: v for k, v in fields.items() if k != 'data'})
    msg.data = fields['data']
    return bytearray(serialize_message(msg))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=10.0)
    parser.add_argument('--checkpoint')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--flat-out-hz', type=int, default=120, help='the overload phase\'s publishing rate')
    args = parser.parse_args()
    checkpoint = args.checkpoint
    if checkpoint is None:
        from deepseqslam_ros.train import TrainConfig, train
        checkpoint = Path(tempfile.mkdtemp()) / 'bench.pt'
        train(load_traversal(gardens_point_root() / 'day_left', limit=60), checkpoint, Backbone('mobilenet_v2'),
              cfg=TrainConfig(epochs=5), device='cpu', progress=False)
    images = frames(100)
    bare = bare_backbone_fps(images[:96], args.batch_size)
    print(f'bare backbone (mobilenet_v2 mid-level map, grid3x3, 640x480 -> 224, batch {args.batch_size}, '
          f'{torch.get_num_threads()} threads, this process alone): {bare:.1f} frames/s')
    log = Path(tempfile.mkdtemp()) / 'node.log'
    node = start_localizer(log, checkpoint=checkpoint, image_topic='/bench/image', device='cpu',
                           batch_size=args.batch_size, queue_size=30, diagnostics_period=0.2)
    client = Client('/bench/image', image_reliable=False)
    try:
        if not client.wait_ready():
            sys.exit(f'node did not start:\n{log.read_text()}')
        fields = [serialized_image(im) for im in images]
        run_phase(client, fields, 30, 1.0)   # warm-up
        for label, rate in (('30 Hz', 30), (f'{args.flat_out_hz} Hz', args.flat_out_hz)):
            dropped = int(client.diagnostics().get('problem_dropped', 0))
            node_cpu, client_cpu, wall = cpu_seconds(node.pid), time.process_time(), time.perf_counter()
            duration, frames_done, outputs, latencies = run_phase(client, fields, rate, args.seconds)
            wall = time.perf_counter() - wall
            node_cores = (cpu_seconds(node.pid) - node_cpu) / wall
            client_cores = (time.process_time() - client_cpu) / wall
            p50, p95 = (np.percentile(latencies, q) * 1e3 for q in (50, 95)) if latencies else (np.nan, np.nan)
            fps = frames_done / duration
            print(f'{label:9s}: published {int(rate * args.seconds)} frames, node processed {frames_done} '
                  f'in {duration:.1f} s = {fps:.1f} frames/s sustained ({len(outputs)} keyframe answers), dropped '
                  f'{int(client.diagnostics().get("problem_dropped", 0)) - dropped}, latency stamp -> answer '
                  f'p50 {p50:.0f} ms p95 {p95:.0f} ms, ratio to bare backbone {fps / bare:.2f}; CPU cores used: '
                  f'node {node_cores:.2f}, test publisher {client_cores:.2f} (of {os.cpu_count()})')
    finally:
        stop(node)
        client.close()


if __name__ == '__main__':
    main()
