"""Offline training of the sequence head on cached CNN descriptors (`deepseqslam-train`).

Each reference image goes through the CNN once (cached on disk); the head then trains on windows of
cached descriptors, with descriptor noise and dropout standing in for appearance change and random
position offsets standing in for odometry drift. Runs on one process or under `torchrun` (DDP).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
import numpy as np
from tqdm import tqdm

from .bag import BagError, TeachRun, teach_run
from .backbones import POOLINGS, Backbone, WeightsNotFoundError, pick_device
from .checkpoint import Checkpoint, CheckpointError, PlaceMap, load_checkpoint
from .descriptors import describe_traversal
from .model import ModelConfig, SequenceHead, Standardiser, head_input, stats
from .traversal import DatasetMissingError, Traversal, load_traversal


@dataclass
class TrainConfig:
    epochs: int | None = None       # None: as many as `steps` takes (a budget independent of the map's size)
    steps: int = 1000               # optimiser steps (batches) when epochs is None
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    descriptor_noise: float = 0.8   # Gaussian noise, in units of the per-dimension std
    descriptor_dropout: float = 0.3  # fraction of descriptor dimensions zeroed
    position_drift: float = 0.1     # per-window position offset std (normalised units)
    position_noise: float = 0.02    # per-frame position noise std (normalised units)
    save_every: int = 25            # epochs between checkpoints (resumable)


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device); joins the process group when started by torchrun.
    On CUDA each rank uses GPU LOCAL_RANK (NCCL needs the device set before the group is made)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world == 1:
        return 0, 1, device
    if device.type == 'cuda':
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return dist.get_rank(), world, device


def _windows(n_places: int, seq_len: int) -> torch.Tensor:
    """(n_places, L) frame indices: place k is frames k .. k+L-1."""
    return torch.arange(n_places)[:, None] + torch.arange(seq_len)[None]


def _augment(x: torch.Tensor, pos: torch.Tensor | None, cfg: TrainConfig, gen: torch.Generator):
    """Same random draws on every rank (global batch), so DDP equals one process."""
    noise = torch.randn(x.shape, generator=gen) * cfg.descriptor_noise
    keep = (torch.rand(x.shape, generator=gen) >= cfg.descriptor_dropout).float()
    x = (x + noise.to(x.device)) * keep.to(x.device)
    if pos is not None:
        drift = torch.randn(pos.shape[0], 1, 2, generator=gen) * cfg.position_drift
        jitter = torch.randn(pos.shape, generator=gen) * cfg.position_noise
        pos = pos + (drift + jitter).to(pos.device)
    return x, pos


def train(reference: Traversal | TeachRun, out: str | os.PathLike, backbone: Backbone, seq_len: int = 10,
          cell: str = 'lstm', cfg: TrainConfig | None = None, device: str = 'auto',
          resume: bool = False, progress: bool = True) -> Checkpoint:
    """Train on `reference` (an image folder, or the keyframes of a teach bag) and write the checkpoint
    to `out`; returns the checkpoint."""
    cfg = cfg or TrainConfig()
    rank, world, dev = _distributed(pick_device(device))
    if len(reference) <= seq_len:
        raise ValueError(f'reference {reference.name} has {len(reference)} frames; need more than seq_len={seq_len}')
    if isinstance(reference, TeachRun):
        descriptors, stamps, names = reference.descriptors.to(dev), reference.stamps, reference.names
    else:
        descriptors = describe_traversal(backbone.to(dev), reference, progress=progress and rank == 0).to(dev)
        stamps, names = np.arange(len(reference)), [f.name for f in reference.files]
    mean, std = stats(descriptors)
    frames = Standardiser(mean, std).reference(descriptors)          # (N, D) unit norm
    positions = None if reference.positions is None else torch.as_tensor(reference.positions).float()
    if positions is not None:
        center = (positions.min(0).values + positions.max(0).values) / 2
        scale = ((positions.max(0).values - positions.min(0).values).max() / 2).clamp_min(1e-9)
    else:
        center, scale = torch.zeros(2), torch.tensor(1.0)
    model_cfg = ModelConfig(backbone.name, backbone.weights.sha256, backbone.image_size, backbone.pooling,
                            backbone.dim, seq_len, 512, cell, positions is not None, len(reference) - seq_len)
    torch.manual_seed(cfg.seed)
    head = SequenceHead(model_cfg).to(dev)
    optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    start, history = 0, []
    if resume and Path(out).is_file():
        previous = load_checkpoint(out)
        if previous.config != model_cfg:
            raise CheckpointError(f'cannot resume {out}: it was trained with {previous.config}')
        head.load_state_dict(previous.head)
        optimizer.load_state_dict(previous.training['optimizer'])
        start, history = previous.training['epoch'], previous.training['history']
    model = DistributedDataParallel(head, device_ids=[dev.index] if dev.type == 'cuda' else None) if world > 1 else head
    batches = math.ceil(model_cfg.n_places / cfg.batch_size)   # optimiser steps per epoch
    epochs = cfg.epochs or max(1, math.ceil(cfg.steps / batches))
    windows = _windows(model_cfg.n_places, seq_len)
    normed_positions = None if positions is None else ((positions - center) / scale).to(dev)
    labels = torch.arange(model_cfg.n_places, device=dev)

    def checkpoint(epoch: int) -> Checkpoint:
        head.eval()
        with torch.inference_mode():
            pos = None if normed_positions is None else normed_positions[windows]
            logits, embeddings = head(head_input(frames[windows], pos))
        head.train()
        accuracy = float((logits.argmax(1) == labels).float().mean())
        return Checkpoint(model_cfg, {k: v.detach().cpu() for k, v in head.state_dict().items()},
                          mean.cpu(), std.cpu(), center, scale,
                          PlaceMap(frames.cpu(), None if positions is None else positions.double(),
                                   torch.as_tensor(stamps, dtype=torch.float64), list(names), embeddings.cpu()),
                          {'epoch': epoch, 'optimizer': optimizer.state_dict(), 'history': history,
                           'train_top1_clean': accuracy, 'train_config': asdict(cfg),
                           'steps': epoch * batches})

    t0 = time.perf_counter()
    bar = tqdm(range(start, epochs), desc='train', unit='epoch', disable=None if progress and rank == 0 else True,
               initial=start, total=epochs)
    for epoch in bar:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(model_cfg.n_places, generator=gen)
        total, correct = 0.0, 0
        for begin in range(0, len(order), cfg.batch_size):
            batch = order[begin:begin + cfg.batch_size]
            pos = None if normed_positions is None else normed_positions[windows[batch]]
            x, pos = _augment(head_input(frames[windows[batch]], None), pos, cfg, gen)
            if pos is not None:
                x = torch.cat([x, pos], dim=-1)
            mine = torch.arange(rank, len(batch), world)               # this rank's share
            logits, _ = model(x[mine])
            # sum / global batch * world: DDP's gradient averaging then equals one process's mean
            loss = F.cross_entropy(logits, labels[batch[mine]], reduction='sum') * world / len(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch) / world   # this rank's summed loss
            correct += int((logits.argmax(1) == labels[batch[mine]]).sum())
        sums = torch.tensor([total, correct], dtype=torch.float64, device=dev)   # NCCL reduces device tensors
        if world > 1:
            dist.all_reduce(sums)
        history.append({'epoch': epoch + 1, 'loss': float(sums[0]) / len(order), 'top1': float(sums[1]) / len(order)})
        bar.set_postfix(loss=f'{history[-1]["loss"]:.3f}', top1=f'{history[-1]["top1"]:.2f}')
        if rank == 0 and (epoch + 1) % cfg.save_every == 0 and epoch + 1 < epochs:
            checkpoint(epoch + 1).save(out)
    result = checkpoint(epochs)
    if rank == 0:
        result.save(out)
    if world > 1:
        dist.barrier()
    result.training['seconds'] = time.perf_counter() - t0
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='deepseqslam-train', description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--reference', help='folder of reference images (sorted by name)')
    source.add_argument('--bag', help='teach run: a rosbag2 recording (mcap or sqlite3), keyframed into the map')
    parser.add_argument('--image-topic', help='--bag: camera topic (default: the first Image/CompressedImage topic)')
    parser.add_argument('--odom-topic', help='--bag: odometry topic (default /odom when present; named: required)')
    parser.add_argument('--keyframe-distance', type=float, default=0.5,
                        help='--bag with odometry: travel between map keyframes, in odometry units (default 0.5)')
    parser.add_argument('--reference-positions', help='CSV of x,y per reference frame (optional)')
    parser.add_argument('--out', required=True, help='checkpoint file to write')
    parser.add_argument('--backbone', default='mobilenet_v2', help='torchvision model name')
    parser.add_argument('--weights', default='imagenet', help="'imagenet' (offline search), a .pth file, or 'none'")
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--pooling', choices=POOLINGS, default='global+strips',
                        help='global average, or global + left/centre/right thirds (default)')
    parser.add_argument('--seq-len', type=int, default=10)
    parser.add_argument('--cell', choices=('lstm', 'gru'), default='lstm')
    parser.add_argument('--steps', type=int, default=TrainConfig.steps,
                        help='optimiser steps (batches), whatever the map size (default %(default)s)')
    parser.add_argument('--epochs', type=int, help='train this many epochs instead of --steps (the paper: 100-300)')
    parser.add_argument('--batch-size', type=int, default=TrainConfig.batch_size)
    parser.add_argument('--lr', type=float, default=TrainConfig.lr)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--max-frames', type=int, help='use only the first N reference frames')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--resume', action='store_true', help='continue from --out if it exists')
    args = parser.parse_args(argv)
    try:
        backbone = Backbone(args.backbone, args.weights, args.image_size, args.pooling)
        if args.bag:
            reference = teach_run(args.bag, backbone.to(pick_device(args.device)), args.image_topic, args.odom_topic,
                                  args.keyframe_distance)
            print(f'{args.bag}: {len(reference)} keyframes, odometry '
                  f'{"yes" if reference.positions is not None else "no (appearance keyframes)"}')
        else:
            reference = load_traversal(args.reference, args.reference_positions, args.max_frames)
        ckpt = train(reference, args.out, backbone, args.seq_len, args.cell,
                     TrainConfig(args.epochs, args.steps, args.batch_size, args.lr, args.seed),
                     args.device, args.resume)
    except (BagError, DatasetMissingError, WeightsNotFoundError, CheckpointError, ValueError, RuntimeError) as exc:
        print(f'deepseqslam-train: error: {exc}', file=sys.stderr)
        return 2
    last = ckpt.training['history'][-1] if ckpt.training['history'] else {}
    print(f'trained {ckpt.config.cell.upper()} head on {reference.name}: {len(reference)} frames, '
          f'{ckpt.config.n_places} places, seq_len {ckpt.config.seq_len}, backbone {backbone.name} '
          f'({backbone.weights.source}), positions {"yes" if ckpt.config.use_positions else "no"}; '
          f'{ckpt.training["epoch"]} epochs ({ckpt.training["steps"]} steps) in {ckpt.training["seconds"]:.1f} s, '
          f'final loss '
          f'{last.get("loss", float("nan")):.4f}, clean train top1 {ckpt.training["train_top1_clean"]:.3f} '
          f'-> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
