import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from deepseqslam_ros.backbones import Backbone
from deepseqslam_ros.checkpoint import CheckpointError, load_checkpoint
from deepseqslam_ros.core import Localizer


def test_round_trip(small_checkpoint, tmp_path):
    ckpt = load_checkpoint(small_checkpoint)
    assert ckpt.config.n_places == 50 and ckpt.config.objective == 'embedding' and not ckpt.config.use_positions
    assert len(ckpt.places) == 60 and ckpt.places.embeddings.shape == (60, 128)   # a window ends at each frame
    assert ckpt.places.positions is not None   # the map keeps its poses for odometry and answers
    copy = tmp_path / 'copy.pt'
    ckpt.save(copy)
    again = load_checkpoint(copy)
    assert again.config == ckpt.config
    assert all(torch.equal(again.head[k], ckpt.head[k]) for k in ckpt.head)
    assert torch.equal(again.places.descriptors, ckpt.places.descriptors)
    assert not list(tmp_path.glob('.*tmp*'))  # atomic write leaves no temp file


def test_truncated_foreign_and_missing_files(small_checkpoint, tmp_path):
    data = small_checkpoint.read_bytes()
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='unreadable or truncated'):
        load_checkpoint(truncated)
    foreign = tmp_path / 'foreign.pth.tar'
    torch.save({'state_dict': {}, 'epoch': 3}, foreign)
    with pytest.raises(CheckpointError, match='not a deepseqslam_ros checkpoint'):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint(tmp_path / 'missing.pt')


def test_mismatched_parts(small_checkpoint, tmp_path):
    blob = torch.load(small_checkpoint, weights_only=True)
    blob['places']['descriptors'] = blob['places']['descriptors'][:, :100]
    torch.save(blob, tmp_path / 'bad.pt')
    with pytest.raises(CheckpointError, match='do not match descriptor_dim'):
        load_checkpoint(tmp_path / 'bad.pt')
    blob = torch.load(small_checkpoint, weights_only=True)
    blob['config']['hidden'] = 256
    torch.save(blob, tmp_path / 'bad2.pt')
    with pytest.raises(CheckpointError, match='inconsistent'):
        load_checkpoint(tmp_path / 'bad2.pt')
    blob = torch.load(small_checkpoint, weights_only=True)
    blob['version'] = 1   # the head read full descriptors then
    torch.save(blob, tmp_path / 'old.pt')
    with pytest.raises(CheckpointError, match='version 1.*retrain'):
        load_checkpoint(tmp_path / 'old.pt')
    with pytest.raises(CheckpointError, match='trained on backbone'):
        Localizer(load_checkpoint(small_checkpoint), 'cpu', backbone=Backbone('mobilenet_v2', image_size=160))
    localizer = Localizer(load_checkpoint(small_checkpoint), 'cpu')
    other = load_checkpoint(small_checkpoint)
    other.config = replace(other.config, seq_len=5)
    with pytest.raises(CheckpointError, match='seq_len=5'):   # a map from another model: refused, with the reason
        localizer.check_map(other)
    other = load_checkpoint(small_checkpoint)
    other.mean = other.mean + 1
    with pytest.raises(CheckpointError, match='statistics'):
        localizer.check_map(other)
    localizer.check_map(load_checkpoint(small_checkpoint))


KEEP_SAVING = '''
import sys, torch
from deepseqslam_ros.checkpoint import load_checkpoint
ckpt = load_checkpoint(sys.argv[1])
ckpt.places.descriptors = ckpt.places.descriptors.repeat(1800, 1)   # ~370 MB: a save takes a while
ckpt.places.names = ckpt.places.names * 1800
ckpt.places.stamps = ckpt.places.stamps.repeat(1800)
ckpt.places.positions = ckpt.places.positions.repeat(1800, 1)
ckpt.places.embeddings = ckpt.places.embeddings.repeat(1800, 1)
print('ready', flush=True)
while True:
    ckpt.save(sys.argv[2])
'''


def test_a_save_killed_midway_leaves_a_whole_map(small_checkpoint, tmp_path):
    """SIGKILL a process while it saves, again and again: the file is always a complete map."""
    target = tmp_path / 'map.pt'
    load_checkpoint(small_checkpoint).save(target)
    rng = np.random.default_rng(0)
    stale = 0
    for _ in range(4):
        saver = subprocess.Popen([sys.executable, '-c', KEEP_SAVING, str(small_checkpoint), str(target)],
                                 stdout=subprocess.PIPE, text=True)
        assert saver.stdout.readline().strip() == 'ready'
        time.sleep(rng.uniform(0.2, 1.5))
        saver.send_signal(signal.SIGKILL)
        saver.wait()
        stale += (tmp_path / '.map.pt.tmp').exists()   # killed inside a save
        assert len(load_checkpoint(target).places) in (60, 108000)
    assert stale >= 1


def test_a_failed_save_keeps_the_previous_file_and_no_temp(small_checkpoint, tmp_path):
    ckpt = load_checkpoint(small_checkpoint)
    folder = tmp_path / 'a_folder.pt'
    folder.mkdir()
    with pytest.raises(OSError):
        ckpt.save(folder)
    assert not list(tmp_path.glob('.*tmp*')) and folder.is_dir()
