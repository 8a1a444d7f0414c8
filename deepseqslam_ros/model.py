"""The DeepSeqSLAM sequence head: an LSTM (or GRU) over windows of [descriptor ⊕ position].

Shapes: B windows, L = seq_len frames, D = descriptor size, P = 2 when positions are used else 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ModelConfig:
    backbone: str = 'mobilenet_v2'
    weights_sha256: str = ''
    image_size: int = 224
    pooling: str = 'global+strips'
    descriptor_dim: int = 5120
    seq_len: int = 10
    hidden: int = 512
    cell: str = 'lstm'            # 'lstm' (paper) or 'gru'
    use_positions: bool = False   # vision-only unless the traversal has positions
    n_places: int = 190           # reference frames - seq_len (the paper's nclasses)

    def __post_init__(self):
        if self.cell not in ('lstm', 'gru'):
            raise ValueError(f'cell must be lstm or gru, not {self.cell!r}')
        if self.seq_len < 1 or self.n_places < 1:
            raise ValueError(f'need seq_len >= 1 and n_places >= 1, got {self.seq_len}, {self.n_places}')


class SequenceHead(nn.Module):
    """(B, L, D+P) -> place logits (B, n_places) and a unit-norm sequence embedding (B, hidden).

    Descriptors are first projected linearly to `hidden` values (5120-d descriptors would make the
    LSTM's input weights 10x larger than the rest of the head); positions join after the projection.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.descriptor_dim = cfg.descriptor_dim
        self.project = nn.Linear(cfg.descriptor_dim, cfg.hidden)
        rnn = nn.LSTM if cfg.cell == 'lstm' else nn.GRU
        self.rnn = rnn(cfg.hidden + 2 * cfg.use_positions, cfg.hidden, batch_first=True)
        self.classifier = nn.Linear(cfg.hidden, cfg.n_places)

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        descriptors, positions = windows.split([self.descriptor_dim, windows.shape[-1] - self.descriptor_dim], -1)
        out, _ = self.rnn(torch.cat([self.project(descriptors), positions], -1))  # (B, L, hidden)
        last = out[:, -1]                 # (B, hidden): the state after the window's newest frame
        return self.classifier(last), F.normalize(last, dim=-1)


class Standardiser(nn.Module):
    """Per-dimension standardisation of descriptors, then L2 normalisation.

    The reference traversal is standardised with its own statistics. A query traversal starts from
    the reference's mean, counted as `prior` frames, and updates it with every frame it sees
    (causal: live, replay and offline evaluation see the same thing); it keeps the reference's
    std. Day and night descriptors differ mostly by a shift of their mean, which this removes.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, prior: float = 20.0):
        super().__init__()
        self.register_buffer('ref_mean', mean.clone().float())
        self.register_buffer('ref_std', std.clone().float())
        self.prior = prior
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
        self.count += 1
        self.mean = self.mean + (descriptor - self.mean) / self.count


def head_input(descriptors: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Unit-norm descriptors (..., L, D) scaled to unit variance per dim, joined with positions."""
    x = descriptors * math.sqrt(descriptors.shape[-1])
    return x if positions is None else torch.cat([x, positions.to(x.dtype)], dim=-1)


def stats(descriptors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of (N, D) descriptors (std floored to avoid dead channels)."""
    return descriptors.mean(0), descriptors.std(0).clamp_min(1e-6)
