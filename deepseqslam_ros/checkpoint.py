"""One checkpoint file holds everything the node needs: config, head weights, backbone identity,
descriptor statistics, position normalisation and the place map. Written atomically and fsync'd:
a save that fails or is killed midway leaves the previous file intact."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from .model import ModelConfig, SequenceHead

FORMAT = 'deepseqslam_ros.checkpoint'
VERSION = 3   # 3: descriptors from the backbone's mid-level map (2026-12-02); 2: the head reads compact
              # descriptors and may be a place embedding (2026-12-01)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, truncated or does not match what uses it."""


@dataclass
class PlaceMap:
    """Reference frames and places. Place k is the window of frames k .. k+seq_len-1.

    descriptors: (N, D) standardised unit-norm frame descriptors, for sequence matching.
    positions:   (N, 2) frame positions in the map frame, or None (vision-only map).
    stamps:      (N,) frame stamps in seconds (frame index for image folders).
    names:       N frame names (image file names, or 'online/<stamp>').
    embeddings:  (N, hidden) unit-norm sequence embeddings of the windows that end at each frame (the
                 places the embedding index retrieves; empty when the head is the paper's classifier).
    online:      built while driving (places = every window, matched by sequence alone), not the
                 training traversal whose places are the classifier's classes.
    compact:     descriptors are the place index's (N, compact_dim) float16 projections (a big map).
    change:      the reference traversal's median frame-to-frame change (cosine distance of its
                 standardised descriptors): vision-only keyframes are calibrated on it. NaN: measured
                 from the map's own frames when loaded (an online map: as it grows).
    change_ratio: the change between frames two apart over `change` (model.change_ratio): how far
                 along the route a view is shared. NaN: measured like `change`.
    """
    descriptors: torch.Tensor
    positions: torch.Tensor | None
    stamps: torch.Tensor
    names: list[str]
    embeddings: torch.Tensor
    online: bool = False
    compact: bool = False
    change: float = math.nan
    change_ratio: float = math.nan

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class Checkpoint:
    config: ModelConfig
    head: dict                    # SequenceHead state_dict
    mean: torch.Tensor            # (D,) reference descriptor statistics
    std: torch.Tensor
    position_center: torch.Tensor  # (2,) positions enter the head as (p - center) / scale
    position_scale: torch.Tensor   # ()
    places: PlaceMap
    training: dict = field(default_factory=dict)  # epoch, optimizer state, history (for resuming)

    def build_head(self, device: torch.device | str = 'cpu') -> SequenceHead:
        head = SequenceHead(self.config)
        head.load_state_dict(self.head)
        return head.to(device).eval()

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        places = {f.name: getattr(self.places, f.name) for f in fields(self.places)}   # asdict deep-copies the map
        blob = {'format': FORMAT, 'version': VERSION, 'config': asdict(self.config), 'head': self.head,
                'mean': self.mean, 'std': self.std, 'position_center': self.position_center,
                'position_scale': self.position_scale, 'places': places, 'training': self.training}
        tmp = path.with_name(f'.{path.name}.tmp')   # one name: a save killed midway leaves one stale file
        try:
            with open(tmp, 'wb') as f:
                torch.save(blob, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        folder = os.open(path.parent, os.O_RDONLY)   # the rename itself survives a power cut
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate; every failure is a CheckpointError naming the file and the problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist (train one with deepseqslam-train)')
    try:
        blob = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise CheckpointError(f'checkpoint {path} is unreadable or truncated: {exc}') from exc
    if not isinstance(blob, dict) or blob.get('format') != FORMAT:
        raise CheckpointError(f'{path} is not a deepseqslam_ros checkpoint (the reference code\'s '
                              '.pth.tar files hold CNN+LSTM weights only; retrain with deepseqslam-train)')
    if blob.get('version') != VERSION:
        raise CheckpointError(f'{path} has checkpoint version {blob.get("version")}, this code reads {VERSION}: '
                              'retrain it with deepseqslam-train')
    try:
        config = ModelConfig(**blob['config'])
        ckpt = Checkpoint(config, blob['head'], blob['mean'], blob['std'], blob['position_center'],
                          blob['position_scale'], PlaceMap(**blob['places']), blob.get('training', {}))
        ckpt.build_head()
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f'checkpoint {path} is incomplete or inconsistent: {exc}') from exc
    places, dim = ckpt.places, config.descriptor_dim
    if places.compact:
        dim = places.descriptors.shape[1] if places.descriptors.dim() == 2 else -1
    if places.descriptors.shape != (len(places), dim) or ckpt.mean.shape != (config.descriptor_dim,):
        raise CheckpointError(f'checkpoint {path}: place descriptors {tuple(places.descriptors.shape)} '
                              f'do not match descriptor_dim {dim}')
    if places.embeddings.dim() != 2 or len(places.embeddings) not in (0, len(places)) \
            or places.embeddings.shape[1] != config.hidden:
        raise CheckpointError(f'checkpoint {path}: place embeddings {tuple(places.embeddings.shape)} do not match '
                              f'{len(places)} frames of hidden size {config.hidden}')
    if not places.online and len(places) < config.n_places + config.seq_len - 1:
        raise CheckpointError(f'checkpoint {path}: {len(places)} frames cannot hold '
                              f'{config.n_places} places of {config.seq_len} frames')
    return ckpt
