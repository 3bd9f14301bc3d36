"""Cases with a dynamic (symbolic) input dimension: converters whose arguments are sizes computed from it, as
library models write them (DeBERTa-v2 repeats its relative-position projections `batch * heads // heads`
times; Swin pads its feature map up to a multiple of its window), and pooling over a dynamic image size (ResNet's
stem max pool, global average pools, SE gates). The example input is the size torch.export traces with; the
generated code computes the rest, and the zoo (benchmarks/zoo_models.py) checks these at several sizes."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.native_op_cases.base import A, OpCase

BATCH = {"x": {0: "batch"}}
IMAGE = {"x": {2: "height", 3: "width"}}
WAVE = {"x": {0: "batch", 1: "time"}}


class RepeatByBatch(nn.Module):
    """A tensor of batch 1 repeated along the batch (a symbolic count), and along a new leading axis. (One named
    input: torch.export's dynamic shapes do not fit Fn's *args.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x[:1] * 2.0
        return x + first.repeat(x.size(0) // 1, 1, 1) + first.repeat(1, x.size(0), 1, 1).sum(1) * 0.5


class PadToWindow(nn.Module):
    """Swin's maybe_pad: zero-pad height and width up to a multiple of 4 (pads computed from the size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_w, pad_h = (4 - x.shape[3] % 4) % 4, (4 - x.shape[2] % 4) % 4
        return F.pad(x, (0, pad_w, 1, pad_h), value=0.5) * 2.0


class DynamicPools(nn.Module):
    """Pooling over a dynamic image size, each pool reduced to one number per channel: max and average pooling
    in every ceil_mode / count_include_pad combination (odd sides: ceil_mode adds a partial last window), global
    adaptive pooling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pools = [F.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 2), F.avg_pool2d(x, 3, 2, 1),
                 F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), F.avg_pool2d(x, 2, 2, divisor_override=3),
                 F.adaptive_max_pool2d(x, 1), F.max_pool2d(x, 2, 2, ceil_mode=True),
                 F.max_pool2d(x, 3, 2, 1, ceil_mode=True), F.avg_pool2d(x, 2, 2, ceil_mode=True),
                 F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                 F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), F.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
                 F.avg_pool2d(x, 3, 2, ceil_mode=True, divisor_override=4),
                 F.avg_pool1d(x.flatten(2), 3, 2, 1, ceil_mode=True, count_include_pad=False)[:, :, None]]
        flat = F.adaptive_avg_pool1d(x.flatten(2), 1)[..., 0]  # AdaptiveAvgPool1d(1), as Swin's pooler
        return sum(p.mean((2, 3)) * (i + 1) for i, p in enumerate(pools)) + F.adaptive_avg_pool2d(x, (1, 1))[
            ..., 0, 0] + flat


class ResizeToFeatureMap(nn.Module):
    """SegFormer's decode head: a coarse map resized (bilinear) to a finer map's dynamic size, plus a nearest
    2x upsampling, over a dynamic image size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse = F.avg_pool2d(x, 2)
        fine = F.interpolate(coarse, size=x.shape[2:], mode="bilinear", align_corners=False)
        return fine + F.interpolate(coarse, scale_factor=2.0, mode="nearest")[:, :, :x.shape[2] // 2 * 2,
                                                                              :x.shape[3] // 2 * 2].mean()


class WaveConv(nn.Module):
    """Wav2Vec2's feature encoder start: a (batch, time) waveform, both dynamic, unsqueezed to one channel for a
    strided conv1d (the NWC relayout reshapes over two dynamic axes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 5, stride=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x[:, None]))


class WarpBatch(nn.Module):
    """A spatial transformer's warp over a dynamic batch: a per-sample affine theta from the input's mean,
    F.affine_grid and F.grid_sample (bilinear, border padding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3))
        theta = torch.stack([torch.stack([1.0 + 0 * m, 0.2 * m, 0.1 + m], -1),
                             torch.stack([-0.1 * m, 0.9 + 0 * m, m], -1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


CASES = [
    OpCase("grid-sample-dynamic-batch", WarpBatch, [(3, 2, 6, 5)],
           (A + "grid_sampler_2d.default", A + "affine_grid_generator.default"), dynamic=BATCH),
    OpCase("relayout-two-dynamic-axes", WaveConv, [(2, 50)], (A + "conv1d.default",), dynamic=WAVE),
    OpCase("resize-to-dynamic-size", ResizeToFeatureMap, [(1, 4, 13, 10)],
           (A + "upsample_bilinear2d.vec", A + "upsample_nearest2d.vec"), dynamic=IMAGE),
    OpCase("pad-symbolic-amounts", PadToWindow, [(1, 3, 9, 6)], (A + "constant_pad_nd.default",), dynamic=IMAGE),
    OpCase("pools-over-dynamic-size", DynamicPools, [(2, 4, 13, 10)],
           (A + "max_pool2d.default", A + "avg_pool2d.default", A + "adaptive_max_pool2d.default",
            A + "adaptive_avg_pool2d.default", A + "adaptive_avg_pool1d.default"), dynamic=IMAGE),
    OpCase("repeat-symbolic-count", RepeatByBatch, [(3, 4, 5)], (A + "repeat.default",), dynamic=BATCH),
]
