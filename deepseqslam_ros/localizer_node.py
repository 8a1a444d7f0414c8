"""The localizer node: camera (+ odometry) in, recognised places, matched poses and loop closures out.

A thin ROS shell around a deepseqslam_ros.core.Session. Callbacks only enqueue. The rclpy executor
spins in a background thread; the main thread is the worker: it batches pending frames through the
backbone and steps the session once per frame; it answers on keyframes (torch's thread pool measured
~20 % more frames/s driven from the main thread than from a secondary one). SIGINT (once or twice)
and SIGTERM stop the worker; the node then saves an online map and exits 0.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point32, PointStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidTopicNameException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_topic_name import validate_topic_name
from sensor_msgs.msg import ChannelFloat32, CompressedImage, Image, PointCloud, TimeReference
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from .backbones import pick_device
from .checkpoint import load_checkpoint
from .core import INDEX_SEARCH, INDEX_SEARCH_HELP, Frame, Localizer, MatchConfig, Recognition, split_stamp
from .odometry import OdometryBuffer

PARAMETERS = {  # name: (default, description)
    'image_topic': ('/camera/image_raw', 'camera topic (sensor_msgs/Image, or CompressedImage if compressed)'),
    'compressed': (False, 'subscribe to sensor_msgs/CompressedImage instead of Image'),
    'odom_topic': ('', 'nav_msgs/Odometry topic; empty = vision-only'),
    'checkpoint': ('', 'checkpoint file from deepseqslam-train'),
    'device': ('auto', 'auto (cuda when available), cpu, cuda or cuda:N'),
    'precision': ('float32', 'backbone precision: float32, float16 or bfloat16'),
    'batch_size': (8, 'most frames per backbone batch'),
    'queue_size': (30, 'frames waiting for the worker; the oldest is dropped when full'),
    'queue_bytes': (256 << 20, 'bytes of frames waiting for the worker; the oldest is dropped beyond this'),
    'seq_len': (0, '0 = take it from the checkpoint; otherwise it must equal the checkpoint'),
    'score_threshold': (3.0, 'fused z-score at or above which a place is confident'),
    'top_k': (5, 'candidates published per frame'),
    'lstm_weight': (MatchConfig.lstm_weight, 'weight of LSTM classifier scores against sequence matching'),
    'keyframe_distance': (MatchConfig.keyframe_distance,
                          "odometry travel between keyframes (map units); 0 = the map's median spacing"),
    'keyframe_change': (MatchConfig.keyframe_change,
                        "vision-only: fraction of the map's median frame-to-frame change that makes a keyframe"),
    'min_speed': (MatchConfig.min_speed, 'vision-only: slowest speed searched, relative to the map'),
    'max_speed': (MatchConfig.max_speed, 'vision-only: fastest speed searched, relative to the map'),
    'mean_window': (MatchConfig.mean_window,
                    "keyframes the query's running descriptor mean weighs (it follows light, weather, season)"),
    'retrieval_limit': (MatchConfig.retrieval_limit,
                        'loaded maps with more frames, and online maps, verify only the places the index retrieves; '
                        'smaller ones score every place (0: retrieval for every map)'),
    'compact_limit': (MatchConfig.compact_limit,
                      'loaded maps with more frames keep and verify with compact descriptors only'),
    'retrieval_k': (MatchConfig.retrieval_k, 'map frames the index retrieves per keyframe'),
    'tracking_scan_every': (MatchConfig.tracking_scan_every,
                            'while tracking, the indexes are scanned only every Nth keyframe; 1 = every keyframe'),
    'index_search': (MatchConfig.index_search, INDEX_SEARCH_HELP),
    'loop_closure_gap': (30.0, 's; a strong match to a place first seen longer ago is a loop closure'),
    'loop_closure_threshold': (MatchConfig.loop_threshold,
                               'z-score at or above which a revisit is a loop closure (and score_threshold)'),
    'image_qos': ('sensor_data', 'sensor_data (best effort) or reliable'),
    'odom_qos': ('reliable', 'sensor_data (best effort) or reliable'),
    'odom_max_gap': (0.5, 's; frames farther than this from any odometry get no position'),
    'map_mode': ('localize', "localize (the checkpoint's places) or online (places added while driving)"),
    'map_save_path': ('', 'where ~/save_map and shutdown write the map; ~/load_map reads it'),
    'map_autosave_period': (60.0, 's between saves of an online map while driving; 0 = at shutdown only'),
    'initial_pose_topic': ('', 'also publish confident matched poses here (e.g. /initialpose for AMCL); empty = off'),
    'initial_pose_period': (5.0, 's; at most one initial pose per period'),
    'map_frame': ('map', 'frame_id of matched poses and markers'),
    'diagnostics_period': (1.0, 's between /diagnostics messages'),
}
CHOICES = {'image_qos': ('sensor_data', 'reliable'), 'odom_qos': ('sensor_data', 'reliable'),
           'map_mode': ('localize', 'online'), 'index_search': INDEX_SEARCH,
           'precision': ('float32', 'float16', 'bfloat16')}
RUNTIME = {'score_threshold', 'top_k', 'lstm_weight', 'loop_closure_gap', 'loop_closure_threshold',
           'diagnostics_period', 'keyframe_distance', 'keyframe_change', 'min_speed',
           'max_speed'}   # applied by `ros2 param set`; the others are read-only
PROBLEMS = ('encoding', 'depth', 'size', 'decode', 'odom_nan', 'odom_jump', 'odom_stuck', 'time_jitter',
            'time_backwards', 'no_odom', 'odom_gap', 'odom_too_old', 'checkpoint', 'device', 'dropped',
            'map_save', 'map_load', 'worker')
PROBLEM_HOLD = 5.0   # s: /diagnostics is WARN while a problem was seen this recently, OK again after


def _match_config(p: dict) -> MatchConfig:
    """The matcher's settings from the node's parameters (ValueError when they are invalid)."""
    for name in ('diagnostics_period', 'initial_pose_period'):
        if p[name] <= 0:
            raise ValueError(f'parameter {name} must be > 0 s, got {p[name]}')
    return MatchConfig(p['lstm_weight'], p['top_k'], p['score_threshold'], p['loop_closure_threshold'],
                       min_age=p['loop_closure_gap'],
                       keyframe_distance=p['keyframe_distance'], keyframe_change=p['keyframe_change'],
                       min_speed=p['min_speed'], max_speed=p['max_speed'], mean_window=p['mean_window'],
                       retrieval_limit=p['retrieval_limit'], compact_limit=p['compact_limit'],
                       retrieval_k=p['retrieval_k'], tracking_scan_every=p['tracking_scan_every'],
                       index_search=p['index_search'])


def _seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _check_save_path(path: str) -> None:
    """An online map's save path must be a writable file location (ValueError naming the problem)."""
    target = Path(path).expanduser()
    folder = target.parent if target.parent.exists() else next(p for p in target.parents if p.exists())
    if target.is_dir():
        raise ValueError(f'parameter map_save_path={path!r} is a directory; name a file')
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f'parameter map_save_path={path!r} is not writable')


