"""Maps of 10k to 1M places: Gardens Point day_left's 200 real frames hidden among distractor places,
night_right (or day_right, `--query`) as the (vision-only) query. Per size: per-keyframe latency,
memory per place, recall@1, and the index's recall against exact search. One run, this machine.

    .venv/bin/python benchmarks/bench_scale.py --sizes 10000,100000,1000000 [--json OUT] [--no-nordland]
    .venv/bin/python benchmarks/bench_scale.py --online 100000     # an online map driven that far: day_left,
                                                                   # the query route, Nordland, over and over
    .venv/bin/python benchmarks/bench_scale.py --index-search exact [--device cuda]   # exact search, not pq

Distractors: the frames of Nordland part 1 (summer and winter, another route: real views that are
not Gardens Point) when the data is there, and synthetic routes drawn to match the real routes'
statistics (class Distractors, fitted on Gardens Point's day routes: distractors that look like the
map's own places, the hard case): mean, covariance and how views change along a route. They are made
directly as the map's compact descriptors (the index's projection is linear), so a million-place map
needs no million full descriptors. The real frames sit
at a random place among them. The baseline is the 200-frame day_left map alone.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import torch
from torch.nn import functional as F

from deepseqslam_ros.backbones import Backbone
from deepseqslam_ros.checkpoint import PlaceMap, load_checkpoint
from deepseqslam_ros.core import INDEX_SEARCH, INDEX_SEARCH_HELP, Localizer, MatchConfig
from deepseqslam_ros.descriptors import describe_traversal
from deepseqslam_ros.index import PlaceIndex, compact_projection
from deepseqslam_ros.model import Standardiser, change_ratio, frame_change
from deepseqslam_ros.train import train
from deepseqslam_ros.traversal import data_root, gardens_point_root, load_traversal

TOLERANCE = 2


class Distractors:
    """Synthetic routes with the statistics of real ones: a real route's frames in whitened principal
    coordinates, each coordinate moved to another of like variance with a random sign, coloured back.
    Mean, covariance and the spread of frame-to-frame change are the real ones; the views are new."""

    def __init__(self, runs: list[torch.Tensor], index: PlaceIndex, seed: int = 0):
        frames = torch.cat(runs)
        self.mean = frames.mean(0)
        _, s, v = torch.linalg.svd(frames - self.mean, full_matrices=False)
        rank = int((s > 1e-4 * s[0]).sum())
        self.scale = s[:rank] / (len(frames) - 1) ** 0.5
        self.whitened = [(r - self.mean) @ v[:rank].T / self.scale for r in runs]   # per route: (n, rank)
        self.colour = (self.scale[:, None] * v[:rank]) @ index.projection             # (rank, dim)
        self.offset = self.mean @ index.projection
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, n: int) -> torch.Tensor:
        """n frames along one synthetic route: (n, dim) unit-norm float16. The route is consecutive
        pieces of real routes, each piece with its own new coordinates, so no two frames repeat."""
        parts, total, rank = [], 0, len(self.scale)
        while total < n:
            route = self.whitened[int(torch.randint(len(self.whitened), (1,), generator=self.generator))]
            start = int(torch.randint(len(route), (1,), generator=self.generator))
            piece = route[start:start + n - total]
            # coordinates change places only with ones of like variance (blocks of 8), random signs
            order = torch.cat([first + torch.randperm(min(8, rank - first), generator=self.generator)
                               for first in range(0, rank, 8)])
            sign = torch.randint(0, 2, (rank,), generator=self.generator) * 2.0 - 1
            parts.append(piece[:, order] * sign)
            total += len(piece)
        return F.normalize(self.offset + torch.cat(parts) @ self.colour, dim=-1).half()


def build_map(size: int, real: torch.Tensor, others: torch.Tensor, distractors: Distractors,
              rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """(size, dim) compact map: other traversals' frames, synthetic routes of 200-2000 frames, and the
    real frames at a random route boundary; and where the real frames start."""
    parts, total = [others[:max(0, size - len(real))]], min(len(others), max(0, size - len(real)))
    while total < size - len(real):
        n = int(min(rng.integers(200, 2000), size - len(real) - total))
        parts.append(distractors(n))
        total += n
    cut = int(rng.integers(0, len(parts) + 1))
    offset = sum(len(p) for p in parts[:cut])
    return torch.cat([*parts[:cut], real, *parts[cut:]]), offset


def measure(localizer: Localizer, query: torch.Tensor, offset: int, exact_k: int) -> dict:
    """Drive the query through a fresh session: latency per keyframe, recall@1, index recall@K of
    each index (descriptors; window embeddings: `index_recall_window`), and how often the newest
    keyframe's retrieval holds its true place (within the tolerance): by its descriptor, and by its
    window's embedding (over the keyframes that scanned each index)."""
    session = localizer.session()
    latency, correct, index_recall, retrieved, by_window, window_recall = [], [], [], [], [], []
    compact = localizer.index.compact.values.float()
    embeddings = localizer.map_embeddings.float() if localizer.embeds else None
    for i, descriptor in enumerate(query):
        keyframes = session.keyframes
        start = time.perf_counter()
        answer = session.step(descriptor, None, float(i))
        elapsed = time.perf_counter() - start
        if session.keyframes > keyframes:
            latency.append(elapsed * 1e3)
        if answer is None:
            continue
        correct.append(abs(answer.place - offset - i) <= TOLERANCE)
        newest = session.window[-1]
        if newest.hits is not None:
            exact = (compact @ newest.compact).topk(exact_k).indices
            index_recall.append(len(set(newest.hits.tolist()) & set(exact.tolist())) / exact_k)
            retrieved.append(bool(((newest.hits - offset - i).abs() <= TOLERANCE).any()))
        if newest.window_hits is not None:
            by_window.append(bool(((newest.window_hits - offset - i).abs() <= TOLERANCE).any()))
            exact = (embeddings @ newest.embedding.float()).topk(exact_k).indices
            window_recall.append(len(set(newest.window_hits.tolist()) & set(exact.tolist())) / exact_k)
    mean = lambda values: float(np.mean(values)) if values else None   # noqa: E731
    return {'p50_ms': float(np.percentile(latency, 50)), 'p95_ms': float(np.percentile(latency, 95)),
            'recall@1': float(np.mean(correct)), 'index_recall': mean(index_recall),
            'index_recall_window': mean(window_recall),
            'true_retrieved': mean(retrieved), 'true_retrieved_by_window': mean(by_window)}


