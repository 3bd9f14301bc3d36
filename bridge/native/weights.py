"""Named weight layout transforms, PyTorch -> TensorFlow. Each is a pure numpy function, tested on its own
(tests/test_native_ops.py) and named in the generated file next to the variable it produced."""

from __future__ import annotations

import numpy as np


def oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    """Conv2d kernel [out, in/groups, kH, kW] -> tf.nn.conv2d filter [kH, kW, in/groups, out]."""
    return w.transpose(2, 3, 1, 0)


def oiw_to_wio(w: np.ndarray) -> np.ndarray:
    """Conv1d kernel [out, in/groups, kW] -> tf.nn.conv1d filter [kW, in/groups, out]."""
    return w.transpose(2, 1, 0)


def depthwise_filter(w: np.ndarray, in_channels: int) -> np.ndarray:
    """Depthwise Conv2d kernel [C*M, 1, kH, kW] -> tf.nn.depthwise_conv2d filter [kH, kW, C, M]."""
    raise_if(w.shape[1] != 1 or w.shape[0] % in_channels, "not a depthwise kernel")
    out, _, kh, kw = w.shape
    return w.reshape(in_channels, out // in_channels, kh, kw).transpose(2, 3, 0, 1)


def iohw_to_hwoi(w: np.ndarray) -> np.ndarray:
    """ConvTranspose2d kernel [in, out, kH, kW] -> tf.nn.conv2d_transpose filter [kH, kW, out, in]."""
    return w.transpose(2, 3, 1, 0)


def linear_to_in_out(w: np.ndarray) -> np.ndarray:
    """Linear weight [out, in] -> matmul right operand [in, out]."""
    return w.T


def permute_rows(w: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows of an [in, out] matrix reordered so row j holds source feature order[j] (the input is stored
    flattened from a channels-last map)."""
    return w[np.asarray(order)]


def raise_if(condition: bool, message: str) -> None:
    """ValueError with `message` when `condition` holds."""
    if condition:
        raise ValueError(message)
