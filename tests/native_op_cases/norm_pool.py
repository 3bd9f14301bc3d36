"""Normalisation and pooling cases beyond the core table: instance norm, batch norm on batch statistics, 1-D pools
(kept whole, NWC), max pooling in its with-indices form, dilated max pooling, stride over kernel, adaptive max
pooling, non-divisible adaptive pooling; average pooling in every ceil_mode x count_include_pad combination (two
combinations with the same output shape share a case, concatenated on channels), divisor_override."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.native_op_cases.base import IMG, A, Fn, OpCase

SEQ = (2, 4, 10)
AP2 = A + "avg_pool2d.default"
AP1 = A + "avg_pool1d.default"  # [N, C, L] for the 1-D variants: NCW input, NWC inside (one transpose in, one out)


def instance_norm(channels: int, kind: type[nn.Module] = nn.InstanceNorm2d, **kw: object) -> nn.Module:
    """An instance norm with non-trivial affine parameters and running statistics (when it has them)."""
    layer = kind(channels, **kw)
    with torch.no_grad():
        if layer.weight is not None:
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.5, 0.5)
        if layer.running_mean is not None:
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2.0)
    return layer


def include_and_exclude(pool: Callable[..., torch.Tensor], *args: int, **kw: bool) -> nn.Module:
    """The pool with count_include_pad True and False, concatenated on channels (same output shape)."""
    return Fn(lambda x: torch.cat([pool(x, *args, count_include_pad=True, **kw),
                                   pool(x, *args, count_include_pad=False, **kw)], 1))


IN = A + "instance_norm.default"
MPI = A + "max_pool2d_with_indices.default"
AAP = A + "adaptive_avg_pool2d.default"
AMP = A + "adaptive_max_pool2d.default"

CASES = [
    # normalisation
    OpCase("instance_norm2d", lambda: instance_norm(4), [IMG], (IN,), max_transposes=0),
    OpCase("instance_norm2d-affine", lambda: instance_norm(4, affine=True), [IMG], (IN,), max_transposes=0),
    OpCase("instance_norm1d-affine", lambda: instance_norm(4, nn.InstanceNorm1d, affine=True), [SEQ], (IN,),
           max_transposes=2),
    OpCase("instance_norm2d-running-stats", lambda: instance_norm(4, affine=True, track_running_stats=True), [IMG],
           (IN,), max_transposes=0),
    OpCase("batch_norm2d-batch-stats", lambda: nn.BatchNorm2d(4, track_running_stats=False), [IMG],
           (A + "_native_batch_norm_legit.no_stats",), max_transposes=0),
    OpCase("batch_norm1d-batch-stats", lambda: nn.BatchNorm1d(5, track_running_stats=False), [(3, 5)],
           (A + "_native_batch_norm_legit.no_stats",)),
    # max pooling: 1-D, with-indices forms (indices unused), dilation, stride > kernel (SAME would fit: explicit)
    OpCase("max_pool1d", lambda: nn.MaxPool1d(2), [SEQ], (A + "max_pool1d.default",), max_transposes=2),
    OpCase("max_pool1d-k3s2p1-ceil", lambda: nn.MaxPool1d(3, 2, 1, ceil_mode=True), [SEQ],
           (A + "max_pool1d.default",)),
    OpCase("max_pool1d-indices-unused", lambda: Fn(lambda x: F.max_pool1d(x, 3, 2, return_indices=True)[0]),
           [SEQ], (A + "max_pool1d_with_indices.default",), max_transposes=2),
    OpCase("max_pool2d-indices-unused", lambda: Fn(lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)[0]),
           [IMG], (MPI,), max_transposes=0),
    OpCase("max_pool2d-dilated", lambda: nn.MaxPool2d(3, 1, padding=1, dilation=2), [IMG], (A + "max_pool2d.default",),
           max_transposes=0),
    OpCase("max_pool2d-dilated-stride-ceil", lambda: nn.MaxPool2d((2, 3), 2, dilation=(2, 1), ceil_mode=True),
           [(1, 2, 9, 9)], (A + "max_pool2d.default",)),
    OpCase("max_pool1d-dilated", lambda: nn.MaxPool1d(2, 1, dilation=3), [SEQ], (A + "max_pool1d.default",)),
    OpCase("max_pool2d-stride-over-kernel-ceil", lambda: nn.MaxPool2d(2, 3, ceil_mode=True), [(1, 2, 10, 10)],
           (A + "max_pool2d.default",)),
    OpCase("max_pool1d-stride-over-kernel-ceil", lambda: nn.MaxPool1d(2, 3, ceil_mode=True), [SEQ],
           (A + "max_pool1d.default",), max_transposes=2),
    # 1-D average pooling
    OpCase("avg_pool1d", lambda: nn.AvgPool1d(3, 2, 1), [SEQ], (A + "avg_pool1d.default",), max_transposes=2),
    OpCase("avg_pool1d-exclude-pad", lambda: nn.AvgPool1d(3, 1, 1, count_include_pad=False), [SEQ],
           (A + "avg_pool1d.default",), max_transposes=2),
    # adaptive pooling
    OpCase("adaptive_max_pool-global", lambda: nn.AdaptiveMaxPool2d(1), [IMG], (AMP,), max_transposes=0),
    OpCase("adaptive_max_pool-divisible", lambda: nn.AdaptiveMaxPool2d((4, 2)), [IMG], (AMP,), max_transposes=0),
    OpCase("adaptive_max_pool-non-divisible", lambda: nn.AdaptiveMaxPool2d((3, 5)), [IMG], (AMP,), max_transposes=0),
    OpCase("adaptive_avg_pool-non-divisible", lambda: nn.AdaptiveAvgPool2d((3, 5)), [IMG], (AAP,), max_transposes=0),
    OpCase("adaptive_avg_pool-mixed-none", lambda: nn.AdaptiveAvgPool2d((None, 3)), [(2, 4, 8, 6)], (AAP,)),
    OpCase("adaptive_avg_pool-upsample", lambda: nn.AdaptiveAvgPool2d((10, 4)), [IMG], (AAP,)),
    OpCase("adaptive_avg_pool1d", lambda: nn.AdaptiveAvgPool1d(5), [SEQ], (A + "adaptive_avg_pool1d.default",),
           max_transposes=2),
    OpCase("adaptive_avg_pool1d-non-divisible", lambda: nn.AdaptiveAvgPool1d(3), [SEQ],
           (A + "adaptive_avg_pool1d.default",), max_transposes=2),
    OpCase("adaptive_max_pool1d-non-divisible", lambda: nn.AdaptiveMaxPool1d(3), [SEQ],
           (A + "adaptive_max_pool1d.default",), max_transposes=2),
    OpCase("adaptive_max_pool1d-global", lambda: nn.AdaptiveMaxPool1d(1), [SEQ], (A + "adaptive_max_pool1d.default",),
           max_transposes=2),
    # average pooling: both count_include_pad settings per case, ceil_mode on and off, 2-D and 1-D
    OpCase("avg_pool2d-ceil-include-and-exclude", lambda: include_and_exclude(F.avg_pool2d, 3, 2, 1, ceil_mode=True),
           [IMG], (AP2,), max_transposes=0),
    OpCase("avg_pool2d-floor-include-and-exclude", lambda: include_and_exclude(F.avg_pool2d, 3, 2, 1), [IMG], (AP2,),
           max_transposes=0),
    OpCase("avg_pool2d-ceil-odd-no-padding", lambda: nn.AvgPool2d(2, ceil_mode=True), [(1, 2, 7, 9)], (AP2,)),
    OpCase("avg_pool2d-rect-ceil-exclude", lambda: nn.AvgPool2d((3, 2), (2, 1), (1, 0), ceil_mode=True,
                                                                count_include_pad=False), [IMG], (AP2,)),
    OpCase("avg_pool2d-stride-over-kernel-ceil-exclude", lambda: nn.AvgPool2d(2, 3, 1, ceil_mode=True,
                                                                              count_include_pad=False),
           [(1, 2, 10, 10)], (AP2,)),
    OpCase("avg_pool2d-divisor-override", lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, divisor_override=5), [IMG],
           (AP2,)),
    OpCase("avg_pool1d-ceil-include-and-exclude", lambda: include_and_exclude(F.avg_pool1d, 3, 2, 1, ceil_mode=True),
           [SEQ], (AP1,), max_transposes=2),
]
