import numpy as np
import torch

from deepseqslam_ros.checkpoint import load_checkpoint
from deepseqslam_ros.core import Localizer, MatchConfig
from deepseqslam_ros.descriptors import describe_traversal
from deepseqslam_ros.train import _windows
from deepseqslam_ros.traversal import load_traversal


def test_windows_are_places():
    w = _windows(n_places=3, seq_len=4)
    assert w.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]]


def test_streaming_recognises_reference_and_matches_batch(small_checkpoint, gp_root, backbone):
    ckpt = load_checkpoint(small_checkpoint)
    localizer = Localizer(ckpt, 'cpu', MatchConfig(top_k=3), backbone=backbone)
    reference = load_traversal(gp_root / 'day_right', limit=60)
    descriptors = describe_traversal(backbone, reference, progress=False)
    out = [localizer.step(d) for d in descriptors]
    assert out[:9] == [None] * 9                      # a window needs seq_len frames
    results = [r for r in out if r is not None]
    assert [r.frame for r in results] == list(range(9, 60))
    places = np.array([r.place for r in results[:50]])
    assert (np.abs(places - np.arange(50)) <= 2).mean() > 0.9   # day_right vs day_left: easy
    assert all(len(r.candidates) == 3 and r.reference_frame == r.place + 9 for r in results)
    # the same frames as images through the batched backbone give the same answers
    localizer.reset()
    images = [reference.image(i) for i in range(60)]
    batched = [localizer.step(d) for d in localizer.describe(images)]
    assert [r.place for r in batched if r] == [r.place for r in results]
    assert np.allclose(batched[-1].scores, results[-1].scores, atol=1e-4)


def test_positions_used_and_missing_positions_tolerated(small_checkpoint, gp_root, backbone):
    ckpt = load_checkpoint(small_checkpoint)
    localizer = Localizer(ckpt, 'cpu', MatchConfig(lstm_weight=1.0))
    descriptors = torch.stack([ckpt.mean] * 12)
    with_pos = localizer.run(descriptors, np.zeros((12, 2)))
    without = localizer.run(descriptors, None)
    assert len(with_pos) == len(without) == 3
    assert not np.allclose(with_pos[0].scores, without[0].scores)
