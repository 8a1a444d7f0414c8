"""Real-DDS helpers for tests and benchmarks: run the localizer's console script as a separate
process and talk to it from an rclpy node in this process (loopback-only, own domain id)."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
NODE = 'deepseqslam_localizer'


def ros_env() -> dict:
    env = dict(os.environ)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(ROOT / 'config' / 'fastdds_loopback.xml')
    env.setdefault('ROS_DOMAIN_ID', '42')
    env['PYTHONUNBUFFERED'] = '1'
    return env


def start_localizer(log: Path, **params) -> subprocess.Popen:
    """The installed console script with the package's params file and `params` overrides."""
    script = Path(sys.executable).parent / 'deepseqslam-localizer'
    args = [str(script), '--ros-args', '--params-file', str(ROOT / 'config' / 'localize.yaml')]
    for name, value in params.items():
        args += ['-p', f'{name}:={value}']
    return subprocess.Popen(args, env=ros_env(), stdout=open(log, 'w'), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen) -> int:
    """SIGINT to the process group, as a terminal's Ctrl-C (`ros2 run` and `ros2 launch` start the node
    as a child: it must stop too, or it lives on in the test's DDS domain); SIGKILL after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    try:   # children that outlived the parent
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return process.returncode


class Client:
    """A test-side rclpy node: publishers for camera/odometry, recorders for every node output."""

    def __init__(self, image_topic='/test/image', odom_topic='/test/odom', image_reliable=True,
                 compressed=False, node=NODE):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PointStamped, PoseWithCovarianceStamped
        from nav_msgs.msg import Odometry
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image, PointCloud, TimeReference
        self.rclpy, self.localizer = rclpy, node   # the localizer's name, with its namespace if any
        if not rclpy.ok():
            rclpy.init()
        self.node = rclpy.create_node(f'test_client_{os.getpid()}')
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        qos = reliable if image_reliable else qos_profile_sensor_data
        self.image_pub = self.node.create_publisher(CompressedImage if compressed else Image, image_topic, qos)
        self.odom_pub = self.node.create_publisher(Odometry, odom_topic, QoSProfile(depth=50))
        outputs = {'place': PointStamped, 'candidates': PointCloud, 'matched_pose': PoseWithCovarianceStamped,
                   'loop_closure': TimeReference, 'loop_closure_offset': PoseWithCovarianceStamped}
        self.received = {k: [] for k in (*outputs, 'initialpose', 'diagnostics')}
        self.arrivals = {k: [] for k in self.received}   # wall-clock time each message arrived
        for name, kind in outputs.items():
            self.node.create_subscription(kind, f'/{node}/{name}', self._recorder(name), 100)
        self.node.create_subscription(PoseWithCovarianceStamped, '/initialpose', self._recorder('initialpose'), 100)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.received['diagnostics'].append, 10)

    def _recorder(self, name: str):
        def record(msg):
            self.arrivals[name].append(time.time())
            self.received[name].append(msg)
        return record

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.01)

    def wait_for(self, predicate, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
        return predicate()

    def diagnostics(self) -> dict:
        """The node's latest /diagnostics values, or {}."""
        for array in reversed(self.received['diagnostics']):
            for status in array.status:
                if status.name.startswith(f'{self.localizer}:'):
                    return {kv.key: kv.value for kv in status.values} | {'_level': status.level}
        return {}

    def wait_ready(self, timeout: float = 90.0) -> bool:
        """The node publishes /diagnostics; then 1 s more, for its other topics' discovery to settle
        (under load the answer topics matched seconds after /diagnostics, and early answers were lost)."""
        ready = self.wait_for(lambda: bool(self.diagnostics()), timeout)
        self.spin(1.0)
        return ready

    def publish_odometry(self, stamp: float, x: float, y: float) -> None:
        from nav_msgs.msg import Odometry
        msg = Odometry()
        msg.header.stamp = stamp_msg(stamp)
        msg.header.frame_id = 'odom'
        msg.pose.pose.position.x, msg.pose.pose.position.y = float(x), float(y)
        msg.pose.pose.orientation.w = 1.0
        self.odom_pub.publish(msg)

    def publish_image(self, stamp: float, fields: dict) -> None:
        from sensor_msgs.msg import Image
        msg = Image(**{k: v for k, v in fields.items() if k != 'data'})
        msg.data = fields['data']
        msg.header.stamp = stamp_msg(stamp)
        msg.header.frame_id = 'camera'
        self.image_pub.publish(msg)

    def publish_serialized(self, stamp: float, serialized: bytearray) -> None:
        """Publish a serialized sensor_msgs/Image (as a bag player does), its header stamp replaced.

        CDR little-endian: 4 bytes of encapsulation, then header.stamp.sec (int32) and .nanosec (uint32).
        """
        t = stamp_msg(stamp)
        struct.pack_into('<iI', serialized, 4, t.sec, t.nanosec)
        self.image_pub.publish(bytes(serialized))

    def close(self) -> None:
        self.node.destroy_node()


def stamp_msg(seconds: float):
    from builtin_interfaces.msg import Time

    from deepseqslam_ros.core import split_stamp
    sec, nanosec = split_stamp(seconds)
    return Time(sec=sec, nanosec=nanosec)


def place_of(candidates_msg) -> int:
    """Best candidate place of a ~/candidates PointCloud."""
    channels = {c.name: c.values for c in candidates_msg.channels}
    return int(channels['place'][0])
