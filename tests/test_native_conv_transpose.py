"""Native route: a transposed convolution with stride == kernel (the U-Net up-sampling step) becomes one 1x1
convolution per window row + Reshape + ConcatV2 -- not Conv2DBackpropInput (slow on TF.js wasm), nor DepthToSpace
(also slow there), nor a Transpose; its weight and bias keep their state_dict names. The op-by-op numbers (PyTorch
vs TF vs TF.js wasm) are in tests/native_op_cases/conv_transpose.py."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bridge.native import rebuild_tf
from bridge.native import weights as W


class UpBlock(nn.Module):
    """A U-Net level: conv, pool, conv, ConvTranspose2d(k=2, s=2) back up, concat the skip, conv."""

    def __init__(self, cin: int = 3, width: int = 8) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(width, width * 2, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(width * 2, width, 2, 2)
        self.fuse = nn.Conv2d(width * 2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        return self.fuse(torch.cat([self.up(self.mid(F.max_pool2d(skip, 2))), skip], 1))


def _rebuild(module: nn.Module, x: torch.Tensor, out: Path, **kw: object) -> tuple[object, np.ndarray]:
    module = module.eval()
    result = rebuild_tf(module, [x], out, input_names=["x"], input_layouts={"x": "nchw"}, **kw)
    with torch.no_grad():
        expected = module(x).numpy()
    return result, expected


def test_unet_up_step_is_row_convs_and_concat(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 12)
    result, expected = _rebuild(UpBlock(), x, tmp_path)
    ops = result.tf_ops  # type: ignore[attr-defined]
    assert "Conv2DBackpropInput" not in ops and "DepthToSpace" not in ops, ops
    assert ops.get("Conv2D", 0) == 3 + 2, ops  # down, mid, fuse + one per row of the 2x2 window
    assert ops.get("ConcatV2", 0) == 2, ops  # the window rows, the skip
    assert ops.get("Transpose", 0) == 2, ops  # only the NCHW input and output (input_layouts nchw)
    np.testing.assert_allclose(result.run_torch_layout(x.numpy())[0], expected, atol=1e-5)  # type: ignore[attr-defined]
    source = (tmp_path / "tf_model.py").read_text()
    assert 'name="up.weight"' in source and 'name="up.bias"' in source and "row_filters" in source


def test_dynamic_batch_up_step(tmp_path: Path) -> None:
    """The row-conv form needs no static batch (the conv2d_transpose form builds an output shape)."""
    torch.manual_seed(0)
    module = nn.ConvTranspose2d(4, 3, 2, 2).eval()
    result = rebuild_tf(module, [torch.randn(2, 4, 5, 3)], tmp_path, input_names=["x"],
                        dynamic_dims={"x": {0: "batch"}})
    assert "Conv2DBackpropInput" not in result.tf_ops and "ConcatV2" in result.tf_ops
    x = torch.randn(3, 4, 5, 3)
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(result.run_torch_layout(x.numpy())[0], expected, atol=1e-5)


def test_other_geometries_keep_conv2d_transpose(tmp_path: Path) -> None:
    """Output phases of unequal sizes (an odd output size for stride 2) keep tf.nn.conv2d_transpose."""
    for i, module in enumerate([nn.ConvTranspose2d(4, 3, 3, stride=2),
                                nn.ConvTranspose2d(4, 3, 2, stride=2, output_padding=1)]):
        torch.manual_seed(0)
        x = torch.randn(1, 4, 5, 7)
        result, expected = _rebuild(module, x, tmp_path / str(i))
        assert "Conv2DBackpropInput" in result.tf_ops  # type: ignore[attr-defined]
        np.testing.assert_allclose(result.run_torch_layout(x.numpy())[0], expected, atol=1e-5)  # type: ignore


def test_equal_phases_are_row_convs(tmp_path: Path) -> None:
    """A DCGAN's k4 s2 p1 (and k2 s2 p1): one explicitly padded convolution per output phase, reshaped and
    concatenated; no Conv2DBackpropInput, DepthToSpace, Pad or Transpose, and the kernel stored once (no zeros)."""
    for i, module in enumerate([nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1),
                                nn.ConvTranspose2d(4, 3, 2, stride=2, padding=1, bias=False)]):
        torch.manual_seed(0)
        x = torch.randn(2, 4, 5, 6)
        result, expected = _rebuild(module, x, tmp_path / str(i))
        ops = result.tf_ops  # type: ignore[attr-defined]
        assert not {"Conv2DBackpropInput", "DepthToSpace", "Pad"} & set(ops), ops
        assert ops.get("Conv2D", 0) == 4 and ops.get("Transpose", 0) == 2, ops
        np.testing.assert_allclose(result.run_torch_layout(x.numpy())[0], expected, atol=1e-5)  # type: ignore
        assert "phase_1_1" in (tmp_path / str(i) / "tf_model.py").read_text()
        from safetensors.numpy import load_file

        stored = sum(a.size for a in load_file(str(result.weights_path)).values())  # type: ignore[attr-defined]
        assert stored == sum(p.numel() for p in module.parameters()), stored


def _phase_form(x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
                output_padding: tuple[int, int], taps: Callable[[int, int, int], tuple[W.Phase, ...]]
                ) -> np.ndarray | None:
    """What _phase_rows computes, in TF from the weight transforms alone (None: the geometry is not one)."""
    import tensorflow as tf

    n, _, h, wd = x.shape
    axes, pads, grid = [taps(k, s, p) for k, s, p in zip(w.shape[2:], stride, padding)], [], []
    for size, phases, k, s, p, op in zip((h, wd), axes, w.shape[2:], stride, padding, output_padding):
        out = (size - 1) * s - 2 * p + k + op
        pad = [[-ph.start, out // s - 1 + len(ph.taps) - size + ph.start] for ph in phases]
        if out % s or any(not ph.taps for ph in phases):
            return None
        pads.append(pad)
        grid.append(out // s)
    room = max(w.shape[2:]) + max(padding)  # zeros around the input, so any pad or crop is a slice
    x_nhwc = np.pad(x.numpy().transpose(0, 2, 3, 1), [(0, 0), (room, room), (room, room), (0, 0)])
    rows = []
    for a, row in enumerate(axes[0]):
        parts = []
        for b, col in enumerate(axes[1]):
            (top, bottom), (left, right) = pads[0][a], pads[1][b]
            window = x_nhwc[:, room - top:room + h + bottom, room - left:room + wd + right]
            parts.append(tf.nn.conv2d(window, W.iohw_to_phase_filter(w.numpy(), row, col), 1, "VALID"))
        rows.append(tf.reshape(tf.concat(parts, -1), [n, grid[0], 1, -1]))
    return tf.reshape(tf.concat(rows, 2), [n, grid[0] * stride[0], grid[1] * stride[1], w.shape[1]]).numpy(
    ).transpose(0, 3, 1, 2)


PHASE_GEOMETRIES = [  # (kernel, stride, padding, output_padding)
    ((4, 4), (2, 2), (1, 1), (0, 0)), ((3, 3), (2, 2), (1, 1), (1, 1)), ((5, 5), (3, 3), (1, 1), (0, 0)),
    ((4, 3), (2, 1), (1, 1), (0, 0)), ((4, 4), (2, 2), (0, 0), (0, 0)), ((6, 6), (2, 2), (2, 2), (0, 0)),
    ((2, 2), (2, 2), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("kernel,stride,padding,output_padding", PHASE_GEOMETRIES)
def test_phase_filters_match_conv_transpose(kernel: tuple[int, int], stride: tuple[int, int],
                                            padding: tuple[int, int], output_padding: tuple[int, int]) -> None:
    """The phase taps and filters alone reproduce F.conv_transpose2d; the taps of a padding one pixel larger do not
    (the must-fail twin)."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 5, 4), torch.randn(3, 4, *kernel)
    expected = F.conv_transpose2d(x, w, stride=stride, padding=padding, output_padding=output_padding).numpy()
    got = _phase_form(x, w, stride, padding, output_padding, W.phase_taps)
    assert got is not None
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    wrong = _phase_form(x, w, stride, padding, output_padding, lambda k, s, p: W.phase_taps(k, s, p + 1))
    assert wrong is None or wrong.shape != expected.shape or not np.allclose(wrong, expected, atol=1e-3)


