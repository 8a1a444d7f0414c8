"""Robot runs made from a dataset traversal: the same route driven faster, slower, with stops, or
seen by a faster camera. The speed test set of the robot-runs issue, built by the project's tooling.

A run is a list of camera frames at `rate` Hz; frame k shows the route at (fractional) map-frame
position u[k]. The image is the traversal's nearest view, re-rendered with fresh sensor noise every
frame (shot noise, gain, a small shift), so repeated views of a slow or stopped robot are never
byte copies. Its odometry is the traversal's simulated odometry (noisy, drifting) at u[k].
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .traversal import Traversal, simulate_odometry

WARPS = ('same', 'fast1.5', 'fast2', 'slow2', 'cam30', 'stopgo', 'drift')


@dataclass
class Run:
    """A warped traversal: frame k shows view `view[k]` at time `stamps[k]`, odometry `odometry[k]`."""
    name: str
    traversal: Traversal
    route_position: np.ndarray   # (K,) fractional map-frame position along the route
    stamps: np.ndarray           # (K,) seconds
    odometry: np.ndarray | None  # (K, 2) the robot's own odometry, or None
    seed: int = 0

    def __len__(self) -> int:
        return len(self.stamps)

    @property
    def view(self) -> np.ndarray:
        """(K,) index of the traversal frame each camera frame shows (the ground truth)."""
        return np.clip(np.rint(self.route_position), 0, len(self.traversal) - 1).astype(int)

    def image(self, k: int) -> np.ndarray:
        """Camera frame k: its view with this frame's own sensor noise (HxWx3 uint8 RGB)."""
        rgb = self.traversal.image(int(self.view[k])).astype(np.float32)
        rng = np.random.default_rng((self.seed, k))
        h, w = rgb.shape[:2]
        dx, dy = rng.uniform(-0.01, 0.01, 2) * (w, h)             # up to 1 % shift (vibration)
        rgb = cv2.warpAffine(rgb, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REFLECT)
        rgb = rgb * rng.uniform(0.92, 1.08) + rng.normal(0.0, 3.0, rgb.shape)   # gain, sensor noise
        return np.clip(rgb, 0, 255).astype(np.uint8)


def describe_run(backbone, run: Run, batch_size: int = 32) -> torch.Tensor:
    """(K, D) CPU descriptors of a run's camera frames, one backbone batch at a time."""
    return torch.cat([backbone.describe([run.image(k) for k in range(start, min(start + batch_size, len(run)))]).cpu()
                      for start in range(0, len(run), batch_size)])


def route_positions(warp: str, n_frames: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """(fractional map-frame positions of each camera frame, camera rate in Hz) for a warp.

    The map was recorded at 10 Hz, one frame per map spacing: speed 1 = one map frame per 0.1 s.
    """
    rng = np.random.default_rng(seed)
    rate, end = 10.0, n_frames - 1
    if warp in ('same', 'fast1.5', 'fast2', 'slow2', 'cam30'):
        speed = {'same': 1.0, 'fast1.5': 1.5, 'fast2': 2.0, 'slow2': 0.5, 'cam30': 1.0}[warp]
        rate = 30.0 if warp == 'cam30' else rate
        return np.arange(0.0, end + 1e-9, speed * 10.0 / rate), rate
    if warp == 'stopgo':   # speed 1, and every 2-6 s a stop of 0.5-2 s
        u, out = 0.0, []
        while u <= end:
            for _ in range(int(rng.uniform(20, 60))):
                out.append(u)
                u += 1.0
            out.extend([u] * int(rng.uniform(5, 21)))
        return np.array([p for p in out if p <= end]), rate
    if warp == 'drift':    # speed drifting smoothly between 0.4x and 2.2x
        u, t, out = 0.0, 0.0, []
        phase = rng.uniform(0, 2 * np.pi)
        while u <= end:
            out.append(u)
            u += 1.3 + 0.9 * np.sin(phase + 2 * np.pi * t / 12.0)
            t += 0.1
        return np.array(out), rate
    raise ValueError(f'unknown warp {warp!r}; choose one of {WARPS}')


def make_run(traversal: Traversal, warp: str, route: np.ndarray | None = None, odometry_seed: int | None = 0,
             seed: int = 0, rate: float | None = None) -> Run:
    """A warp of `traversal`; with `route` (map-frame positions) and a seed, the robot has odometry.

    `rate` overrides the camera rate: views repeat (rate > 10 Hz) as a faster camera would.
    """
    u, base_rate = route_positions(warp, len(traversal), seed)
    if rate is not None and rate != base_rate:
        t = np.arange(0.0, len(u) / base_rate, 1.0 / rate)
        u = np.interp(t, np.arange(len(u)) / base_rate, u)
        base_rate = rate
    odometry = None
    if route is not None and odometry_seed is not None:
        steps = simulate_odometry(route[:len(traversal)], odometry_seed)
        grid = np.arange(len(steps))
        odometry = np.stack([np.interp(u, grid, steps[:, 0]), np.interp(u, grid, steps[:, 1])], 1)
    return Run(f'{traversal.name}@{warp}', traversal, u, np.arange(len(u)) / base_rate, odometry, seed)
