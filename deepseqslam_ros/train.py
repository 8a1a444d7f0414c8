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
from .backbones import LAYERS, Backbone, WeightsNotFoundError, pick_device
from .checkpoint import Checkpoint, CheckpointError, PlaceMap, load_checkpoint
from .descriptors import describe_traversal
from .index import compact_projection, project
from .model import (OBJECTIVES, ModelConfig, SequenceHead, Standardiser, change_ratio, embed_frames, frame_change,
                    frame_windows, head_input, stats)
from .traversal import DatasetMissingError, Traversal, frame_truth, frames_showing, load_frame_truth, load_traversal


@dataclass
class TrainConfig:
    epochs: int | None = None       # None: as many as `steps` takes (a budget independent of the map's size)
    steps: int = 1000               # optimiser steps (batches) when epochs is None
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    descriptor_noise: float = 0.8   # Gaussian noise, in units of the per-dimension std
    descriptor_dropout: float = 0.3  # fraction of descriptor dimensions zeroed
    position_drift: float = 0.1     # classifier: per-window position offset std (normalised units)
    position_noise: float = 0.02    # classifier: per-frame position noise std (normalised units)
    temperature: float = 0.1        # embedding: InfoNCE temperature
    min_speed: float = 0.5          # embedding: positive windows' speeds relative to the map's frames
    max_speed: float = 2.0
    tolerance: int = 2              # embedding: windows ending this many frames apart or closer are no negatives
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