def bytes_per_place(localizer: Localizer) -> float:
    """The map's memory: compact descriptors and window embeddings (float16, in their indexes), the
    quantisers' codes, positions, stamps and names."""
    total, n = 0, len(localizer.index)
    for index in (localizer.index, localizer.embedding_index) if localizer.embeds else (localizer.index,):
        total += index.compact.values.nbytes + (0 if index.codes is None else faiss.serialize_index(index.codes).nbytes)
    total += localizer.map_stamps.nbytes + sum(sys.getsizeof(name) for name in localizer.map_names) + 8 * n
    if localizer.map_positions is not None:
        total += localizer.map_positions.nbytes
    return total / n


def drive_online(ckpt, routes: dict[str, tuple[str, torch.Tensor]], keyframes: int, match: MatchConfig,
                 device: str = 'cpu') -> list[dict]:
    """An online map driven for `keyframes` keyframes: the routes' frames over and over (fresh noise
    each pass), so every place is revisited. Per tenth: latency (p50, p95, worst), memory, map size, and
    how many answers are confident revisits of the right place (same place name, within the tolerance), and
    how many loop closures (one event per revisit, what a pose graph links) link the right place."""
    localizer = Localizer(ckpt, device, match, online=True)
    session = localizer.session()
    generator = torch.Generator().manual_seed(0)
    names: list[tuple[str, int]] = []   # per map frame: (place family, index)
    chunk, latency, stamp, rows = max(1, keyframes // 10), [], 0.0, []
    right = confident = closures = closures_right = 0
    print(f'{"keyframes":>9} {"map":>7} {"p50 ms":>7} {"p95 ms":>7} {"max ms":>7} {"RSS MB":>7} {"confident":>9} '
          f'{"right":>6} {"loops":>6} {"right":>6}')
    while session.keyframes < keyframes:
        for family, descriptors in routes.values():
            noise = 0.05 * ckpt.std * torch.randn(descriptors.shape, generator=generator)
            for i, descriptor in enumerate(descriptors + noise):
                stamp += 0.1
                before, start = len(localizer.map_names), time.perf_counter()
                answer = session.step(descriptor, None, stamp)
                if len(localizer.map_names) > before:
                    latency.append((time.perf_counter() - start) * 1e3)
                    names.append((family, i))
                if answer is not None and answer.confident:
                    place = names[answer.place]
                    confident += 1
                    hit = place[0] == family and abs(place[1] - i) <= TOLERANCE
                    right += hit
                    if answer.loop_closure is not None:
                        closures += 1
                        closures_right += hit
                if len(latency) and len(latency) % chunk == 0 and len(localizer.map_names) > before:
                    recent = latency[-chunk:]
                    rows.append({'map_frames': len(localizer.map_names), 'p50_ms': float(np.percentile(recent, 50)),
                                 'p95_ms': float(np.percentile(recent, 95)), 'max_ms': max(recent),
                                 'compact': localizer.compact,
                                 'rss_mb': int(Path('/proc/self/statm').read_text().split()[1]) * 4096 / 2 ** 20,
                                 'confident': confident, 'right': right, 'loop_closures': closures,
                                 'loop_closures_right': closures_right})
                    print(f'{len(latency):>9} {len(localizer.map_names):>7} {rows[-1]["p50_ms"]:>7.1f} '
                          f'{rows[-1]["p95_ms"]:>7.1f} {rows[-1]["max_ms"]:>7.0f} {rows[-1]["rss_mb"]:>7.0f} '
                          f'{confident:>9} {right:>6} {closures:>6} {closures_right:>6}', flush=True)
                if session.keyframes >= keyframes:
                    return rows
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='10000,100000,1000000')
    parser.add_argument('--checkpoint', help='day_left map (default: trained here on day_left and day_right; '
                                             'its embedding retrieves places)')
    parser.add_argument('--no-nordland', action='store_true', help='synthetic distractors only')
    parser.add_argument('--online', type=int, default=0, help='drive an online map for this many keyframes instead')
    parser.add_argument('--tracking-scan-every', type=int, default=MatchConfig.tracking_scan_every,
                        help='while tracking, the indexes are scanned only every Nth keyframe; 1 = every keyframe')
    parser.add_argument('--index-search', choices=INDEX_SEARCH, default=MatchConfig.index_search,
                        help=INDEX_SEARCH_HELP)
    parser.add_argument('--device', default='cpu', help='cpu, cuda or auto')
    parser.add_argument('--seed', type=int, default=0, help='another map: other distractors, real frames elsewhere')
    parser.add_argument('--query', default='night_right', choices=('night_right', 'day_right'),
                        help='the Gardens Point query traversal (day_right: the validation pair); --online: '
                             'the route driven after day_left')
    parser.add_argument('--json')
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = gardens_point_root()
    backbone = Backbone('mobilenet_v2')
    path = Path(args.checkpoint or 'runs/bench_scale_gp.pt')
    if not path.is_file():   # the embedding learns day_right's views of day_left's places
        train([load_traversal(root / 'day_left'), load_traversal(root / 'day_right')], path, backbone, device='cpu',
              progress=False)
    ckpt = load_checkpoint(path)
    reference = Standardiser(ckpt.mean, ckpt.std).reference
    query = describe_traversal(backbone, load_traversal(root / args.query), progress=False)
    match = MatchConfig(index_search=args.index_search, tracking_scan_every=args.tracking_scan_every)
    index = PlaceIndex(ckpt.config.compact_dim, compact_projection(ckpt.config.descriptor_dim, ckpt.config.compact_dim))
    real = reference(describe_traversal(backbone, load_traversal(root / 'day_left'), progress=False))
    change = frame_change(real)   # the maps' calibrations are the route's, as a trained map's are
    ratio = change_ratio(real, change)
    runs = [real, reference(describe_traversal(backbone, load_traversal(root / 'day_right'), progress=False))]
    nordland = data_root() / 'nordland_64x32_part1'
    if not args.no_nordland and nordland.is_dir():
        runs += [reference(describe_traversal(backbone, load_traversal(nordland / s), progress=False))
                 for s in ('summer', 'winter')]
    others = torch.cat([torch.zeros(0, ckpt.config.compact_dim).half(), *(index.project(r).half() for r in runs[2:])])
    if args.online:
        raw = {name: ('gardens_point', describe_traversal(backbone, load_traversal(root / name), progress=False))
               for name in ('day_left', args.query)}
        if not args.no_nordland and nordland.is_dir():
            raw.update({s: ('nordland', describe_traversal(backbone, load_traversal(nordland / s), progress=False))
                        for s in ('summer', 'winter')})
        rows = drive_online(ckpt, raw, args.online, match, args.device)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        return 0
    distractors = Distractors(runs[:2], index, args.seed)
    print(f'distractors: {len(others)} real frames of other routes, the rest synthetic', flush=True)

    whole = measure(Localizer(ckpt, args.device, match), query, 0, 25)
    print(f'baseline, the 200-frame map alone: recall@1 {whole["recall@1"]:.3f}, p50 {whole["p50_ms"]:.1f} ms',
          flush=True)
    rows, rng = [], np.random.default_rng(args.seed)
    for size in [int(s) for s in args.sizes.split(',')]:
        start = time.perf_counter()
        compact, offset = build_map(size, index.project(real).half(), others, distractors, rng)
        places = PlaceMap(compact, None, torch.arange(size, dtype=torch.float64),
                          [f'frame/{i}' for i in range(size)], torch.zeros(0, ckpt.config.hidden), compact=True,
                          change=change, change_ratio=ratio)
        localizer = Localizer(replace(ckpt, places=places), args.device, match)
        if localizer.embeds:
            _ = localizer.embedding_index   # the places' window embeddings, made from the compact map
        built = time.perf_counter() - start
        row = {'places': size, **measure(localizer, query, offset, match.retrieval_k),
               'bytes_per_place': bytes_per_place(localizer), 'build_s': built,
               'whole_map_recall@1': whole['recall@1']}
        rows.append(row)
        print(f'{size:>8} places: p50 {row["p50_ms"]:.1f} ms, p95 {row["p95_ms"]:.1f} ms, '
              f'{row["bytes_per_place"]:.0f} B/place, recall@1 {row["recall@1"]:.3f} '
              f'(the 200-frame map alone {whole["recall@1"]:.3f}), index recall {row["index_recall"]:.3f} '
              f'(window embeddings: {row["index_recall_window"] or 0:.3f}), '
              f'true place retrieved {row["true_retrieved"]:.3f} by descriptor, '
              f'{row["true_retrieved_by_window"] or 0:.3f} by window embedding, '
              f'built in {built:.0f} s', flush=True)
        del localizer, places, compact
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
