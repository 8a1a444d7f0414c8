import numpy as np
import pytest

from deepseqslam_ros.traversal import (DatasetMissingError, load_positions, load_traversal,
                                       simulate_odometry)


def test_odometry_simulator_is_deterministic_and_drifts(gp_root):
    route = load_positions(gp_root / 'gp_pos.csv', 200)
    a, b, c = simulate_odometry(route, 1), simulate_odometry(route, 1), simulate_odometry(route, 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == route.shape and np.array_equal(a[0], route[0])
    error = np.linalg.norm(a - route, axis=1)
    assert error[-20:].mean() > error[1:20].mean()  # drift accumulates
    assert error.max() < 0.5                        # but it stays a plausible route


def test_traversal_is_sorted_and_missing_dataset_says_where(gp_root, tmp_path):
    trav = load_traversal(gp_root / 'night_right', limit=3)
    assert [f.name for f in trav.files] == ['Image000.jpg', 'Image001.jpg', 'Image002.jpg']
    assert trav.image(0).shape[2] == 3
    with pytest.raises(DatasetMissingError, match='zenodo'):
        load_traversal(tmp_path / 'nowhere')
    bad = tmp_path / 'bad.csv'
    bad.write_text('0.1,0.2\nnan,0.3\n')
    with pytest.raises(ValueError, match='NaN'):
        load_positions(bad, 2)
