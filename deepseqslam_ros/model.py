"""The DeepSeqSLAM sequence head: an LSTM (or GRU) over windows of [compact descriptor ⊕ position].

Shapes: B windows, L = seq_len frames, C = compact descriptor size (the place index's projection of
the standardised CNN descriptor), P = 2 when positions are used else 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


OBJECTIVES = ('embedding', 'classifier')


@dataclass
class ModelConfig:
    backbone: str = 'mobilenet_v2'
    weights_sha256: str = ''
    image_size: int = 224
    pooling: str = 'grid3x3'
    descriptor_dim: int = 864
    seq_len: int = 10
    hidden: int = 128             # the paper: 512
    cell: str = 'lstm'            # 'lstm' (paper) or 'gru'
    use_positions: bool = False   # classifier only: positions join the descriptors (vision-only otherwise)
    n_places: int = 190           # reference frames - seq_len (the paper's nclasses)
    objective: str = 'embedding'  # 'embedding': the final state is a place embedding (metric learning);
                                  # 'classifier': the paper's one class per place
    compact_dim: int = 256        # the head's input: the place index's compact descriptors
    layer: str = 'mid'            # the backbone's feature map ('mid' or 'last', backbones.py)

    def __post_init__(self):
        if self.cell not in ('lstm', 'gru'):
            raise ValueError(f'cell must be lstm or gru, not {self.cell!r}')
        if self.objective not in OBJECTIVES:
            raise ValueError(f'objective must be one of {OBJECTIVES}, not {self.objective!r}')
        if self.compact_dim < 2 or self.compact_dim % 2 or self.hidden < 2 or self.hidden % 2:
            raise ValueError(f'compact_dim and hidden must be even and >= 2, not {self.compact_dim}, {self.hidden}')
        if self.seq_len < 1 or self.n_places < 1:
            raise ValueError(f'need seq_len >= 1 and n_places >= 1, got {self.seq_len}, {self.n_places}')


class SequenceHead(nn.Module):
    """(B, L, C+P) -> place logits (B, n_places; None unless the objective is the classifier) and a
    unit-norm sequence embedding (B, hidden): the state after the window's newest frame.

    Descriptors are first projected linearly to `hidden` values; positions join after the projection.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.compact_dim = cfg.compact_dim
        self.project = nn.Linear(cfg.compact_dim, cfg.hidden)
        rnn = nn.LSTM if cfg.cell == 'lstm' else nn.GRU
        self.rnn = rnn(cfg.hidden + 2 * cfg.use_positions, cfg.hidden, batch_first=True)
        self.classifier = nn.Linear(cfg.hidden, cfg.n_places) if cfg.objective == 'classifier' else None

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        descriptors, positions = windows.split([self.compact_dim, windows.shape[-1] - self.compact_dim], -1)
        out, _ = self.rnn(torch.cat([self.project(descriptors), positions], -1))  # (B, L, hidden)
        last = out[:, -1]
        return None if self.classifier is None else self.classifier(last), F.normalize(last, dim=-1)


class Standardiser(nn.Module):
    """Per-dimension standardisation of descriptors, then L2 normalisation.

    The reference traversal is standardised with its own statistics. A query traversal starts from
    the reference's mean, counted as `prior` frames, and updates it with every keyframe it sees
    (causal: live, replay and offline evaluation see the same thing), weighing about the last
    `window` keyframes, so the mean follows a condition that changes on the way (light, weather,
    the season of an online map's next pass); it keeps the reference's std. Day and night
    descriptors differ mostly by a shift of their mean, which this removes.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, prior: float = 20.0, window: float = math.inf):
        super().__init__()
        self.register_buffer('ref_mean', mean.clone().float())
        self.register_buffer('ref_std', std.clone().float())
        self.prior, self.window = prior, window
        self.reset()

    def reset(self) -> None:
        """Start a new query traversal from the reference statistics."""
        self.count = self.prior
        self.mean = self.ref_mean.clone()

    def reference(self, descriptors: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D) standardised with the reference statistics, unit norm."""
        return F.normalize((descriptors - self.ref_mean) / self.ref_std, dim=-1)

    def apply(self, descriptor: torch.Tensor) -> torch.Tensor:
        """(D,) query descriptor -> (D,) minus the running mean, over the reference std, unit norm."""
        return F.normalize((descriptor - self.mean) / self.ref_std, dim=-1)

    def update(self, descriptor: torch.Tensor) -> None:
        """Add one query descriptor (a keyframe: a stopped robot must not pull the mean) to the mean."""
        self.count = min(self.count + 1, self.window)
        self.mean = self.mean + (descriptor - self.mean) / self.count


