"""The streaming core shared by the ROS node, bag replay and offline evaluation. No ROS here.

A `Session` is one query stream: frames (stamp, image or descriptor, odometry position or None)
-> decode -> backbone (once per frame, batched) -> keyframe? -> window of seq_len keyframes ->
sequence matching against the map -> an answer per keyframe.

Keyframes make the sequence a function of where the robot went, not of how fast it or its camera ran:
- with odometry (and a map with positions): a frame is a keyframe after `keyframe_distance` of
  travel; each keyframe of the window is compared with the map frame at the same distance back
  from the window's end (odometry, not a fixed diagonal, lays the window on the map), for a few
  odometry scales (wheel odometry's scale error);
- vision-only: a frame is a keyframe when its descriptor has changed enough since the last keyframe
  (a fraction of the map's own median frame-to-frame change); the window is laid on the map along
  straight trajectories of relative speed min_speed..max_speed (SeqSLAM).
Each hypothesis's window z-scores are then averaged along its own trajectory over recent keyframes
(weight `speed_memory`, or `odometry_memory`, per keyframe back) and the best (trajectory, place)
answers: speed and place must both be consistent over time, not chosen afresh per window. Vision-only,
a keyframe whose windows match weakly (a dark stretch at night) leans more on the past, one that
matches sharply less (`memory_z`).

Places are map frames: the answer is the map frame aligned with the newest query keyframe.
Two maps: the checkpoint's reference frames, or an online map that grows by one frame per keyframe,
where revisits are found among frames older than `min_age` seconds.

Retrieval, then verification: windows that end at the map frames the index retrieves for the newest
keyframe (by descriptor and by window embedding), or at the last keyframe's best places moved on under
each hypothesis, are verified by sequence matching; no other place is scored (`retrieval_limit`: maps
up to that many frames are scored at every place instead). A map past `compact_limit` frames, and an
online map from its first frame, keeps only the index's compact descriptors (index.py) and verifies
with them; a smaller one verifies with its full descriptors. While
the session tracks (seq_len answers in a row, each where the last one's speed led) the moved-on
places carry it and the indexes are scanned every Nth keyframe only. An online map holds every pass
and condition the robot has seen, so a z-score background drawn from the whole of it (what scoring
a one-traversal map at every place does) made confident wrong revisits; the retrieved places' own
routes are the background here.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from .backbones import Backbone, pick_device
from .checkpoint import Checkpoint, CheckpointError, PlaceMap
from .image_conversion import CvBridge, ImageError, compressed_to_rgb, image_to_rgb
from .index import PlaceIndex, Rows, compact_projection, project
from .model import Standardiser, change_ratio, embed_frames, frame_change, head_input


INDEX_SEARCH = ('auto', 'pq', 'exact')   # MatchConfig.index_search
INDEX_SEARCH_HELP = 'pq (quantised scan, re-ranked; CPU) or exact (on the device); auto = exact on CUDA'
BACKGROUND_REACH = 100   # map frames around a retrieved place where its z-score background is drawn
TRACK_MARGIN = 1.0       # z-score below the best at which the tracked place still counts as the same track
SHARED_VIEW = 1 + math.exp(-1)   # change_ratio of a route whose views decorrelate over one frame spacing


@dataclass
class MatchConfig:
    lstm_weight: float = 0.0    # weight of the LSTM classifier's scores (0: sequence matching alone, measured best)
    top_k: int = 5
    threshold: float = 3.0      # z-score at or above which a place is "confident"
    loop_threshold: float = 4.5  # z-score at or above which a confident revisit is a loop closure
    query_prior: float = 20.0   # keyframes' worth of reference statistics a query starts from
    mean_window: float = 200.0  # keyframes the query's running descriptor mean weighs (it follows the conditions)
    min_age: float = 30.0       # online map: only places at least this old (s) are candidates
    keyframe_distance: float = 0.0   # odometry: travel between keyframes (map units); 0 = map's median spacing
    keyframe_change: float = 0.4     # vision-only: fraction of the map's median frame-to-frame change
    min_speed: float = 0.5           # vision-only: relative speeds searched (query keyframe / map frame)
    max_speed: float = 2.0
    speed_steps: int = 13            # speeds, geometrically spaced (ratio 1.12 from 0.5 to 2)
    speed_memory: float = 0.75       # vision-only: weight of past keyframes along each speed's trajectory
    memory_z: float = 5.0            # vision-only: at this best window z-score the weight is speed_memory; weaker
                                     # windows lean more on the past: speed_memory ** (z / memory_z); 0 = fixed
    odometry_memory: float = 0.95    # with odometry: the same along each odometry-scale trajectory
    odometry_scale_error: float = 0.25   # odometry scales searched: 1/(1+e) .. 1+e
    odometry_steps: int = 5              # (0.8, 0.89, 1, 1.12, 1.25): an odometer 15 % long or short
    time_jitter: float = 0.5         # s: a stamp this far back is processed; further back = new traversal
    odom_jump: float = 20.0          # map spacings travelled between two frames that count as a jump
    odom_stuck: int = 5              # appearance keyframes without odometry travel: odometry is stuck
    retrieval_limit: int = 0         # loaded maps with more frames verify only the places the index retrieves
                                     # (0: every map; online maps: always); smaller ones score every place
    compact_limit: int = 5000        # loaded maps with more frames keep (and verify with) compact descriptors only
    retrieval_k: int = 15            # map frames retrieved per keyframe, by descriptor and by window
                                     # embedding (and best places carried over)
    tracking_scan_every: int = 10    # while tracking (seq_len answers in a row moving on as their
                                     # speed says), the indexes are scanned every Nth keyframe only; 1 = always
    index_search: str = 'auto'       # 'pq' (quantised scan, re-ranked), 'exact' (on the device); auto: exact on CUDA

    def __post_init__(self):
        if not 0 < self.min_speed <= self.max_speed or self.speed_steps < 1:
            raise ValueError(f'need 0 < min_speed <= max_speed and speed_steps >= 1, got '
                             f'{self.min_speed}, {self.max_speed}, {self.speed_steps}')
        if min(self.top_k, self.retrieval_k, self.tracking_scan_every) < 1:
            raise ValueError('top_k, retrieval_k and tracking_scan_every must be >= 1')
        if min(self.retrieval_limit, self.compact_limit) < 0:
            raise ValueError('retrieval_limit and compact_limit must be >= 0')
        if self.mean_window < 1:
            raise ValueError(f'mean_window must be >= 1 keyframe, got {self.mean_window}')
        if min(self.keyframe_distance, self.keyframe_change, self.memory_z) < 0:
            raise ValueError('keyframe_distance, keyframe_change and memory_z must be >= 0')
        if self.index_search not in INDEX_SEARCH:
            raise ValueError(f'index_search must be one of {INDEX_SEARCH}, got {self.index_search!r}')

    @property
    def speeds(self) -> np.ndarray:
        return np.geomspace(self.min_speed, self.max_speed, self.speed_steps)

    @property
    def odometry_scales(self) -> np.ndarray:
        return np.geomspace(1 / (1 + self.odometry_scale_error), 1 + self.odometry_scale_error, self.odometry_steps)


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
    loop_closure: float | None = None   # first answer of a revisit: stamp of the place's first visit (min_age ago)
    loop_offset: np.ndarray | None = None   # with it: first visit's odometry (x, y) minus the current one, if known


@dataclass
class Frame:
    """One camera frame for a session: an RGB array, an image message, or a precomputed descriptor."""
    stamp: float
    image: Any = None           # HxWx3 uint8 RGB, or a sensor_msgs Image / CompressedImage (rclpy or rosbags)
    descriptor: torch.Tensor | None = None
    position: Any = None        # (x, y) odometry in the robot's odometry frame, or None
    key: Any = None


def split_stamp(seconds: float) -> tuple[int, int]:
    """Seconds -> (sec, nanosec) of a ROS time, the nanoseconds' carry included."""
    nanoseconds = round(seconds * 1e9)
    return nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000


