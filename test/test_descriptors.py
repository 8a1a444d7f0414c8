import shutil

import torch

from deepseqslam_ros.descriptors import cache_path, describe_traversal
from deepseqslam_ros.traversal import load_traversal


class CountingBackbone:
    """The real backbone, counting how many images go through it."""

    def __init__(self, backbone):
        self.inner, self.images = backbone, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def describe(self, images):
        self.images += len(images)
        return self.inner.describe(images)


def test_cache_reuses_and_invalidates(tmp_path, gp_root, backbone):
    folder = tmp_path / 'trav'
    folder.mkdir()
    for i in range(4):
        shutil.copy(gp_root / 'day_left' / f'Image{i:03d}.jpg', folder)
    counting = CountingBackbone(backbone)
    first = describe_traversal(counting, load_traversal(folder), cache_dir=tmp_path / 'c', progress=False)
    assert counting.images == 4 and first.shape == (4, 864)
    again = describe_traversal(counting, load_traversal(folder), cache_dir=tmp_path / 'c', progress=False)
    assert counting.images == 4 and torch.equal(first, again)
    # replace one image: only that one is recomputed
    shutil.copy(gp_root / 'night_right' / 'Image002.jpg', folder / 'Image002.jpg')
    changed = describe_traversal(counting, load_traversal(folder), cache_dir=tmp_path / 'c', progress=False)
    assert counting.images == 5
    assert torch.equal(changed[[0, 1, 3]], first[[0, 1, 3]]) and not torch.equal(changed[2], first[2])
    # a corrupted cache file is recomputed, not trusted
    cache_path(backbone, load_traversal(folder), tmp_path / 'c').write_bytes(b'garbage')
    describe_traversal(counting, load_traversal(folder), cache_dir=tmp_path / 'c', progress=False)
    assert counting.images == 9


def test_cache_key_depends_on_backbone_identity(tmp_path, gp_root, backbone):
    from deepseqslam_ros.backbones import Backbone
    trav = load_traversal(gp_root / 'day_left', limit=2)
    other = Backbone('mobilenet_v2', image_size=160)
    assert cache_path(backbone, trav, tmp_path) != cache_path(other, trav, tmp_path)
