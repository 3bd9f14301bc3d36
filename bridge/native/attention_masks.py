"""Attention masks that hide nothing are dropped before code generation.

transformers (5.x) builds a mask for every attention call, also where nothing is hidden: ViT's is
`arange(197) >= 0`, expanded to [1, 1, 197, 197]. Once the arange is folded (bridge.native.fold), such a mask is a
constant seen through shape-only ops. Converted as a mask it costs an Add per head, a fix-up per layer and keeps
the softmax from TF.js's fused kernel; dropping it gives the same numbers: a mask that is True everywhere (or an
additive mask that is 0 everywhere) changes no score.
"""

from __future__ import annotations

import numpy as np

from bridge.native.ir import Graph, Value

ATTENTION = "aten.scaled_dot_product_attention.default"
# Ops that only move or repeat the elements of their input: a mask read through them holds the same values.
_SHAPE_ONLY = frozenset({
    "aten.expand.default", "aten.view.default", "aten._unsafe_view.default", "aten.reshape.default",
    "aten.unsqueeze.default", "aten.squeeze.dim", "aten.squeeze.dims", "aten.clone.default", "aten.alias.default",
    "aten.contiguous.default", "aten.permute.default", "aten.transpose.int"})


def _constant_behind(graph: Graph, value: Value) -> np.ndarray | None:
    """The constant array `value` repeats (through shape-only ops), or None when it is computed from inputs."""
    while not value.is_weight:
        node = value.producer
        if node is None or node.target not in _SHAPE_ONLY:
            return None
        source = next((v for _, v in node.tensor_args()), None)
        if source is None:
            return None
        value = source
    return graph.arrays.get(value.name)


def hides_nothing(mask: np.ndarray) -> bool:
    """True for a boolean mask that allows every key, or an additive float mask that is 0 everywhere."""
    if mask.dtype == np.bool_:
        return bool(mask.all())
    return bool(np.issubdtype(mask.dtype, np.floating) and mask.size > 0 and not np.any(mask))


def drop_masks_that_hide_nothing(graph: Graph) -> int:
    """Remove the attn_mask of every attention node whose mask is a constant that hides nothing (module doc).
    Returns how many were dropped."""
    dropped = 0
    for node in graph.nodes:
        mask = node.args.get("attn_mask") if node.target == ATTENTION else None
        if not isinstance(mask, Value):
            continue
        array = _constant_behind(graph, mask)
        if array is not None and hides_nothing(array):
            node.args["attn_mask"] = None
            dropped += 1
    return dropped
