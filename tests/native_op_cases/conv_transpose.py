"""Transposed convolution cases beyond the core table. Stride == kernel (non-overlapping windows, the U-Net
up-sampling step) becomes 1x1 convolutions + Reshape + ConcatV2, with no Transpose: with and without bias, k = 2
and 3, rectangular kernels, odd input sizes, batch > 1, a weight computed in the graph. Geometries whose output
phases are equal in size (a DCGAN's k4 s2 p1, k3 s2 p1 with output_padding 1, k5 s3 p1, padded k2 s2) become one
explicitly padded convolution per output row phase + Reshape + ConcatV2. Others keep tf.nn.conv2d_transpose
(an odd output size for stride 2, a computed weight)."""

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
    # equal output phases: one convolution per output row phase
    OpCase("conv-transpose2d-k2s2-padded", lambda: nn.ConvTranspose2d(4, 3, 2, stride=2, padding=1),
           [(1, 4, 5, 5)], (CT,), max_transposes=0),
    OpCase("conv-transpose2d-k4s2p1-dcgan", lambda: nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1),
           [(2, 6, 4, 5)], (CT,), max_transposes=0),
    OpCase("conv-transpose2d-k3s2p1-op1-no-bias", lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1,
                                                                              output_padding=1, bias=False),
           [(1, 4, 5, 4)], (CT,), max_transposes=0),
    OpCase("conv-transpose2d-k5s3p1", lambda: nn.ConvTranspose2d(3, 5, 5, stride=3, padding=1), [(1, 3, 4, 3)],
           (CT,), max_transposes=0),
    OpCase("conv-transpose2d-rect-k43s21p11", lambda: nn.ConvTranspose2d(4, 3, (4, 3), stride=(2, 1),
                                                                          padding=(1, 1)),
           [(1, 4, 5, 6)], (CT,), max_transposes=0),
    # other geometries: tf.nn.conv2d_transpose
    OpCase("conv-transpose2d-k3s2-odd", lambda: nn.ConvTranspose2d(4, 3, 3, stride=2), [(1, 4, 5, 7)], (CT,)),
]
