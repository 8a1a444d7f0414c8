"""The streaming core shared by the ROS node, bag replay and offline evaluation. No ROS here.

A `Session` is one query stream: frames (stamp, image or descriptor, odometry position or None)
-> decode -> backbone (once per frame, batched) -> keyframe? -> window of seq_len keyframes ->
sequence matching against the map -> an answer per keyframe.

Keyframes make the sequence a function of where the robot went, not of how fast it or its camera ran:
- with odometry (and a map with positions): a frame is a keyframe after `keyframe_distance` of
  travel; each keyframe of the window is compared with the map frame at the same distance back
  from the window's end (odometry, not a fixed diagonal, lays the window on the map);
- vision-only: a frame is a keyframe when its descriptor has changed enough since the last keyframe
  (a fraction of the map's own median frame-to-frame change); the window is laid on the map along
  straight trajectories of relative speed min_speed..max_speed (SeqSLAM), and the speed whose best
  score has been highest over recent keyframes (an exponential average) answers, so the speed is
  estimated consistently over time rather than re-chosen per window.

Places are map frames: the answer is the map frame aligned with the newest query keyframe.
Two maps: the checkpoint's reference frames, or an online map that grows by one frame per keyframe,
where revisits are found among frames older than `min_age` seconds.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .backbones import Backbone, pick_device
from .checkpoint import Checkpoint, CheckpointError, PlaceMap
from .image_conversion import ImageError
from .model import Standardiser, head_input


@dataclass
class MatchConfig:
    lstm_weight: float = 0.0    # weight of the LSTM classifier's scores (0: sequence matching alone, measured best)
    top_k: int = 5
    threshold: float = 3.0      # z-score at or above which a place is "confident"
    query_prior: float = 20.0   # keyframes' worth of reference statistics a query starts from
    min_age: float = 30.0       # online map: only places at least this old (s) are candidates
    keyframe_distance: float = 0.0   # odometry: travel between keyframes (map units); 0 = map's median spacing
    keyframe_change: float = 0.5     # vision-only: fraction of the map's median frame-to-frame change
    min_speed: float = 0.5           # vision-only: relative speeds searched (query keyframe / map frame)
    max_speed: float = 2.0
    speed_steps: int = 7             # speeds, geometrically spaced
    speed_memory: float = 0.8        # vision-only: weight of the past along each speed's trajectory
    time_jitter: float = 0.5         # s: a stamp this far back is processed; further back = new traversal
    odom_jump: float = 20.0          # map spacings travelled between two frames that count as a jump
    odom_stuck: int = 5              # appearance keyframes without odometry travel: odometry is stuck

    def __post_init__(self):
        if not 0 < self.min_speed <= self.max_speed or self.speed_steps < 1:
            raise ValueError(f'need 0 < min_speed <= max_speed and speed_steps >= 1, got '
                             f'{self.min_speed}, {self.max_speed}, {self.speed_steps}')
        if self.top_k < 1 or self.keyframe_distance < 0 or self.keyframe_change < 0:
            raise ValueError('top_k must be >= 1; keyframe_distance and keyframe_change >= 0')

    @property
    def speeds(self) -> np.ndarray:
        return np.geomspace(self.min_speed, self.max_speed, self.speed_steps)


@dataclass
class Recognition:
    """The answer for the window of keyframes that ends at query frame `frame`."""
    frame: int                  # query frame index in this session
    stamp: float
    place: int                  # best place: the map frame aligned with the newest keyframe
    score: float                # its score (z-score units)
    confident: bool             # score >= threshold
    candidates: list[tuple[int, float]]  # top-K (place, score), best first
    scores: np.ndarray          # (map frames,) scores of every place (-inf where the window does not fit)
    alignment: str              # 'odometry' or 'vision'
    speed: float                # relative speed of the window (odometry: travelled / map spacing per keyframe)
    key: Any = None             # what the caller attached to the frame (e.g. its ROS header)


@dataclass
class Frame:
    """One camera frame for a session: an RGB array, an image message, or a precomputed descriptor."""
    stamp: float
    image: Any = None           # HxWx3 uint8 RGB, or a sensor_msgs Image / CompressedImage (rclpy or rosbags)
    descriptor: torch.Tensor | None = None
    position: Any = None        # (x, y) odometry in the robot's odometry frame, or None
    key: Any = None


def zscore(x: torch.Tensor) -> torch.Tensor:
    """z-score over the finite entries; -inf stays -inf."""
    finite = torch.isfinite(x)
    if int(finite.sum()) < 2:
        return torch.where(finite, torch.zeros_like(x), x)
    values = x[finite]
    return torch.where(finite, (x - values.mean()) / values.std().clamp_min(1e-6), x)


def fractional_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """rows (L, N), index (L, M) fractional map frames -> (L, M) linearly interpolated; -inf outside."""
    n = rows.shape[1]
    inside = (index >= -0.5) & (index <= n - 0.5)
    index = index.clamp(0, n - 1)
    lo = index.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    a = index - lo
    value = rows.gather(1, lo) * (1 - a) + rows.gather(1, hi) * a
    return torch.where(inside, value, torch.full_like(value, -math.inf))


def keyframe_indices(standardised: torch.Tensor, positions: np.ndarray | None, distance: float,
                     change: float | None = None, stuck: int = 5) -> list[int]:
    """Keyframes of a teach run (building a map): with positions, every `distance` of travel (a jump of
    more than 20 keyframe distances, or `stuck` view changes without travel, raise ValueError);
    without, every `change` of cosine distance from the last keyframe's (N, D) unit-norm descriptor;
    change None calibrates it: half the median change between consecutive keyframes, refined twice."""
    if change is None:
        moving = 1 - (standardised[1:] * standardised[:-1]).sum(1)
        change = 0.5 * float(moving.quantile(0.9))
        for _ in range(2):
            keys = keyframe_indices(standardised, None, distance, change, stuck)
            if len(keys) > 2:
                change = 0.5 * float((1 - (standardised[keys[1:]] * standardised[keys[:-1]]).sum(1)).median())
    keys, travelled, triggers, last = [0], 0.0, 0, standardised[0]
    for i in range(1, len(standardised)):
        changed = change is not None and 1 - float(standardised[i] @ last) >= change
        if positions is None:
            if changed:
                keys.append(i)
                last = standardised[i]
            continue
        step = float(np.linalg.norm(positions[i] - positions[i - 1]))
        if not np.isfinite(step) or step > 20 * distance:
            raise ValueError(f'odometry jumps by {step:.3g} at frame {i} (keyframe distance {distance:.3g})')
        travelled += step
        if travelled >= distance:
            keys.append(i)
            travelled, triggers, last = 0.0, 0, standardised[i]
        elif changed:
            triggers, last = triggers + 1, standardised[i]
            if triggers >= stuck:
                raise ValueError(f'odometry stands still at frame {i} while the view keeps changing')
    return keys


def decode(image) -> np.ndarray:
    """An RGB array as it is; an Image or CompressedImage message decoded (ImageError when it cannot be)."""
    import cv2

    from .image_conversion import compressed_to_rgb, image_to_rgb
    if isinstance(image, np.ndarray):
        return image
    try:
        return compressed_to_rgb(image) if hasattr(image, 'format') else image_to_rgb(image)
    except cv2.error as exc:   # e.g. an odd-width yuv422 frame: this frame fails, not its batch
        raise ImageError('decode', f'OpenCV cannot convert this {getattr(image, "encoding", "image")} frame: '
                                   f'{str(exc).strip().splitlines()[-1]}') from exc


class Localizer:
    """The model and the place map: descriptors in, place scores out. Sessions drive it."""

    def __init__(self, checkpoint: Checkpoint, device: str = 'auto', match: MatchConfig | None = None,
                 backbone: Backbone | None = None, online: bool = False):
        self.ckpt, self.cfg = checkpoint, checkpoint.config
        self.match = match or MatchConfig()
        self.device = pick_device(device)
        self.head = checkpoint.build_head(self.device)
        self.position_center = checkpoint.position_center.float().to(self.device)
        self.position_scale = checkpoint.position_scale.float().to(self.device)
        self._backbone = backbone
        if backbone is not None:
            self.check_backbone(backbone)
            backbone.to(self.device)
        places = checkpoint.places
        if online and not places.online:   # a fresh online map: the reference places are not used
            places = PlaceMap(torch.zeros(0, self.cfg.descriptor_dim), torch.zeros(0, 2, dtype=torch.float64),
                              torch.zeros(0, dtype=torch.float64), [], torch.zeros(0, self.cfg.hidden), online=True)
        self.load_map(places)

    def load_map(self, places: PlaceMap) -> None:
        if places.descriptors.shape[1:] != (self.cfg.descriptor_dim,):
            raise CheckpointError(f'map descriptors {tuple(places.descriptors.shape)} do not match this '
                                  f'checkpoint\'s descriptor size {self.cfg.descriptor_dim}')
        self.online = places.online
        self.map_descriptors = places.descriptors.float().to(self.device)
        self.map_positions = None if places.positions is None else places.positions.double()
        self.map_stamps = places.stamps.double()
        self.map_names = list(places.names)
        self.map_embeddings = places.embeddings.float()
        self._statistics()

    def _statistics(self) -> None:
        """The map's median frame spacing (map units) and frame-to-frame change (cosine distance)."""
        self.map_distance = None   # (N,) cumulative distance along the map, when all positions are known
        self.spacing = self.change = float('nan')
        if self.map_positions is not None and len(self.map_positions) > 1:
            steps = (self.map_positions[1:] - self.map_positions[:-1]).norm(dim=1)
            if torch.isfinite(steps).all() and float(steps.median()) > 0:
                self.map_distance = torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)])
                self.spacing = float(steps.median())
        if len(self.map_descriptors) > 1:
            similarity = (self.map_descriptors[1:] * self.map_descriptors[:-1]).sum(1)
            self.change = float((1 - similarity).median())

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

    def session(self, on_problem: Callable[[str, str], None] | None = None) -> Session:
        return Session(self, on_problem)

    def place_pose(self, place: int) -> np.ndarray | None:
        """Stored (x, y) of map frame `place`, if known."""
        if self.map_positions is None:
            return None
        xy = self.map_positions[place].numpy()
        return None if not np.isfinite(xy).all() else xy

    def place_stamp(self, place: int) -> float:
        return float(self.map_stamps[place])

    def add_place(self, standardised: torch.Tensor, position, stamp: float, embedding: torch.Tensor | None) -> None:
        """Append one keyframe to an online map (amortised: capacity doubles when full)."""
        n = len(self.map_names)
        if n == len(self._capacity()):
            grow = max(64, n)
            self._store = torch.cat([self._capacity(), torch.zeros(grow, self.cfg.descriptor_dim, device=self.device)])
        self._store[n] = standardised
        self.map_descriptors = self._store[:n + 1]
        pos = torch.full((1, 2), math.nan, dtype=torch.float64) if position is None else \
            torch.as_tensor(np.asarray(position, dtype=np.float64)).view(1, 2)
        if n == 0:
            self.map_distance = torch.zeros(1, dtype=torch.float64) if position is not None else None
        elif self.map_distance is not None and position is not None:
            step = (pos[0] - self.map_positions[-1]).norm().view(1)
            self.map_distance = torch.cat([self.map_distance, self.map_distance[-1:] + step])
        else:
            self.map_distance = None
        self.map_positions = pos if self.map_positions is None or n == 0 else torch.cat([self.map_positions, pos])
        self.map_stamps = torch.cat([self.map_stamps, torch.tensor([stamp], dtype=torch.float64)])
        self.map_names.append(f'online/{stamp:.3f}')
        emb = torch.zeros(self.cfg.hidden) if embedding is None else embedding.cpu()
        self.map_embeddings = torch.cat([self.map_embeddings, emb[None]])
        if n + 1 in (2, 8) or (n + 1) % 64 == 0:   # medians, refreshed as the map grows
            self._statistics()

    def _capacity(self) -> torch.Tensor:
        if getattr(self, '_store', None) is None or self._store.data_ptr() != self.map_descriptors.data_ptr():
            self._store = self.map_descriptors.clone()
        return self._store

    def to_checkpoint(self) -> Checkpoint:
        """The checkpoint with the current map (for saving an online map)."""
        places = PlaceMap(self.map_descriptors.cpu().clone(), self.map_positions, self.map_stamps,
                          list(self.map_names), self.map_embeddings, self.online)
        return replace(self.ckpt, places=places, training={})

    def run(self, descriptors: torch.Tensor, positions: np.ndarray | None = None,
            stamps: np.ndarray | None = None) -> list[Recognition]:
        """A whole query traversal of precomputed descriptors through a fresh session."""
        session = self.session()
        frames = [Frame(float(i if stamps is None else stamps[i]), descriptor=d,
                        position=None if positions is None else positions[i]) for i, d in enumerate(descriptors)]
        return session.process(frames)


