"""benchmarks/bench_scale.py at small sizes (the README reports 10k to 1M places, and 100k keyframes
online): retrieval through the index, then verification, on a map of real places among distractors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / 'benchmarks' / 'bench_scale.py'


def run(tmp_path, *args):
    done = subprocess.run([sys.executable, str(SCRIPT), '--checkpoint', str(tmp_path / 'day_left.pt'), '--no-nordland',
                           '--json', str(tmp_path / 'out.json'), *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((tmp_path / 'out.json').read_text()), done.stdout


@pytest.mark.slow
def test_night_queries_find_the_real_places_among_distractors(tmp_path):
    # past the index's quantize_from: the quantised scan answers; every keyframe scans (no tracking),
    # so that both retrievals are compared on every keyframe
    rows, out = run(tmp_path, '--sizes', '5000', '--tracking-scan-every', '1')
    (row,) = rows
    keys = {'places', 'p50_ms', 'p95_ms', 'bytes_per_place', 'recall@1', 'index_recall', 'index_recall_window',
            'true_retrieved', 'true_retrieved_by_window'}
    assert set(row) >= keys, out
    assert row['places'] == 5000 and row['bytes_per_place'] < 2048
    assert row['index_recall'] >= 0.99 and row['index_recall_window'] >= 0.99, out
    # the distractors cost little (the z-score background lies around the candidates: 0.930 against the
    # whole 200-frame map's 0.962; random places as the background: 0.897)
    assert row['recall@1'] >= row['whole_map_recall@1'] - 0.05, out
    # the LSTM's window embedding (trained on day_left and day_right) finds night's true place among
    # the distractors more often than the newest keyframe's descriptor does
    assert row['true_retrieved_by_window'] > row['true_retrieved'] + 0.1, out


@pytest.mark.slow
def test_an_online_map_finds_revisits_through_the_index(tmp_path):
    """Gardens Point day_left and day_right driven in turn: the map is compact from its first frame,
    revisits are found through the index; the map grows by one frame per keyframe."""
    rows, out = run(tmp_path, '--online', '3000')
    assert len(rows) == 10 and [r['map_frames'] for r in rows] == [300 * (i + 1) for i in range(10)], out
    assert all(r['compact'] for r in rows), out
    right, confident = (rows[-1][key] - rows[0][key] for key in ('right', 'confident'))
    assert confident >= 1500 and right >= 0.9 * confident, out
