"""Rosbag2 export and replay evaluation (`deepseqslam-bag export|eval`), with `rosbags`: bags are
real rosbag2 files (mcap or sqlite3), read and written without a ROS install.

Exported bags hold, all stamped with the frame's stamp (also the bag timestamp):
  /camera/image_raw             sensor_msgs/msg/Image rgb8 (or /camera/image_raw/compressed, JPEG)
  /odom                         nav_msgs/msg/Odometry, pose.position.x/y = the frame's position
  /ground_truth/place           geometry_msgs/msg/PointStamped, point.x = the map frame the frame shows
Offline eval runs the same streaming core as the node; `--live` plays the bag over DDS into a
running localizer node and scores what the node publishes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from .checkpoint import CheckpointError, load_checkpoint
from .core import Frame, Localizer, MatchConfig, decode, teach_keyframes
from .evaluate import (Truth, add_match_arguments, answer_metrics, load_truth, match_config, recognition_metrics,
                       save_plots)
from .image_conversion import ImageError
from .model import Standardiser, stats
from .odometry import OdometryBuffer
from .traversal import DatasetMissingError, Traversal, load_positions, load_traversal, traversal_positions
from .warps import WARPS, Run, make_run

TYPES = get_typestore(Stores.ROS2_KILTED)
IMAGE_TOPIC, ODOM_TOPIC, TRUTH_TOPIC = '/camera/image_raw', '/odom', '/ground_truth/place'
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
DRAIN_PATIENCE = 15.0   # s without a frame processed after which a live replay stops waiting for the node


class BagError(RuntimeError):
    """A bag that cannot be used: unreadable, truncated, or without the needed topics."""


def _stamp(ns: int):
    Time = TYPES.types['builtin_interfaces/msg/Time']
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ns: int, frame_id: str):
    return TYPES.types['std_msgs/msg/Header'](stamp=_stamp(ns), frame_id=frame_id)


def _odometry(ns: int, x: float, y: float):
    t = TYPES.types
    pose = t['geometry_msgs/msg/Pose'](position=t['geometry_msgs/msg/Point'](x=float(x), y=float(y), z=0.0),
                                       orientation=t['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0))
    zero = t['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=0.0)
    return t['nav_msgs/msg/Odometry'](
        header=_header(ns, 'odom'), child_frame_id='base_link',
        pose=t['geometry_msgs/msg/PoseWithCovariance'](pose=pose, covariance=np.zeros(36)),
        twist=t['geometry_msgs/msg/TwistWithCovariance'](twist=t['geometry_msgs/msg/Twist'](linear=zero, angular=zero),
                                                         covariance=np.zeros(36)))


def export(source: Traversal | Run, out: str | Path, rate: float = 10.0, positions: np.ndarray | None = None,
           storage: str = 'mcap', compressed: bool = False, start_ns: int = 1_000_000_000_000) -> int:
    """Write a traversal (frames at `rate` Hz) or a robot run (its own stamps, odometry and views) as a
    rosbag2 bag; returns the number of frames. `positions` (or the run's odometry) go to /odom."""
    t = TYPES.types
    if isinstance(source, Run):
        stamps, truth, positions = source.stamps, source.view, source.odometry if positions is None else positions
    else:
        stamps, truth = np.arange(len(source)) / rate, np.arange(len(source))
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    writer = Writer(Path(out), version=9, storage_plugin=plugin)
    with writer:
        image_type = IMAGE_TYPES[compressed]
        camera = writer.add_connection(IMAGE_TOPIC + ('/compressed' if compressed else ''), image_type, typestore=TYPES)
        odom = None if positions is None else writer.add_connection(ODOM_TOPIC, 'nav_msgs/msg/Odometry',
                                                                     typestore=TYPES)
        place_conn = writer.add_connection(TRUTH_TOPIC, 'geometry_msgs/msg/PointStamped', typestore=TYPES)
        for i in tqdm(range(len(source)), desc=f'export {source.name}', unit='frame', disable=None):
            ns = start_ns + round(float(stamps[i]) * 1e9)
            rgb = source.image(i)
            if compressed:
                ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                msg = t[image_type](header=_header(ns, 'camera'), format='jpeg', data=jpeg.reshape(-1))
            else:
                msg = t[image_type](header=_header(ns, 'camera'), height=rgb.shape[0], width=rgb.shape[1],
                                    encoding='rgb8', is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.reshape(-1))
            if odom is not None:
                writer.write(odom, ns, TYPES.serialize_cdr(_odometry(ns, *positions[i]), 'nav_msgs/msg/Odometry'))
            writer.write(camera, ns, TYPES.serialize_cdr(msg, image_type))
            place = t['geometry_msgs/msg/PointStamped'](header=_header(ns, 'place'),
                                                        point=t['geometry_msgs/msg/Point'](x=float(truth[i]), y=0.0,
                                                                                           z=0.0))
            writer.write(place_conn, ns, TYPES.serialize_cdr(place, 'geometry_msgs/msg/PointStamped'))
    return len(source)


@dataclass
class BagContents:
    """What replay needs from a bag, read in one pass (images stay serialized until used)."""
    image_type: str
    image_topic: str
    frames: list[tuple[int, bytes]] = field(default_factory=list)       # (stamp ns, raw CDR)
    odometry: list[tuple[int, float, float, bytes]] = field(default_factory=list)
    truth: dict[int, int] = field(default_factory=dict)                 # stamp ns -> place


def read_bag(path: str | Path, image_topic: str | None = None, odom_topic: str | None = ODOM_TOPIC,
             truth_topic: str = TRUTH_TOPIC, require_odometry: bool = False) -> BagContents:
    """Camera frames, odometry and ground truth of any rosbag2 bag, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise BagError(f'bag {path} does not exist')
    with tempfile.TemporaryDirectory() as alias:
        if path.suffix == '.bag' and (path / 'metadata.yaml').is_file():
            # a rosbag2 folder named *.bag: rosbags takes that suffix for ROS 1, so open it under another name
            (Path(alias) / 'bag').symlink_to(path.resolve(), target_is_directory=True)
            return _read_bag(path, Path(alias) / 'bag', image_topic, odom_topic, truth_topic, require_odometry)
        return _read_bag(path, path, image_topic, odom_topic, truth_topic, require_odometry)


def _read_bag(path: Path, opened: Path, image_topic: str | None, odom_topic: str | None, truth_topic: str,
              require_odometry: bool) -> BagContents:
    try:
        with AnyReader([opened], default_typestore=TYPES) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            if image_topic is None:
                image_topic = next((tp for tp, ty in topics.items() if ty in IMAGE_TYPES), None)
            if image_topic not in topics:
                raise BagError(f'bag {path} has no camera topic {image_topic or "(none of type Image)"}; topics: '
                               + ', '.join(f'{k} [{v}]' for k, v in sorted(topics.items())))
            if topics[image_topic] not in IMAGE_TYPES:
                raise BagError(f'{image_topic} in {path} has type {topics[image_topic]}, not one of {IMAGE_TYPES}')
            contents = BagContents(topics[image_topic], image_topic)
            wanted = [c for c in reader.connections if c.topic in (image_topic, odom_topic, truth_topic)]
            for connection, ns, raw in tqdm(reader.messages(connections=wanted), desc=f'read {path.name}',
                                            unit='msg', disable=None):
                if connection.topic == image_topic:
                    contents.frames.append((ns, bytes(raw)))
                elif connection.topic == odom_topic:
                    msg = reader.deserialize(raw, connection.msgtype)
                    p = msg.pose.pose.position
                    contents.odometry.append((_ns(msg.header.stamp), p.x, p.y, bytes(raw)))
                else:
                    msg = reader.deserialize(raw, connection.msgtype)
                    contents.truth[_ns(msg.header.stamp)] = int(msg.point.x)
    except BagError:
        raise
    except (AnyReaderError, Exception) as exc:  # rosbags raises several kinds for broken files
        raise BagError(f'cannot read bag {path}: {type(exc).__name__}: {exc}') from exc
    if not contents.frames:
        raise BagError(f'bag {path} has no messages on {image_topic}')
    if require_odometry and not contents.odometry:
        raise BagError(f'bag {path} has no messages on the odometry topic {odom_topic}; topics: '
                       + ', '.join(f'{k} [{v}]' for k, v in sorted(topics.items())))
    return contents


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def frame_truth(contents: BagContents, truth_csv: str | None = None, truth_positions: str | None = None,
                tolerance_m: float | None = None) -> Truth:
    """The map frame every camera frame shows (-1 where unknown), from the bag's truth topic, a CSV
    (one map frame index per camera frame) or positions in the map's frame (one x,y per camera frame)."""
    if truth_csv or truth_positions:
        return load_truth(len(contents.frames), truth_csv, truth_positions, tolerance_m)
    if not contents.truth:
        raise BagError('the bag has no ground truth topic; pass --truth-csv with one map frame index per camera '
                       'frame, or --truth-positions with --tolerance-m')
    return Truth(frames=np.array([contents.truth.get(header_ns(ns, raw), -1) for ns, raw in contents.frames]))


def header_ns(bag_ns: int, raw: bytes) -> int:
    """The header stamp of a serialized Image/CompressedImage (CDR: 4-byte prefix, sec, nanosec)."""
    sec, nanosec = np.frombuffer(raw, dtype='<i4', count=2, offset=4)
    return int(sec) * 1_000_000_000 + int(np.uint32(nanosec))


def bag_frames(contents: BagContents) -> tuple[list[Frame], Counter]:
    """The bag's camera frames (still serialized) with the odometry position at each frame's stamp,
    and the odometry problems met on the way (frames without odometry close enough, NaN poses)."""
    odometry = OdometryBuffer(horizon=float('inf'))
    for ns, x, y, _ in contents.odometry:
        odometry.add(ns * 1e-9, x, y)
    frames = []
    for i, (ns, raw) in enumerate(contents.frames):
        stamp = header_ns(ns, raw) * 1e-9
        frames.append(Frame(stamp, image=raw, position=odometry.position_at(stamp) if contents.odometry else None,
                            key=i))
    return frames, odometry.problems


@dataclass
class TeachRun:
    """The keyframes of a teach bag, ready to become a map: what `train` takes instead of a folder."""
    name: str
    descriptors: torch.Tensor       # (K, D) raw CNN descriptors of the keyframes
    positions: np.ndarray | None    # (K, 2) their odometry positions (the map's poses), or None
    stamps: np.ndarray              # (K,) seconds
    names: list[str]                # <bag name>/<camera frame index in the bag>

    def __len__(self) -> int:
        return len(self.names)


def teach_run(path: str | Path, backbone, image_topic: str | None = None, odom_topic: str | None = None,
              keyframe_distance: float = 0.5, batch_size: int = 32) -> TeachRun:
    """Keyframes of a teach bag: every `keyframe_distance` of odometry travel, or by appearance without
    odometry. Errors (BagError) for a missing odometry topic, odometry that jumps or stands still."""
    contents = read_bag(path, image_topic, odom_topic or ODOM_TOPIC, require_odometry=odom_topic is not None)
    (frames, _), keep, described, problems = bag_frames(contents), [], [], Counter()
    for start in tqdm(range(0, len(frames), batch_size), desc='CNN teach bag', unit='batch', disable=None):
        images = []
        for frame in frames[start:start + batch_size]:
            try:
                images.append(decode(TYPES.deserialize_cdr(frame.image, contents.image_type)))
                keep.append(frame)
            except ImageError as exc:
                problems[exc.kind] += 1
        if images:
            described.append(backbone.describe(images).cpu())
    if len(keep) < 2:
        raise BagError(f'bag {path}: {len(keep)} decodable camera frames ({dict(problems) or "none"})')
    descriptors = torch.cat(described)
    positions = None
    if contents.odometry:
        positions = np.array([(np.nan, np.nan) if f.position is None else f.position for f in keep], dtype=np.float64)
        if not np.isfinite(positions).all():
            raise BagError(f'bag {path}: {int((~np.isfinite(positions[:, 0])).sum())} camera frames have no '
                           'odometry within 0.5 s')
    try:
        keys = teach_keyframes(Standardiser(*stats(descriptors)).reference(descriptors), positions, keyframe_distance)
    except ValueError as exc:
        raise BagError(f'bag {path}: {exc}') from exc
    return TeachRun(Path(path).name, descriptors[keys], None if positions is None else positions[keys],
                    np.array([keep[k].stamp for k in keys]), [f'{Path(path).name}/{keep[k].key}' for k in keys])


def replay_offline(contents: BagContents, localizer: Localizer, batch_size: int = 16) -> tuple[list, dict]:
    """The bag through a streaming session as fast as the machine allows; returns (answers, problems).
    Answers' `frame` is the camera frame's index in the bag."""
    session = localizer.session()
    (frames, odometry_problems), answers = bag_frames(contents), []
    for start in tqdm(range(0, len(frames), batch_size), desc='replay', unit='batch', disable=None):
        answers += session.process([replace(frame, image=TYPES.deserialize_cdr(frame.image, contents.image_type))
                                    for frame in frames[start:start + batch_size]])
    return answers, dict(session.problems + odometry_problems)


def replay_live(contents: BagContents, rate_factor: float, node_name: str, image_topic: str,
                odom_topic: str, reliable: bool, record: str | None) -> dict:
    """Publish the bag's raw messages over DDS at its recorded rate x factor; collect the node's answers."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage, Image, PointCloud
    rclpy.init()
    node = rclpy.create_node('deepseqslam_bag_player')
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
    camera = node.create_publisher(CompressedImage if contents.image_type.endswith('CompressedImage') else Image,
                                   image_topic, qos)
    odom = node.create_publisher(Odometry, odom_topic, QoSProfile(depth=100))
    answers, diagnostics = [], {}

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name.startswith(f'{node_name}:'):
                diagnostics.update({kv.key: kv.value for kv in status.values})
    node.create_subscription(PointCloud, f'/{node_name}/candidates', answers.append, 1000)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
    try:
        deadline = time.monotonic() + 60
        while not diagnostics and time.monotonic() < deadline:   # the node is up and matched
            rclpy.spin_once(node, timeout_sec=0.1)
        if not diagnostics:
            raise BagError(f'no /diagnostics from node {node_name!r} within 60 s: is the localizer running?')
        before = int(diagnostics.get('frames_processed', 0))
        events = sorted([(ns, 0, raw) for ns, _, _, raw in contents.odometry] +
                        [(ns, 1, raw) for ns, raw in contents.frames], key=lambda e: (e[0], e[1]))
        t0_bag, t0 = events[0][0], time.monotonic()
        for ns, kind, raw in tqdm(events, desc='live replay', unit='msg', disable=None):
            due = t0 + (ns - t0_bag) * 1e-9 / rate_factor
            while (wait := due - time.monotonic()) > 0:
                rclpy.spin_once(node, timeout_sec=min(wait, 0.01))
            (camera if kind else odom).publish(raw)
        target, last, moved = before + len(contents.frames), -1, time.monotonic()
        while time.monotonic() - moved < DRAIN_PATIENCE:   # drain: until every frame is processed, or none for a while
            rclpy.spin_once(node, timeout_sec=0.1)
            done = int(diagnostics.get('frames_processed', 0))
            if done != last:
                last, moved = done, time.monotonic()
            if done >= target:
                break
        end = time.monotonic() + 1.0   # the answers of the last frames are published after they are counted
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        if record:
            writer = Writer(Path(record), version=9, storage_plugin=StoragePlugin.MCAP)
            with writer:
                conn = writer.add_connection(f'/{node_name}/candidates', 'sensor_msgs/msg/PointCloud', typestore=TYPES)
                for msg in answers:
                    writer.write(conn, _ns(msg.header.stamp), serialize_message(msg))
        return {'answers': answers, 'published': len(contents.frames),
                'processed': int(diagnostics.get('frames_processed', 0)) - before,
                'dropped': int(diagnostics.get('problem_dropped', 0))}
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def live_metrics(answers, contents: BagContents, truth: Truth, ckpt, tolerance: int) -> dict:
    """Score the node's ~/candidates answers: each is matched to its camera frame by stamp."""
    index = {header_ns(ns, raw): i for i, (ns, raw) in enumerate(contents.frames)}
    frames, candidates, scores = [], [], []
    for msg in answers:
        i = index.get(_ns(msg.header.stamp))
        channels = {c.name: c.values for c in msg.channels}
        if i is None or not channels.get('place'):
            continue
        frames.append(i)
        candidates.append([int(p) for p in channels['place']])
        scores.append(channels['score'][0])
    if not frames:
        raise BagError('the node published no answers for this bag\'s frames')
    return answer_metrics(np.array(frames), candidates, np.array(scores), truth, tolerance, ckpt.places)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='deepseqslam-bag', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    ex = sub.add_parser('export', help='image folder (+ positions) -> rosbag2 bag')
    ex.add_argument('--images', required=True)
    ex.add_argument('--warp', choices=WARPS, help='record a robot run of the folder instead: faster, slower, '
                                                  'a 30 Hz camera, stop-and-go or drifting speed (noisy views)')
    ex.add_argument('--warp-seed', type=int, default=0, help='seed of the warp\'s stops, speed and sensor noise')
    group = ex.add_mutually_exclusive_group()
    group.add_argument('--positions', help='CSV of x,y per frame')
    group.add_argument('--simulate-odometry', type=int, metavar='SEED', help='simulated odometry along --route')
    ex.add_argument('--route', help='route CSV for --simulate-odometry (Gardens Point: gp_pos.csv)')
    ex.add_argument('--rate', type=float, help='camera frames per second (default 10; a warp: its own rate)')
    ex.add_argument('--out', required=True)
    ex.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    ex.add_argument('--compressed', action='store_true', help='JPEG sensor_msgs/CompressedImage')
    ev = sub.add_parser('eval', help='replay a bag through the localizer and score it')
    ev.add_argument('--bag', required=True)
    ev.add_argument('--checkpoint', required=True)
    ev.add_argument('--tolerance', type=int, default=2)
    ev.add_argument('--json', required=True)
    ev.add_argument('--plots')
    ev.add_argument('--image-topic', help='camera topic (default: the first Image/CompressedImage topic)')
    ev.add_argument('--odom-topic', help=f'odometry topic (default {ODOM_TOPIC} when present; named: required)')
    ev.add_argument('--truth-topic', default=TRUTH_TOPIC)
    truth = ev.add_mutually_exclusive_group()
    truth.add_argument('--truth-csv', help='one map frame index per camera frame, for bags recorded by other tools')
    truth.add_argument('--truth-positions', help="x,y of each camera frame in the map's frame (with --tolerance-m)")
    ev.add_argument('--tolerance-m', type=float, help='with --truth-positions: metres counted correct')
    ev.add_argument('--lstm-weight', type=float, default=MatchConfig.lstm_weight)
    ev.add_argument('--device', default='auto')
    add_match_arguments(ev)
    ev.add_argument('--live', action='store_true', help='play over DDS into a running localizer node')
    ev.add_argument('--rate-factor', type=float, default=1.0, help='live: playback speed x recorded rate')
    ev.add_argument('--node', default='deepseqslam_localizer',
                    help='live: the localizer node name, with its namespace if any (robot1/deepseqslam_localizer)')
    ev.add_argument('--publish-image-topic', help='live: topic to publish frames on (default: the bag\'s)')
    ev.add_argument('--publish-odom-topic', help='live: topic to publish odometry on (default: the bag\'s)')
    ev.add_argument('--qos', choices=('sensor_data', 'reliable'), default='sensor_data', help='live: camera QoS')
    ev.add_argument('--record', help='live: write the node\'s answers to this bag')
    args = parser.parse_args(argv)
    try:
        if args.command == 'export':
            traversal = load_traversal(args.images)
            if args.warp:
                route = load_positions(args.route, len(traversal)) if args.route else None
                if args.positions or (args.simulate_odometry is not None and route is None):
                    parser.error('--warp takes odometry from --simulate-odometry SEED --route CSV')
                source = make_run(traversal, args.warp, route, args.simulate_odometry, args.warp_seed, args.rate)
                positions = source.odometry
            else:
                source = traversal
                positions = traversal_positions(len(traversal), args.positions, args.simulate_odometry, args.route)
            n = export(source, args.out, args.rate or 10.0, positions, args.storage, args.compressed)
            print(f'wrote {n} frames of {source.name} to {args.out} ({args.storage}, '
                  f'{"CompressedImage" if args.compressed else "Image"}, '
                  f'odometry {"no" if positions is None else "yes"})')
            return 0
        ckpt = load_checkpoint(args.checkpoint)
        contents = read_bag(args.bag, args.image_topic, args.odom_topic or ODOM_TOPIC, args.truth_topic,
                            require_odometry=args.odom_topic is not None)
        truth = frame_truth(contents, args.truth_csv, args.truth_positions, args.tolerance_m)
        if args.live:
            odom_topic = args.publish_odom_topic or args.odom_topic or ODOM_TOPIC
            live = replay_live(contents, args.rate_factor, args.node, args.publish_image_topic or contents.image_topic,
                               odom_topic, args.qos == 'reliable', args.record)
            metrics = live_metrics(live['answers'], contents, truth, ckpt, args.tolerance)
            metrics.update(mode='live', frames_published=live['published'], frames_processed=live['processed'],
                           frames_dropped=live['dropped'], answers=len(live['answers']))
        else:
            localizer = Localizer(ckpt, args.device, match_config(args, lstm_weight=args.lstm_weight))
            results, problems = replay_offline(contents, localizer)
            if not results:
                raise BagError(f'no answers: fewer than seq_len={ckpt.config.seq_len} keyframes in {args.bag}')
            metrics = recognition_metrics(results, truth, ckpt.places, args.tolerance)
            metrics.update(mode='offline', frames=len(contents.frames), problems=problems)
            if args.plots:
                save_plots(np.stack([r.scores for r in results])[:metrics['n_queries']], args.tolerance,
                           Path(args.plots), f'bag replay: {Path(args.bag).name}')
    except (BagError, CheckpointError, DatasetMissingError, ValueError) as exc:
        print(f'deepseqslam-bag: error: {exc}', file=sys.stderr)
        return 2
    metrics['bag'] = str(args.bag)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(metrics, indent=2) + '\n')
    print(f'{metrics["mode"]} replay of {args.bag}: ' + ', '.join(
        f'{k}={metrics[k]:.3f}' for k in ('recall@1', 'recall@5', 'auc', 'recall@100p')) +
        f', n_queries={metrics["n_queries"]}' + (f', published {metrics["frames_published"]}, processed '
                                                 f'{metrics["frames_processed"]}, dropped {metrics["frames_dropped"]}'
                                                 if args.live else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