@dataclass
class _Keyframe:
    standardised: torch.Tensor   # (D,)
    row: torch.Tensor            # (N,) similarity to the map frames known when it was taken
    distance: float | None       # odometry distance travelled since the session started
    position: torch.Tensor | None  # normalised position for the LSTM head


class Session:
    """One query stream through a Localizer: owns decoding failures, resets, keyframing and answers.

    Problems are counted in `problems` and passed to `on_problem(kind, message)`; they never raise:
    image 'encoding'/'depth'/'size'/'decode', 'odom_nan', 'odom_jump', 'odom_stuck', 'time_jitter'
    (a stamp slightly back: processed), 'time_backwards' (further back: a new traversal starts).
    """

    def __init__(self, localizer: Localizer, on_problem: Callable[[str, str], None] | None = None):
        self.loc, self.on_problem = localizer, on_problem
        self.problems: Counter[str] = Counter()
        self.frames = self.keyframes = 0
        self.reset()

    def reset(self) -> None:
        """Start a new query traversal (a new bag, a loop restart)."""
        loc = self.loc
        self.standardiser = Standardiser(loc.ckpt.mean, loc.ckpt.std, loc.match.query_prior).to(loc.device)
        self.window: deque[_Keyframe] = deque(maxlen=loc.cfg.seq_len)
        self.last_stamp = -math.inf
        self.last_keyframe: torch.Tensor | None = None   # standardised descriptor of the last keyframe
        self.last_change: torch.Tensor | None = None     # of the last appearance trigger (odometry mode)
        self.last_position: np.ndarray | None = None
        self.distance, self.travelled, self.appearance_triggers = 0.0, 0.0, 0
        self.stuck = False   # odometry stands still while the view changes: keyframes by appearance
        self.trajectory: torch.Tensor | None = None   # (speeds, N) z-scores averaged along each trajectory
        self.trajectory_weight = 0.0

    def _problem(self, kind: str, message: str) -> None:
        self.problems[kind] += 1
        if self.on_problem is not None:
            self.on_problem(kind, message)

    # ------------------------------------------------------------ frames in, answers out
    @torch.inference_mode()
    def process(self, frames: list[Frame]) -> list[Recognition]:
        """Decode, describe (one backbone batch) and step `frames` in order; answers of the keyframes."""
        images, ready = [], []
        for frame in frames:
            if frame.descriptor is None:
                try:
                    images.append(decode(frame.image))
                except ImageError as exc:
                    self._problem(exc.kind, str(exc))
                    continue
            ready.append(frame)
        described = iter(self.loc.describe(images)) if images else iter(())
        answers = []
        for frame in ready:
            descriptor = frame.descriptor if frame.descriptor is not None else next(described)
            answer = self.step(descriptor, frame.position, frame.stamp, frame.key)
            if answer is not None:
                answers.append(answer)
        return answers

    @torch.inference_mode()
    def step(self, descriptor: torch.Tensor, position=None, stamp: float | None = None,
             key: Any = None) -> Recognition | None:
        """One frame's descriptor; an answer when it is a keyframe and the window is full."""
        loc, match = self.loc, self.loc.match
        stamp = float(self.frames if stamp is None else stamp)
        if stamp < self.last_stamp - match.time_jitter:
            self._problem('time_backwards', f'frame stamp {stamp:.3f} < {self.last_stamp:.3f}: new traversal')
            self.reset()
        elif stamp < self.last_stamp:
            self._problem('time_jitter', f'frame stamp {stamp:.3f} < {self.last_stamp:.3f} (within '
                                         f'{match.time_jitter} s: processed)')
        self.last_stamp = max(stamp, self.last_stamp)
        frame = self.frames
        self.frames += 1
        descriptor = descriptor.to(loc.device).float()
        if not self._is_keyframe(descriptor, self._odometry(position)):
            return None
        self.keyframes += 1
        self.standardiser.update(descriptor)
        standardised = self.standardiser.apply(descriptor)
        self.last_keyframe = self.last_change = standardised
        xy = None if position is None else np.asarray(position, dtype=np.float64).reshape(2)
        xy = xy if xy is not None and np.isfinite(xy).all() else None
        normed = None if xy is None else (torch.as_tensor(xy, device=loc.device).float() - loc.position_center) \
            / loc.position_scale
        distance = self.distance if self._odometry_usable() and xy is not None and not self.stuck else None
        self.window.append(_Keyframe(standardised, loc.map_descriptors @ standardised, distance, normed))
        full = len(self.window) == loc.cfg.seq_len
        answer = self._recognise(frame, stamp, key) if full else None
        if loc.online:
            head = self._head() if full else None
            loc.add_place(standardised, xy, stamp, None if head is None else head[1])
        return answer

    # ------------------------------------------------------------ keyframes
    def _odometry(self, position) -> float | None:
        """Distance travelled since the previous frame, or None without usable odometry."""
        if position is None:
            return None
        xy = np.asarray(position, dtype=np.float64).reshape(2)
        if not np.isfinite(xy).all():
            self._problem('odom_nan', f'non-finite odometry position {xy.tolist()}: frame treated as vision-only')
            return None
        step = 0.0 if self.last_position is None else float(np.linalg.norm(xy - self.last_position))
        self.last_position = xy
        if self._odometry_usable() and step > self.loc.match.odom_jump * self._keyframe_distance():
            self._problem('odom_jump', f'odometry jumped {step:.3f} between two frames: ignored')
            step = 0.0
        self.distance += step
        return step

    def _odometry_usable(self) -> bool:
        return self.loc.map_distance is not None and self.last_position is not None

    def _keyframe_distance(self) -> float:
        return self.loc.match.keyframe_distance or self.loc.spacing

    def _is_keyframe(self, descriptor: torch.Tensor, step: float | None) -> bool:
        if self.last_keyframe is None:
            return True
        match = self.loc.match
        threshold = match.keyframe_change * self.loc.change if math.isfinite(self.loc.change) else 0.0
        current = self.standardiser.apply(descriptor)
        changed = 1 - float(current @ self.last_change) >= threshold
        if step is None or not self._odometry_usable():
            return changed
        self.travelled += step
        if self.travelled >= self._keyframe_distance():
            self.travelled, self.appearance_triggers, self.stuck = 0.0, 0, False
            return True
        if self.stuck:
            return changed
        if changed:   # the view keeps changing while odometry says the robot stands still
            self.last_change = current
            self.appearance_triggers += 1
            if self.appearance_triggers >= match.odom_stuck:
                self._problem('odom_stuck', f'the view changed {self.appearance_triggers} times without '
                                            f'{self._keyframe_distance():.3g} of odometry travel: keyframes '
                                            'by appearance until it moves')
                self.stuck = True
        return False

    # ------------------------------------------------------------ matching
    def _head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """LSTM logits and embedding of the window; None when the head needs a missing position."""
        positions = None
        if self.loc.cfg.use_positions:
            if any(k.position is None for k in self.window):
                return None
            positions = torch.stack([k.position for k in self.window])[None]
        query = torch.stack([k.standardised for k in self.window])[None]
        logits, embedding = self.loc.head(head_input(query, positions))
        return logits[0], embedding[0]

    def _rows(self) -> torch.Tensor:
        """(L, N) similarity of the window's keyframes to every map frame (extended if the map grew)."""
        loc = self.loc
        n = len(loc.map_descriptors)
        for k in self.window:
            if len(k.row) < n:
                k.row = torch.cat([k.row, loc.map_descriptors[len(k.row):] @ k.standardised])
        return torch.stack([k.row for k in self.window])

    def _sequence_scores(self) -> tuple[torch.Tensor, str, float]:
        """(N,) z-scored similarity of the window laid on the map ending at each map frame."""
        loc, length = self.loc, self.loc.cfg.seq_len
        rows = self._rows()
        n = rows.shape[1]
        ends = torch.arange(n, dtype=torch.float64, device=rows.device)
        distances = [k.distance for k in self.window]
        if loc.map_distance is not None and None not in distances and len(loc.map_distance) == n:
            back = torch.tensor([distances[-1] - d for d in distances], dtype=torch.float64)   # (L,)
            cum = loc.map_distance
            target = cum[None] - back[:, None]                                               # (L, N)
            index = torch.from_numpy(np.stack([np.interp(t, cum.numpy(), np.arange(n)) for t in target.numpy()]))
            index[target < -0.5 * loc.spacing] = -1.0                                        # before the map
            scores = zscore(fractional_rows(rows.double(), index.to(rows.device)).mean(0))[None]
            step = distances[-1] - distances[-2]        # the previous keyframe's place: this far back
            previous = torch.from_numpy(np.interp((cum - step).numpy(), cum.numpy(), np.arange(n)))
            scores = self._along_trajectories(scores, previous[None].to(rows.device))
            speed = float(back[0]) / max(length - 1, 1) / loc.spacing
            return scores[0].float(), 'odometry', speed
        speeds = torch.as_tensor(loc.match.speeds, dtype=torch.float64, device=rows.device)
        offsets = speeds[:, None] * torch.arange(length - 1, -1, -1, device=rows.device)           # (S, L)
        per_speed = torch.stack([zscore(fractional_rows(rows.double(), ends[None] - o[:, None]).mean(0))
                                 for o in offsets])                                              # (S, N)
        scores = self._along_trajectories(per_speed, ends[None] - speeds[:, None])
        choice = int(scores.nan_to_num(neginf=-1e9).max(1).values.argmax())
        return scores[choice].float(), 'vision', float(speeds[choice])

    def _along_trajectories(self, scores: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Exponentially weighted mean (weight `speed_memory` per keyframe into the past) of window
        z-scores (T trajectories, N places) along each trajectory: place e now continues the
        (fractional) place previous[t, e] of the last keyframe. A trajectory (a speed, or odometry)
        is trusted for a place only when it has been consistent there."""
        memory = self.loc.match.speed_memory
        if self.trajectory is not None and len(self.trajectory) != len(scores):
            self.trajectory, self.trajectory_weight = None, 0.0   # switched between odometry and vision
        if self.trajectory is not None:
            past = self.trajectory.nan_to_num(neginf=0.0)                  # no history: neutral (z = 0)
            past = fractional_rows(past, previous).nan_to_num(neginf=0.0)
            weight = 1 + memory * self.trajectory_weight
            scores = (scores + memory * self.trajectory_weight * past) / weight
        self.trajectory, self.trajectory_weight = scores, 1 + memory * self.trajectory_weight
        return scores

    def _recognise(self, frame: int, stamp: float, key: Any) -> Recognition | None:
        loc, length = self.loc, self.loc.cfg.seq_len
        sequence, alignment, speed = self._sequence_scores()
        if loc.online:   # only places at least min_age old may be revisited
            young = loc.map_stamps.to(sequence.device) > stamp - loc.match.min_age
            sequence = torch.where(young[:len(sequence)], torch.full_like(sequence, -math.inf), sequence)
        fused = sequence
        valid = int(torch.isfinite(fused).sum())
        if valid < 1:
            return None
        weight = loc.match.lstm_weight
        head = self._head() if weight > 0 and not loc.online else None
        if head is not None:   # classifier class c is the window that ends at map frame c + seq_len - 1
            lstm = torch.full_like(fused, -math.inf)
            lstm[length - 1:length - 1 + loc.cfg.n_places] = zscore(F.log_softmax(head[0], dim=0))
            fused = (fused + weight * lstm) / (1 + weight)
        scores, places = fused.topk(min(loc.match.top_k, valid))
        best, best_score = int(places[0]), float(scores[0])
        return Recognition(frame=frame, stamp=stamp, place=best, score=best_score,
                           confident=best_score >= loc.match.threshold,
                           candidates=[(int(p), float(s)) for p, s in zip(places, scores) if math.isfinite(s)],
                           scores=fused.cpu().numpy(), alignment=alignment, speed=speed, key=key)
