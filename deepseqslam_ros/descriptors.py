"""Per-image CNN descriptors, computed once per frame and cached on disk.

A cache file belongs to one (backbone, weights sha256, image size, layer, pooling, traversal folder); inside it each
descriptor is keyed by its file's name, size and modification time, so changed or new images are
recomputed and unchanged ones are reused.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from tqdm import tqdm

from .backbones import Backbone
from .traversal import Traversal


def cache_root() -> Path:
    return Path(os.environ.get('DEEPSEQSLAM_CACHE', Path.home() / '.cache' / 'deepseqslam_ros'))


def cache_path(backbone: Backbone, traversal: Traversal, root: Path | None = None) -> Path:
    folder = str(traversal.files[0].parent.resolve())
    key = (f'{backbone.name}|{backbone.weights.sha256}|{backbone.image_size}|{backbone.layer}|{backbone.pooling}'
           f'|{folder}')
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (root or cache_root()) / f'{traversal.name}-{backbone.name}-{backbone.image_size}-{digest}.pt'


def _file_key(path: Path) -> str:
    stat = path.stat()
    return f'{path.name}|{stat.st_size}|{stat.st_mtime_ns}'


def describe_traversal(backbone: Backbone, traversal: Traversal, batch_size: int = 32,
                       cache_dir: Path | None = None, progress: bool = True) -> torch.Tensor:
    """(N, dim) float32 CPU descriptors of every frame, reusing the on-disk cache."""
    path = cache_path(backbone, traversal, cache_dir)
    cached: dict[str, torch.Tensor] = {}
    if path.is_file():
        try:
            cached = torch.load(path, map_location='cpu', weights_only=True)
        except Exception:  # a truncated or foreign cache file is recomputed, never trusted
            cached = {}
    keys = [_file_key(f) for f in traversal.files]
    missing = [i for i, k in enumerate(keys) if k not in cached]
    batches = range(0, len(missing), batch_size)
    bar = tqdm(batches, desc=f'CNN {traversal.name}', unit='batch', disable=None if progress and missing else True)
    for start in bar:
        chunk = missing[start:start + batch_size]
        descriptors = backbone.describe([traversal.image(i) for i in chunk]).cpu()
        cached.update({keys[i]: d.clone() for i, d in zip(chunk, descriptors)})
    if missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
        torch.save({k: cached[k] for k in keys}, tmp)
        os.replace(tmp, path)
    return torch.stack([cached[k] for k in keys])