def _qos(name: str) -> QoSProfile:
    if name == 'sensor_data':
        return qos_profile_sensor_data
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class LocalizerNode(Node):

    def __init__(self):
        super().__init__('deepseqslam_localizer')
        self.p = {name: self.declare_parameter(name, default, ParameterDescriptor(
                      description=text, read_only=name not in RUNTIME)).value
                  for name, (default, text) in PARAMETERS.items()}
        for name, allowed in CHOICES.items():
            if self.p[name] not in allowed:
                raise ValueError(f'parameter {name}={self.p[name]!r}: choose one of {allowed}')
        for name in ('batch_size', 'queue_size', 'queue_bytes'):
            if self.p[name] < 1:
                raise ValueError(f'parameter {name} must be >= 1, got {self.p[name]}')
        if self.p['map_autosave_period'] < 0:
            raise ValueError(f'parameter map_autosave_period must be >= 0 s, got {self.p["map_autosave_period"]}')
        if self.p['map_mode'] == 'online' and self.p['map_save_path']:
            _check_save_path(self.p['map_save_path'])
        try:
            if self.p['device'] != 'auto':
                torch.device(self.p['device'])
        except RuntimeError as exc:
            raise ValueError(f'parameter device={self.p["device"]!r}: {exc}') from exc
        for name in ('image_topic', 'odom_topic', 'initial_pose_topic'):
            try:
                if self.p[name]:
                    validate_topic_name(self.p[name])
            except InvalidTopicNameException as exc:
                raise ValueError(f'parameter {name}={self.p[name]!r}: {" ".join(str(exc).split())}') from exc
        match = _match_config(self.p)
        self.problems: Counter[str] = Counter({k: 0 for k in PROBLEMS})
        self._last_log: dict[str, float] = {}
        self._last_seen: dict[str, float] = {}   # problem kind -> when it was last counted
        self.lock = threading.Condition()      # pending frames and the odometry buffer
        self.model_lock = threading.Lock()     # the localizer: worker vs map services
        self.pending: deque = deque()
        self.pending_bytes = 0
        self.odometry = OdometryBuffer(max_gap=self.p['odom_max_gap'], on_problem=self._warn)
        self.received = self.processed = self.answered = self.confident = self.loop_closures = 0
        self.busy = 0.0   # seconds the worker spent processing
        self.last_save = self.last_initial_pose = time.monotonic()
        self.odom_frame = 'odom'
        self.latencies: deque[float] = deque(maxlen=200)
        self.localizer = self._load_localizer(match)
        self.session = self.localizer.session(self._warn) if self.localizer else None

        image_type = CompressedImage if self.p['compressed'] else Image
        self.create_subscription(image_type, self.p['image_topic'], self.on_image, _qos(self.p['image_qos']))
        if self.p['odom_topic']:
            self.create_subscription(Odometry, self.p['odom_topic'], self.on_odometry, _qos(self.p['odom_qos']))
        self.pub_place = self.create_publisher(PointStamped, '~/place', 10)
        self.pub_candidates = self.create_publisher(PointCloud, '~/candidates', 10)
        self.pub_pose = self.create_publisher(PoseWithCovarianceStamped, '~/matched_pose', 10)
        self.pub_loop = self.create_publisher(TimeReference, '~/loop_closure', 10)
        self.pub_loop_offset = self.create_publisher(PoseWithCovarianceStamped, '~/loop_closure_offset', 10)
        self.pub_initial_pose = self.create_publisher(
            PoseWithCovarianceStamped, self.p['initial_pose_topic'], 10) if self.p['initial_pose_topic'] else None
        self.pub_markers = self.create_publisher(MarkerArray, '~/markers', 10)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_service(Trigger, '~/save_map', self.on_save_map)
        self.create_service(Trigger, '~/load_map', self.on_load_map)
        self.diagnostics_timer = self.create_timer(self.p['diagnostics_period'], self.publish_diagnostics)
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.running = True
        self.last_report = (time.monotonic(), 0, 0, 0.0)   # time, received, processed, busy
        self.get_logger().info(
            f'listening on {self.p["image_topic"]} ({image_type.__name__}, {self.p["image_qos"]}), odometry '
            f'{self.p["odom_topic"] or "off (vision-only)"}, map mode {self.p["map_mode"]}, device '
            f'{self.localizer.device if self.localizer else "-"}')

    # ---------------------------------------------------------------- set-up
    def _load_localizer(self, match: MatchConfig) -> Localizer | None:
        try:
            device = pick_device(self.p['device'])
        except RuntimeError as exc:
            self._warn('device', f'no localization: {exc} (-p device:=cpu)', error=True)
            return None
        if device.type == 'cpu' and self.p['precision'] == 'float16':
            self.get_logger().warning('precision float16 is ~100x slower than float32 on a CPU: using float32')
            self.p['precision'] = 'float32'
        try:
            ckpt = load_checkpoint(self.p['checkpoint'])
            if self.p['seq_len'] not in (0, ckpt.config.seq_len):
                raise ValueError(f'parameter seq_len={self.p["seq_len"]} but the checkpoint was trained '
                                 f'with seq_len={ckpt.config.seq_len}')
            localizer = Localizer(ckpt, str(device), match, online=self.p['map_mode'] == 'online')
            localizer.backbone.to(getattr(torch, self.p['precision']))
            return localizer
        except Exception as exc:  # the node keeps running and reports the problem in /diagnostics
            self._warn('checkpoint', f'no localization: {exc}', error=True)
            return None

    def on_set_parameters(self, parameters) -> SetParametersResult:
        """`ros2 param set` of a runtime parameter: validated, then used from the next frame on."""
        changed = {p.name: p.value for p in parameters}
        try:
            match = _match_config({**self.p, **changed})
            if self.localizer is not None:
                self.localizer.check_match(match)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        with self.model_lock:
            self.p.update(changed)
            if self.localizer is not None:
                self.localizer.match = match
        if 'diagnostics_period' in changed:
            self.destroy_timer(self.diagnostics_timer)
            self.diagnostics_timer = self.create_timer(self.p['diagnostics_period'], self.publish_diagnostics)
        self.get_logger().info('parameters set: ' + ', '.join(f'{k}={v}' for k, v in changed.items()))
        return SetParametersResult(successful=True)

    def _warn(self, kind: str, message: str, error: bool = False) -> None:
        """Count a problem; log one line per kind at most every 5 s."""
        self.problems[kind] += 1
        now = self._last_seen[kind] = time.monotonic()
        if now - self._last_log.get(kind, -1e9) >= 5.0:
            self._last_log[kind] = now
            text = f'[{kind}] {message} (seen {self.problems[kind]} times)'
            if error:   # rclpy: one severity per call site
                self.get_logger().error(text)
            else:
                self.get_logger().warning(text)

    # ---------------------------------------------------------------- callbacks: enqueue only
    def on_image(self, msg) -> None:
        size = len(msg.data)
        with self.lock:
            self.received += 1
            self.pending.append((msg, time.monotonic()))
            self.pending_bytes += size
            dropped = 0
            while len(self.pending) > self.p['queue_size'] or \
                    (self.pending_bytes > self.p['queue_bytes'] and len(self.pending) > 1):
                self.pending_bytes -= len(self.pending.popleft()[0].data)
                dropped += 1
            self.lock.notify()
        if dropped:
            self._warn('dropped', f'the worker is behind: oldest frame dropped (queue_size {self.p["queue_size"]}, '
                                  f'queue_bytes {self.p["queue_bytes"]}); a smaller image or a GPU helps')

    def on_odometry(self, msg: Odometry) -> None:
        position = msg.pose.pose.position
        self.odom_frame = msg.header.frame_id or self.odom_frame
        with self.lock:
            self.odometry.add(_seconds(msg.header.stamp), position.x, position.y)

    # ---------------------------------------------------------------- worker (main thread)
    def work(self) -> None:
        """Process frames until shutdown."""
        while True:
            with self.lock:
                while self.running and rclpy.ok(context=self.context) and not self.pending:
                    self.lock.wait(0.2)
                if not (self.running and rclpy.ok(context=self.context)):
                    return
                batch = [self.pending.popleft() for _ in range(min(len(self.pending), self.p['batch_size']))]
                self.pending_bytes -= sum(len(msg.data) for msg, _ in batch)
            start = time.monotonic()
            try:
                with self.model_lock:
                    self.process(batch)
            except Exception as exc:  # never let one bad batch stop the node
                self._warn('worker', f'frame batch failed: {exc!r}', error=True)
            self.busy += time.monotonic() - start
            period = self.p['map_autosave_period']
            if period and self.p['map_mode'] == 'online' and time.monotonic() - self.last_save >= period:
                self.save_map_logged()

    def process(self, batch: list) -> None:
        """One backbone batch through the session; publish the keyframes' answers."""
        if self.session is None:
            return
        frames = []
        for msg, received in batch:
            stamp = _seconds(msg.header.stamp)
            position = None
            if self.p['odom_topic']:
                with self.lock:
                    position = self.odometry.position_at(stamp)
            frames.append(Frame(stamp, image=msg, position=position, key=(msg.header, received)))
        answers = self.session.process(frames)
        self.processed += len(frames)
        self.answered += len(answers)
        self.confident += sum(a.confident for a in answers)
        self.loop_closures += sum(a.loop_closure is not None for a in answers)
        for answer in answers:
            self.publish(answer.key[0], answer)
        now = time.monotonic()
        self.latencies.extend(now - received for _, received in batch)

    # ---------------------------------------------------------------- outputs
    def publish(self, header, result: Recognition) -> None:
        place = PointStamped()
        place.header.stamp, place.header.frame_id = header.stamp, 'place'
        place.point.x = float(result.place if result.confident else -1)
        place.point.y, place.point.z = result.score, result.speed
        self.pub_place.publish(place)

        cloud = PointCloud()
        cloud.header.stamp, cloud.header.frame_id = header.stamp, self.p['map_frame']
        ids, scores = ChannelFloat32(name='place'), ChannelFloat32(name='score')
        for candidate, score in result.candidates:   # a place without a stored pose is a NaN point
            xy = self.localizer.place_pose(candidate)
            cloud.points.append(Point32(x=float(xy[0]), y=float(xy[1])) if xy is not None else
                                Point32(x=math.nan, y=math.nan, z=math.nan))
            ids.values.append(float(candidate))
            scores.values.append(score)
        cloud.channels = [ids, scores]
        self.pub_candidates.publish(cloud)
        if not result.confident:
            return

        xy = self.localizer.place_pose(result.place)
        if xy is not None:
            pose = PoseWithCovarianceStamped()
            pose.header.stamp, pose.header.frame_id = header.stamp, self.p['map_frame']
            pose.pose.pose.position.x, pose.pose.pose.position.y = float(xy[0]), float(xy[1])
            pose.pose.pose.orientation.w = 1.0
            pose.pose.covariance = self._covariance()
            self.pub_pose.publish(pose)
            self.pub_markers.publish(self._markers(header, result, xy))
            now = time.monotonic()
            if self.pub_initial_pose is not None and now - self.last_initial_pose >= self.p['initial_pose_period']:
                self.last_initial_pose = now
                self.pub_initial_pose.publish(pose)

        if result.loop_closure is not None:   # the first answer of a revisit
            loop = TimeReference()
            loop.header.stamp, loop.header.frame_id = header.stamp, self.p['map_frame']
            loop.time_ref.sec, loop.time_ref.nanosec = split_stamp(result.loop_closure)
            loop.source = f'place {result.place} score {result.score:.2f}'
            self.pub_loop.publish(loop)
            if result.loop_offset is not None:
                offset = PoseWithCovarianceStamped()
                offset.header.stamp, offset.header.frame_id = header.stamp, self.odom_frame
                offset.pose.pose.position.x, offset.pose.pose.position.y = map(float, result.loop_offset)
                offset.pose.pose.orientation.w = 1.0
                offset.pose.covariance = self._covariance()
                self.pub_loop_offset.publish(offset)

    def _spacing(self) -> float:
        """The map's median frame spacing (1 when the map has no positions)."""
        return self.localizer.spacing if np.isfinite(self.localizer.spacing) else 1.0

    def _covariance(self) -> list[float]:
        """Position within two map spacings; heading unknown."""
        covariance = [0.0] * 36
        covariance[0] = covariance[7] = (2 * self._spacing()) ** 2
        covariance[35] = np.pi ** 2
        return covariance

    def _markers(self, header, result: Recognition, xy) -> MarkerArray:
        spacing = self._spacing()
        sphere, text = Marker(), Marker()
        for marker, kind, mid in ((sphere, Marker.SPHERE, 0), (text, Marker.TEXT_VIEW_FACING, 1)):
            marker.header.stamp, marker.header.frame_id = header.stamp, self.p['map_frame']
            marker.ns, marker.id, marker.type, marker.action = 'deepseqslam', mid, kind, Marker.ADD
            marker.pose.position.x, marker.pose.position.y = float(xy[0]), float(xy[1])
            marker.pose.orientation.w = 1.0
            marker.color.g = marker.color.a = 1.0
        sphere.scale.x = sphere.scale.y = sphere.scale.z = text.scale.z = 3 * spacing
        text.text = f'place {result.place} ({result.score:.1f})'
        return MarkerArray(markers=[sphere, text])

    def publish_diagnostics(self) -> None:
        now = time.monotonic()
        then, received, processed, busy = self.last_report
        self.last_report = (now, self.received, self.processed, self.busy)
        elapsed = max(now - then, 1e-9)   # rates are over the last diagnostics period
        latencies = sorted(self.latencies)
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name().lstrip("/")}: place recognition',
                                  hardware_id='deepseqslam')   # e.g. robot1/deepseqslam_localizer: one per robot
        recent = sorted(kind for kind, seen in self._last_seen.items() if now - seen <= PROBLEM_HOLD)
        status.level = DiagnosticStatus.ERROR if self.localizer is None else (
            DiagnosticStatus.WARN if recent else DiagnosticStatus.OK)
        status.message = 'no checkpoint loaded' if self.localizer is None else \
            'localizing' + (f'; problems in the last {PROBLEM_HOLD:.0f} s: {", ".join(recent)}' if recent else '')
        values = {
            'input_rate_hz': f'{(self.received - received) / elapsed:.2f}',
            'processed_rate_hz': f'{(self.processed - processed) / elapsed:.2f}',
            'frames_received': str(self.received), 'frames_processed': str(self.processed),
            'answers': str(self.answered), 'confident_answers': str(self.confident),
            'loop_closures': str(self.loop_closures),
            'latency_p50_ms': f'{1e3 * latencies[len(latencies) // 2]:.1f}' if latencies else 'nan',
            'latency_p95_ms': f'{1e3 * latencies[int(len(latencies) * 0.95)]:.1f}' if latencies else 'nan',
            'queue_depth': str(len(self.pending)),
            'worker_busy_fraction': f'{(self.busy - busy) / elapsed:.2f}',
            'device': str(self.localizer.device) if self.localizer else 'none',
            'checkpoint': self.p['checkpoint'], 'map_mode': self.p['map_mode'],
            'map_frames': str(len(self.localizer.map_names)) if self.localizer else '0',
        }
        values.update({f'problem_{k}': str(v) for k, v in sorted(self.problems.items())})
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(array)

    # ---------------------------------------------------------------- map services
    def save_map(self) -> str:
        """Write the map atomically (a failed or interrupted save leaves the previous file intact)."""
        if self.localizer is None or not self.p['map_save_path']:
            raise RuntimeError('no localizer or no map_save_path parameter')
        with self.model_lock:
            checkpoint = self.localizer.to_checkpoint()
        checkpoint.save(self.p['map_save_path'])
        self.last_save = time.monotonic()
        return f'saved {len(checkpoint.places)} map frames to {self.p["map_save_path"]}'

    def save_map_logged(self) -> bool:
        try:
            self.get_logger().info(self.save_map())
            return True
        except Exception as exc:
            self.last_save = time.monotonic()   # the next autosave try is a period later, not the next batch
            self._warn('map_save', f'map not saved: {exc}', error=True)
            return False

    def on_save_map(self, request, response):
        try:
            response.message, response.success = self.save_map(), True
        except Exception as exc:
            self._warn('map_save', f'map not saved: {exc}', error=True)
            response.message, response.success = f'save failed: {exc}', False
        return response

    def on_load_map(self, request, response):
        """Replace the map with the one at map_save_path, if it was made with this checkpoint's model."""
        try:
            if self.localizer is None or not Path(self.p['map_save_path']).is_file():
                raise RuntimeError(f'no localizer or no map at {self.p["map_save_path"]!r}')
            saved = load_checkpoint(self.p['map_save_path'])
            with self.model_lock:
                self.localizer.check_map(saved)
                self.localizer.load_map(saved.places)
                self.session.reset()
            response.message, response.success = f'loaded {len(saved.places)} map frames', True
        except Exception as exc:
            self._warn('map_load', f'map not loaded: {exc}', error=True)
            response.message, response.success = f'load failed: {exc}', False
        return response

    def stop(self) -> None:
        """Ask the worker to stop (signal-safe: no locks)."""
        self.running = False

    def shutdown(self) -> bool:
        """Stop the worker; save an online map. False when that save failed."""
        self.stop()
        if self.localizer is not None and self.p['map_save_path'] and self.p['map_mode'] == 'online':
            return self.save_map_logged()
        return True


