"""Sampling cases: F.grid_sample in each interpolation mode and align_corners setting, every padding mode in each
case (concatenated on channels), on grids reaching well outside [-1, 1] (so zeros, border and reflection all
matter, reflection over several folds); F.affine_grid alone and feeding grid_sample; a small spatial transformer
whose theta comes from a localisation net."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.native_op_cases.base import A, Fn, OpCase

GS = A + "grid_sampler_2d.default"
AG = A + "affine_grid_generator.default"
IMAGE, GRID = (2, 3, 6, 7), (2, 5, 4, 2)
PADDINGS = ("zeros", "border", "reflection")


def every_padding(mode: str, align: bool) -> nn.Module:
    """grid_sample of the image at 1.8x the grid (N(0,1) values: many beyond the edges), once per padding mode."""
    def sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.grid_sample(x, grid * 1.8, mode=mode, padding_mode=p, align_corners=align)
                          for p in PADDINGS], 1)
    return Fn(sample)


def affine_then_sample(align: bool) -> nn.Module:
    def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, [2, 3, 5, 4], align_corners=align)
        return F.grid_sample(x, grid, padding_mode="border", align_corners=align)
    return Fn(warp)


class SpatialTransformer(nn.Module):
    """Localisation net -> theta (near the identity) -> affine_grid -> bilinear grid_sample."""

    def __init__(self) -> None:
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                   nn.Linear(4, 6))
        with torch.no_grad():
            self.local[-1].weight.mul_(0.3)
            self.local[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.local(x).view(-1, 2, 3)
        return F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)


_GRID_SOURCE = {"in1": "source"}  # the grid is [N, H_out, W_out, 2], not an image

CASES = [
    OpCase("grid_sample-bilinear-every-padding", lambda: every_padding("bilinear", False), [IMAGE, GRID], (GS,),
           layouts=_GRID_SOURCE, max_transposes=0),
    OpCase("grid_sample-bilinear-every-padding-corners", lambda: every_padding("bilinear", True), [IMAGE, GRID],
           (GS,), layouts=_GRID_SOURCE, max_transposes=0),
    OpCase("grid_sample-nearest-every-padding", lambda: every_padding("nearest", False), [IMAGE, GRID], (GS,),
           layouts=_GRID_SOURCE, max_transposes=0),
    OpCase("grid_sample-nearest-every-padding-corners", lambda: every_padding("nearest", True), [IMAGE, GRID],
           (GS,), layouts=_GRID_SOURCE, max_transposes=0),
    OpCase("affine_grid", lambda: Fn(lambda theta: F.affine_grid(theta, [2, 3, 5, 4], align_corners=False)
                                     + F.affine_grid(theta * 0.5, [2, 3, 5, 4], align_corners=True)),
           [(2, 2, 3)], (AG,), max_transposes=0),
    OpCase("affine_grid-then-grid_sample", lambda: affine_then_sample(False), [IMAGE, (2, 2, 3)], (AG, GS),
           max_transposes=0),
    OpCase("affine_grid-then-grid_sample-corners", lambda: affine_then_sample(True), [IMAGE, (2, 2, 3)], (AG, GS),
           max_transposes=0),
    OpCase("spatial-transformer", SpatialTransformer, [(1, 3, 8, 8)], (AG, GS), max_transposes=0),
]
