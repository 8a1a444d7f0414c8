import numpy as np
import pytest

from deepseqslam_ros.traversal import (DatasetMissingError, Traversal, frame_truth, frames_showing, load_frame_truth,
                                       load_positions, load_traversal, simulate_odometry)


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


def test_another_traversal_is_aligned_by_truth_positions_or_index(gp_root, tmp_path):
    """Training's other references: the map frame each of their frames shows, and back."""
    route = load_positions(gp_root / 'gp_pos.csv', 200)
    day_left = load_traversal(gp_root / 'day_left', gp_root / 'gp_pos.csv')
    faster = np.rint(np.arange(0, 199, 1.5)).astype(int)[::-1]         # driven 1.5x as fast, the other way
    files = load_traversal(gp_root / 'day_right').files
    other = Traversal('day_right', [files[i] for i in faster], route[faster])
    assert np.array_equal(frame_truth(day_left, other), faster)                 # by nearest position
    truth_csv = tmp_path / 'truth.csv'
    truth_csv.write_text(''.join(f'{i}\n' for i in faster))
    assert np.array_equal(frame_truth(day_left, other, load_frame_truth(truth_csv, len(other))), faster)
    with pytest.raises(ValueError, match='aligned by index'):                   # neither: frame counts differ
        frame_truth(load_traversal(gp_root / 'day_left'), Traversal('x', other.files))
    far = Traversal('far', other.files[:2], route[[0, 1]] + 1000.0)              # positions off the route
    assert list(frame_truth(day_left, far)) == [-1, -1]
    shows = frames_showing(faster, 200)                                         # map frame -> other's frame
    assert all(abs(faster[j] - m) <= 1 for m, j in enumerate(shows))            # a neighbour at worst
    assert list(frames_showing(np.array([5, -1, 7]), 10)) == [-1, -1, -1, -1, 0, 0, 2, 2, 2, -1]   # ties: the later
    with pytest.raises(ValueError, match='rows for 200 frames'):
        load_frame_truth(truth_csv, 200)