def zscore(x: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
    """z-score along the last dimension against its finite entries (the `background` ones among
    them, if given); -inf stays -inf. Fewer than two such entries: 0."""
    finite = torch.isfinite(x)
    use = (finite if background is None else finite & background).to(x.dtype)
    count = use.sum(-1, keepdim=True)
    mean = (x.nan_to_num(neginf=0.0) * use).sum(-1, keepdim=True) / count.clamp_min(1)
    std = (((x - mean).nan_to_num(neginf=0.0) ** 2 * use).sum(-1, keepdim=True) / (count - 1).clamp_min(1)).sqrt()
    z = torch.where(count >= 2, (x - mean) / std.clamp_min(1e-6), torch.zeros_like(x))
    return torch.where(finite, z, x)


def fractional_rows(rows: torch.Tensor, index: torch.Tensor, slots: torch.Tensor | None = None,
                    best: bool = False) -> torch.Tensor:
    """rows (L, M) of values at M map frames, index (L, K) fractional map frames -> (L, K) linearly
    interpolated (best: the better of the two map frames); -inf outside the map. slots (n,): the column
    of each of the n map frames in rows (-1: none, then -inf); None: rows has all of them."""
    n = rows.shape[1] if slots is None else len(slots)
    inside = (index >= -0.5) & (index <= n - 0.5)
    index = index.clamp(0, n - 1)
    lo = index.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    a = index - lo
    if slots is not None:
        lo, hi = slots[lo], slots[hi]
        inside &= (lo >= 0) & ((hi >= 0) | (a == 0))
        lo, hi = lo.clamp(min=0), hi.clamp(min=0)
    low, high = rows.gather(1, lo), rows.gather(1, hi)
    value = torch.where(a > 0, torch.maximum(low, high), low) if best else low * (1 - a) + high * a
    return torch.where(inside, value, torch.full_like(value, -math.inf))


class Slots:
    """Where each map frame's value sits in a sparse row: a table of n entries, filled for a few."""

    def __init__(self):
        self.table = torch.zeros(0, dtype=torch.long)
        self.filled = torch.zeros(0, dtype=torch.long)

    def fill(self, frames: torch.Tensor, n: int) -> torch.Tensor:
        """(n,) table with frames[i] -> i and -1 elsewhere (valid until the next fill)."""
        if len(self.table) < n:   # grows by doubling as the map does
            self.table = torch.full((max(n, 2 * len(self.table)),), -1, dtype=torch.long)
        else:
            self.table[self.filled] = -1
        self.table[frames] = torch.arange(len(frames))
        self.filled = frames
        return self.table[:n]


def spans(starts: torch.Tensor, stops: torch.Tensor, n: int) -> torch.Tensor:
    """Sorted unique integers of the ranges [start, stop] clipped to 0..n-1."""
    starts, stops = starts.long().clamp(0, n - 1), stops.long().clamp(0, n - 1)
    width = int((stops - starts).max()) + 1 if len(starts) else 0
    values = starts[:, None] + torch.arange(width)
    return torch.unique(values[values <= stops[:, None]])


EASED_AFTER, EASED_CHANGE = 3, 0.8   # vision-only keyframe hysteresis (Keyframer)
KEYFRAME_EPSILON = 1e-3   # a map frame that is not a keyframe: its step along the map (Localizer.map_keyframes)


class Keyframer:
    """Which frames are keyframes. With an odometry step: after `distance` of travel; a step of more
    than `jump` keyframe distances is reported ('odom_jump') and ignored; `stuck` view changes without
    travel are reported once ('odom_stuck') and keyframes then follow the view until the robot moves.
    Without a step: when the view (a unit-norm standardised descriptor) has changed by `change`
    (cosine distance) since the last keyframe, or by `EASED_CHANGE` x `change` once the last `EASED_AFTER`
    frames were all keyframes (a robot moving a map frame or more per camera frame: a keyframe that
    changes a little less than the rest is not skipped, while a stopped robot's noise never starts the
    run). `odometer` is the accepted travel so far."""

    def __init__(self, on_problem: Callable[[str, str], None], jump: float = 20.0, stuck: int = 5):
        self.on_problem, self.jump, self.stuck_after = on_problem, jump, stuck
        self.last: torch.Tensor | None = None   # the view of the last keyframe or view change
        self.odometer = self.travelled = 0.0
        self.changes, self.stuck = 0, False
        self.run = 0   # frames in a row that were keyframes

    def __call__(self, view: torch.Tensor, change: float, step: float | None = None,
                 distance: float = math.inf) -> bool:
        taken = self._decide(view, change, step, distance)
        self.run = self.run + 1 if taken else 0
        return taken

    def _decide(self, view: torch.Tensor, change: float, step: float | None, distance: float) -> bool:
        if step is not None:
            if step > self.jump * distance:
                self.on_problem('odom_jump', f'odometry jumps by {step:.3g} between two frames: ignored')
                step = 0.0
            self.odometer += step
            self.travelled += step
        if self.last is None:
            return self._take(view)
        difference = 1 - float(view @ self.last)
        changed = change <= 0 or difference >= change   # 0: every frame (no calibration yet)
        if step is not None and self.travelled >= distance:
            self.stuck = False
            return self._take(view)
        if step is None or self.stuck:
            eased = self.run >= EASED_AFTER and difference >= EASED_CHANGE * change
            return self._take(view) if changed or eased else False
        if changed:   # the view keeps changing while odometry says the robot stands still
            self.last, self.changes = view, self.changes + 1
            if self.changes >= self.stuck_after:
                self.on_problem('odom_stuck', f'odometry stands still ({distance:.3g} not travelled) while the '
                                              f'view changed {self.changes} times: keyframes by appearance until '
                                              'it moves')
                self.stuck = True
        return False

    def _take(self, view: torch.Tensor) -> bool:
        self.last, self.travelled, self.changes = view, 0.0, 0
        return True


def teach_keyframes(standardised: torch.Tensor, positions: np.ndarray | None, distance: float,
                    change: float | None = None) -> list[int]:
    """Keyframes of a teach run (building a map): with positions, every `distance` of travel
    (odometry that jumps or stands still while the view changes raises ValueError); without, by
    appearance. change None calibrates it: half the median change between consecutive keyframes,
    starting from half the 90th percentile of frame-to-frame changes, refined twice."""
    if change is None:
        change = 0.5 * float((1 - (standardised[1:] * standardised[:-1]).sum(1)).quantile(0.9))
        for _ in range(2):
            keys = teach_keyframes(standardised, None, distance, change)
            if len(keys) > 2:
                change = 0.5 * float((1 - (standardised[keys[1:]] * standardised[keys[:-1]]).sum(1)).median())
    problems = []
    keyframer = Keyframer(lambda kind, message: problems.append(f'{message} (frame {i})'))
    keys = []
    for i, view in enumerate(standardised):
        step = None if positions is None else float(np.linalg.norm(positions[i] - positions[max(i - 1, 0)]))
        if keyframer(view, change, step, distance):
            keys.append(i)
        if problems:
            raise ValueError(problems[0])
    return keys


BRIDGE = CvBridge() if CvBridge is not None else None   # ROS 2 cv_bridge, where it is installed


def decode(image) -> np.ndarray:
    """An RGB array as it is; an Image or CompressedImage message decoded (ImageError when it cannot be)."""
    if isinstance(image, np.ndarray):
        return image
    try:
        return compressed_to_rgb(image) if hasattr(image, 'format') else image_to_rgb(image, BRIDGE)
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
        self.embeds = self.cfg.objective == 'embedding'   # the head's window embeddings retrieve places
        self.check_match(self.match)
        self.projection = compact_projection(self.cfg.descriptor_dim, self.cfg.compact_dim)
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

    def check_match(self, match: MatchConfig) -> None:
        """ValueError when `match` asks for what this checkpoint's head cannot give."""
        if match.lstm_weight > 0 and self.head.classifier is None:
            raise ValueError('lstm_weight > 0 needs the paper\'s classifier head; this checkpoint\'s head is a place '
                             'embedding (train with --objective classifier)')

    def load_map(self, places: PlaceMap) -> None:
        """Use `places` as the map. A map past compact_limit frames, and an online map, is kept compact:
        the index's descriptors only (float16, compact_dim values per frame) and the places' embeddings."""
        dim = self.cfg.compact_dim if places.compact else self.cfg.descriptor_dim
        if places.descriptors.shape[1:] != (dim,):
            raise CheckpointError(f'map descriptors {tuple(places.descriptors.shape)} do not match this '
                                  f'checkpoint\'s {"compact " * places.compact}descriptor size {dim}')
        self.online = places.online
        positions = places.positions
        if positions is None and self.online:
            positions = torch.full((len(places), 2), math.nan, dtype=torch.float64)
        self._index: PlaceIndex | None = None
        self._embedding_index: PlaceIndex | None = None
        # the places' embeddings until the embedding index holds them (None: made from the map when needed)
        self._embeddings = places.embeddings if len(places.embeddings) == len(places) and self.embeds else None
        self._map = {'descriptors': None, 'positions': None if positions is None else Rows(positions.double()),
                     'stamps': Rows(places.stamps.double())}
        if places.compact:
            self._index = self._new_index()
            self._index.add_compact(places.descriptors)
        else:
            self._map['descriptors'] = Rows(places.descriptors.float().to(self.device))
        self.map_names = list(places.names)
        self.calibration = (places.change, places.change_ratio)   # the reference traversal's, if stored
        self._distance: tuple[float, Rows | None] = (0, None)   # frames covered (inf: never), distances
        self._keyframes: tuple[float, torch.Tensor | None] = (math.nan, None)   # threshold, map_keyframes
        if not self.compact and (self.online or len(places) > self.match.compact_limit):
            self._statistics()
            _ = self.map_keyframes   # from the full descriptors, before they go
            self._compact()
        if self.online:   # the indexes grow with the map from its first frame
            _ = self.embeds and self.embedding_index
        self._statistics()

    def _compact(self) -> None:
        """Keep the map as the index's compact descriptors from now on (a big map)."""
        _ = self.index
        self._map['descriptors'] = None

    map_stamps = property(lambda self: self._map['stamps'].values, doc='(N,) seconds')

    @property
    def map_embeddings(self) -> torch.Tensor:
        """(N, hidden) window embeddings of the map frames, or (0, hidden) until a big map needs them."""
        if self._embedding_index is not None:
            return self._embedding_index.compact.values
        return torch.zeros(0, self.cfg.hidden) if self._embeddings is None else self._embeddings
    compact = property(lambda self: self._map['descriptors'] is None, doc='the map keeps compact descriptors only')

    @property
    def map_descriptors(self) -> torch.Tensor:
        """(N, D) standardised unit-norm descriptors; a compact map's (N, compact_dim) float16 ones."""
        return self.index.compact.values if self.compact else self._map['descriptors'].values

    @property
    def retrieval(self) -> bool:
        """Whether sequences are verified only at the places the index retrieves (a big map, an online map)."""
        return self.compact or self.online or len(self.map_names) > self.match.retrieval_limit

    @property
    def index(self) -> PlaceIndex:
        """The place index over the map frames, built on first use and grown with the map."""
        if self._index is None:
            self._index = self._new_index()
            self._index.add(self.map_descriptors)
        return self._index

    @property
    def embedding_index(self) -> PlaceIndex:
        """The index over the map places' window embeddings (a big map with an embedding head), built
        on first use: from the map's embeddings, or made from its compact descriptors."""
        if self._embedding_index is None:
            embeddings = self._embeddings if self._embeddings is not None else \
                embed_frames(self.head, self.index.compact.values, self.cfg.seq_len).cpu()
            self._embedding_index, self._embeddings = self._new_index(embeddings=True), None
            self._embedding_index.add_compact(embeddings)
        return self._embedding_index

    def _new_index(self, embeddings: bool = False) -> PlaceIndex:
        """An index of the map frames' compact descriptors, or of their window embeddings."""
        search = self.match.index_search
        exact = self.device if search == 'exact' or (search == 'auto' and self.device.type == 'cuda') else None
        if embeddings:
            return PlaceIndex(self.cfg.hidden, exact=exact)
        return PlaceIndex(self.cfg.compact_dim, self.projection, exact=exact)

    def project(self, standardised: torch.Tensor) -> torch.Tensor:
        """(..., D) standardised descriptors -> (..., compact_dim) unit-norm compact ones, on the CPU."""
        return project(standardised, self.projection)

    def embed(self, compact: torch.Tensor) -> torch.Tensor:
        """(L, compact_dim) a window's compact descriptors, oldest first -> (hidden,) its embedding (CPU)."""
        return self.head(head_input(compact[None].to(self.device), None))[1][0].cpu()

    @property
    def map_positions(self) -> torch.Tensor | None:
        """(N, 2) map frame positions (NaN where unknown), or None for a vision-only map."""
        return None if self._map['positions'] is None else self._map['positions'].values

    @property
    def map_distance(self) -> torch.Tensor | None:
        """(N,) distance along the map to each frame; None unless every position is known."""
        n, positions = len(self.map_names), self.map_positions
        known, distance = self._distance
        if known != n and positions is not None and known != math.inf:
            start = max(known, 1) if distance is not None else 1
            steps = (positions[start:] - positions[start - 1:-1]).norm(dim=1)
            if not torch.isfinite(steps).all():
                known, distance = math.inf, None   # a frame without a position: never a distance
            elif distance is not None:             # an online map grew: extend
                distance.append(distance.values[-1] + steps.cumsum(0))
            elif n > 1 and float(steps.median()) > 0:
                distance = Rows(torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)]))
            self._distance = (n if known != math.inf else known, distance)
        return None if distance is None else distance.values

    @property
    def map_keyframes(self) -> torch.Tensor | None:
        """(N,) each map frame's place along the map in keyframes (vision-only windows are laid along it),
        or None when every frame is one. A frame that the query's keyframer would not take (the teach run
        stood still) adds only KEYFRAME_EPSILON, so a window walks over the map's stops as the query's
        keyframes do over its own. Made from the full descriptors at the current keyframe_change; a
        compact map keeps what was made at load; an online map is keyframes only."""
        if self.online:
            return None
        threshold = self.match.keyframe_change * self.change if math.isfinite(self.change) else 0.0
        if not self.compact and self._keyframes[0] != threshold:
            keyframer = Keyframer(lambda kind, message: None)
            taken = torch.tensor([keyframer(view, threshold) for view in self.map_descriptors.cpu()])
            self._keyframes = (threshold, None if bool(taken.all()) else
                               torch.where(taken, 1.0, KEYFRAME_EPSILON).double().cumsum(0) - 1)
        return self._keyframes[1]

    def _statistics(self) -> None:
        """The map's median frame spacing (map units), frame-to-frame change (cosine distance) and change
        ratio: the stored calibration, else measured on the map's (a big map's recent) frames."""
        distance = self.map_distance
        self.spacing = float('nan') if distance is None else float(distance[-4097:].diff().median())
        (change, ratio), recent = self.calibration, self.map_descriptors[-4096:]
        self.change = change if math.isfinite(change) else frame_change(recent)
        self.change_ratio = ratio if math.isfinite(ratio) else change_ratio(recent, frame_change(recent))

    @property
    def sparse(self) -> bool:
        """Whether neighbouring map frames share little of their view (change_ratio under SHARED_VIEW: the
        views decorrelate within one frame spacing, as Nordland's do): a window's fractional map frame is
        then read as the better of its two neighbours, since a blend of two unrelated views matches neither."""
        return self.change_ratio < SHARED_VIEW

    def check_map(self, saved: Checkpoint) -> None:
        """A map saved by another checkpoint fits this one only if it was made by the same model:
        backbone, descriptor size, seq_len and descriptor statistics (CheckpointError otherwise)."""
        fields = ('backbone', 'weights_sha256', 'image_size', 'layer', 'pooling', 'descriptor_dim', 'seq_len')
        for name in fields:
            if getattr(saved.config, name) != getattr(self.cfg, name):
                raise CheckpointError(f'map made with {name}={getattr(saved.config, name)!r}, this checkpoint '
                                      f'has {getattr(self.cfg, name)!r}')
        if not (torch.allclose(saved.mean, self.ckpt.mean) and torch.allclose(saved.std, self.ckpt.std)):
            raise CheckpointError('map made with another reference traversal\'s descriptor statistics')

    def check_backbone(self, backbone: Backbone) -> None:
        want = (self.cfg.backbone, self.cfg.weights_sha256, self.cfg.image_size, self.cfg.layer, self.cfg.pooling)
        have = (backbone.name, backbone.weights.sha256, backbone.image_size, backbone.layer, backbone.pooling)
        if want != have:
            raise CheckpointError(f'checkpoint was trained on backbone {want} but got {have}')

    @property
    def backbone(self) -> Backbone:
        """The checkpoint's backbone, built on first use on the localizer's device."""
        if self._backbone is None:
            self._backbone = Backbone(self.cfg.backbone, 'imagenet', self.cfg.image_size, self.cfg.pooling,
                                      self.cfg.layer)
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

    def add_place(self, standardised: torch.Tensor, position, stamp: float,
                  projected: torch.Tensor | None = None, embedded: torch.Tensor | None = None) -> None:
        """Append one keyframe to an online map (amortised: no copy of the map per keyframe): to its
        indexes, the compact descriptors. `projected`: its index projection, `embedded`: the embedding of
        the window it ends (the last seq_len keyframes), if already made."""
        self._map['positions'].append(torch.full((2,), math.nan, dtype=torch.float64) if position is None
                                      else torch.as_tensor(position, dtype=torch.float64))
        self._map['stamps'].append(torch.tensor(stamp, dtype=torch.float64))
        self.map_names.append(f'online/{stamp:.3f}')
        self.index.add_compact((self.project(standardised) if projected is None else projected)[None])
        if self.embeds:   # the window of the map's newest frames
            if embedded is None:
                embedded = self.embed(self.index.compact.values[-self.cfg.seq_len:].float())
            self.embedding_index.add_compact(embedded[None])
        if len(self.map_names) in (2, 8) or len(self.map_names) % 64 == 0:   # medians, refreshed as the map grows
            self._statistics()

    def to_checkpoint(self) -> Checkpoint:
        """The checkpoint with the current map (for saving an online map)."""
        positions = None if self.map_positions is None else self.map_positions.clone()
        places = PlaceMap(self.map_descriptors.cpu().clone(), positions, self.map_stamps.clone(),
                          list(self.map_names), self.map_embeddings.clone(), self.online, self.compact,
                          *self.calibration)
        return replace(self.ckpt, places=places, training={})

    def run(self, descriptors: torch.Tensor, positions: np.ndarray | None = None,
            stamps: np.ndarray | None = None) -> list[Recognition]:
        """A whole query traversal of precomputed descriptors through a fresh session."""
        return self.session().run(descriptors, positions, stamps)


