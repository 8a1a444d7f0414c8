"""Real rosbag2 files: export, offline replay, live replay over DDS, and broken bags."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.msg import get_types_from_msg

from deepseqslam_ros.bag import BagContents, BagError, export, frame_truth, read_bag
from deepseqslam_ros.traversal import load_positions, load_traversal, simulate_odometry
from deepseqslam_ros.warps import make_run

from ros_harness import ros_env, start_localizer, stop

ROOT = Path(__file__).resolve().parents[1]
BAG = [sys.executable, '-m', 'deepseqslam_ros.bag']


def run(args, timeout=600):
    return subprocess.run(args, cwd=ROOT, env=ros_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def night_bag(tmp_path_factory, gp_root):
    out = tmp_path_factory.mktemp('bags') / 'night_right'
    odometry = simulate_odometry(load_positions(gp_root / 'gp_pos.csv', 200), 0)
    assert export(load_traversal(gp_root / 'night_right'), out, rate=10.0, positions=odometry) == 200
    return out


def test_export_round_trip(night_bag, tmp_path, gp_root):
    contents = read_bag(night_bag)
    assert contents.image_type == 'sensor_msgs/msg/Image' and len(contents.frames) == 200
    assert len(contents.odometry) == 200
    assert frame_truth(contents).frames.tolist() == list(range(200))
    stamps = [ns for ns, _ in contents.frames]
    assert np.allclose(np.diff(stamps), 1e8)
    compressed = tmp_path / 'compressed'
    done = run([*BAG, 'export', '--images', str(gp_root / 'day_right'), '--rate', '5', '--out', str(compressed),
                '--storage', 'sqlite3', '--compressed'])
    assert done.returncode == 0, done.stderr
    contents = read_bag(compressed)
    assert contents.image_type == 'sensor_msgs/msg/CompressedImage' and not contents.odometry
    assert (compressed / 'metadata.yaml').is_file() and list(compressed.glob('*.db3'))


def _eval(bag, checkpoint, out, *extra):
    done = run([*BAG, 'eval', '--bag', str(bag), '--checkpoint', str(checkpoint), '--tolerance', '2',
                '--json', str(out), *extra])
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_offline_and_live_replay_agree_with_folder_eval(night_bag, small_checkpoint, gp_root, tmp_path):
    """Offline replay, live replay over DDS and deepseqslam-eval on the folder give the same answers."""
    offline = _eval(night_bag, small_checkpoint, tmp_path / 'offline.json', '--plots', str(tmp_path / 'plots'))
    folder = run([sys.executable, '-m', 'deepseqslam_ros.evaluate', '--checkpoint', str(small_checkpoint),
                  '--query', str(gp_root / 'night_right'), '--simulate-odometry', '0',
                  '--route', str(gp_root / 'gp_pos.csv'), '--json', str(tmp_path / 'folder.json')])
    assert folder.returncode == 0, folder.stderr
    folder = json.loads((tmp_path / 'folder.json').read_text())
    assert offline['recall@1'] == folder['recall@1'] and offline['n_queries'] == folder['n_queries'] >= 30
    node = start_localizer(tmp_path / 'node.log', checkpoint=small_checkpoint, image_topic='/camera/image_raw',
                           odom_topic='/odom', image_qos='reliable', device='cpu', queue_size=100)
    try:
        live = _eval(night_bag, small_checkpoint, tmp_path / 'live.json', '--live', '--qos', 'reliable',
                     '--rate-factor', '1.0', '--record', str(tmp_path / 'answers'))
    finally:
        assert stop(node) == 0
    assert live['frames_published'] == 200 and live['frames_processed'] == 200 and live['frames_dropped'] == 0
    assert abs(live['recall@1'] - offline['recall@1']) <= 0.02, (live, offline)
    with AnyReader([tmp_path / 'answers']) as recorded:       # the node's answers, as a result bag
        assert recorded.message_count == live['answers'] >= 100


def test_broken_bags_give_clear_errors(night_bag, small_checkpoint, tmp_path):
    truncated = tmp_path / 'truncated'
    truncated.mkdir()
    (truncated / 'metadata.yaml').write_bytes((night_bag / 'metadata.yaml').read_bytes())
    data = next(night_bag.glob('*.mcap'))
    (truncated / data.name).write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    types = get_typestore(Stores.ROS2_KILTED)
    types.register(get_types_from_msg('int32 x', 'custom_msgs/msg/Frame'))
    no_camera, unknown = tmp_path / 'no_camera', tmp_path / 'unknown'
    for path, topic, msgtype, msg in (
            (no_camera, '/odom_only', 'std_msgs/msg/String', types.types['std_msgs/msg/String'](data='x')),
            (unknown, '/camera/image_raw', 'custom_msgs/msg/Frame', types.types['custom_msgs/msg/Frame'](x=5))):
        with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            connection = writer.add_connection(topic, msgtype, typestore=types)
            writer.write(connection, 1, types.serialize_cdr(msg, msgtype))
    for bag, message in ((truncated, 'cannot read bag'), (no_camera, 'no camera topic'),
                         (unknown, 'custom_msgs/msg/Frame'), (tmp_path / 'missing', 'does not exist')):
        done = run([*BAG, 'eval', '--bag', str(bag), '--checkpoint', str(small_checkpoint),
                    '--json', str(tmp_path / 'x.json'), '--image-topic', '/camera/image_raw'])
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and 'Traceback' not in done.stderr, done.stderr


def test_foreign_bag_ground_truth_from_csv(tmp_path):
    foreign = BagContents('sensor_msgs/msg/Image', '/cam', frames=[(0, b''), (1, b'')])
    with pytest.raises(BagError, match='--truth-csv'):
        frame_truth(foreign, None)
    (tmp_path / 'truth.csv').write_text('7\n8\n')
    assert frame_truth(foreign, str(tmp_path / 'truth.csv')).frames.tolist() == [7, 8]



@pytest.mark.slow
def test_map_from_teach_bag_and_truth_by_index_or_position(tmp_path, gp_root):
    """A 30 Hz stop-and-go teach bag of day_left (JPEG) becomes a map; night_right localizes on it as well
    as on the map built from the folder."""
    route, teach = str(gp_root / 'gp_pos.csv'), tmp_path / 'teach.bag'    # a rosbag2 folder named *.bag
    done = run([*BAG, 'export', '--images', str(gp_root / 'day_left'), '--warp', 'stopgo', '--rate', '30',
                '--simulate-odometry', '1', '--route', route, '--out', str(teach), '--compressed'])
    assert done.returncode == 0, done.stderr
    spacing = np.median(np.linalg.norm(np.diff(load_positions(route, 200), axis=0), axis=1))
    train = [sys.executable, '-m', 'deepseqslam_ros.train', '--epochs', '2']
    done = run([*train, '--bag', str(teach), '--odom-topic', '/odom', '--keyframe-distance', str(spacing),
                '--out', str(tmp_path / 'bag.pt')])
    assert done.returncode == 0, done.stderr[-2000:]
    from deepseqslam_ros.checkpoint import load_checkpoint
    places = load_checkpoint(tmp_path / 'bag.pt').places
    assert 120 <= len(places) <= 200 and places.positions is not None
    # truth for the bag map: the map frame nearest each night frame's route position
    teach_run = read_bag(teach)
    views = frame_truth(teach_run).frames
    keyframe_view = views[[int(name.split('/')[-1]) for name in places.names]]
    night_truth = np.abs(keyframe_view[None] - np.arange(200)[:, None]).argmin(1)
    np.savetxt(tmp_path / 'truth.csv', night_truth, fmt='%d')
    np.savetxt(tmp_path / 'truth_xy.csv', places.positions.numpy()[night_truth], delimiter=',')
    common = ['--query', str(gp_root / 'night_right'), '--simulate-odometry', '0', '--route', route, '--tolerance', '2']
    evaluate = [sys.executable, '-m', 'deepseqslam_ros.evaluate']
    done = run([*evaluate, '--checkpoint', str(tmp_path / 'bag.pt'), *common, '--query-truth',
                str(tmp_path / 'truth.csv'), '--json', str(tmp_path / 'bag.json')])
    assert done.returncode == 0, done.stderr[-2000:]
    by_index = json.loads((tmp_path / 'bag.json').read_text())
    done = run([*evaluate, '--checkpoint', str(tmp_path / 'bag.pt'), *common, '--truth-positions',
                str(tmp_path / 'truth_xy.csv'), '--tolerance-m', str(2.5 * spacing),
                '--json', str(tmp_path / 'm.json')])
    assert done.returncode == 0, done.stderr[-2000:]
    by_position = json.loads((tmp_path / 'm.json').read_text())
    done = run([*train, '--reference', str(gp_root / 'day_left'), '--reference-positions', route,
                '--out', str(tmp_path / 'folder.pt')])
    assert done.returncode == 0, done.stderr[-2000:]
    done = run([*evaluate, '--checkpoint', str(tmp_path / 'folder.pt'), *common, '--json', str(tmp_path / 'f.json')])
    folder = json.loads((tmp_path / 'f.json').read_text())
    print(f'night_right recall@1: bag map {by_index["recall@1"]:.3f} ({by_index["n_queries"]} answers), by position '
          f'{by_position["recall@1"]:.3f}, folder map {folder["recall@1"]:.3f} ({folder["n_queries"]})')
    assert by_index['recall@1'] >= folder['recall@1'] - 0.02, (by_index, folder)
    assert abs(by_position['recall@1'] - by_index['recall@1']) <= 0.1
    # another traversal (day_right, index-aligned with night) trains the bag map's embedding, aligned
    # with its keyframes by a truth CSV
    done = run([sys.executable, '-m', 'deepseqslam_ros.train', '--steps', '300', '--bag', str(teach), '--odom-topic',
                '/odom', '--keyframe-distance', str(spacing), '--reference', str(gp_root / 'day_right'),
                '--reference-truth', str(tmp_path / 'truth.csv'), '--out', str(tmp_path / 'both.pt')])
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(tmp_path / 'both.pt').training['train_recall_other'] >= 0.9
    # bad teach bags: odometry topic named but absent, an empty camera topic
    done = run([*train, '--bag', str(teach), '--odom-topic', '/wheel_odom', '--out', str(tmp_path / 'x.pt')])
    assert done.returncode == 2 and '/wheel_odom' in done.stderr and 'Traceback' not in done.stderr


@pytest.mark.slow
def test_live_30hz_stop_and_go_agrees_with_offline(small_checkpoint, gp_root, tmp_path):
    """A 30 Hz stop-and-go robot run (noisy repeated views), vision-only, played into the node over DDS
    gives the offline replay's recall@1 within 0.02, with every frame processed and none dropped."""
    robot = make_run(load_traversal(gp_root / 'night_right', limit=60), 'stopgo', seed=4, rate=30.0)
    bag = tmp_path / 'stopgo30'
    assert export(robot, bag) == len(robot) > 200
    offline = _eval(bag, small_checkpoint, tmp_path / 'offline.json')
    node = start_localizer(tmp_path / 'node.log', checkpoint=small_checkpoint, image_topic='/camera/image_raw',
                           image_qos='reliable', device='cpu', queue_size=100)
    try:
        live = _eval(bag, small_checkpoint, tmp_path / 'live.json', '--live', '--qos', 'reliable')
    finally:
        assert stop(node) == 0
    print(f'{len(robot)} frames: live recall@1 {live["recall@1"]:.3f}, offline {offline["recall@1"]:.3f} '
          f'({offline["n_queries"]} answers); published {live["frames_published"]}, processed '
          f'{live["frames_processed"]}, dropped {live["frames_dropped"]}')
    assert live['frames_published'] == live['frames_processed'] == len(robot) and live['frames_dropped'] == 0, \
        f'{len(robot)} frames: {live}'   # dropped frames (queue) or a stalled node (processed < published)
    assert offline['n_queries'] >= 30 and abs(live['recall@1'] - offline['recall@1']) <= 0.02, (live, offline)