def _spin(executor) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass


def main(args=None) -> int:
    """Exit status: 0 after a clean stop (SIGINT, SIGTERM), 2 for an invalid parameter, 1 when the
    online map could not be saved at shutdown."""
    stopping: list[int] = []
    node = None

    def on_signal(number, frame) -> None:   # once or twice (Ctrl-C under ros2 launch): stop, never raise
        stopping.append(number)
        if node is not None:
            node.stop()

    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as exc:   # rcl cannot parse the command line, e.g. `-p map_save_path:=`
        print(f'[FATAL] [deepseqslam_localizer]: invalid ROS arguments: {str(exc).split(", at ")[0]} '
              '(an empty string value is written -p name:="\'\'")', file=sys.stderr)
        return 2
    for number in (signal.SIGINT, signal.SIGTERM):   # a late second Ctrl-C stops, never raises
        signal.signal(number, on_signal)
    executor = SingleThreadedExecutor()
    spinner = threading.Thread(target=_spin, args=(executor,), name='rclpy-executor', daemon=True)
    saved = True
    try:
        node = LocalizerNode()
        executor.add_node(node)
        spinner.start()
        if not stopping:
            node.work()
        saved = node.shutdown()
    except (ValueError, ParameterException) as exc:  # an invalid parameter value or type
        rclpy.logging.get_logger('deepseqslam_localizer').fatal(str(exc))
        return 2
    finally:
        executor.shutdown()
        if spinner.is_alive():
            spinner.join(timeout=10)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for number in (signal.SIGINT, signal.SIGTERM):   # Python's finalization would restore SIG_DFL: exit -2
            signal.signal(number, signal.SIG_IGN)
    return 0 if saved else 1


if __name__ == '__main__':
    sys.exit(main())
