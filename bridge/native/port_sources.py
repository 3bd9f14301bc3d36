"""The two sides of a weight port: PyTorch entries (state_dict keys with the module that owns them) and TF
variables (of a tf.Module or a Keras model, in creation order, named by attribute path), plus the layout
transforms that can carry a PyTorch array onto a TF variable of a given shape."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from bridge.native import weights as W

Transform = Callable[[np.ndarray], np.ndarray]
SKIPPED_LEAVES = ("num_batches_tracked",)  # BatchNorm's step counter: no TF counterpart, never needed

# PyTorch parameter names -> what TF/Keras call the same thing.
LEAF_ALIASES: dict[str, tuple[str, ...]] = {
    "weight": ("weight", "kernel", "gamma", "embeddings", "w", "scale", "depthwise_kernel"),
    "bias": ("bias", "beta", "b", "offset"),
    "running_mean": ("running_mean", "moving_mean", "mean"),
    "running_var": ("running_var", "moving_variance", "variance", "var"),
}


@dataclass(frozen=True)
class TorchEntry:
    """One state_dict entry: its key, value (numpy), owning module path and what that module is."""

    key: str
    array: np.ndarray
    group: str  # the owning module's path ('' for the root)
    leaf: str  # the attribute name (weight, bias, running_mean...)
    module_type: str = ""  # Conv2d, Linear, Embedding... ('' when only a state_dict was given)
    groups: int = 1
    transposed: bool = False
    prepared: str = ""  # already in the TF layout, made by this named transform (recurrent layers for Keras)

    @property
    def shape(self) -> tuple[int, ...]:
        """The PyTorch shape."""
        return tuple(self.array.shape)


@dataclass(frozen=True)
class TfEntry:
    """One TF variable: its attribute-path name, owning layer/module path, leaf name and the variable."""

    name: str
    group: str
    leaf: str
    variable: Any

    @property
    def shape(self) -> tuple[int, ...]:
        """The variable's static shape."""
        return tuple(int(d) for d in self.variable.shape)

    @property
    def np_dtype(self) -> np.dtype:
        """The variable's dtype as numpy."""
        dtype = self.variable.dtype
        return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


# ------------------------------------------------------------------------------------------------ PyTorch side

def torch_entries(source: Any) -> list[TorchEntry]:
    """Entries of an nn.Module (with module types) or of a state_dict mapping, in state_dict order."""
    import torch

    if isinstance(source, torch.nn.Module):
        modules = dict(source.named_modules())
        state = source.state_dict()
    elif isinstance(source, Mapping):
        modules, state = {}, source
    else:
        raise TypeError(f"expected a torch.nn.Module or a state_dict mapping, got {type(source).__name__}")
    entries = []
    for key, value in state.items():
        group, _, leaf = key.rpartition(".")
        module = modules.get(group)
        entries.append(TorchEntry(key, _to_numpy(value), group, leaf, type(module).__name__ if module else "",
                                  int(getattr(module, "groups", 1) or 1), bool(getattr(module, "transposed", False))))
    return entries


def _to_numpy(value: Any) -> np.ndarray:
    """A tensor or array as numpy (bfloat16/half become float32)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        return value.numpy()
    return np.asarray(value)


# ------------------------------------------------------------------------------------------------ TF side

def tf_entries(model: Any) -> list[TfEntry]:
    """Every variable of a tf.Module or Keras model/layer, in creation order, each once."""
    seen: set[int] = set()
    return [e for e in _walk(model, "", seen) if e is not None]


def _is_keras_layer(obj: Any) -> bool:
    return hasattr(obj, "_flatten_layers") and hasattr(obj, "_trainable_variables")


def _is_variable(obj: Any) -> bool:
    return hasattr(obj, "assign") and hasattr(obj, "shape") and hasattr(obj, "dtype") and not callable(
        getattr(obj, "__call__", None))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _walk(obj: Any, path: str, seen: set[int]) -> Iterator[TfEntry | None]:
    if _is_keras_layer(obj):
        yield from _walk_keras(obj, path, seen)
        return
    for attr, value in _attributes(obj):
        yield from _walk_value(value, _join(path, attr.lstrip("_") or attr), path, attr.lstrip("_"), seen)


def _walk_value(value: Any, path: str, group: str, leaf: str, seen: set[int]) -> Iterator[TfEntry | None]:
    if _is_variable(value):
        if id(value) not in seen:
            seen.add(id(value))
            yield TfEntry(path, group, leaf, value)
    elif _is_keras_layer(value) or _is_tf_module(value):
        yield from _walk(value, path, seen)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk_value(item, _join(path, str(i)), group, f"{leaf}.{i}", seen)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_value(item, _join(path, str(key)), group, f"{leaf}.{key}", seen)


def _is_tf_module(obj: Any) -> bool:
    import tensorflow as tf

    return isinstance(obj, tf.Module)


def _attributes(obj: Any) -> list[tuple[str, Any]]:
    """An object's attributes in assignment order (tf.Module's own bookkeeping left out)."""
    return [(k, v) for k, v in vars(obj).items()
            if k not in ("_name", "_scope_name", "_name_scope") and not k.startswith("_self_")]


def _walk_keras(layer: Any, path: str, seen: set[int]) -> Iterator[TfEntry | None]:
    """A Keras layer: its own variables (trainable, then not), then its sublayers in tracking order, named by
    the attribute that holds them when there is one, else by the layer's name. (Keras 3 keeps a layer's own
    variables in `_trainable_variables`/`_non_trainable_variables`; `weights` would mix in the sublayers'.)"""
    own = list(getattr(layer, "_trainable_variables", [])) + list(getattr(layer, "_non_trainable_variables", []))
    for var in own:
        if id(var) not in seen:
            seen.add(id(var))
            leaf = str(getattr(var, "name", "")).split("/")[-1].split(":")[0]
            yield TfEntry(_join(path, leaf), path, leaf, var)
    names = {id(v): k for k, v in vars(layer).items() if not k.startswith("_") and _is_keras_layer(v)}
    for child in layer._flatten_layers(include_self=False, recursive=False):
        yield from _walk_keras(child, _join(path, names.get(id(child), child.name)), seen)


