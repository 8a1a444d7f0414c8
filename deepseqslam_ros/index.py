"""The place index: which map frames look like a keyframe, without comparing it with every one.

Map frames' standardised descriptors are projected to `dim` values by a fixed random orthonormal
matrix (seeded, so every map and query of every run shares it; cosine similarities are kept up to
a small distortion) and kept as float16 for verification. A keyframe's top-K map frames come from
either
- an HNSW graph (FAISS, float16 vectors): approximate, well under a millisecond at 100k frames on a
  CPU (the default there), or
- exact search: one float16 product with every compact descriptor, on the localizer's device (the
  default on CUDA, where 1M frames take 0.5 GB of GPU memory; on this project's CPU ~2 ms at 100k
  frames, 20-30 ms at 1M).
Frames are added one by one as an online map grows.
"""
from __future__ import annotations

import faiss
import numpy as np
import torch
from torch.nn import functional as F


class Rows:
    """A tensor that grows by rows with amortised doubling; `values` views the rows so far."""

    def __init__(self, values: torch.Tensor):
        self.buffer, self.n = values, len(values)

    @property
    def values(self) -> torch.Tensor:
        return self.buffer[:self.n]

    def append(self, rows: torch.Tensor) -> None:
        """One row, or (M, ...) rows."""
        rows = rows.reshape(-1, *self.buffer.shape[1:])
        if self.n + len(rows) > len(self.buffer):
            extra = self.buffer.new_empty((max(64, self.n, len(rows)), *self.buffer.shape[1:]))
            self.buffer = torch.cat([self.buffer[:self.n], extra])
        self.buffer[self.n:self.n + len(rows)] = rows
        self.n += len(rows)


class PlaceIndex:
    """Compact descriptors of the map frames, searched by an HNSW graph (inner product) or, with an
    `exact` device, exactly on that device (a copy of the compact descriptors lives there)."""

    def __init__(self, descriptor_dim: int, dim: int = 256, links: int = 32, search_depth: int = 400,
                 exact: str | torch.device | None = None):
        generator = torch.Generator().manual_seed(0)
        self.projection = torch.linalg.qr(torch.randn(descriptor_dim, dim, generator=generator))[0]
        self.compact = Rows(torch.zeros(0, dim, dtype=torch.float16))
        self.graph = self.exact = None
        if exact is None:
            self.graph = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, links, faiss.METRIC_INNER_PRODUCT)
            self.graph.hnsw.efSearch = search_depth
        elif torch.device(exact).type != 'cpu':
            self.exact = Rows(torch.zeros(0, dim, dtype=torch.float16, device=exact))

    def __len__(self) -> int:
        return self.compact.n

    def project(self, descriptors: torch.Tensor) -> torch.Tensor:
        """(..., D) unit-norm standardised descriptors -> (..., dim) unit-norm float32 on the CPU."""
        return F.normalize(descriptors.detach().float().cpu() @ self.projection, dim=-1)

    def add(self, descriptors: torch.Tensor, chunk: int = 65536) -> None:
        """Append map frames (rows of D standardised values): their ids are their map frame indices."""
        for start in range(0, len(descriptors), chunk):
            self.add_compact(self.project(descriptors[start:start + chunk]))

    def add_compact(self, compact: torch.Tensor, chunk: int = 65536) -> None:
        """Append map frames given as their compact descriptors (a compact map being loaded)."""
        for start in range(0, len(compact), chunk):
            rows = compact[start:start + chunk]
            self.compact.append(rows.half())
            if self.graph is not None:
                self.graph.add(np.ascontiguousarray(rows.float().numpy()))
            elif self.exact is not None:
                self.exact.append(rows.half().to(self.exact.buffer.device))

    def search(self, compact: torch.Tensor, k: int, limit: int | None = None) -> torch.Tensor:
        """Map frames most like one projected keyframe: up to k ids, among the first `limit` frames."""
        limit = len(self) if limit is None else min(limit, len(self))
        if limit <= 0:
            return torch.zeros(0, dtype=torch.long)
        if self.graph is None:   # float16 products, then the best k + 16 re-ranked in float32 (near-ties)
            rows = (self.compact if self.exact is None else self.exact).values[:limit]
            query = compact.to(rows.device)
            near = (rows @ query.half()).topk(min(k + 16, limit)).indices
            return near[(rows[near].float() @ query.float()).topk(min(k, limit)).indices].cpu()
        params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorRange(0, limit),
                                            efSearch=max(self.graph.hnsw.efSearch, k))
        _, ids = self.graph.search(np.ascontiguousarray(compact.reshape(1, -1).numpy()), min(k, limit), params=params)
        ids = torch.from_numpy(ids[0])
        return ids[ids >= 0]
