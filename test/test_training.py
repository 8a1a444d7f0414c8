import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepseqslam_ros.checkpoint import load_checkpoint
from deepseqslam_ros.train import TrainConfig, train
from deepseqslam_ros.traversal import load_traversal

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ['--max-frames', '30', '--seq-len', '5', '--epochs', '3', '--batch-size', '8', '--device', 'cpu']


def _train_cli(extra, out, env=None):
    return subprocess.run([sys.executable, *extra, '--out', str(out), *TRAIN_ARGS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('objective', ['embedding', 'classifier'])
def test_ddp_two_processes_agree_with_one(tmp_path, gp_root, objective):
    """torchrun with two gloo ranks trains the same head as one process: the classifier's batch split
    between ranks, the embedding's batch gathered so that every rank's loss sees all negatives."""
    ref = ['--reference', str(gp_root / 'day_left'), '--reference-positions', str(gp_root / 'gp_pos.csv'),
           '--objective', objective]
    if objective == 'embedding':
        ref += ['--reference', str(gp_root / 'day_right')]
    single = _train_cli(['-m', 'deepseqslam_ros.train', *ref], tmp_path / 'one.pt')
    assert single.returncode == 0, single.stderr
    env = dict(os.environ, GLOO_SOCKET_IFNAME='lo', OMP_NUM_THREADS='1')
    ddp = _train_cli(['-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
                      '-m', 'deepseqslam_ros.train', *ref], tmp_path / 'two.pt', env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = load_checkpoint(tmp_path / 'one.pt'), load_checkpoint(tmp_path / 'two.pt')
    atol = 1e-5 if objective == 'classifier' else 5e-5   # the embedding's gradient is summed from two parts
    for name, tensor in one.head.items():
        assert torch.allclose(tensor, two.head[name], atol=atol), name
    assert one.training['history'][-1]['loss'] == pytest.approx(two.training['history'][-1]['loss'], rel=1e-4)


def test_resume_continues_to_the_same_weights(tmp_path, gp_root, backbone):
    reference = load_traversal(gp_root / 'day_left', limit=30)
    straight = train(reference, tmp_path / 'a.pt', backbone, 5, cfg=TrainConfig(epochs=4, batch_size=8),
                     device='cpu', progress=False)
    train(reference, tmp_path / 'b.pt', backbone, 5, cfg=TrainConfig(epochs=2, batch_size=8),
          device='cpu', progress=False)
    resumed = train(reference, tmp_path / 'b.pt', backbone, 5, cfg=TrainConfig(epochs=4, batch_size=8),
                    device='cpu', resume=True, progress=False)
    assert resumed.training['epoch'] == 4 and len(resumed.training['history']) == 4
    for name, tensor in straight.head.items():
        assert torch.allclose(tensor, resumed.head[name], atol=1e-6), name


def test_a_step_budget_sets_the_epochs(tmp_path, gp_root, backbone):
    reference = load_traversal(gp_root / 'day_left', limit=21)   # 16 places: 2 batches of 8 per epoch
    ckpt = train(reference, tmp_path / 's.pt', backbone, 5, cfg=TrainConfig(steps=5, batch_size=8), device='cpu',
                 progress=False)
    assert ckpt.training['epoch'] == 3 and ckpt.training['steps'] == 6 and len(ckpt.training['history']) == 3


def test_gru_cell_trains_and_localizes(tmp_path, gp_root, backbone):
    from deepseqslam_ros.core import Localizer, MatchConfig
    from deepseqslam_ros.descriptors import describe_traversal
    reference = load_traversal(gp_root / 'day_left', limit=30)
    ckpt = train(reference, tmp_path / 'gru.pt', backbone, 5, cell='gru', cfg=TrainConfig(epochs=3, batch_size=8),
                 device='cpu', progress=False, objective='classifier')
    assert isinstance(load_checkpoint(tmp_path / 'gru.pt').build_head().rnn, torch.nn.GRU)
    results = Localizer(ckpt, 'cpu', MatchConfig(lstm_weight=1.0)).run(describe_traversal(backbone, reference))
    assert len(results) >= 20 and all(np.isfinite(r.scores[8:29]).all() for r in results)   # every place that a
    # window of 5 keyframes at up to 2x fits
    assert np.mean([abs(r.place - r.frame) <= 2 for r in results]) >= 0.9   # the reference itself: its own places


def test_an_embedding_from_two_day_traversals_retrieves_night_places(tmp_path, gp_root, backbone):
    """The default objective: the LSTM's final state as a place embedding, learned from day_left and
    day_right (positives: the same place at 0.5-2x speed, in either). Night windows, never seen in
    training, retrieve their place among the map's 200 window embeddings."""
    from deepseqslam_ros.descriptors import describe_traversal
    from deepseqslam_ros.index import compact_projection, project
    from deepseqslam_ros.model import Standardiser, embed_frames
    ckpt = train([load_traversal(gp_root / 'day_left'), load_traversal(gp_root / 'day_right')], tmp_path / 'e.pt',
                 backbone, device='cpu', progress=False)
    assert ckpt.config.objective == 'embedding' and ckpt.training['seconds'] < 180
    assert ckpt.training['train_recall_other'] >= 0.9   # day_right's windows find their day_left places
    night = describe_traversal(backbone, load_traversal(gp_root / 'night_right'), progress=False)
    compact = project(Standardiser(night.mean(0), ckpt.std).reference(night),
                      compact_projection(ckpt.config.descriptor_dim, ckpt.config.compact_dim))
    windows = embed_frames(ckpt.build_head(), compact, 10)[9:]
    best = (windows @ ckpt.places.embeddings.T).topk(15).indices - torch.arange(9, 200)[:, None]
    assert float((best.abs() <= 2).any(1).float().mean()) >= 0.85   # measured 0.95
    with pytest.raises(ValueError, match='aligned by index unless'):
        train([load_traversal(gp_root / 'day_left'), load_traversal(gp_root / 'day_right', limit=100)],
              tmp_path / 'x.pt', backbone, device='cpu', progress=False)


def test_a_reference_at_another_speed_is_aligned_by_its_truth_csv(tmp_path, gp_root):
    """--reference-truth: day_right driven 1.5x as fast (133 frames) gives the embedding positives
    of day_left's 200 places; without it the frame counts differ and the error says what to do."""
    faster = np.rint(np.arange(0, 199, 1.5)).astype(int)
    folder = tmp_path / 'day_right_fast'
    folder.mkdir()
    files = load_traversal(gp_root / 'day_right').files
    for k, i in enumerate(faster):
        (folder / f'{k:04d}.jpg').symlink_to(files[i])
    truth = tmp_path / 'truth.csv'
    truth.write_text(''.join(f'{i}\n' for i in faster))
    base = [sys.executable, '-m', 'deepseqslam_ros.train', '--reference', str(gp_root / 'day_left'),
            '--reference', str(folder), '--steps', '300', '--device', 'cpu', '--out', str(tmp_path / 't.pt')]
    run = subprocess.run(base + ['--reference-truth', str(truth)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert load_checkpoint(tmp_path / 't.pt').training['train_recall_other'] >= 0.9   # measured 1.000
    for extra, message in (([], 'aligned by index unless a truth CSV'),
                           (['--reference-truth', str(truth)] * 2, 'more --reference-positions')):
        error = subprocess.run(base + extra, cwd=ROOT, capture_output=True, text=True)
        assert error.returncode == 2 and message in error.stderr and 'Traceback' not in error.stderr


def test_cli_errors_are_clear(tmp_path):
    missing = subprocess.run([sys.executable, '-m', 'deepseqslam_ros.train', '--reference',
                              str(tmp_path / 'nope'), '--out', str(tmp_path / 'x.pt')],
                             cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and 'zenodo' in missing.stderr and 'Traceback' not in missing.stderr
    no_ckpt = subprocess.run([sys.executable, '-m', 'deepseqslam_ros.evaluate', '--checkpoint',
                              str(tmp_path / 'none.pt'), '--query', str(tmp_path), '--json', str(tmp_path / 'j')],
                             cwd=ROOT, capture_output=True, text=True)
    assert no_ckpt.returncode == 2 and 'Traceback' not in no_ckpt.stderr


def test_paper_run_py_train_and_val(tmp_path, gp_root):
    common = ['--ngpus', '0', '--nimgs', '40', '--seq_len', '10', '--nclasses', '30', '--epochs', '5',
              '-o', str(tmp_path), '--model_name', 'tiny', '--pretrained', 'True', '-j', '8']
    run = [sys.executable, 'training/run.py']
    trained = subprocess.run([*run, 'train', '--val_set', 'day_left', *common], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / 'model_tiny.pt').is_file()
    honest = subprocess.run([*run, 'val', '--val_set', 'day_right', *common], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert honest.returncode == 0, honest.stderr
    assert 'top1 = ' in honest.stdout and 'simulated odometry' in honest.stdout
    metrics = json.loads(honest.stdout.strip().splitlines()[-1])
    assert 15 <= metrics['n_queries'] <= 30 and 0 <= metrics['recall@1'] <= 1   # one answer per keyframe
    leaky = subprocess.run([*run, 'val', '--val_set', 'day_right', '--reference-protocol', *common],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert leaky.returncode == 0 and 'REFERENCE positions' in leaky.stdout
    bad = subprocess.run([*run, 'train', '--nclasses', '12', '--pretrained', 'maybe'], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and 'expected a boolean' in bad.stderr


@pytest.mark.slow
def test_gardens_point_day_left_to_night_right(tmp_path, gp_root):
    """The acceptance run: full training on day_left, honest vision-only query on night_right."""
    out = tmp_path / 'gp.pt'
    trained = subprocess.run([sys.executable, '-m', 'deepseqslam_ros.train', '--reference',
                              str(gp_root / 'day_left'), '--out', str(out), '--device', 'cpu'],
                             cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert trained.returncode == 0, trained.stderr[-2000:]
    results = {}
    for method in ('deepseqslam', 'seqslam'):
        args = (['--checkpoint', str(out)] if method == 'deepseqslam'
                else ['--method', 'seqslam', '--reference', str(gp_root / 'day_left')])
        done = subprocess.run([sys.executable, '-m', 'deepseqslam_ros.evaluate', *args, '--query',
                               str(gp_root / 'night_right'), '--tolerance', '2',
                               '--json', str(tmp_path / f'{method}.json'), '--plots', str(tmp_path / method)],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        results[method] = json.loads((tmp_path / f'{method}.json').read_text())
    ours, baseline = results['deepseqslam'], results['seqslam']
    assert (tmp_path / 'deepseqslam' / 'pr_curve.png').is_file()
    assert 180 <= ours['n_queries'] <= 191   # one answer per keyframe
    assert ours['recall@1'] >= 0.85 and ours['auc'] >= 0.85              # the bar
    assert ours['recall@1'] > baseline['recall@1'] and ours['auc'] > baseline['auc']
