"""The streaming core shared by the ROS node, bag replay and offline evaluation. No ROS here.

frames -> backbone (once per frame, batched) -> running standardisation -> ring buffer of seq_len
-> place scores = z(sequence match) + lstm_weight * z(LSTM log-probabilities) -> top-K, threshold.

Two maps: the checkpoint's reference places (the paper's mode), or an online map that grows with
every frame, where revisits are found by sequence matching against places older than `min_age`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F

from .backbones import Backbone, pick_device
from .checkpoint import Checkpoint, CheckpointError, PlaceMap
from .model import Standardiser, head_input


@dataclass
class MatchConfig:
    lstm_weight: float = 0.0    # weight of the LSTM classifier's scores (0: sequence matching alone, measured best)
    top_k: int = 5
    threshold: float = 3.0      # fused z-score above which a place is "confident"
    query_prior: float = 20.0   # frames' worth of reference statistics a query starts from
    min_age: float = 30.0       # online map: only places at least this old (s) are candidates


@dataclass
class Recognition:
    """The answer for the window that ends at query frame `frame`."""
    frame: int
    stamp: float
    place: int                  # best place (window of map frames place .. place+seq_len-1)
    score: float                # fused score of `place` (z-score units)
    confident: bool             # score >= threshold
    candidates: list[tuple[int, float]]  # top-K (place, score), best first
    scores: np.ndarray          # (n_places,) fused scores of all candidate places
    reference_frame: int        # the map frame aligned with `frame`: place + seq_len - 1


def zscore(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / x.std().clamp_min(1e-6) if len(x) > 1 else torch.zeros_like(x)


class Localizer:
    """Recognises places from a stream of frames (or their descriptors) against a place map."""

    def __init__(self, checkpoint: Checkpoint, device: str = 'auto', match: MatchConfig | None = None,
                 backbone: Backbone | None = None, online: bool = False):
        self.ckpt, self.cfg = checkpoint, checkpoint.config
        self.match = match or MatchConfig()
        self.device = pick_device(device)
        self.head = checkpoint.build_head(self.device)
        self.standardiser = Standardiser(checkpoint.mean, checkpoint.std, self.match.query_prior).to(self.device)
        self.position_center = checkpoint.position_center.float().to(self.device)
        self.position_scale = checkpoint.position_scale.float().to(self.device)
        self._backbone = backbone
        if backbone is not None:
            self.check_backbone(backbone)
            backbone.to(self.device)
        places = checkpoint.places
        if online and not places.online:   # a fresh online map: the reference places are not used
            places = PlaceMap(torch.zeros(0, self.cfg.descriptor_dim), torch.zeros(0, 2), torch.zeros(0),
                              [], torch.zeros(0, self.cfg.hidden), online=True)
        self.load_map(places)
        self.reset()

    def load_map(self, places: PlaceMap) -> None:
        self.online = places.online
        self.map_descriptors = places.descriptors.float().to(self.device)
        self.map_positions = None if places.positions is None else places.positions.double()
        self.map_stamps = places.stamps.double()
        self.map_names = list(places.names)
        self.map_embeddings = places.embeddings.float()

    @property
    def n_places(self) -> int:
        if not self.online:
            return self.cfg.n_places
        return max(0, len(self.map_names) - self.cfg.seq_len + 1)

    def reset(self) -> None:
        """Start a new query traversal (a new bag, a loop restart)."""
        self.standardiser.reset()
        self.window: deque[torch.Tensor] = deque(maxlen=self.cfg.seq_len)
        self.window_rows: deque[torch.Tensor] = deque(maxlen=self.cfg.seq_len)   # similarity to map frames
        self.window_positions: deque[torch.Tensor | None] = deque(maxlen=self.cfg.seq_len)
        self.frames = 0

    def check_backbone(self, backbone: Backbone) -> None:
        want = (self.cfg.backbone, self.cfg.weights_sha256, self.cfg.image_size, self.cfg.pooling)
        have = (backbone.name, backbone.weights.sha256, backbone.image_size, backbone.pooling)
        if want != have:
            raise CheckpointError(f'checkpoint was trained on backbone {want} but got {have}')

    @property
    def backbone(self) -> Backbone:
        """The checkpoint's backbone, built on first use on the localizer's device."""
        if self._backbone is None:
            self._backbone = Backbone(self.cfg.backbone, 'imagenet', self.cfg.image_size, self.cfg.pooling)
            self.check_backbone(self._backbone)
            self._backbone.to(self.device)
        return self._backbone

    def describe(self, images: list[np.ndarray]) -> torch.Tensor:
        """(B, D) descriptors of RGB uint8 images: one backbone pass for the whole batch."""
        return self.backbone.describe(images)

    @torch.inference_mode()
    def step(self, descriptor: torch.Tensor, position: np.ndarray | None = None,
             stamp: float | None = None) -> Recognition | None:
        """Add one frame's descriptor (and position); None until a window and a candidate exist."""
        frame = self.frames
        self.frames += 1
        stamp = float(frame if stamp is None else stamp)
        standardised = self.standardiser.update(descriptor.to(self.device).float())
        self.window.append(standardised)
        self.window_rows.append(self.map_descriptors @ standardised)   # (N,): one product per frame
        normed = None
        if position is not None:
            normed = torch.as_tensor(position, device=self.device).float()
            normed = (normed - self.position_center) / self.position_scale
        self.window_positions.append(normed)
        query = torch.stack(tuple(self.window)) if len(self.window) == self.cfg.seq_len else None  # (L, D)
        result = None if query is None else self._recognise(query, frame, stamp)
        if self.online:
            self._add_frame(standardised, position, stamp, f'online/{stamp:.3f}', query)
        return result

    def _head(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """LSTM logits and embedding of the window; None when the head needs a missing position."""
        positions = None
        if self.cfg.use_positions:
            if any(p is None for p in self.window_positions):
                return None
            positions = torch.stack(tuple(self.window_positions))[None]
        logits, embedding = self.head(head_input(query[None], positions))
        return logits[0], embedding[0]

    def _recognise(self, query: torch.Tensor, frame: int, stamp: float) -> Recognition | None:
        length, n_places = self.cfg.seq_len, self.n_places
        if self.online:   # only places that ended at least min_age ago may be revisited
            ends = self.map_stamps[length - 1:length - 1 + n_places]
            n_places = int((ends <= stamp - self.match.min_age).sum())
        if n_places < 1:
            return None
        sequence = sum(self._row(i)[i:i + n_places] for i in range(length)) / length  # (n_places,)
        fused, weight = zscore(sequence), self.match.lstm_weight
        head = self._head(query) if weight > 0 and not self.online else None
        if head is not None:
            fused = (fused + weight * zscore(F.log_softmax(head[0], dim=0))) / (1 + weight)
        scores, places = fused.topk(min(self.match.top_k, n_places))
        best, best_score = int(places[0]), float(scores[0])
        return Recognition(frame=frame, stamp=stamp, place=best, score=best_score,
                           confident=best_score >= self.match.threshold,
                           candidates=[(int(p), float(s)) for p, s in zip(places, scores)],
                           scores=fused.cpu().numpy(), reference_frame=best + length - 1)

    def _row(self, i: int) -> torch.Tensor:
        """Similarity of window frame i to every map frame, extended if the (online) map grew."""
        row, known = self.window_rows[i], len(self.window_rows[i])
        if known < len(self.map_descriptors):
            row = torch.cat([row, self.map_descriptors[known:] @ self.window[i]])
            self.window_rows[i] = row
        return row

    def _add_frame(self, standardised: torch.Tensor, position, stamp: float, name: str,
                   query: torch.Tensor | None) -> None:
        self.map_descriptors = torch.cat([self.map_descriptors, standardised[None]])
        pos = torch.full((1, 2), float('nan'), dtype=torch.float64) if position is None else \
            torch.as_tensor(position, dtype=torch.float64).view(1, 2)
        self.map_positions = pos if self.map_positions is None else torch.cat([self.map_positions, pos])
        self.map_stamps = torch.cat([self.map_stamps, torch.tensor([stamp], dtype=torch.float64)])
        self.map_names.append(name)
        if query is not None:   # the window ending here is a new place; keep its sequence embedding
            head = self._head(query)
            embedding = torch.zeros(self.cfg.hidden) if head is None else head[1].cpu()
            self.map_embeddings = torch.cat([self.map_embeddings, embedding[None]])

    def place_pose(self, place: int) -> np.ndarray | None:
        """Stored (x, y) of the map frame aligned with the end of `place`'s window, if known."""
        if self.map_positions is None:
            return None
        xy = self.map_positions[place + self.cfg.seq_len - 1].numpy()
        return None if not np.isfinite(xy).all() else xy

    def place_stamp(self, place: int) -> float:
        return float(self.map_stamps[place + self.cfg.seq_len - 1])

    def to_checkpoint(self) -> Checkpoint:
        """The checkpoint with the current map (for saving an online map)."""
        places = PlaceMap(self.map_descriptors.cpu(), self.map_positions, self.map_stamps,
                          list(self.map_names), self.map_embeddings, self.online)
        return replace(self.ckpt, places=places, training={})

    def run(self, descriptors: torch.Tensor, positions: np.ndarray | None = None) -> list[Recognition]:
        """A whole query traversal of precomputed descriptors through the streaming path."""
        self.reset()
        results = []
        for i, descriptor in enumerate(descriptors):
            result = self.step(descriptor, None if positions is None else positions[i])
            if result is not None:
                results.append(result)
        return results
