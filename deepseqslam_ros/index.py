"""The place index: which map frames look like a keyframe, without comparing it with every one.

Map frames' standardised descriptors are projected to `dim` values by a fixed random orthonormal
matrix (`compact_projection`: seeded, so every map and query of every run shares it; cosine
similarities are kept up to a small distortion) and kept as float16 for verification. A second
index of the same kind, without a projection, holds the map places' learned window embeddings.
A keyframe's candidates come from either
- a product-quantisation fast scan over every frame (FAISS `IndexPQFastScan`, `dim / 2` 4-bit
  codes: 64 B per frame at 256 values), its best `shortlist` frames (the CPU default: ~3 ms at 1M
  frames on this project's CPU), or
- exact search: one float16 product with every compact descriptor, on the localizer's device (the
  default on CUDA, where 1M frames take 0.5 GB of GPU memory; 20-30 ms at 1M on this CPU);
and the candidates are re-ranked by float32 products with their compact descriptors.
Frames are added one by one as an online map grows. The quantiser is trained once the map has
`quantize_from` frames (until then every frame is scored exactly), and again each time the map has
doubled, up to TRAIN_MAX frames; frames added since are encoded `encode_batch` at a time and scored
exactly until then (one FAISS addition per keyframe cost ~1.5 ms in a running session). A map added
in bulk (loaded) is quantised at once. One growing frame by frame (an online map) trains its quantiser
in a background thread at nice 10 (~0.7 s at 5,000 frames on this CPU: in the keyframe loop, a stall
the node's queue did not absorb), and its old codes and exact scores answer until it is done.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import faiss
import numpy as np
import torch
from torch.nn import functional as F

QUANTIZE_FROM = 4096   # smaller indexes are scored exactly
TRAIN_MAX = 65536   # frames the quantiser is trained on, at most (a seeded sample of a bigger map)
TRAINER_NICE = 10   # the background quantiser's priority: the keyframe loop keeps its cores (0: 190-260 ms stalls)


def _trainer_thread() -> None:
    """Niced (this thread only, Linux), one OpenMP thread: FAISS's setting holds for torch's calls here
    too. With an OpenMP team of its own (its first parallel call made one) every later keyframe ran 2x
    slower (p50 4.7 -> 9.5 ms); likely libgomp's spin-waits, throttled once it counts more threads than cores."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TRAINER_NICE)
    faiss.omp_set_num_threads(1)


TRAINER = ThreadPoolExecutor(1, 'quantiser', initializer=_trainer_thread)   # growing maps' quantisers, in turn


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


def compact_projection(descriptor_dim: int, dim: int) -> torch.Tensor:
    """(descriptor_dim, dim) random orthonormal columns, the same in every run (seed 0)."""
    generator = torch.Generator().manual_seed(0)
    return torch.linalg.qr(torch.randn(descriptor_dim, dim, generator=generator))[0]


