"""Native route: pixel_shuffle right after a conv2d (ESPCN's last step) becomes one conv per output row + Reshape +
ConcatV2 -- not the channel GatherV2 + DepthToSpace of a pixel_shuffle on its own (both slow kernels in TF.js
wasm); a conv whose output is read elsewhere too keeps that form. The op-by-op numbers (PyTorch vs TF vs TF.js
wasm) are the conv-pixel_shuffle cases in tests/test_native_ops.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bridge.native import rebuild_tf
from bridge.native import weights as W


class Shared(nn.Module):
    """A conv whose output feeds pixel_shuffle and a mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return F.pixel_shuffle(y, 2) + y.mean()


@pytest.mark.parametrize("module,rows_form", [
    (nn.Sequential(nn.Conv2d(3, 27, 3, padding=1), nn.Tanh(), nn.Conv2d(27, 12, 3, padding=1), nn.PixelShuffle(2)),
     True),
    (Shared(), False),
])
def test_conv_then_pixel_shuffle_form(tmp_path: Path, module: nn.Module, rows_form: bool) -> None:
    torch.manual_seed(0)
    module = module.eval()
    x = torch.randn(2, 3, 6, 5)
    result = rebuild_tf(module, [x], tmp_path, input_names=["x"], input_layouts={"x": "nchw"})
    ops = result.tf_ops
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(result.run_torch_layout(x.numpy())[0], expected, atol=1e-5)
    if rows_form:
        assert not {"GatherV2", "DepthToSpace"} & set(ops) and ops.get("Conv2D", 0) == 1 + 2, ops
        assert "shuffle_rows_2" in (tmp_path / "tf_model.py").read_text()
    else:
        assert ops.get("GatherV2") == 1 and ops.get("DepthToSpace") == 1, ops


@pytest.mark.parametrize("r", [2, 3])
def test_shuffle_rows_match_pixel_shuffle(r: int) -> None:
    """The weight transforms alone: r row convolutions, each reshaped to a row of pixels, then concatenated; the
    must-fail twin reads the row and column phases the other way round (i and j swapped)."""
    import tensorflow as tf

    torch.manual_seed(0)
    x, w, b = torch.randn(2, 4, 5, 3), torch.randn(6 * r * r, 4, 3, 3), torch.randn(6 * r * r)
    expected = F.pixel_shuffle(F.conv2d(x, w, b, padding=1), r).numpy()
    x_nhwc = x.numpy().transpose(0, 2, 3, 1)

    def rows_form(filters: np.ndarray, biases: np.ndarray) -> np.ndarray:
        rows = [tf.reshape(tf.nn.conv2d(x_nhwc, f, 1, "SAME") + bias, [2, 5, 1, -1]) for f, bias in
                zip(filters, biases)]
        return tf.reshape(tf.concat(rows, 2), [2, 5 * r, 3 * r, 6]).numpy().transpose(0, 3, 1, 2)

    got = rows_form(W.oihw_to_shuffle_rows(w.numpy(), r), W.shuffle_rows_bias(b.numpy(), r))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    swapped = w.numpy().reshape(6, r, r, 4, 3, 3).transpose(0, 2, 1, 3, 4, 5).reshape(6 * r * r, 4, 3, 3)
    bias_swapped = b.numpy().reshape(6, r, r).transpose(0, 2, 1).reshape(-1)
    wrong = rows_form(W.oihw_to_shuffle_rows(swapped, r), W.shuffle_rows_bias(bias_swapped, r))
    assert not np.allclose(wrong, expected, atol=1e-3)
