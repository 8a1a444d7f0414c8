"""Traversals: a folder of images in sorted name order, their positions and the dataset location."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff'}
GARDENS_POINT_URL = 'https://zenodo.org/records/4590133 (Gardens Point Walking, QUT)'
GARDENS_POINT_LAYOUT = 'day_left/, day_right/, night_right/ (Image000.jpg..Image199.jpg) and gp_pos.csv'


class DatasetMissingError(FileNotFoundError):
    """A traversal or dataset folder is missing; the message says where to get it."""


def data_root() -> Path:
    """Dataset root: $DEEPSEQSLAM_DATA, else ../shared/data (relative to the working directory)."""
    return Path(os.environ.get('DEEPSEQSLAM_DATA', '../shared/data')).expanduser().resolve()


def gardens_point_root() -> Path:
    root = data_root() / 'gardens_point'
    if not (root / 'day_left').is_dir():
        raise DatasetMissingError(
            f'Gardens Point Walking not found at {root}. Download it from {GARDENS_POINT_URL}, '
            f'arrange it as {GARDENS_POINT_LAYOUT} (gp_pos.csv comes from '
            'github.com/mchancan/deepseqslam datasets/GardensPointWalking) and set DEEPSEQSLAM_DATA '
            'to the folder that holds gardens_point/.')
    return root


@dataclass
class Traversal:
    """One pass along a route: image files in order, optional (N, 2) positions."""
    name: str
    files: list[Path]
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> np.ndarray:
        """Frame i as HxWx3 uint8 RGB."""
        bgr = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'cannot decode image {self.files[i]}')
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_traversal(folder: str | os.PathLike, positions_csv: str | os.PathLike | None = None,
                   limit: int | None = None) -> Traversal:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetMissingError(
            f'traversal folder {folder} does not exist. For Gardens Point Walking, download it from '
            f'{GARDENS_POINT_URL} and point DEEPSEQSLAM_DATA at the folder holding gardens_point/.')
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise DatasetMissingError(f'no images ({", ".join(sorted(IMAGE_SUFFIXES))}) in {folder}')
    positions = None if positions_csv is None else load_positions(positions_csv, len(files))
    return Traversal(folder.name, files, positions)


def load_positions(csv: str | os.PathLike, n_frames: int) -> np.ndarray:
    """`x,y` rows (no header), one per frame; at least n_frames rows, finite."""
    path = Path(csv).expanduser()
    if not path.is_file():
        raise DatasetMissingError(f'positions file {path} does not exist')
    positions = np.loadtxt(path, delimiter=',', dtype=np.float64, ndmin=2)
    if positions.shape[1] != 2 or len(positions) < n_frames:
        raise ValueError(f'{path}: expected >= {n_frames} rows of "x,y", got shape {positions.shape}')
    if not np.isfinite(positions).all():
        raise ValueError(f'{path}: positions contain NaN or inf')
    return positions[:n_frames]


def load_frame_truth(csv: str | os.PathLike, n_frames: int) -> np.ndarray:
    """One map-frame index per frame (the map frame it shows; -1: unknown), at least n_frames rows."""
    path = Path(csv).expanduser()
    if not path.is_file():
        raise DatasetMissingError(f'truth file {path} does not exist')
    frames = np.loadtxt(path, delimiter=',', dtype=np.int64, ndmin=1).reshape(-1)
    if len(frames) < n_frames:
        raise ValueError(f'{path}: {len(frames)} rows for {n_frames} frames (one map frame index each)')
    return frames[:n_frames]


def frame_truth(reference: Traversal, other: Traversal, truth: np.ndarray | None = None,
                max_spacings: float = 2.0) -> np.ndarray:
    """(len(other),) the reference frame each frame of `other` (another traversal of the route) shows,
    -1 where none: `truth` when given; else by nearest position when both have positions (none
    further than max_spacings median reference spacings); else the same index (same frame count)."""
    if truth is not None:
        return np.asarray(truth, dtype=np.int64)[:len(other)]
    if reference.positions is not None and other.positions is not None:
        spacing = float(np.median(np.linalg.norm(np.diff(reference.positions, axis=0), axis=1)))
        nearest, distance = [], []
        for chunk in np.array_split(other.positions, max(1, len(other) // 1024)):
            d = np.linalg.norm(chunk[:, None] - reference.positions[None], axis=-1)
            nearest.append(d.argmin(1))
            distance.append(d.min(1))
        return np.where(np.concatenate(distance) <= max_spacings * spacing, np.concatenate(nearest), -1)
    if len(other) != len(reference):
        raise ValueError(f'{other.name} has {len(other)} frames, {reference.name} {len(reference)}: references are '
                         'aligned by index unless a truth CSV or positions of both align them')
    return np.arange(len(other))


def frames_showing(truth: np.ndarray, n: int) -> np.ndarray:
    """(n,) for each reference frame, the frame of another traversal whose truth is nearest it, within
    one frame (-1: none); `truth` as frame_truth gives it."""
    valid = np.flatnonzero((truth >= 0) & (truth < n))
    if not len(valid):
        return np.full(n, -1)
    order = valid[np.argsort(truth[valid], kind='stable')]
    shown = truth[order]
    right = np.searchsorted(shown, np.arange(n)).clip(0, len(shown) - 1)
    left = (right - 1).clip(0)
    pick = np.where(np.abs(shown[left] - np.arange(n)) < np.abs(shown[right] - np.arange(n)), left, right)
    return np.where(np.abs(shown[pick] - np.arange(n)) <= 1, order[pick], -1)


def traversal_positions(n_frames: int, csv: str | os.PathLike | None = None, seed: int | None = None,
                        route: str | os.PathLike | None = None) -> np.ndarray | None:
    """A traversal's own positions: from its CSV, from simulated odometry along `route`, or None."""
    if csv:
        return load_positions(csv, n_frames)
    if seed is None:
        return None
    if not route:
        raise ValueError('--simulate-odometry needs --route CSV: the route the traversal drives '
                         '(on Gardens Point, gp_pos.csv)')
    return simulate_odometry(load_positions(route, n_frames), seed)


def simulate_odometry(route: np.ndarray, seed: int, step_noise: float = 0.05,
                      heading_drift_deg: float = 0.5, scale_error: float = 0.03) -> np.ndarray:
    """Honest query positions from a route that only the reference was recorded on.

    The query starts at the route's first position and integrates the route's per-frame
    displacements as wheel odometry would: each step is scaled by a constant (1 + e), e ~
    N(0, scale_error); rotated by a heading error that random-walks by N(0, heading_drift_deg)
    degrees per frame; and perturbed by Gaussian noise of `step_noise` times the mean step length.
    Errors accumulate (drift), so late frames are far from the reference's positions.
    The same seed gives the same positions.
    """
    rng = np.random.default_rng(seed)
    steps = np.diff(route, axis=0)
    mean_step = float(np.linalg.norm(steps, axis=1).mean())
    scale = 1.0 + rng.normal(0.0, scale_error)
    heading = np.cumsum(rng.normal(0.0, np.deg2rad(heading_drift_deg), len(steps)))
    cos, sin = np.cos(heading), np.sin(heading)
    rotated = np.stack([cos * steps[:, 0] - sin * steps[:, 1], sin * steps[:, 0] + cos * steps[:, 1]], 1)
    noisy = scale * rotated + rng.normal(0.0, step_noise * mean_step, steps.shape)
    return np.vstack([route[:1], route[:1] + np.cumsum(noisy, axis=0)])