def project(descriptors: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """(..., D) unit-norm standardised descriptors -> (..., dim) unit-norm float32 compact ones, on the CPU."""
    return F.normalize(descriptors.detach().float().cpu() @ projection, dim=-1)


class PlaceIndex:
    """Compact vectors of the map frames, searched by a product-quantisation fast scan or, with an
    `exact` device, exactly on that device (a copy of the vectors lives there). `projection`
    (descriptor_dim, dim) makes them from standardised descriptors; None: they come as they are."""

    def __init__(self, dim: int = 256, projection: torch.Tensor | None = None,
                 exact: str | torch.device | None = None,
                 shortlist: int = 1000, quantize_from: int = QUANTIZE_FROM, encode_batch: int = 4096):
        self.projection = projection
        self.compact = Rows(torch.zeros(0, dim, dtype=torch.float16))
        self.shortlist, self.quantize_from, self.encode_batch = shortlist, quantize_from, encode_batch
        self.exact = self.codes = None
        self.trained_on = 0   # frames the quantiser was (or is being) trained with (0: not yet)
        self.training: Future | None = None   # the codes being made in the background
        if exact is not None and torch.device(exact).type != 'cpu':
            self.exact = Rows(torch.zeros(0, dim, dtype=torch.float16, device=exact))
        self.quantized = exact is None

    def __len__(self) -> int:
        return self.compact.n

    def project(self, descriptors: torch.Tensor) -> torch.Tensor:
        return project(descriptors, self.projection)

    def add(self, descriptors: torch.Tensor, chunk: int = 65536) -> None:
        """Append map frames (rows of D standardised values): their ids are their map frame indices."""
        for start in range(0, len(descriptors), chunk):
            self.add_compact(self.project(descriptors[start:start + chunk]))

    def add_compact(self, compact: torch.Tensor) -> None:
        """Append map frames given as their compact descriptors (a compact map being loaded)."""
        self.compact.append(compact.half())
        if self.exact is not None:
            self.exact.append(compact.half().to(self.exact.buffer.device))
        if self.quantized:
            self._encode(background=len(compact) == 1)

    def _encode(self, background: bool, chunk: int = 65536) -> None:
        """Train the quantiser when the map has reached quantize_from frames or doubled since (up to
        TRAIN_MAX), in the `background` or at once; encode the frames not yet encoded, once there
        are encode_batch of them."""
        if self.training is not None and (self.training.done() or not background):
            self.codes, self.training = self.training.result(), None
        n, values = len(self), self.compact.values   # rows [0, n) of the buffer are never written again
        if self.training is None and n >= max(self.quantize_from, 2 * self.trained_on) and self.trained_on < TRAIN_MAX:
            self.trained_on = n
            sample = None if n <= TRAIN_MAX else \
                torch.randperm(n, generator=torch.Generator().manual_seed(0))[:TRAIN_MAX].numpy()
            if background:
                self.training = TRAINER.submit(self._quantise, values, sample, chunk)
                return
            self.codes = self._quantise(values, sample, chunk)
        if self.codes is not None and n - self.codes.ntotal >= self.encode_batch:
            self._add_codes(self.codes, values.numpy(), chunk)

    @staticmethod
    def _quantise(values: torch.Tensor, sample: np.ndarray | None, chunk: int) -> faiss.IndexPQFastScan:
        """A fast-scan quantiser trained on the `sample` rows of `values` (None: all), holding their codes."""
        values = values.numpy()
        codes = faiss.IndexPQFastScan(values.shape[1], values.shape[1] // 2, 4, faiss.METRIC_INNER_PRODUCT)
        codes.train((values if sample is None else values[sample]).astype(np.float32))
        PlaceIndex._add_codes(codes, values, chunk)
        return codes

    @staticmethod
    def _add_codes(codes: faiss.IndexPQFastScan, values: np.ndarray, chunk: int) -> None:
        """Encode the rows of `values` that `codes` does not hold yet, `chunk` at a time."""
        for start in range(codes.ntotal, len(values), chunk):
            codes.add(values[start:start + chunk].astype(np.float32))

    def search(self, compact: torch.Tensor, k: int, limit: int | None = None) -> torch.Tensor:
        """Map frames most like one projected keyframe: up to k ids, among the first `limit` frames."""
        limit = len(self) if limit is None else min(limit, len(self))
        if limit <= 0:
            return torch.zeros(0, dtype=torch.long)
        if not self.quantized:
            near = self._nearest((self.compact if self.exact is None else self.exact).values[:limit], compact, k)
        else:   # the fast scan's shortlist (frames past `limit` dropped) and the frames not yet encoded
            encoded = 0 if self.codes is None else min(self.codes.ntotal, limit)
            near = encoded + self._nearest(self.compact.values[encoded:limit], compact, k)
            if encoded:
                wanted = min(self.shortlist + self.codes.ntotal - encoded, self.codes.ntotal)
                _, ids = self.codes.search(np.ascontiguousarray(compact.reshape(1, -1).numpy()), wanted)
                ids = torch.from_numpy(ids[0])
                near = torch.cat([ids[(ids >= 0) & (ids < limit)], near])
        return near[(self.compact.values[near].float() @ compact.float()).topk(min(k, len(near))).indices]

    @staticmethod
    def _nearest(rows: torch.Tensor, compact: torch.Tensor, k: int) -> torch.Tensor:
        """The k + 16 rows with the largest float16 products (on the rows' device; to be re-ranked in
        float32: float16 near-ties)."""
        return (rows @ compact.to(rows.device).half()).topk(min(k + 16, len(rows))).indices.cpu()
