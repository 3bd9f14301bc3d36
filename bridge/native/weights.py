"""Named weight layout transforms, PyTorch -> TensorFlow. Each is a pure numpy function, tested on its own
(tests/test_native_ops.py) and named in the generated file next to the variable it produced."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    """Conv2d kernel [out, in/groups, kH, kW] -> tf.nn.conv2d filter [kH, kW, in/groups, out]."""
    return w.transpose(2, 3, 1, 0)


def oiw_to_wio(w: np.ndarray) -> np.ndarray:
    """Conv1d kernel [out, in/groups, kW] -> tf.nn.conv1d filter [kW, in/groups, out]."""
    return w.transpose(2, 1, 0)


def oidhw_to_dhwio(w: np.ndarray) -> np.ndarray:
    """Conv3d kernel [out, in/groups, kD, kH, kW] -> tf.nn.conv3d filter [kD, kH, kW, in/groups, out]."""
    return w.transpose(2, 3, 4, 1, 0)


def depthwise_filter_1d(w: np.ndarray, in_channels: int) -> np.ndarray:
    """Depthwise Conv1d kernel [C*M, 1, kW] -> a depthwise 1-D filter [kW, C, M] (Keras DepthwiseConv1D)."""
    raise_if(w.shape[1] != 1 or w.shape[0] % in_channels, "not a depthwise kernel")
    out, _, kw = w.shape
    return w.reshape(in_channels, out // in_channels, kw).transpose(2, 0, 1)


def depthwise_filter(w: np.ndarray, in_channels: int) -> np.ndarray:
    """Depthwise Conv2d kernel [C*M, 1, kH, kW] -> tf.nn.depthwise_conv2d filter [kH, kW, C, M]."""
    raise_if(w.shape[1] != 1 or w.shape[0] % in_channels, "not a depthwise kernel")
    out, _, kh, kw = w.shape
    return w.reshape(in_channels, out // in_channels, kh, kw).transpose(2, 3, 0, 1)


def iohw_to_hwoi(w: np.ndarray) -> np.ndarray:
    """ConvTranspose2d kernel [in, out, kH, kW] -> tf.nn.conv2d_transpose filter [kH, kW, out, in]."""
    return w.transpose(2, 3, 1, 0)


def iohw_to_row_filters(w: np.ndarray) -> np.ndarray:
    """ConvTranspose2d kernel [in, out, kH, kW] with stride == kernel -> kH stacked 1x1 tf.nn.conv2d filters
    [kH, 1, 1, in, kW*out]: filter a gives, at output channel b*out + o, row a, column b, channel o of each
    input pixel's kH x kW output window."""
    cin, cout, kh, kw = w.shape
    return w.transpose(2, 0, 3, 1).reshape(kh, 1, 1, cin, kw * cout)


@dataclass(frozen=True)
class Phase:
    """One output phase a of a transposed convolution along one axis (kernel k, stride s, padding p) as an
    ordinary correlation: out[s q + a] = sum over u of x[q + start + u] * w[taps[u]]."""

    start: int
    taps: tuple[int, ...]  # the kernel tap read at each window position