def _all_rows(local: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
    """Every rank's rows in rank order; this rank's keep their gradient (the others are constants,
    so the summed gradients of all ranks are those of the whole batch)."""
    if len(sizes) == 1:
        return local
    padded = local.new_zeros(max(sizes), *local.shape[1:])
    padded[:len(local)] = local.detach()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    parts = [part[:n] for part, n in zip(parts, sizes)]
    parts[rank] = local
    return torch.cat(parts)


def _info_nce(anchors: torch.Tensor, positives: torch.Tensor, ends: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Each anchor window must find its own positive among the batch's; windows that end within
    the tolerance of it are neither (same place)."""
    logits = anchors @ positives.T / cfg.temperature                                 # (B, B)
    same_place = (ends[:, None] - ends[None]).abs() <= cfg.tolerance
    logits = logits.masked_fill(same_place & ~torch.eye(len(ends), dtype=torch.bool, device=logits.device), -1e9)
    return F.cross_entropy(logits, torch.arange(len(ends), device=logits.device))


def _standardised(descriptors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The map's (first) statistics, and every traversal minus its own mean, over the map's std, unit
    norm (what a query's running mean converges to)."""
    mean, std = stats(descriptors[0])
    return mean, std, [Standardiser(d.mean(0), std).reference(d) for d in descriptors]


def train(references: Traversal | TeachRun | list[Traversal | TeachRun], out: str | os.PathLike,
          backbone: Backbone, seq_len: int = 10, cell: str = 'lstm', cfg: TrainConfig | None = None,
          device: str = 'auto', resume: bool = False, progress: bool = True, objective: str = 'embedding',
          hidden: int = ModelConfig.hidden, truths: list[np.ndarray | None] | None = None) -> Checkpoint:
    """Train on the first reference (an image folder, or the keyframes of a teach bag), which becomes
    the map, and write the checkpoint to `out`; returns the checkpoint. Other references give the
    embedding objective positives of the same places seen another time; `truths[i]` (or None) aligns
    references[i + 1] with the map (traversal.frame_truth: a truth array, positions or the index)."""
    cfg = cfg or TrainConfig()
    references = references if isinstance(references, list) else [references]
    rank, world, dev = _distributed(pick_device(device))
    reference = references[0]
    if len(reference) <= seq_len:
        raise ValueError(f'reference {reference.name} has {len(reference)} frames; need more than seq_len={seq_len}')
    truths = list(truths or []) + [None] * (len(references) - 1 - len(truths or []))
    truths = [frame_truth(reference, other, truth) for other, truth in zip(references[1:], truths)]
    # per reference, the frame that shows each map frame (-1: none): the map itself, then the others
    shows = torch.stack([torch.arange(len(reference)), *(torch.from_numpy(frames_showing(t, len(reference)))
                                                         for t in truths)]).to(dev)
    descriptors = [r.descriptors.to(dev) if isinstance(r, TeachRun) else
                   describe_traversal(backbone.to(dev), r, progress=progress and rank == 0).to(dev) for r in references]
    if isinstance(reference, TeachRun):
        stamps, names = reference.stamps, reference.names
    else:
        stamps, names = np.arange(len(reference)), [f.name for f in reference.files]
    mean, std, standardised = _standardised(descriptors)
    frames = standardised[0]                                          # (N, D) unit norm: the map
    projection = compact_projection(backbone.dim, ModelConfig.compact_dim)
    compact = [project(s, projection).to(dev) for s in standardised]   # per reference (n, C), as the index's
    starts = torch.tensor([0, *np.cumsum([len(c) for c in compact])[:-1]], device=dev)
    every = torch.cat(compact)                                          # all references' frames, in order
    positions = None if reference.positions is None or objective != 'classifier' else \
        torch.as_tensor(reference.positions).float()
    if positions is not None:
        center = (positions.min(0).values + positions.max(0).values) / 2
        scale = ((positions.max(0).values - positions.min(0).values).max() / 2).clamp_min(1e-9)
    else:
        center, scale = torch.zeros(2), torch.tensor(1.0)
    model_cfg = ModelConfig(backbone.name, backbone.weights.sha256, backbone.image_size, backbone.pooling,
                            backbone.dim, seq_len, hidden, cell, positions is not None, len(reference) - seq_len,
                            objective, layer=backbone.layer)
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
    normed_positions = None if positions is None else ((positions - center) / scale).to(dev)
    labels = torch.arange(model_cfg.n_places, device=dev)
    log_speeds = (math.log(cfg.min_speed), math.log(cfg.max_speed))
    change = frame_change(frames)   # the map's calibrations (vision-only keyframes; reading fractional frames)
    ratio = change_ratio(frames, change)

    def checkpoint(epoch: int) -> Checkpoint:
        head.eval()
        with torch.inference_mode():
            places = frame_windows(len(frames), seq_len, labels.cpu() + seq_len - 1)
            pos = None if normed_positions is None else normed_positions[places]
            logits, _ = head(head_input(compact[0][places], pos))
            embeddings = embed_frames(head, compact[0], seq_len) if objective == 'embedding' else \
                torch.zeros(0, hidden)
            quality = {'train_top1_clean': None if logits is None else
                       float((logits.argmax(1) == labels).float().mean())}
            if len(compact) > 1 and objective == 'embedding':   # other references' windows against the map's
                found = torch.cat([(embed_frames(head, c, seq_len)[seq_len - 1:] @ embeddings.T).argmax(1)
                                   for c in compact[1:]])
                truth = torch.cat([torch.from_numpy(t[seq_len - 1:]) for t in truths]).to(dev)
                right = ((found - truth).abs() <= cfg.tolerance)[truth >= 0]
                quality['train_recall_other'] = float(right.float().mean()) if len(right) else None
        head.train()
        return Checkpoint(model_cfg, {k: v.detach().cpu() for k, v in head.state_dict().items()},
                          mean.cpu(), std.cpu(), center, scale,
                          PlaceMap(frames.cpu(), None if reference.positions is None
                                   else torch.as_tensor(reference.positions).double(),
                                   torch.as_tensor(stamps, dtype=torch.float64), list(names), embeddings.cpu(),
                                   change=change, change_ratio=ratio),
                          {'epoch': epoch, 'optimizer': optimizer.state_dict(), 'history': history,
                           **quality, 'train_config': asdict(cfg), 'steps': epoch * batches})

    t0 = time.perf_counter()
    bar = tqdm(range(start, epochs), desc='train', unit='epoch', disable=None if progress and rank == 0 else True,
               initial=start, total=epochs)
    for epoch in bar:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(model_cfg.n_places, generator=gen)
        total, correct = 0.0, 0
        for begin in range(0, len(order), cfg.batch_size):
            batch = order[begin:begin + cfg.batch_size]
            shares = torch.arange(len(batch)).tensor_split(world)           # this rank's share: shares[rank]
            mine = shares[rank]
            windows = frame_windows(len(frames), seq_len, batch + seq_len - 1)
            if objective == 'classifier':
                pos = None if normed_positions is None else normed_positions[windows]
                x, pos = _augment(head_input(compact[0][windows], None), pos, cfg, gen)
                if pos is not None:
                    x = torch.cat([x, pos], dim=-1)
                logits, _ = model(x[mine])
                # sum / global batch * world: DDP's gradient averaging then equals one process's mean
                loss = F.cross_entropy(logits, labels[batch[mine]], reduction='sum') * world / len(batch)
                correct += int((logits.argmax(1) == labels[batch[mine]]).sum())
                share = len(batch) / world
            else:   # the map's windows against the same places' windows at other speeds, in any reference
                speeds = torch.empty(len(batch)).uniform_(*log_speeds, generator=gen).exp()
                source = torch.randint(len(compact), (len(batch),), generator=gen).to(dev)
                at = frame_windows(len(frames), seq_len, batch + seq_len - 1, speeds).to(dev)   # map frames
                seen = shows[source[:, None], at]
                unseen = (seen < 0).any(1)   # a reference that misses part of the window: the map's own frames
                seen[unseen], source[unseen] = at[unseen], 0
                anchors, _ = _augment(head_input(compact[0][windows], None), None, cfg, gen)
                positives, _ = _augment(head_input(every[starts[source][:, None] + seen], None), None, cfg, gen)
                sizes = [len(s) for s in shares]
                a = _all_rows(model(anchors[mine])[1], sizes, rank)
                p = _all_rows(model(positives[mine])[1], sizes, rank)
                # every rank's loss is the whole batch's, its gradient flows through its own rows only:
                # times world, DDP's averaging gives one process's gradient
                loss = _info_nce(a, p, batch.to(dev), cfg) * world
                correct += int((((a @ p.T).argmax(1).cpu() - torch.arange(len(batch))) == 0).sum()) if rank == 0 else 0
                share = len(batch) / world ** 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * share   # this rank's share of the summed loss
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
    parser.add_argument('--reference', action='append', default=[],
                        help='folder of reference images (sorted by name); the first is the map unless --bag is. '
                             'Repeat it for other traversals of the same route: the embedding learns from them '
                             'what changes between visits (aligned with the map by --reference-truth, else by '
                             'positions when both have them, else by index)')
    parser.add_argument('--bag', help='teach run: a rosbag2 recording (mcap or sqlite3), keyframed into the map '
                                      '(every --reference is then another traversal)')
    parser.add_argument('--image-topic', help='--bag: camera topic (default: the first Image/CompressedImage topic)')
    parser.add_argument('--odom-topic', help='--bag: odometry topic (default /odom when present; named: required)')
    parser.add_argument('--keyframe-distance', type=float, default=0.5,
                        help='--bag with odometry: travel between map keyframes, in odometry units (default 0.5)')
    parser.add_argument('--reference-positions', action='append', default=[],
                        help='CSV of x,y per frame of each --reference, in their order (optional; without --bag '
                             "the first is the map's positions)")
    parser.add_argument('--reference-truth', action='append', default=[],
                        help='CSV of one map frame index per frame of each other traversal (the 2nd, 3rd, ... '
                             '--reference; with --bag every --reference, the bag\'s keyframes being the map frames), '
                             'in their order: the map frame it shows (-1: none; the format of deepseqslam-eval '
                             '--query-truth)')
    parser.add_argument('--out', required=True, help='checkpoint file to write')
    parser.add_argument('--backbone', default='mobilenet_v2', help='torchvision model name')
    parser.add_argument('--weights', default='imagenet', help="'imagenet' (offline search), a .pth file, or 'none'")
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--layer', choices=LAYERS, default=ModelConfig.layer,
                        help="CNN feature map: 'mid' (before the last downsampling, default) or 'last'")
    parser.add_argument('--pooling', default=ModelConfig.pooling,
                        help="average over a grid of RxC cells ('grid3x3', default), 'global', or 'global+strips' "
                             '(global + left/centre/right thirds)')
    parser.add_argument('--seq-len', type=int, default=10)
    parser.add_argument('--cell', choices=('lstm', 'gru'), default='lstm')
    parser.add_argument('--objective', choices=OBJECTIVES, default='embedding',
                        help='embedding: windows -> place embeddings for retrieval (metric learning, default); '
                             "classifier: the paper's one class per place")
    parser.add_argument('--hidden', type=int, default=ModelConfig.hidden, help='LSTM size (the paper: 512)')
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
    if not args.reference and not args.bag:
        parser.error('one of the arguments --reference --bag is required')
    try:
        backbone = Backbone(args.backbone, args.weights, args.image_size, args.pooling, args.layer)
        if len(args.reference_positions) > len(args.reference) or \
                len(args.reference_truth) > len(args.reference) - (not args.bag):
            raise ValueError('more --reference-positions / --reference-truth files than --reference folders')
        positions = args.reference_positions + [None] * len(args.reference)
        reference = [load_traversal(folder, csv, args.max_frames) for folder, csv in zip(args.reference, positions)]
        if args.bag:
            teach = teach_run(args.bag, backbone.to(pick_device(args.device)), args.image_topic, args.odom_topic,
                              args.keyframe_distance)
            print(f'{args.bag}: {len(teach)} keyframes, odometry '
                  f'{"yes" if teach.positions is not None else "no (appearance keyframes)"}')
            reference = [teach, *reference]
        truths = [load_frame_truth(csv, len(other)) for csv, other in zip(args.reference_truth, reference[1:])]
        ckpt = train(reference, args.out, backbone, args.seq_len, args.cell,
                     TrainConfig(args.epochs, args.steps, args.batch_size, args.lr, args.seed),
                     args.device, args.resume, objective=args.objective, hidden=args.hidden,
                     truths=truths)
        reference = reference[0]
    except (BagError, DatasetMissingError, WeightsNotFoundError, CheckpointError, ValueError, RuntimeError) as exc:
        print(f'deepseqslam-train: error: {exc}', file=sys.stderr)
        return 2
    last = ckpt.training['history'][-1] if ckpt.training['history'] else {}
    quality = ', '.join(f'{name} {ckpt.training[name]:.3f}' for name in ('train_top1_clean', 'train_recall_other')
                        if ckpt.training.get(name) is not None)
    print(f'trained {ckpt.config.cell.upper()} {ckpt.config.objective} head on {reference.name}: {len(reference)} '
          f'frames, {ckpt.config.n_places} places, seq_len {ckpt.config.seq_len}, backbone {backbone.name} '
          f'({backbone.weights.source}), positions {"yes" if ckpt.config.use_positions else "no"}; '
          f'{ckpt.training["epoch"]} epochs ({ckpt.training["steps"]} steps) in {ckpt.training["seconds"]:.1f} s, '
          f'final loss {last.get("loss", float("nan")):.4f}{", " * bool(quality)}{quality} -> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
