"""The named transforms of `WeightLink`s, both ways: PyTorch state_dict arrays -> TF.js weights (`to_tfjs`) and
back (`to_torch`). Each is built from the layout transforms in bridge.native.weights and their inverses; a link
with several PyTorch entries (LSTM's two biases) or several TF.js weights (attention's packed q/k/v projection)
takes and gives tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bridge.layers_route.ir import WeightLink
from bridge.native import weights as w

Arrays = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Transform:
    """`forward(torch_arrays, params) -> tfjs_arrays`; `backward(tfjs_arrays, params, reference) -> torch_arrays`
    where `reference` holds the module's current PyTorch arrays (needed where TF.js keeps less, e.g. a sum)."""

    forward: Callable[[Arrays, Mapping[str, object]], Arrays]
    backward: Callable[[Arrays, Mapping[str, object], Arrays], Arrays]


def _one(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Arrays, Mapping[str, object]], Arrays]:
    return lambda arrays, params: (fn(arrays[0]),)


def _one_back(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Arrays, Mapping[str, object], Arrays], Arrays]:
    return lambda arrays, params, reference: (fn(arrays[0]),)


def _depthwise(arrays: Arrays, params: Mapping[str, object]) -> Arrays:
    return (w.depthwise_filter(arrays[0], int(params["in_channels"])),)  # type: ignore[arg-type]


def flat_order(dims: Sequence[int], perm: Sequence[int]) -> np.ndarray:
    """For a map of PyTorch shape (batch, *dims) held with Keras axes `perm`, the PyTorch feature index at each
    position of its Keras flattening (what a Dense after the Flatten sees)."""
    return np.arange(int(np.prod(dims))).reshape(tuple(dims)).transpose([p - 1 for p in perm[1:]]).ravel()


def _order(params: Mapping[str, object]) -> np.ndarray:
    return flat_order(params["dims"], params["perm"])  # type: ignore[arg-type]


def _linear_rows(arrays: Arrays, params: Mapping[str, object]) -> Arrays:
    return (w.permute_rows(w.linear_to_in_out(arrays[0]), _order(params)),)


def _linear_rows_back(arrays: Arrays, params: Mapping[str, object], reference: Arrays) -> Arrays:
    return (w.in_out_to_linear(w.unpermute_rows(arrays[0], _order(params))),)


def _split_rows(arrays: Arrays, params: Mapping[str, object]) -> Arrays:
    """A packed [3E, ...] projection (MultiheadAttention's in_proj) -> three Dense weights."""
    parts = np.split(arrays[0], int(params["parts"]), axis=0)  # type: ignore[call-overload]
    return tuple(w.linear_to_in_out(p) if p.ndim == 2 else p for p in parts)


def _split_rows_back(arrays: Arrays, params: Mapping[str, object], reference: Arrays) -> Arrays:
    return (np.concatenate([w.in_out_to_linear(a) if a.ndim == 2 else a for a in arrays], axis=0),)


def _reshape(arrays: Arrays, params: Mapping[str, object]) -> Arrays:
    return (np.transpose(arrays[0].reshape(params["full"]), params["perm"]),)  # type: ignore[call-overload]


def _reshape_back(arrays: Arrays, params: Mapping[str, object], reference: Arrays) -> Arrays:
    from bridge.source.ports import inverse_perm

    back = np.transpose(arrays[0], inverse_perm(params["perm"]))  # type: ignore[arg-type]
    return (back.reshape(params["torch_shape"]),)  # type: ignore[call-overload]


def _lstm_bias(arrays: Arrays, params: Mapping[str, object]) -> Arrays:
    return (w.lstm_bias_to_keras(arrays[0], arrays[1]),)


def _lstm_bias_back(arrays: Arrays, params: Mapping[str, object], reference: Arrays) -> Arrays:
    return w.lstm_bias_from_keras(arrays[0], reference[1])


def _gru_bias(arrays: Arrays, params: Mapping[str, object]) -> Arrays:
    return (w.gru_bias_to_keras(arrays[0], arrays[1]),)


def _gru_bias_back(arrays: Arrays, params: Mapping[str, object], reference: Arrays) -> Arrays:
    return w.gru_bias_from_keras(arrays[0])


TRANSFORMS: dict[str, Transform] = {
    "identity": Transform(_one(lambda a: a), _one_back(lambda a: a)),
    "oihw_to_hwio": Transform(_one(w.oihw_to_hwio), _one_back(w.hwio_to_oihw)),
    "oiw_to_wio": Transform(_one(w.oiw_to_wio), _one_back(w.wio_to_oiw)),
    "depthwise_filter": Transform(_depthwise, _one_back(w.depthwise_filter_to_torch)),
    "iohw_to_hwoi": Transform(_one(w.iohw_to_hwoi), _one_back(w.hwoi_to_iohw)),
    "linear_to_in_out": Transform(_one(w.linear_to_in_out), _one_back(w.in_out_to_linear)),
    "linear_to_in_out_permuted_rows": Transform(_linear_rows, _linear_rows_back),
    "split_rows": Transform(_split_rows, _split_rows_back),
    "reshape_permute": Transform(_reshape, _reshape_back),
    "reshape": Transform(lambda a, p: (a[0].reshape(p["shape"]),),  # type: ignore[call-overload]
                         lambda a, p, r: (a[0].reshape(p["torch_shape"]),)),  # type: ignore[call-overload]
    "lstm_kernel_to_keras": Transform(_one(w.lstm_kernel_to_keras), _one_back(w.lstm_kernel_from_keras)),
    "lstm_bias_to_keras": Transform(_lstm_bias, _lstm_bias_back),
    "gru_kernel_to_keras": Transform(_one(w.gru_kernel_to_keras), _one_back(w.gru_kernel_from_keras)),
    "gru_bias_to_keras": Transform(_gru_bias, _gru_bias_back),
}


def to_tfjs(link: WeightLink, torch_arrays: Sequence[np.ndarray]) -> Arrays:
    """The TF.js arrays of `link` from its PyTorch arrays (in `link.torch_keys` order)."""
    out = TRANSFORMS[link.transform].forward(tuple(np.asarray(a) for a in torch_arrays), dict(link.params))
    return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in out)


def to_torch(link: WeightLink, tfjs_arrays: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> Arrays:
    """The PyTorch arrays of `link` from its TF.js arrays; `reference` holds the module's current arrays."""
    out = TRANSFORMS[link.transform].backward(tuple(np.asarray(a) for a in tfjs_arrays), dict(link.params),
                                              tuple(np.asarray(a) for a in reference))
    return tuple(np.ascontiguousarray(a) for a in out)


def short_name(name: str) -> str:
    """A TF.js weight name without a recurrent cell's scope (``lstm/lstm_cell/kernel`` -> ``lstm/kernel``), the
    form tfjs-layers also accepts, and without a ``:0`` suffix."""
    name = name.rsplit(":", 1)[0] if name.endswith(":0") else name
    parts = name.split("/")
    if len(parts) >= 3 and parts[-2].endswith("_cell"):
        parts = parts[:-2] + parts[-1:]
    return "/".join(parts)


def by_short_name(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`weights` keyed by `short_name`."""
    return {short_name(name): value for name, value in weights.items()}
