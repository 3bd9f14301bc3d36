"""TF's SAME padding, and the writer pass that spells it out where TF.js's wasm backend gets it wrong.

TF.js 4.22's wasm convolution (Conv2D, DepthwiseConv2dNative and their fused forms) computes a SAME-padded
window wrongly when one spatial axis has a stride larger than its window, so that TF's SAME padding on that axis
is negative before being clamped to 0, while the other axis is padded (kernel 1x3, stride 2x1 on an 8x8 input:
max |error| ~10 against TF; the cpu backend is right). Such nodes become an explicit Pad and VALID padding, which
every backend computes like TF (bridge.tfjs.pads_into_convs then moves the Pad into the conv's explicit padding,
which the wasm backend also computes right). The table case `conv_same_stride_over_kernel` in
tests/test_tfjs_table.py runs a model with such a conv and fails without this pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from bridge.tfjs.graph_names import (data_inputs, format_ref, make_const, make_node, node_map, tensor_shapes,
                                     unique_name)

WINDOWED_CONVS = ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")


def same_pad_total(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """TF's total SAME padding on one axis before clamping to 0 (negative: the last inputs are never read)."""
    effective = (kernel - 1) * dilation + 1
    return (-(-size // stride) - 1) * stride + effective - size


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """The (before, after) padding TF's SAME uses on one axis."""
    total = max(same_pad_total(size, kernel, stride, dilation), 0)
    return total // 2, total - total // 2


def same_pad_clamped(size: int, kernel: int, stride: int, dilation: int = 1) -> bool:
    """True when TF's SAME padding on this axis is clamped from a negative total to 0 (see the module doc)."""
    return same_pad_total(size, kernel, stride, dilation) < 0


def spell_out_risky_same_padding(graph_def: Any) -> int:
    """Turn each main-graph NHWC convolution whose SAME padding TF.js wasm would compute wrongly into Pad + VALID
    (just VALID when every pad is 0). Run it before the TF.js-only fusions: input sizes come from TF's shape
    inference on the graph, and a node whose spatial input size is unknown is left as it is. Returns how many
    nodes were rewritten."""
    nodes = node_map(graph_def)
    candidates = [n for n in graph_def.node if _may_clamp(n, nodes)]
    if not candidates:
        return 0
    sizes = _spatial_input_sizes(graph_def, candidates)
    taken = set(nodes)
    added: list[Any] = []
    rewritten = 0
    for node in candidates:
        pads = _explicit_pads(node, nodes, sizes.get(node.name))
        if pads is None:
            continue
        if any(any(p) for p in pads):
            added += _pad_before(node, pads, taken)
        node.attr["padding"].s = b"VALID"  # with every pad 0, VALID windows are SAME's (same output size)
        rewritten += 1
    graph_def.node.extend(added)
    return rewritten


def _window(node: Any, nodes: dict[str, Any]) -> tuple[list[int], list[int], list[int]] | None:
    """(kernel, stride, dilation) over H and W of a convolution with a constant filter, else None."""
    refs = data_inputs(node)
    filt = nodes.get(refs[1].node) if len(refs) > 1 else None
    if filt is None or filt.op != "Const":
        return None
    dims = [d.size for d in filt.attr["value"].tensor.tensor_shape.dim]
    strides = list(node.attr["strides"].list.i)
    dilations = list(node.attr["dilations"].list.i) or [1, 1, 1, 1]
    return dims[:2], strides[1:3], dilations[1:3]


def _may_clamp(node: Any, nodes: dict[str, Any]) -> bool:
    if node.op not in WINDOWED_CONVS or node.attr["padding"].s != b"SAME":
        return False
    if node.attr["data_format"].s not in (b"", b"NHWC"):
        return False
    window = _window(node, nodes)
    return window is not None and any((k - 1) * d + 1 < s for k, s, d in zip(*window))


def _spatial_input_sizes(graph_def: Any, candidates: list[Any]) -> dict[str, tuple[int | None, int | None]]:
    """(H, W) of each candidate's input, by TF's shape inference."""
    sources = {node.name: format_ref(data_inputs(node)[0]) for node in candidates}
    shapes = tensor_shapes(graph_def, sources.values())
    sizes: dict[str, tuple[int | None, int | None]] = {}
    for name, source in sources.items():
        dims = shapes[source]
        sizes[name] = (dims[1], dims[2]) if dims is not None and len(dims) == 4 else (None, None)
    return sizes


def _explicit_pads(node: Any, nodes: dict[str, Any], size: tuple[int | None, int | None] | None
                   ) -> list[tuple[int, int]] | None:
    """The SAME pads per spatial axis when some axis clamps, else None (also when a size is unknown)."""
    window = _window(node, nodes)
    if window is None or size is None or None in size:
        return None
    axes = list(zip(size, *window))
    if not any(same_pad_clamped(*axis) for axis in axes):
        return None
    return [tf_same_pads(*axis) for axis in axes]


def _pad_before(node: Any, pads: list[tuple[int, int]], taken: set[str]) -> list[Any]:
    """A Pad (and its paddings Const) in front of `node`'s data input."""
    paddings_name = unique_name(taken, f"{node.name}/same_paddings")
    pad_name = unique_name(taken, f"{node.name}/same_pad")
    paddings = np.array([[0, 0], *pads, [0, 0]], dtype=np.int32)
    source = format_ref(data_inputs(node)[0])
    pad = make_node(pad_name, "Pad", [source, paddings_name], attrs={"Tpaddings": ("type", types_pb2.DT_INT32)},
                    like=node, copy_attrs=("T",))
    node.input[0] = pad_name
    return [make_const(paddings_name, paddings), pad]
