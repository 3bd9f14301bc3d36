"""Row lookups in a weight table (embeddings) as GatherNd instead of GatherV2.

TF.js 4.22's wasm GatherV2 kernel takes 2.3-4.0 ms for 128 rows of 384 floats whatever the table size, where its
GatherNd of the same rows takes 0.08-0.33 ms (two runs of `node benchmarks/gather_forms.mjs`; a 6-layer sentence
encoder spent 2.5% of a run in its two embedding lookups). On the cpu backend GatherNd is slower (11-18 ms instead
of 4-5 ms for those rows), a small share of the seconds a transformer takes there; the web model serves
every backend, so the wasm form is written. So a main-graph `GatherV2` reading rows (axis 0, no batch dims) of a
Const of rank 2 or more (a table of floats: not the small int32 shape vectors dynamic-shape code gathers from,
which TF.js reads on the CPU) becomes `GatherNd(table, ExpandDims(indices, -1))`: the same rows, copied exactly.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2

from bridge.tfjs.graph_names import (const_behind_identities, const_value, data_inputs, make_const, make_node,
                                     node_map, unique_name)

FLOAT_TYPES = (types_pb2.DT_FLOAT, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16)


def _is_row_lookup(nodes: dict[str, node_def_pb2.NodeDef], gather: node_def_pb2.NodeDef) -> bool:
    refs = data_inputs(gather)
    if gather.op != "GatherV2" or len(refs) != 3 or ("batch_dims" in gather.attr and gather.attr["batch_dims"].i):
        return False
    table, axis = const_behind_identities(nodes, refs[0].node), const_behind_identities(nodes, refs[2].node)
    if table is None or axis is None or refs[0].index or refs[2].index:
        return False
    axis_value = np.asarray(const_value(axis))
    tensor = table.attr["value"].tensor
    return axis_value.size == 1 and int(axis_value.reshape(-1)[0]) == 0 and tensor.dtype in FLOAT_TYPES and \
        len(tensor.tensor_shape.dim) >= 2


def row_lookups(graph_def: graph_pb2.GraphDef) -> list[str]:
    """Names of the main-graph GatherV2 nodes `gathers_to_gather_nd` rewrites."""
    nodes = node_map(graph_def)
    return [n.name for n in graph_def.node if _is_row_lookup(nodes, n)]


def gathers_to_gather_nd(graph_def: graph_pb2.GraphDef) -> int:
    """Rewrite every row lookup (`row_lookups`) as GatherNd, in place; the node keeps its name, so readers are
    untouched. Returns how many were rewritten."""
    names = row_lookups(graph_def)
    if not names:
        return 0
    nodes = node_map(graph_def)
    taken = set(nodes)
    last_axis = make_const(unique_name(taken, "gather_rows/last_axis"), np.array(-1, np.int32), types_pb2.DT_INT32)
    graph_def.node.append(last_axis)
    for name in names:
        gather = nodes[name]
        table, indices = gather.input[0], gather.input[1]
        index_type = gather.attr["Tindices"].type
        expand = make_node(unique_name(taken, f"{name}/row_indices"), "ExpandDims", [indices, last_axis.name],
                           {"T": ("type", index_type), "Tdim": ("type", types_pb2.DT_INT32)})
        graph_def.node.append(expand)
        controls = [text for text in gather.input if text.startswith("^")]
        params_type = gather.attr["Tparams"].type
        gather.op = "GatherNd"
        gather.attr.clear()
        gather.attr["Tparams"].type = params_type
        gather.attr["Tindices"].type = index_type
        del gather.input[:]
        gather.input.extend([table, expand.name, *controls])
    return len(names)