def head_input(descriptors: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Unit-norm compact descriptors (..., L, C) scaled to unit variance per dim, joined with positions."""
    x = descriptors * math.sqrt(descriptors.shape[-1])
    return x if positions is None else torch.cat([x, positions.to(x.dtype)], dim=-1)


def frame_windows(n: int, seq_len: int, ends: torch.Tensor | None = None,
                  speeds: torch.Tensor | None = None) -> torch.Tensor:
    """(E, L) frame indices of the windows that end at frames `ends` (default: every one of n frames),
    `speeds` (E,) frames apart (default 1), oldest first; frames before the first are the first."""
    ends = torch.arange(n) if ends is None else ends
    speeds = torch.ones(len(ends)) if speeds is None else speeds
    back = (speeds[:, None] * torch.arange(seq_len - 1, -1, -1)).round().long()
    return (ends[:, None] - back).clamp(0, n - 1)


@torch.inference_mode()
def embed_frames(head: SequenceHead, compact: torch.Tensor, seq_len: int, chunk: int = 16384) -> torch.Tensor:
    """(N, C) compact descriptors of consecutive frames -> (N, hidden) embeddings of the windows that
    end at each frame (a place's embedding), computed `chunk` windows at a time."""
    device = next(head.parameters()).device
    parts = []
    for start in range(0, len(compact), chunk):
        ends = torch.arange(start, min(start + chunk, len(compact)))
        windows = compact[frame_windows(len(compact), seq_len, ends)].to(device).float()
        parts.append(head(head_input(windows, None))[1])
    return torch.cat(parts) if parts else torch.zeros(0, head.rnn.hidden_size, device=device)


STOOD_STILL = 0.25   # frame_change: a change below this fraction of the median is a robot standing still


def frame_change(descriptors: torch.Tensor) -> float:
    """Median change between consecutive unit-norm descriptors (cosine distance) of the frames that
    moved: a frame that changed by less than STOOD_STILL x the median is left out, twice (a teach run
    that stopped would otherwise calibrate keyframes on its repeated views). NaN for < 2 frames."""
    descriptors = descriptors.float()
    if len(descriptors) < 2:
        return math.nan
    changes = 1 - (descriptors[1:] * descriptors[:-1]).sum(1)
    median = changes.median()
    for _ in range(2):
        median = changes[changes >= STOOD_STILL * median].median()
    return float(median)


def change_ratio(descriptors: torch.Tensor, change: float) -> float:
    """Median change between frames two apart over `change` (frame_change's), where both steps moved:
    1 + e^(-1/l) for a route whose views decorrelate over l frames (Gardens Point day_left 1.59, Nordland
    summer 1.12). NaN for < 3 frames."""
    descriptors = descriptors.float()
    if len(descriptors) < 3 or not math.isfinite(change):
        return math.nan
    steps = 1 - (descriptors[1:] * descriptors[:-1]).sum(1)
    moved = steps >= STOOD_STILL * change
    two = 1 - (descriptors[2:] * descriptors[:-2]).sum(1)
    two = two[moved[1:] & moved[:-1]]
    return float(two.median()) / change if len(two) else math.nan


def stats(descriptors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of (N, D) descriptors (std floored to avoid dead channels)."""
    return descriptors.mean(0), descriptors.std(0).clamp_min(1e-6)