# ------------------------------------------------------------------------------------------------ transforms

def identity(w: np.ndarray) -> np.ndarray:
    """The array unchanged."""
    return w


def candidate_transforms(entry: TorchEntry, tf_shape: tuple[int, ...], tf_leaf: str) -> list[tuple[str, Transform]]:
    """Named transforms that may carry `entry` onto a TF variable, most likely first (shape decides among them)."""
    rank, shape = entry.array.ndim, entry.shape
    if entry.prepared:
        return [(entry.prepared, identity)]
    found: list[tuple[str, Transform]] = []
    if rank == 5:
        found.append(("dhwio", W.oidhw_to_dhwio))
    elif rank == 4:
        if shape[1] == 1 and len(tf_shape) == 4 and tf_shape[2] and not entry.transposed:
            found.append(("depthwise_hwcm", partial(W.depthwise_filter, in_channels=tf_shape[2])))
        found.append(("hwoi" if entry.transposed else "hwio", W.oihw_to_hwio))
    elif rank == 3:
        if shape[1] == 1 and len(tf_shape) == 3 and tf_shape[1] and not entry.transposed:
            found.append(("depthwise_wcm", partial(W.depthwise_filter_1d, in_channels=tf_shape[1])))
        found.append(("woi" if entry.transposed else "wio", W.oiw_to_wio))
    elif rank == 2:
        embedding = entry.module_type == "Embedding" or "embedding" in tf_leaf.lower()
        found = [("identity", identity), ("in_out", W.linear_to_in_out)] if embedding else \
            [("in_out", W.linear_to_in_out), ("identity", identity)]
        return found
    found.append(("identity", identity))
    return found


def choose_transform(entry: TorchEntry, tf_shape: tuple[int, ...], tf_leaf: str) -> tuple[str, Transform] | None:
    """The first candidate whose result has the TF shape; a reshape when only size-1 axes differ; else None."""
    for name, fn in candidate_transforms(entry, tf_shape, tf_leaf):
        try:
            if tuple(fn(entry.array).shape) == tuple(tf_shape):
                return name, fn
        except ValueError:
            continue
    squeezed = tuple(d for d in entry.shape if d != 1)
    if squeezed == tuple(d for d in tf_shape if d != 1):
        return "reshape", partial(_reshape, shape=tuple(tf_shape))
    return None


def _reshape(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`w` with only size-1 axes added or removed."""
    return w.reshape(shape)


# ------------------------------------------------------------------------------------------------ recurrent layers

_RNN_LEAF = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def keras_recurrent_entries(entries: list[TorchEntry]) -> list[TorchEntry]:
    """LSTM/GRU entries regrouped the Keras way: per (layer, direction) a `kernel`, a `recurrent_kernel` and one
    `bias` (LSTM: bias_ih + bias_hh; GRU: both rows, gates reordered r, z, n -> z, r, h), already in Keras layout.
    Other entries are returned unchanged, in order."""
    cells: dict[tuple[str, str, bool], dict[str, TorchEntry]] = {}
    for entry in entries:
        match = _RNN_LEAF.match(entry.leaf)
        if match:
            cells.setdefault((entry.group, match.group(2), bool(match.group(3))), {})[match.group(1)] = entry
    out: list[TorchEntry] = []
    done: set[tuple[str, str, bool]] = set()
    for entry in entries:
        match = _RNN_LEAF.match(entry.leaf)
        if not match:
            out.append(entry)
            continue
        cell = (entry.group, match.group(2), bool(match.group(3)))
        if cell not in done:
            done.add(cell)
            out += _keras_cell(cell, cells[cell])
    return out


def _keras_cell(cell: tuple[str, str, bool], parts: dict[str, TorchEntry]) -> list[TorchEntry]:
    group, layer, reverse = cell
    w_ih, w_hh = parts["weight_ih"], parts["weight_hh"]
    gru = w_ih.shape[0] == 3 * w_hh.shape[1]
    kind = "gru" if gru else "lstm"
    kernel = W.gru_kernel_to_keras if gru else W.lstm_kernel_to_keras
    name = f"{group}.l{layer}{'_reverse' if reverse else ''}"
    made = [TorchEntry(w_ih.key, kernel(w_ih.array), name, "kernel", prepared=f"{kind}_kernel"),
            TorchEntry(w_hh.key, kernel(w_hh.array), name, "recurrent_kernel", prepared=f"{kind}_kernel")]
    if "bias_ih" in parts and "bias_hh" in parts:
        b_ih, b_hh = parts["bias_ih"].array, parts["bias_hh"].array
        bias = W.gru_bias_to_keras(b_ih, b_hh) if gru else W.lstm_bias_to_keras(b_ih, b_hh)
        made.append(TorchEntry(f"{parts['bias_ih'].key}+{parts['bias_hh'].key.rpartition('.')[2]}", bias, name,
                               "bias", prepared=f"{kind}_bias"))
    return made