def test_row_filters_match_conv_transpose() -> None:
    """The weight transforms alone: kH row convolutions, each reshaped to a row of windows, then concatenated."""
    import tensorflow as tf

    for kh, kw in ((2, 2), (3, 3), (2, 3), (1, 2)):
        x, w, b = torch.randn(2, 4, 5, 3), torch.randn(4, 6, kh, kw), torch.randn(6)
        expected = F.conv_transpose2d(x, w, b, stride=(kh, kw)).numpy()
        x_nhwc = x.numpy().transpose(0, 2, 3, 1)
        rows = [tf.reshape(tf.nn.conv2d(x_nhwc, f, 1, "VALID") + W.tile_channels(b.numpy(), kw), [2, 5, 1, -1])
                for f in W.iohw_to_row_filters(w.numpy())]
        got = tf.reshape(tf.concat(rows, 2), [2, 5 * kh, 3 * kw, 6]).numpy().transpose(0, 3, 1, 2)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
        # must-fail twin: channels out-major (o*kW + b, a plain reshape of [a, in, out, b]) put values in the wrong
        # columns (when kW > 1)
        wrong = w.numpy().transpose(2, 0, 1, 3).reshape(kh, 1, 1, 4, 6 * kw)
        bad = [tf.reshape(tf.nn.conv2d(x_nhwc, f, 1, "VALID") + W.tile_channels(b.numpy(), kw), [2, 5, 1, -1])
               for f in wrong]
        got_bad = tf.reshape(tf.concat(bad, 2), [2, 5 * kh, 3 * kw, 6]).numpy().transpose(0, 3, 1, 2)
        assert kw == 1 or not np.allclose(got_bad, expected, atol=1e-3)
