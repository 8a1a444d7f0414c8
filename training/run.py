"""The reference code's entry point, `python training/run.py train|val`, on deepseqslam_ros.

Accepts the paper's flags on the Gardens Point layout (day_left/, day_right/, night_right/,
gp_pos.csv). As in the paper, `train` trains on --val_set and `val` evaluates on --val_set.
Differences, on purpose: booleans parse properly (`--pretrained False` means False); the default
backbone is mobilenet_v2, whose ImageNet weights work offline; the query gets simulated odometry,
never the reference's positions, unless --reference-protocol asks for the paper's leak.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepseqslam_ros.backbones import Backbone, WeightsNotFoundError  # noqa: E402
from deepseqslam_ros.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from deepseqslam_ros.core import MatchConfig  # noqa: E402
from deepseqslam_ros.evaluate import evaluate_checkpoint  # noqa: E402
from deepseqslam_ros.train import TrainConfig, train  # noqa: E402
from deepseqslam_ros.traversal import (DatasetMissingError, gardens_point_root, load_positions,  # noqa: E402
                                       load_traversal, simulate_odometry)


def str2bool(text: str) -> bool:
    if text.lower() in ('1', 'true', 'yes', 'y', 'on'):
        return True
    if text.lower() in ('0', 'false', 'no', 'n', 'off'):
        return False
    raise argparse.ArgumentTypeError(f'expected a boolean (True/False), got {text!r}')


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='Gardens Point training (DeepSeqSLAM run.py compatible)')
    p.add_argument('mode', choices=('train', 'val'))
    p.add_argument('--data_path', help='Gardens Point folder (default: $DEEPSEQSLAM_DATA/gardens_point)')
    p.add_argument('-o', '--output_path', default='checkpoints/')
    p.add_argument('--model_name', default='mobilenet_v2_lstm')
    p.add_argument('-a', '--cnn_arch', default='mobilenet_v2', help='any torchvision CNN')
    p.add_argument('--pretrained', type=str2bool, default=True)
    p.add_argument('--val_set', default='day_right')
    p.add_argument('--ngpus', type=int, default=0, help='0: CPU; 1: one GPU; more: use torchrun')
    p.add_argument('-j', '--workers', type=int, default=4, help='accepted for compatibility (descriptors are cached)')
    p.add_argument('--epochs', type=int, default=200)
    p.add_argument('--batch_size', type=int, default=32)
    p.add_argument('--lr', '--learning_rate', type=float, default=1e-3)
    p.add_argument('--load', type=str2bool, default=False, help='resume training from the checkpoint')
    p.add_argument('--nimgs', type=int, default=200)
    p.add_argument('--seq_len', type=int, default=10)
    p.add_argument('--nclasses', type=int, default=190, help='must be nimgs - seq_len')
    p.add_argument('--img_size', type=int, default=224)
    p.add_argument('--positions', type=str2bool, default=True, help='use gp_pos.csv / odometry input')
    p.add_argument('--odometry_seed', type=int, default=0, help='seed of the simulated query odometry')
    p.add_argument('--reference-protocol', action='store_true',
                   help="LEAKY, for comparison only: give the query the reference's own positions, "
                        "as the paper's code does")
    p.add_argument('--tolerance', type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.nclasses != args.nimgs - args.seq_len:
        print(f'run.py: error: --nclasses {args.nclasses} must equal --nimgs - --seq_len = '
              f'{args.nimgs - args.seq_len}', file=sys.stderr)
        return 2
    if args.ngpus > 1:
        print('run.py: for several GPUs run: torchrun --nproc-per-node N -m deepseqslam_ros.train ...',
              file=sys.stderr)
        return 2
    device = 'cuda' if args.ngpus == 1 else 'cpu'
    ckpt_path = Path(args.output_path) / f'model_{args.model_name.lower()}.pt'
    try:
        root = Path(args.data_path) if args.data_path else gardens_point_root()
        route = root / 'gp_pos.csv'
        traversal = load_traversal(root / args.val_set, limit=args.nimgs)
        if args.mode == 'train':
            if args.positions:
                traversal.positions = load_positions(route, len(traversal))
            backbone = Backbone(args.cnn_arch, 'imagenet' if args.pretrained else 'none', args.img_size)
            ckpt = train(traversal, ckpt_path, backbone, args.seq_len,
                         cfg=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr), device=device,
                         resume=args.load, objective='classifier', hidden=512)
            last = ckpt.training['history'][-1]
            print(f'loss= {last["loss"]:.4f} top1= {last["top1"]:.4f} (augmented) clean top1= '
                  f'{ckpt.training["train_top1_clean"]:.4f} -> {ckpt_path}')
            return 0
        ckpt = load_checkpoint(ckpt_path)
        positions = None
        if ckpt.config.use_positions:
            route_xy = load_positions(route, len(traversal))
            positions = route_xy if args.reference_protocol else simulate_odometry(route_xy, args.odometry_seed)
        metrics, _ = evaluate_checkpoint(ckpt, traversal, positions, args.tolerance, MatchConfig(), device)
    except (DatasetMissingError, WeightsNotFoundError, CheckpointError, ValueError, RuntimeError) as exc:
        print(f'run.py: error: {exc}', file=sys.stderr)
        return 2
    label = ('reference protocol: query given the REFERENCE positions (leak)' if args.reference_protocol
             else 'honest: query positions from simulated odometry' if positions is not None else 'vision-only')
    print(f'[{args.val_set}, {label}]')
    print('top1 = ', round(metrics['top1'], 4), 'top5 = ', round(metrics['top5'], 4))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