def phase_taps(kernel: int, stride: int, padding: int) -> tuple[Phase, ...]:
    """The `Phase` of each output phase a along one axis: output y = s q + a gets x[i] w[t] for i s + t = y + p,
    so t = s m + r with r = (a + p) mod s and i = q + (a + p) // s - m, for the m with t < k (none when r >= k).
    Every tap belongs to exactly one phase."""
    phases = []
    for a in range(stride):
        r, c = (a + padding) % stride, (a + padding) // stride
        count = -(-(kernel - r) // stride) if r < kernel else 0
        phases.append(Phase(c - count + 1, tuple(stride * (count - 1 - u) + r for u in range(count))))
    return tuple(phases)


def iohw_to_phase_filter(w: np.ndarray, row: Phase, col: Phase) -> np.ndarray:
    """ConvTranspose2d kernel [in, out, kH, kW] -> the tf.nn.conv2d filter [len(row taps), len(col taps), in, out]
    of one output phase (row phase, column phase): its taps of the kernel, in window order."""
    return np.ascontiguousarray(w[:, :, list(row.taps)][:, :, :, list(col.taps)].transpose(2, 3, 0, 1))


def oihw_to_shuffle_rows(w: np.ndarray, r: int) -> np.ndarray:
    """Conv2d kernel [C*r*r, in, kH, kW] followed by pixel_shuffle(r) -> one tf.nn.conv2d filter per output row
    phase i, [r, kH, kW, in, r*C]: filter i gives, at channel j*C + c, PyTorch's output channel c*r*r + i*r + j
    (the pixel at row phase i, column phase j of channel c)."""
    kh, kw, cin = w.shape[2], w.shape[3], w.shape[1]
    channels = w.shape[0] // (r * r)
    hwio = oihw_to_hwio(w).reshape(kh, kw, cin, channels, r, r)
    return hwio.transpose(4, 0, 1, 2, 5, 3).reshape(r, kh, kw, cin, r * channels)


def shuffle_rows_bias(b: np.ndarray, r: int) -> np.ndarray:
    """The conv bias [C*r*r] of `oihw_to_shuffle_rows`'s filters: [r, r*C], row i for filter i."""
    return b.reshape(-1, r, r).transpose(1, 2, 0).reshape(r, -1)


def tile_channels(b: np.ndarray, reps: int) -> np.ndarray:
    """A per-channel vector [C] repeated `reps` times -> [reps*C] (the bias of `reps` channel groups)."""
    return np.tile(b, reps)


def linear_to_in_out(w: np.ndarray) -> np.ndarray:
    """Linear weight [out, in] -> matmul right operand [in, out]."""
    return w.T


def permute_rows(w: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows of an [in, out] matrix reordered so row j holds source feature order[j] (the input is stored
    flattened from a channels-last map)."""
    return w[np.asarray(order)]


def gru_gates_to_keras(w: np.ndarray) -> np.ndarray:
    """GRU gate blocks along axis 0 from PyTorch's order (r, z, n) to Keras' (z, r, h)."""
    r, z, n = np.split(w, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def gru_kernel_to_keras(w: np.ndarray) -> np.ndarray:
    """GRU weight_ih [3H, in] (or weight_hh [3H, H]) -> Keras GRU kernel [in, 3H] (recurrent_kernel [H, 3H])."""
    return gru_gates_to_keras(w).T


def gru_bias_to_keras(b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """GRU bias_ih and bias_hh [3H] -> a Keras GRU(reset_after=True) bias [2, 3H] (input row, recurrent row)."""
    return np.stack([gru_gates_to_keras(b_ih), gru_gates_to_keras(b_hh)])


def lstm_kernel_to_keras(w: np.ndarray) -> np.ndarray:
    """LSTM weight_ih [4H, in] (or weight_hh [4H, H]) -> Keras LSTM kernel [in, 4H] (recurrent_kernel [H, 4H]);
    both use the gate order i, f, g(c), o, so only the transpose is needed."""
    return w.T


def lstm_bias_to_keras(b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """LSTM bias_ih + bias_hh [4H] -> the single Keras LSTM bias [4H]."""
    return b_ih + b_hh


# Inverses, TensorFlow -> PyTorch: weights trained in TF / TF.js going back into the PyTorch module.

def hwio_to_oihw(w: np.ndarray) -> np.ndarray:
    """Inverse of `oihw_to_hwio`: a conv2d filter [kH, kW, in/groups, out] -> Conv2d kernel [out, in/groups, kH, kW]."""
    return w.transpose(3, 2, 0, 1)


def wio_to_oiw(w: np.ndarray) -> np.ndarray:
    """Inverse of `oiw_to_wio`: a conv1d filter [kW, in/groups, out] -> Conv1d kernel [out, in/groups, kW]."""
    return w.transpose(2, 1, 0)


def depthwise_filter_to_torch(w: np.ndarray) -> np.ndarray:
    """Inverse of `depthwise_filter`: a depthwise filter [kH, kW, C, M] -> Conv2d kernel [C*M, 1, kH, kW]."""
    kh, kw, channels, multiplier = w.shape
    return w.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)


def hwoi_to_iohw(w: np.ndarray) -> np.ndarray:
    """Inverse of `iohw_to_hwoi`: a conv2d_transpose filter [kH, kW, out, in] -> ConvTranspose2d kernel
    [in, out, kH, kW]."""
    return w.transpose(3, 2, 0, 1)


def in_out_to_linear(w: np.ndarray) -> np.ndarray:
    """Inverse of `linear_to_in_out`: a matmul right operand [in, out] -> Linear weight [out, in]."""
    return w.T


def unpermute_rows(w: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Inverse of `permute_rows`: rows put back so row order[j] holds stored row j."""
    back = np.empty_like(w)
    back[np.asarray(order)] = w
    return back


def gru_gates_from_keras(w: np.ndarray) -> np.ndarray:
    """Inverse of `gru_gates_to_keras`: gate blocks along axis 0 from Keras' order (z, r, h) to PyTorch's
    (r, z, n)."""
    z, r, n = np.split(w, 3, axis=0)
    return np.concatenate([r, z, n], axis=0)


def gru_kernel_from_keras(w: np.ndarray) -> np.ndarray:
    """Inverse of `gru_kernel_to_keras`: a Keras GRU kernel [in, 3H] -> weight_ih [3H, in] (or the
    recurrent_kernel [H, 3H] -> weight_hh [3H, H])."""
    return gru_gates_from_keras(w.T)


def gru_bias_from_keras(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `gru_bias_to_keras`: a Keras GRU(reset_after=True) bias [2, 3H] -> (bias_ih, bias_hh)."""
    return gru_gates_from_keras(b[0]), gru_gates_from_keras(b[1])


def lstm_kernel_from_keras(w: np.ndarray) -> np.ndarray:
    """Inverse of `lstm_kernel_to_keras`: a Keras LSTM kernel [in, 4H] -> weight_ih [4H, in] (same gate order)."""
    return w.T


def lstm_bias_from_keras(b: np.ndarray, b_hh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `lstm_bias_to_keras` given the recurrent bias to keep: Keras keeps only the sum, so `b_hh` (the
    module's current bias_hh) is kept and bias_ih = b - b_hh."""
    return b - b_hh, b_hh


def raise_if(condition: bool, message: str) -> None:
    """ValueError with `message` when `condition` holds."""
    if condition:
        raise ValueError(message)
