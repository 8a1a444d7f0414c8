"""Training on cached descriptors vs the reference code's protocol (the CNN run on every frame of
every window, every epoch), same head (the paper's classifier), same windows, same epochs. Prints
seconds and the ratio.

    .venv/bin/python benchmarks/bench_training.py [--frames 60] [--epochs 2]
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from deepseqslam_ros.backbones import Backbone
from deepseqslam_ros.descriptors import describe_traversal
from deepseqslam_ros.index import compact_projection, project
from deepseqslam_ros.model import ModelConfig, SequenceHead, Standardiser, frame_windows, head_input, stats
from deepseqslam_ros.traversal import gardens_point_root, load_traversal


def places(cfg: ModelConfig) -> torch.Tensor:
    """(n_places, seq_len) frame indices: place k is frames k .. k+seq_len-1."""
    return frame_windows(cfg.n_places + cfg.seq_len, cfg.seq_len, torch.arange(cfg.n_places) + cfg.seq_len - 1)


def seed_protocol(backbone, reference, cfg, epochs, batch_size):
    """Per batch: decode every frame of every window and run the CNN on it, then train the head."""
    head = SequenceHead(cfg)
    optimizer = torch.optim.Adam(head.parameters(), 1e-3)
    windows = places(cfg)
    mean, std = torch.zeros(cfg.descriptor_dim), torch.ones(cfg.descriptor_dim)
    projection = compact_projection(cfg.descriptor_dim, cfg.compact_dim)
    for _ in range(epochs):
        for begin in range(0, cfg.n_places, batch_size):
            batch = windows[begin:begin + batch_size]
            images = [reference.image(int(i)) for i in batch.flatten()]
            with torch.inference_mode():
                frames = backbone.describe(images).view(*batch.shape, -1)
            x = head_input(project(Standardiser(mean, std).reference(frames.clone()), projection), None)
            loss = F.cross_entropy(head(x)[0], torch.arange(begin, begin + len(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def cached_protocol(backbone, reference, cfg, epochs, batch_size, cache_dir):
    """One CNN pass per image (cold disk cache), then the head trains on cached windows."""
    start = time.perf_counter()
    descriptors = describe_traversal(backbone, reference, cache_dir=cache_dir, progress=False)
    frames = project(Standardiser(*stats(descriptors)).reference(descriptors),
                     compact_projection(cfg.descriptor_dim, cfg.compact_dim))
    setup = time.perf_counter() - start
    head = SequenceHead(cfg)
    optimizer = torch.optim.Adam(head.parameters(), 1e-3)
    windows = places(cfg)
    for _ in range(epochs):
        for begin in range(0, cfg.n_places, batch_size):
            batch = windows[begin:begin + batch_size]
            loss = F.cross_entropy(head(head_input(frames[batch], None))[0], torch.arange(begin, begin + len(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return setup


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=60)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=16)
    args = parser.parse_args()
    reference = load_traversal(gardens_point_root() / 'day_left', limit=args.frames)
    backbone = Backbone('mobilenet_v2')
    cfg = ModelConfig(descriptor_dim=backbone.dim, hidden=512, n_places=args.frames - 10, objective='classifier')
    start = time.perf_counter()
    seed_protocol(backbone, reference, cfg, args.epochs, args.batch_size)
    seed = time.perf_counter() - start
    start = time.perf_counter()
    setup = cached_protocol(backbone, reference, cfg, args.epochs, args.batch_size, Path(tempfile.mkdtemp()))
    cached = time.perf_counter() - start
    print(f'{args.frames} frames, {cfg.n_places} windows of {cfg.seq_len}, {args.epochs} epochs, '
          f'{torch.get_num_threads()} threads, backbone mobilenet_v2 ({backbone.dim}-d)')
    print(f'seed protocol (CNN on every window frame): {seed:8.2f} s  ({seed / args.epochs:.2f} s/epoch)')
    print(f'cached descriptors, cold cache:            {cached:8.2f} s  ({setup:.2f} s CNN once + '
          f'{(cached - setup) / args.epochs:.3f} s/epoch)')
    print(f'ratio seed / cached for {args.epochs} epochs: {seed / cached:.1f}x')
    epochs = 300
    print(f'extrapolated to {epochs} epochs from these figures: seed {seed / args.epochs * epochs:.0f} s, '
          f'cached {setup + (cached - setup) / args.epochs * epochs:.0f} s, ratio '
          f'{(seed / args.epochs * epochs) / (setup + (cached - setup) / args.epochs * epochs):.0f}x')


if __name__ == '__main__':
    main()
