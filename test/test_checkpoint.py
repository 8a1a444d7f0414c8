import pytest
import torch

from deepseqslam_ros.backbones import Backbone
from deepseqslam_ros.checkpoint import CheckpointError, load_checkpoint
from deepseqslam_ros.core import Localizer


def test_round_trip(small_checkpoint, tmp_path):
    ckpt = load_checkpoint(small_checkpoint)
    assert ckpt.config.n_places == 50 and ckpt.config.use_positions
    assert len(ckpt.places) == 60 and ckpt.places.embeddings.shape == (50, 512)
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
    with pytest.raises(CheckpointError, match='trained on backbone'):
        Localizer(load_checkpoint(small_checkpoint), 'cpu', backbone=Backbone('mobilenet_v2', image_size=160))