@dataclass
class _Keyframe:
    standardised: torch.Tensor   # (D,)
    distance: float | None       # odometry distance travelled since the session started
    position: torch.Tensor | None  # normalised position for the LSTM head
    stamp: float
    row: torch.Tensor | None = None       # (N,) similarity to the map frames (whole-map matching)
    compact: torch.Tensor | None = None   # the index's compact descriptor (retrieval)
    hits: torch.Tensor | None = None      # map frames the index retrieved for it
    embedding: torch.Tensor | None = None     # the embedding of the window it ends (retrieval)
    window_hits: torch.Tensor | None = None   # map frames whose windows' embeddings are nearest


class Session:
    """One query stream through a Localizer: owns decoding failures, resets, keyframing and answers.

    Problems are counted in `problems` and passed to `on_problem(kind, message)`; they never raise:
    image 'encoding'/'depth'/'size'/'decode', 'odom_nan', 'odom_jump', 'odom_stuck', 'time_jitter'
    (a stamp slightly back: processed), 'time_backwards' (further back: a new traversal starts).
    """

    def __init__(self, localizer: Localizer, on_problem: Callable[[str, str], None] | None = None):
        self.loc, self.on_problem = localizer, on_problem
        self.problems: Counter[str] = Counter()
        self.frames = self.keyframes = 0   # frames fed (their index in answers), keyframes taken
        self.reset()

    def reset(self) -> None:
        """Start a new query traversal (a new bag, a loop restart)."""
        loc, match = self.loc, self.loc.match
        self.standardiser = Standardiser(loc.ckpt.mean, loc.ckpt.std, match.query_prior,
                                         match.mean_window).to(loc.device)
        self.keyframer = Keyframer(self._problem, match.odom_jump, match.odom_stuck)
        self.window: deque[_Keyframe] = deque(maxlen=loc.cfg.seq_len)
        self.last_stamp = -math.inf
        self.last_position: np.ndarray | None = None
        self.xy: np.ndarray | None = None             # odometry of the latest frame
        self.trajectory: torch.Tensor | None = None   # (trajectories, places) z-scores averaged along each
        self.trajectory_ends: torch.Tensor | None = None   # its places (map frames); None: all of them
        self.trajectory_weight = 0.0
        self.random = torch.Generator().manual_seed(0)   # background places of a retrieval
        self.slots = Slots()
        self.first_seen: dict[int, tuple[float, np.ndarray | None]] = {}   # place -> stamp, odometry of first visit
        self.revisit: int | None = None               # place of the ongoing revisit's latest answer
        self.revisit_misses = 0                       # answers since that were not part of it
        self.last_answer: int | None = None   # place of the track followed (the last answer or a copy)
        self.steady = 0         # answers in a row, each with its track where the one before's speed led

    @property
    def tracking(self) -> bool:
        """seq_len steady answers in a row: the window's evidence has turned over once on this track."""
        return self.steady >= self.loc.cfg.seq_len - 1

    def _problem(self, kind: str, message: str) -> None:
        self.problems[kind] += 1
        if self.on_problem is not None:
            self.on_problem(kind, message)

    # ------------------------------------------------------------ frames in, answers out
    @torch.inference_mode()
    def process(self, frames: list[Frame]) -> list[Recognition]:
        """Decode, describe (one backbone batch) and step `frames` in order; answers of the keyframes.
        A frame that cannot be decoded is counted and skipped (it keeps its index)."""
        images, ready = [], []
        for frame in frames:
            if frame.descriptor is None:
                try:
                    images.append(decode(frame.image))
                except ImageError as exc:
                    self._problem(exc.kind, str(exc))
                    ready.append(None)
                    continue
            ready.append(frame)
        described = iter(self.loc.describe(images)) if images else iter(())
        answers = []
        for frame in ready:
            if frame is None:
                self.frames += 1
                continue
            descriptor = frame.descriptor if frame.descriptor is not None else next(described)
            answer = self.step(descriptor, frame.position, frame.stamp, frame.key)
            if answer is not None:
                answers.append(answer)
        return answers

    def run(self, descriptors: torch.Tensor, positions: np.ndarray | None = None,
            stamps: np.ndarray | None = None) -> list[Recognition]:
        """A whole query traversal of precomputed descriptors."""
        return self.process([Frame(float(i if stamps is None else stamps[i]), descriptor=d,
                                   position=None if positions is None else positions[i])
                             for i, d in enumerate(descriptors)])

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
        xy, step = self._odometry(position)
        self.xy = xy
        change = match.keyframe_change * loc.change if math.isfinite(loc.change) else 0.0
        distance = match.keyframe_distance or loc.spacing
        if not self.keyframer(self.standardiser.apply(descriptor), change, step, distance):
            return None
        self.keyframes += 1
        self.standardiser.update(descriptor)
        standardised = self.standardiser.apply(descriptor)
        normed = None if xy is None else (torch.as_tensor(xy, device=loc.device).float() - loc.position_center) \
            / loc.position_scale
        travelled = None if step is None or self.keyframer.stuck else self.keyframer.odometer
        self.window.append(_Keyframe(standardised, travelled, normed, stamp))
        full = len(self.window) == loc.cfg.seq_len
        answer = self._recognise(frame, stamp, key) if full else None
        if loc.online:
            loc.add_place(standardised, xy, stamp, self.window[-1].compact, self.window[-1].embedding)
        return answer

    def _odometry(self, position) -> tuple[np.ndarray | None, float | None]:
        """(finite position or None, distance since the previous position or None when the map or the
        frame has no usable odometry)."""
        if position is None:
            return None, None
        xy = np.asarray(position, dtype=np.float64).reshape(2)
        if not np.isfinite(xy).all():
            self._problem('odom_nan', f'non-finite odometry position {xy.tolist()}: frame treated as vision-only')
            return None, None
        previous, self.last_position = self.last_position, xy
        if self.loc.map_distance is None:
            return xy, None
        return xy, 0.0 if previous is None else float(np.linalg.norm(xy - previous))

    # ------------------------------------------------------------ matching
    def _logits(self) -> torch.Tensor | None:
        """The LSTM classifier's logits for the window; None when the head needs a missing position."""
        positions = None
        if self.loc.cfg.use_positions:
            if any(k.position is None for k in self.window):
                return None
            positions = torch.stack([k.position for k in self.window])[None]
        query = torch.stack([self._compact(k) for k in self.window])[None].to(self.loc.device)
        return self.loc.head(head_input(query, positions))[0][0]

    def _compact(self, keyframe: _Keyframe) -> torch.Tensor:
        """The keyframe's compact descriptor, projected once."""
        if keyframe.compact is None:
            keyframe.compact = self.loc.project(keyframe.standardised)
        return keyframe.compact

    def _rows(self) -> torch.Tensor:
        """(L, N) similarity of the window's keyframes to every map frame (a loaded map's: it does not grow)."""
        for k in self.window:
            if k.row is None:
                k.row = self.loc.map_descriptors @ k.standardised
        return torch.stack([k.row for k in self.window])

    def _retrieved(self, moved_on: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                   n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(first, last) places of the ranges to verify, and the background places: the map frames the
        index retrieves for the newest keyframe and the map frames whose windows' embeddings are
        nearest the window's (with an embedding head; each +-1), the best places of the last keyframe
        moved on by one keyframe under every hypothesis (a place found once is followed from there), and
        background places whose scores are the z-score background: 16 runs of 32 consecutive places
        (their windows share map frames), each within BACKGROUND_REACH map frames of a place to verify:
        the places around a candidate are its own route, as a small map's background is the map's own
        route (random places of a big map lie on other routes and are easy to beat: the z-scores
        inflated and the memory trusted the present too much). Only the newest keyframe's retrieval
        starts places: older keyframes' retrievals were measured to add distractors, not right places. While the
        session is tracking, the moved-on places carry the answer and the indexes are scanned only
        every tracking_scan_every keyframes (to notice a wrong track that stays consistent)."""
        loc, match = self.loc, self.loc.match
        newest, ranges = self.window[-1], []
        if not self.tracking or self.trajectory_ends is None or self.keyframes % match.tracking_scan_every == 0:
            limit = int(torch.searchsorted(loc.map_stamps, newest.stamp - match.min_age, right=True)) \
                if loc.online else None
            newest.hits = loc.index.search(self._compact(newest), match.retrieval_k, limit)
            ranges.append((newest.hits - 1, newest.hits + 1))
            if loc.embeds:
                newest.embedding = loc.embed(torch.stack([self._compact(k) for k in self.window]))
                newest.window_hits = loc.embedding_index.search(newest.embedding, match.retrieval_k, limit)
                ranges.append((newest.window_hits - 1, newest.window_hits + 1))
        if self.trajectory is not None and self.trajectory_ends is not None:
            best = self.trajectory.nan_to_num(neginf=-1e9).max(0).values.topk(
                min(match.retrieval_k, self.trajectory.shape[1])).indices
            ranges.append(moved_on(self.trajectory_ends[best]))
        centres = torch.cat([r[0] for r in ranges]).long()
        centres = centres[torch.randint(0, len(centres), (16,), generator=self.random)] if len(centres) else \
            torch.randint(0, n, (16,), generator=self.random)   # nothing retrieved (all too young): anywhere
        shift = torch.randint(-BACKGROUND_REACH, BACKGROUND_REACH + 1, (16,), generator=self.random)
        background = ((centres + shift - 16).clamp(0, max(n - 32, 0))[:, None] + torch.arange(32)).flatten()
        background = background.clamp(max=n - 1)
        starts, stops = (torch.cat([*(r[i] for r in ranges), background]).clamp(0, n - 1) for i in (0, 1))
        return starts, stops, background

    def _sequence_scores(self, stamp: float) -> tuple[torch.Tensor, torch.Tensor | None, str, float]:
        """(scores, their places or None for all N map frames, alignment, speed): the scores of the
        window laid on the map ending at each place (online maps: places at least min_age old; -inf
        elsewhere), for the best trajectory hypothesis: an odometry scale when every keyframe of the
        window has odometry, else a relative speed. Scored only where the index's retrievals put the
        window (maps up to retrieval_limit frames: at every place)."""
        loc, match, length = self.loc, self.loc.match, self.loc.cfg.seq_len
        n = len(loc.map_names)
        distances = [k.distance for k in self.window]
        cum = loc.map_distance
        if cum is not None and None not in distances and len(cum) == n:
            scales = torch.as_tensor(match.odometry_scales)                                # (H,)
            back = torch.tensor([distances[-1] - d for d in distances], dtype=torch.float64)  # (L,) odometry units
            step = distances[-1] - distances[-2]
            speeds, alignment, memory = scales * float(back[0]) / max(length - 1, 1) / loc.spacing, \
                'odometry', match.odometry_memory

            def moved_on(places):   # the map frames `step` further along, at the smallest and largest scale,
                # and 3 more either way: a track a few frames behind or ahead can move onto the true place
                target = cum[places][None] + step * torch.tensor([scales[0], scales[-1]], dtype=torch.float64)[:, None]
                return torch.searchsorted(cum, target[0]) - 3, torch.searchsorted(cum, target[1]) + 3

            def lay(ends):
                return self._frames_back(scales[:, None] * back, ends), \
                    self._frames_back(scales[:, None] * step, ends)[:, 0]                 # (H, L, E), (H, E)
        else:
            speeds, alignment, memory = torch.as_tensor(match.speeds), 'vision', match.speed_memory
            axis = loc.map_keyframes                                                        # None: every frame
            back = speeds[:, None] * torch.arange(length - 1, -1, -1)                      # (H, L) keyframes

            def moved_on(places):   # one keyframe further along, at the slowest and fastest speed
                if axis is None:
                    return places + math.floor(match.min_speed), places + math.ceil(match.max_speed)
                return torch.searchsorted(axis, axis[places] + match.min_speed) - 1, \
                    torch.searchsorted(axis, axis[places] + match.max_speed) + 1

            def lay(ends):
                if axis is None:
                    ends = ends.double()
                    return ends - back[..., None], ends - speeds[:, None]
                return self._frames_back(back, ends, axis, 1.0), \
                    self._frames_back(speeds[:, None], ends, axis, 1.0)[:, 0]
        if loc.retrieval:
            starts, stops, background = self._retrieved(moved_on, n)
            ends = spans(starts, stops, n)
            index, previous = lay(ends)
            earliest = index.amin((0, 1)).floor()   # the earliest frame a window ending at each place touches
            first = earliest[torch.searchsorted(ends, starts.long().clamp(0, n - 1))]   # ... at each range's start
            columns = spans(first, stops, n)
            slots = self.slots.fill(columns, n)
            if loc.compact:
                window = torch.stack([self._compact(k) for k in self.window])               # (L, d)
                rows = window @ loc.index.compact.values[columns].float().T                # (L, C)
            else:
                window = torch.stack([k.standardised for k in self.window])                # (L, D)
                rows = (window @ loc.map_descriptors[columns].T).cpu().double()            # (L, C)
            background = torch.isin(ends, background)
        else:
            ends = background = slots = None
            index, previous = lay(torch.arange(n))
            rows = self._rows().double()                                                   # (L, N)
        h, e = index.shape[0], index.shape[2]                                              # (H, L, E) -> (L, H E)
        flat = index.to(rows.device, rows.dtype).transpose(0, 1).reshape(length, h * e)
        laid = fractional_rows(rows, flat, slots, loc.sparse).mean(0).reshape(h, e)      # (H, E)
        scores = zscore(self._candidates(laid, ends, stamp), background)
        if alignment == 'vision' and match.memory_z > 0:   # weak evidence: lean on the past, sharp: on the present
            sharpness = float(scores.nan_to_num(neginf=-1e9).max()) / match.memory_z
            memory = memory ** min(max(sharpness, 0.25), 4.0)
        scores = self._along_trajectories(scores, ends, previous.to(rows.device, rows.dtype), memory, n)
        choice = int(scores.nan_to_num(neginf=-1e9).max(1).values.argmax())
        return scores[choice].float(), ends, alignment, float(speeds[choice])

    def _frames_back(self, back: torch.Tensor, ends: torch.Tensor, cum: torch.Tensor | None = None,
                     spacing: float | None = None) -> torch.Tensor:
        """back (..., K) distances -> (..., K, E) fractional map frame that far before each map frame
        `ends` along the map (-1 before its start); `cum`: the map frames' positions along it (default:
        odometry distance)."""
        cum = self.loc.map_distance if cum is None else cum
        spacing = self.loc.spacing if spacing is None else spacing
        target = cum[ends] - back[..., None]
        index = torch.from_numpy(np.interp(target.numpy().ravel(), cum.numpy(), np.arange(len(cum))))
        index = index.reshape(target.shape)
        return index.masked_fill(target < -0.5 * spacing, -1.0)

    def _candidates(self, scores: torch.Tensor, ends: torch.Tensor | None, stamp: float) -> torch.Tensor:
        """Online maps (verified at `ends`): only places at least min_age old may be revisited (-inf for
        the others)."""
        if not self.loc.online:
            return scores
        young = self.loc.map_stamps[ends].to(scores.device) > stamp - self.loc.match.min_age
        return scores.masked_fill(young, -math.inf)

    def _along_trajectories(self, scores: torch.Tensor, ends: torch.Tensor | None, previous: torch.Tensor,
                            memory: float, n: int) -> torch.Tensor:
        """Exponentially weighted mean (weight `memory` per keyframe into the past) of window
        z-scores (T trajectories, places `ends`) along each trajectory: place e now continues the
        (fractional) place previous[t, e] of the last keyframe. A trajectory (a speed, or odometry)
        is trusted for a place only when it has been consistent there."""
        if self.trajectory is not None and len(self.trajectory) != len(scores):
            self.trajectory, self.trajectory_weight = None, 0.0   # switched between odometry and vision
        if self.trajectory is not None:
            past = self.trajectory.nan_to_num(neginf=0.0)                  # no history: neutral (z = 0)
            slots = None if self.trajectory_ends is None else self.slots.fill(self.trajectory_ends, n)
            past = fractional_rows(past, previous, slots).nan_to_num(neginf=0.0)
            weight = 1 + memory * self.trajectory_weight
            scores = (scores + memory * self.trajectory_weight * past) / weight
        self.trajectory, self.trajectory_ends = scores, ends
        self.trajectory_weight = 1 + memory * self.trajectory_weight
        return scores

    def _recognise(self, frame: int, stamp: float, key: Any) -> Recognition | None:
        loc, length = self.loc, self.loc.cfg.seq_len
        scores, ends, alignment, speed = self._sequence_scores(stamp)
        weight = loc.match.lstm_weight
        logits = self._logits() if weight > 0 and not loc.online else None
        if logits is not None:   # classifier class c is the window that ends at map frame c + seq_len - 1
                                 # of the checkpoint's map
            lstm = torch.full((len(loc.map_names),), -math.inf, device=scores.device, dtype=scores.dtype)
            lstm[length - 1:length - 1 + loc.cfg.n_places] = zscore(F.log_softmax(logits, dim=0))
            scores = (scores + weight * (lstm if ends is None else lstm[ends.to(scores.device)])) / (1 + weight)
        valid = int(torch.isfinite(scores).sum())
        if valid < 1:
            self.last_answer, self.steady = None, 0
            return None
        top, places = scores.topk(min(loc.match.top_k, valid))
        if ends is not None:   # retrieval: places by map frame, every unverified one -inf
            places = ends[places]
            scores = torch.full((len(loc.map_names),), -math.inf).index_put_((ends,), scores)
        best, best_score = int(places[0]), float(top[0])
        confident = best_score >= loc.match.threshold
        self._follow(scores, best, speed)
        loop_closure, loop_offset = self._revisit(best, stamp, confident, best_score >= loc.match.loop_threshold)
        return Recognition(frame=frame, stamp=stamp, place=best, score=best_score, confident=confident,
                           candidates=[(int(p), float(s)) for p, s in zip(places, top)],
                           scores=scores.cpu().numpy(), alignment=alignment, speed=speed, key=key,
                           loop_closure=loop_closure, loop_offset=loop_offset)

    def _follow(self, scores: torch.Tensor, best: int, speed: float) -> None:
        """Go on tracking when the place where the last one's speed led (2 map frames of slack) scores
        within TRACK_MARGIN of the best, and follow that place: a map that holds several passes of a
        route has a copy of each place per pass, and the best answer jumps between copies while each
        copy is a consistent track (following the best alone lost tracking after a few passes)."""
        last, self.last_answer = self.last_answer, best
        if last is not None:
            led = round(last + speed)
            near = scores[max(led - 2, 0):led + 3]
            if len(near) and float(near.max()) >= float(scores[best]) - TRACK_MARGIN:
                self.last_answer = max(led - 2, 0) + int(near.argmax())
                self.steady += 1
                return
        self.steady = 0

    def _revisit(self, place: int, stamp: float, confident: bool,
                 strong: bool) -> tuple[float | None, np.ndarray | None]:
        """(stamp of the place's first visit, odometry offset) on the first answer of a revisit, else
        (None, None). A revisit is a strong match (score >= loop_threshold) min_age or more after the
        place's first (confident) visit; it goes on while such matches stay within seq_len map frames of
        each other, and ends after seq_len answers that are not: one loop closure per revisit, however
        long the robot stays."""
        loc = self.loc
        first = where = None
        if confident:
            first, where = self.first_seen.setdefault(
                place, (loc.place_stamp(place), loc.place_pose(place)) if loc.online else (stamp, self.xy))
        if not strong or first is None or stamp - first < loc.match.min_age:
            self.revisit_misses += 1
            if self.revisit_misses >= loc.cfg.seq_len:
                self.revisit = None
            return None, None
        ongoing = self.revisit is not None and abs(place - self.revisit) <= loc.cfg.seq_len
        self.revisit, self.revisit_misses = place, 0
        if ongoing:
            return None, None
        return first, None if where is None or self.xy is None else where - self.xy
