"""The streaming core shared by the ROS node, bag replay and offline evaluation. No ROS here.

frames -> backbone (once per frame, batched) -> running standardisation -> ring buffer of seq_len
-> place scores = z(sequence match) + lstm_weight * z(LSTM log-probabilities) -> top-K, threshold.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .backbones import Backbone, pick_device
from .checkpoint import Checkpoint, CheckpointError
from .model import Standardiser, head_input


@dataclass
class MatchConfig:
    lstm_weight: float = 0.25   # weight of the LSTM classifier's scores against sequence matching
    top_k: int = 5
    threshold: float = 3.0      # fused z-score above which a place is "confident"
    query_prior: float = 20.0   # frames' worth of reference statistics a query starts from


@dataclass
class Recognition:
    """The answer for the window that ends at query frame `frame`."""
    frame: int
    stamp: float
    place: int                  # best place (window of reference frames place .. place+seq_len-1)
    score: float                # fused score of `place` (z-score units)
    confident: bool             # score >= threshold
    candidates: list[tuple[int, float]]  # top-K (place, score), best first
    scores: np.ndarray          # (n_places,) fused scores of all places
    reference_frame: int        # the reference frame aligned with `frame`: place + seq_len - 1


def zscore(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / x.std().clamp_min(1e-6)


class Localizer:
    """Recognises places from a stream of frames (or their descriptors) against a checkpoint's map."""

    def __init__(self, checkpoint: Checkpoint, device: str = 'auto', match: MatchConfig | None = None,
                 backbone: Backbone | None = None):
        self.ckpt, self.cfg = checkpoint, checkpoint.config
        self.match = match or MatchConfig()
        self.device = pick_device(device)
        self.head = checkpoint.build_head(self.device)
        self.standardiser = Standardiser(checkpoint.mean, checkpoint.std, self.match.query_prior).to(self.device)
        self.standardiser.reset()
        self.map_descriptors = checkpoint.places.descriptors.float().to(self.device)
        self.position_center = checkpoint.position_center.float().to(self.device)
        self.position_scale = checkpoint.position_scale.float().to(self.device)
        self._backbone = backbone
        if backbone is not None:
            self.check_backbone(backbone)
        self.reset()

    def reset(self) -> None:
        """Start a new query traversal (a new bag, a loop restart)."""
        self.standardiser.reset()
        self.window: deque[torch.Tensor] = deque(maxlen=self.cfg.seq_len)
        self.window_positions: deque[torch.Tensor | None] = deque(maxlen=self.cfg.seq_len)
        self.frames = 0

    def check_backbone(self, backbone: Backbone) -> None:
        want = (self.cfg.backbone, self.cfg.weights_sha256, self.cfg.image_size)
        have = (backbone.name, backbone.weights.sha256, backbone.image_size)
        if want != have:
            raise CheckpointError(f'checkpoint was trained on backbone {want} but got {have}')

    @property
    def backbone(self) -> Backbone:
        """The checkpoint's backbone, built on first use on the localizer's device."""
        if self._backbone is None:
            self._backbone = Backbone(self.cfg.backbone, 'imagenet', self.cfg.image_size)
            self.check_backbone(self._backbone)
        return self._backbone.to(self.device)

    def describe(self, images: list[np.ndarray]) -> torch.Tensor:
        """(B, D) descriptors of RGB uint8 images: one backbone pass for the whole batch."""
        return self.backbone.describe(images)

    @torch.inference_mode()
    def step(self, descriptor: torch.Tensor, position: np.ndarray | None = None,
             stamp: float | None = None) -> Recognition | None:
        """Add one frame's descriptor (and position); returns None until seq_len frames were seen."""
        frame = self.frames
        self.frames += 1
        self.window.append(self.standardiser.update(descriptor.to(self.device).float()))
        if position is not None:
            position = (torch.as_tensor(position, device=self.device).float() - self.position_center) / self.position_scale
        self.window_positions.append(position)
        if len(self.window) < self.cfg.seq_len:
            return None
        return self._recognise(frame, float(frame if stamp is None else stamp))

    def _recognise(self, frame: int, stamp: float) -> Recognition:
        cfg, length = self.cfg, self.cfg.seq_len
        query = torch.stack(tuple(self.window))                       # (L, D)
        similarity = query @ self.map_descriptors.T                  # (L, N)
        sequence = sum(similarity[i, i:i + cfg.n_places] for i in range(length)) / length  # (n_places,)
        fused, weight = zscore(sequence), self.match.lstm_weight
        positions_known = all(p is not None for p in self.window_positions)
        if weight > 0 and (positions_known or not cfg.use_positions):
            positions = torch.stack(tuple(self.window_positions))[None] if cfg.use_positions else None
            logits, _ = self.head(head_input(query[None], positions))
            fused = (fused + weight * zscore(F.log_softmax(logits[0], dim=0))) / (1 + weight)
        scores, places = fused.topk(min(self.match.top_k, cfg.n_places))
        best, best_score = int(places[0]), float(scores[0])
        return Recognition(frame=frame, stamp=stamp, place=best, score=best_score,
                           confident=best_score >= self.match.threshold,
                           candidates=[(int(p), float(s)) for p, s in zip(places, scores)],
                           scores=fused.cpu().numpy(), reference_frame=best + length - 1)

    def run(self, descriptors: torch.Tensor, positions: np.ndarray | None = None) -> list[Recognition]:
        """A whole query traversal of precomputed descriptors through the streaming path."""
        self.reset()
        results = []
        for i, descriptor in enumerate(descriptors):
            result = self.step(descriptor, None if positions is None else positions[i])
            if result is not None:
                results.append(result)
        return results
