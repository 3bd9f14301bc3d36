"""Zero Pads in front of convolutions folded into the convolutions' own (explicit) padding.

PyTorch pads a strided convolution on both sides (a 3x3 stride-2 conv of a 224 input: 1 and 1), where TF's SAME
pads the odd pixel after (0 and 1), so such a conv is written as `Pad` + a VALID conv (on either route). TF.js
runs the Pad as a kernel of its own, a full copy of the input: 5 Pads took 7% of MobileNetV2's run in TF.js wasm
(benchmarks/results/profile.md, 1.3 ms for the first one alone). TF's convolutions take the pads themselves
(`padding="EXPLICIT"` with `explicit_paddings`), and so do TF.js's Conv2D, _FusedConv2D, DepthwiseConv2dNative and
FusedDepthwiseConv2dNative on every backend (the wasm one hands them to XNNPACK, which reads the border as zeros
without a copy). So a main-graph NHWC convolution with VALID or explicit padding whose input is a `Pad` (or a
`PadV2` of constant 0) of a constant paddings tensor that pads only the spatial axes, by amounts >= 0, reads the
Pad's input instead and adds those amounts to its explicit padding. The Pad stays while anything else reads it
(pruning drops it otherwise). The table cases `pad_into_conv*` in tests/test_tfjs_table.py hold the numbers to
TF's on the wasm and cpu backends.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2

from bridge.tfjs.graph_names import const_behind_identities, const_value, data_inputs, format_ref, node_map
from bridge.tfjs.same_padding import WINDOWED_CONVS


def _spatial_pads(nodes: dict[str, node_def_pb2.NodeDef], pad: node_def_pb2.NodeDef) -> np.ndarray | None:
    """The [4, 2] paddings of a zero Pad that pads only H and W by amounts >= 0, else None."""
    refs = data_inputs(pad)
    if pad.op not in ("Pad", "PadV2") or len(refs) != (2 if pad.op == "Pad" else 3) or any(r.index for r in refs[1:]):
        return None
    if len(pad.input) != len(refs):  # control inputs: the conv would lose their ordering
        return None
    paddings = const_behind_identities(nodes, refs[1].node)
    if paddings is None:
        return None
    value = np.asarray(const_value(paddings))
    if value.shape != (4, 2) or (value < 0).any() or value[0].any() or value[3].any():
        return None
    if pad.op == "PadV2":
        fill = const_behind_identities(nodes, refs[2].node)
        if fill is None or np.asarray(const_value(fill)).reshape(-1).tolist() != [0]:
            return None
    return value


def _foldable(node: node_def_pb2.NodeDef) -> bool:
    return (node.op in WINDOWED_CONVS and node.attr["padding"].s in (b"VALID", b"EXPLICIT")
            and ("data_format" not in node.attr or node.attr["data_format"].s in (b"", b"NHWC")))


def _explicit(node: node_def_pb2.NodeDef) -> np.ndarray:
    """The conv's current pads as [4, 2] (zeros for VALID)."""
    if node.attr["padding"].s == b"EXPLICIT":
        return np.asarray(list(node.attr["explicit_paddings"].list.i), np.int64).reshape(4, 2)
    return np.zeros((4, 2), np.int64)


def fold_pads_into_convs(graph_def: graph_pb2.GraphDef) -> int:
    """Fold each foldable Pad (module doc) into the convolution reading it, in place. Returns how many
    convolutions now pad for themselves."""
    nodes = node_map(graph_def)
    folded = 0
    for node in graph_def.node:
        if not _foldable(node) or not node.input:
            continue
        source = data_inputs(node)[0]
        pad = nodes.get(source.node)
        pads = _spatial_pads(nodes, pad) if pad is not None and source.index == 0 else None
        if pads is None:
            continue
        total = _explicit(node) + pads
        node.input[0] = format_ref(data_inputs(pad)[0])
        node.attr["padding"].s = b"EXPLICIT"
        del node.attr["explicit_paddings"].list.i[:]
        node.attr["explicit_paddings"].list.i.extend(int(v) for v in total.reshape(-1))
        folded += 1
    return folded
