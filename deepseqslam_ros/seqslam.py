"""SeqSLAM baseline: mean cosine similarity along the diagonal of seq_len frames (Milford & Wyeth
2012, constant speed), on the same CNN descriptors or on classic 64x32 patch-normalised images.

standardise='none' is the classic method. 'offline' first standardises each traversal with its own
statistics, computed over the whole traversal: stronger, but it sees every query frame before the
first answer, which no robot can (our streaming core uses a running mean instead)."""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from .model import Standardiser, stats
from .traversal import Traversal


def patch_normalised(traversal: Traversal, size: tuple[int, int] = (64, 32), patch: int = 8) -> torch.Tensor:
    """(N, 64*32) classic SeqSLAM descriptors: greyscale, downsampled, each 8x8 patch normalised."""
    out = []
    for i in range(len(traversal)):
        grey = cv2.cvtColor(traversal.image(i), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        h, w = small.shape
        blocks = small.reshape(h // patch, patch, w // patch, patch)
        mean = blocks.mean(axis=(1, 3), keepdims=True)
        std = blocks.std(axis=(1, 3), keepdims=True) + 1e-6
        out.append(((blocks - mean) / std).reshape(-1))
    return torch.from_numpy(np.stack(out))


def sequence_scores(reference: torch.Tensor, query: torch.Tensor, seq_len: int, n_places: int,
                    standardise: str = 'none') -> torch.Tensor:
    """(Q, n_places) mean cosine similarity along diagonals; row j is the query window starting at j."""
    if standardise == 'offline':
        ref = Standardiser(*stats(reference)).reference(reference)
        qry = Standardiser(*stats(query)).reference(query)
    else:
        ref, qry = F.normalize(reference.float(), dim=1), F.normalize(query.float(), dim=1)
    sim = qry @ ref.T                                               # (M, N)
    n_queries = len(query) - seq_len + 1
    return sum(sim[i:i + n_queries, i:i + n_places] for i in range(seq_len)) / seq_len

