"""Transposed convolution cases beyond the core table. Stride == kernel (non-overlapping windows, the U-Net
up-sampling step) becomes 1x1 convolutions + Reshape + ConcatV2, with no Transpose: with and without bias, k = 2
and 3, rectangular kernels, odd input sizes, batch > 1, a weight computed in the graph. Other geometries keep
tf.nn.conv2d_transpose (padding, stride != kernel)."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from tests.native_op_cases.base import A, Fn, OpCase

CT = A + "conv_transpose2d.input"

CASES = [
    # stride == kernel: one 1x1 conv per window row, rows concatenated
    OpCase("conv-transpose2d-k2s2-bias", lambda: nn.ConvTranspose2d(6, 4, 2, stride=2), [(2, 6, 5, 7)], (CT,),
           max_transposes=0),
    OpCase("conv-transpose2d-k2s2-no-bias", lambda: nn.ConvTranspose2d(6, 4, 2, stride=2, bias=False),
           [(1, 6, 3, 4)], (CT,), max_transposes=0),
    OpCase("conv-transpose2d-k3s3-odd", lambda: nn.ConvTranspose2d(5, 3, 3, stride=3), [(2, 5, 7, 5)], (CT,),
           max_transposes=0),
    OpCase("conv-transpose2d-k1s1", lambda: nn.ConvTranspose2d(4, 3, 1), [(1, 4, 5, 3)], (CT,), max_transposes=0),
    OpCase("conv-transpose2d-rect-k21s21", lambda: nn.ConvTranspose2d(4, 3, (2, 1), stride=(2, 1)), [(1, 4, 5, 3)],
           (CT,), max_transposes=0),
    OpCase("conv-transpose2d-rect-k13s13", lambda: nn.ConvTranspose2d(4, 3, (1, 3), stride=(1, 3)), [(2, 4, 3, 5)],
           (CT,), max_transposes=0),
    OpCase("conv-transpose2d-rect-k32s32", lambda: nn.ConvTranspose2d(4, 5, (3, 2), stride=(3, 2)),
           [(1, 4, 3, 5)], (CT,), max_transposes=0),
    OpCase("conv-transpose2d-k2s2-computed-weight",
           lambda: Fn(lambda x, w: F.conv_transpose2d(x, w * 0.5, stride=2)), [(1, 4, 3, 5), (4, 3, 2, 2)], (CT,),
           layouts={"in0": "nhwc", "in1": "source"}),
    # other geometries: tf.nn.conv2d_transpose
    OpCase("conv-transpose2d-k2s2-padded", lambda: nn.ConvTranspose2d(4, 3, 2, stride=2, padding=1),
           [(1, 4, 5, 5)], (CT,)),
    OpCase("conv-transpose2d-k3s2-odd", lambda: nn.ConvTranspose2d(4, 3, 3, stride=2), [(1, 4, 5, 7)], (CT,)),
]
