"""Weights with large all-zero blocks are written without them: rebuilt at run time from their non-zero parts.

A block-structured weight (an RNN's layers multiplied in one MatMul, bridge/native/ops/recurrent.py, or any
weight with zero bands) would otherwise cost its zeros in download size. Such a Const becomes a small subgraph:
its rows are cut into bands whose zero pattern repeats row to row; in each band, runs of at least
MIN_ZERO_COLUMNS zero columns become `Fill` nodes and the other columns stay stored, joined by a `ConcatV2` along
the columns; the bands are joined along the rows. The last node keeps the Const's name, so readers are untouched.
Only +0.0 counts as zero (a -0.0 keeps its sign), so the rebuilt tensor equals the Const bit for bit.

TF.js runs the rebuild on every call: a Fill and one or two Concats, and, for a MatMul's weight on wasm, XNNPACK
packing the new tensor again (it caches packed weights per tensor). Measured on a 2-layer LSTM's 1 MB block weight
(TF.js 4.22 wasm, Node): the Fill and Concats 0.4 ms, the packing 0.8 ms, about 7% of that model's run. So it is only
done where it saves at least a quarter of the weight's bytes and MIN_SAVED_BYTES (a few KiB, so a small model's
web files stay as large as its parameters: a 2-layer LSTM with 24 units would carry 9 KB of zeros, 21% of its
weights); main-graph Consts only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2

from bridge.tfjs.graph_names import const_value, make_const, make_node, unique_name

MIN_ZERO_COLUMNS = 8
MIN_SAVED_BYTES = 4 * 1024
MIN_SAVED_SHARE = 0.25
MAX_PARTS = 64  # stored parts + zero runs over all bands: past that the rebuild costs more ops than it is worth


@dataclass(frozen=True)
class Part:
    """Columns [start, stop) of one band: stored values, or zeros."""

    start: int
    stop: int
    zero: bool


@dataclass(frozen=True)
class Band:
    """Rows [start, stop) of a weight and how its columns split into parts."""

    start: int
    stop: int
    parts: tuple[Part, ...]


def _column_parts(zero_columns: np.ndarray) -> tuple[Part, ...]:
    """Runs of the band's all-zero columns (at least MIN_ZERO_COLUMNS long) as zero parts, the rest stored."""
    parts: list[Part] = []
    start, n = 0, len(zero_columns)
    while start < n:
        stop = start
        while stop < n and zero_columns[stop] == zero_columns[start]:
            stop += 1
        zero = bool(zero_columns[start]) and stop - start >= MIN_ZERO_COLUMNS
        if parts and not zero and not parts[-1].zero:  # a short zero run stays stored with its neighbours
            parts[-1] = Part(parts[-1].start, stop, False)
        else:
            parts.append(Part(start, stop, zero))
        start = stop
    return tuple(parts)


def zero_mask(array: np.ndarray) -> np.ndarray:
    """Where `array` holds +0.0 (a -0.0 keeps its sign only if stored)."""
    return (array == 0) & ~np.signbit(array)


def zero_block_plan(array: np.ndarray) -> tuple[Band, ...] | None:
    """How a rank-2 weight splits into bands and parts, or None when leaving its zeros out saves too little."""
    if array.ndim != 2 or array.dtype != np.float32 or array.nbytes < MIN_SAVED_BYTES:
        return None
    zero = zero_mask(array)
    if not zero.any():
        return None
    bands: list[Band] = []
    start = 0
    rows = array.shape[0]
    while start < rows:
        stop = start + 1
        while stop < rows and np.array_equal(zero[stop], zero[start]):
            stop += 1
        bands.append(Band(start, stop, _column_parts(zero[start])))
        start = stop
    saved = sum((b.stop - b.start) * (p.stop - p.start) for b in bands for p in b.parts if p.zero) * array.itemsize
    if saved < max(MIN_SAVED_BYTES, MIN_SAVED_SHARE * array.nbytes):
        return None
    if sum(len(b.parts) for b in bands) > MAX_PARTS:
        return None
    return tuple(bands)


def _concat(name: str, inputs: list[str], axis_const: str) -> node_def_pb2.NodeDef:
    return make_node(name, "ConcatV2", [*inputs, axis_const],
                     {"N": len(inputs), "T": ("type", types_pb2.DT_FLOAT), "Tidx": ("type", types_pb2.DT_INT32)})


def _rebuild(node: node_def_pb2.NodeDef, array: np.ndarray, bands: tuple[Band, ...],
             taken: set[str]) -> list[node_def_pb2.NodeDef]:
    """The nodes that compute `array` from its stored parts; the last one is named like `node`."""
    base = node.name
    new: list[node_def_pb2.NodeDef] = []
    fills: dict[tuple[int, int], str] = {}

    def const(hint: str, value: np.ndarray, dtype: int | None = None) -> str:
        made = make_const(unique_name(taken, f"{base}/{hint}"), value, dtype)
        new.append(made)
        return made.name

    def zeros(shape: tuple[int, int]) -> str:
        if shape not in fills:
            dims = const("zeros_shape", np.asarray(shape, np.int32))
            value = const("zero", np.zeros((), np.float32))
            fill = make_node(unique_name(taken, f"{base}/zeros"), "Fill", [dims, value],
                             {"T": ("type", types_pb2.DT_FLOAT), "index_type": ("type", types_pb2.DT_INT32)})
            new.append(fill)
            fills[shape] = fill.name
        return fills[shape]

    axes = {axis: const(f"axis{axis}", np.asarray(axis, np.int32)) for axis in (0, 1)}
    band_outputs: list[str] = []
    for b, band in enumerate(bands):
        inputs = [zeros((band.stop - band.start, p.stop - p.start)) if p.zero
                  else const(f"band{b}_part", array[band.start:band.stop, p.start:p.stop])
                  for p in band.parts]
        if len(inputs) == 1:
            band_outputs.append(inputs[0])
            continue
        name = base if len(bands) == 1 else unique_name(taken, f"{base}/band{b}")
        new.append(_concat(name, inputs, axes[1]))
        band_outputs.append(name)
    if len(bands) > 1:
        new.append(_concat(base, band_outputs, axes[0]))
    return new


def _candidate(node: node_def_pb2.NodeDef, protected: set[str]) -> bool:
    """A float32 rank-2 Const large enough to be worth decoding (the shape is read from the proto)."""
    if node.op != "Const" or node.input or node.name in protected or node.attr["dtype"].type != types_pb2.DT_FLOAT:
        return False
    dims = [d.size for d in node.attr["value"].tensor.tensor_shape.dim]
    return len(dims) == 2 and dims[0] * dims[1] * 4 >= MIN_SAVED_BYTES


def unstore_zero_blocks(graph_def: graph_pb2.GraphDef, protected: set[str] = frozenset()) -> int:
    """Replace every main-graph float32 Const worth it (zero_block_plan) by its rebuild, in place. Returns how many
    Consts were replaced. Nodes in `protected` are left alone."""
    taken = {n.name for n in graph_def.node}
    kept: list[node_def_pb2.NodeDef] = []
    replaced = 0
    for node in graph_def.node:
        plan = None
        if _candidate(node, protected):
            array = const_value(node)
            plan = zero_block_plan(array)
        if plan is None:
            kept.append(node)
            continue
        kept.extend(_rebuild(node, array, plan, taken))
        replaced += 1
    if replaced:
        del graph_def.node[:]
        graph_def.node.extend(kept)
    return replaced
