"""Shared fixtures. Every ROS process of the test run stays on loopback with its own domain id."""
import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(ROOT / 'config' / 'fastdds_loopback.xml')
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault('DEEPSEQSLAM_CACHE', str(ROOT / '.cache' / 'descriptors'))
os.environ.setdefault('GLOO_SOCKET_IFNAME', 'lo')
os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)   # the venv holds the installed package's share/


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: end-to-end runs of a minute or more (still run in CI)')


@pytest.fixture(scope='session')
def gp_root():
    from deepseqslam_ros.traversal import gardens_point_root
    return gardens_point_root()


@pytest.fixture(scope='session')
def backbone():
    from deepseqslam_ros.backbones import Backbone
    return Backbone('mobilenet_v2')


@pytest.fixture(scope='session')
def small_checkpoint(tmp_path_factory, gp_root, backbone):
    """A real embedding head trained briefly on the first 60 day_left frames (50 places)."""
    from deepseqslam_ros.train import TrainConfig, train
    from deepseqslam_ros.traversal import load_traversal
    reference = load_traversal(gp_root / 'day_left', gp_root / 'gp_pos.csv', limit=60)
    out = tmp_path_factory.mktemp('ckpt') / 'small.pt'
    train(reference, out, backbone, seq_len=10, cfg=TrainConfig(epochs=20), device='cpu', progress=False)
    return out


@pytest.fixture(scope='session')
def classifier_checkpoint(tmp_path_factory, gp_root, backbone):
    """The paper's head (one class per place, positions as input) on the same 60 frames."""
    from deepseqslam_ros.train import TrainConfig, train
    from deepseqslam_ros.traversal import load_traversal
    reference = load_traversal(gp_root / 'day_left', gp_root / 'gp_pos.csv', limit=60)
    out = tmp_path_factory.mktemp('ckpt') / 'classifier.pt'
    train(reference, out, backbone, seq_len=10, cfg=TrainConfig(epochs=20, batch_size=32), device='cpu',
          progress=False, objective='classifier', hidden=512)
    return out
