"""Run a written TF.js graph back in TensorFlow, to check the graph passes without the JS runtime.

TF.js-only ops are split into TF ops first: FusedDepthwiseConv2dNative, every fused contraction (so the fused_ops
semantics used are bridge's own, the same the JS runtime implements) and Prelu (``relu(x) - alpha * relu(-x)``).
Const values come from `weights` (what the weight shards hold), cast back to each Const's declared dtype; large float
weights are fed to Placeholders standing in for their Consts instead (see `replay_samples`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bridge.errors import ConversionError
from bridge.tfjs.freeze import TensorInfo, quiet_tf
from bridge.tfjs.fusions import FUSED_BASE_OP, prelu_as_tf_ops, unfuse_node
from bridge.tfjs.graph_names import ChainBuilder, copy_graph, data_inputs, format_ref, make_const, parse_ref

STAGE = "tfjs-replay"


def _restore_const(node: Any, value: np.ndarray) -> None:
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
    array = np.asarray(value)
    if dtype != tf.string:
        array = array.astype(dtype.as_numpy_dtype)
    node.attr["value"].CopyFrom(make_const(node.name, array, dtype.as_datatype_enum).attr["value"])


def restore_weights(graph_def: Any, weights: Mapping[str, np.ndarray]) -> int:
    """Put weight values back into the Const nodes. A library-function Const's weight is ``<function>/<const>``; the
    writer may already have renamed the node to that, so its own name is tried first. Consts with no weight keep
    whatever value they hold. Returns how many were restored."""
    restored = 0
    for node in graph_def.node:
        if node.op == "Const" and node.name in weights:
            _restore_const(node, weights[node.name])
            restored += 1
    for func in graph_def.library.function:
        for node in func.node_def:
            key = node.name if node.name in weights else f"{func.signature.name}/{node.name}"
            if node.op == "Const" and key in weights:
                _restore_const(node, weights[key])
                restored += 1
    return restored


def make_tf_runnable(graph_def: Any) -> None:
    """Split every fused contraction and Prelu into ops TensorFlow runs, in place."""
    taken = {n.name for n in graph_def.node}
    rebuilt: list[Any] = []
    for node in graph_def.node:
        if node.op in FUSED_BASE_OP:
            rebuilt += unfuse_node(node, taken, prelu_as_op=False)
        elif node.op == "Prelu":
            x, alpha = (format_ref(r) for r in data_inputs(node))
            builder = ChainBuilder(node, taken, node.attr["T"].type)
            prelu_as_tf_ops(builder, x, alpha)
            rebuilt += builder.finish()
        else:
            rebuilt.append(node)
    del graph_def.node[:]
    graph_def.node.extend(rebuilt)


def _fetch_tensor(name: str) -> str:
    ref = parse_ref(name)
    return f"{ref.node}:{ref.index}"


def replay_graph(graph_def: Any, weights: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray],
                 input_infos: Sequence[TensorInfo], output_infos: Sequence[TensorInfo],
                 fetch: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Run the graph in TensorFlow: `inputs` keyed by signature key or tensor name; returns outputs keyed by
    signature key, plus one entry per `fetch` name (a node name or ``node:i`` tensor name)."""
    return replay_samples(graph_def, weights, [inputs], input_infos, output_infos, fetch)[0]


def replay_samples(graph_def: Any, weights: Mapping[str, np.ndarray], samples: Sequence[Mapping[str, np.ndarray]],
                   input_infos: Sequence[TensorInfo], output_infos: Sequence[TensorInfo],
                   fetch: Sequence[str] = ()) -> list[dict[str, np.ndarray]]:
    """`replay_graph` for several input sets: the graph is imported once and run per set.

    Large float weights are not put into Const nodes: each becomes a Placeholder of its dtype and shape, fed the
    caller's array on every run, so the GraphDef, the imported graph and grappler's copy stay small and the replay
    adds a fraction of the weight bytes (restoring them into Consts added ~14x: proto copies, the imported graph,
    grappler's copy, the Const kernels' tensors). Everything else (shape-like and small Consts, Consts with control
    inputs, library-function Consts) is restored as before, so small graphs replay exactly as they did. A fed
    weight's sums may round differently: with oneDNN a MatMul on a Const weight gets a blocked weight layout
    (is_filter_const), on a fed one the plain layout. Should the graph not import or run fed, it is replayed with
    every weight restored into its Const (the former path), whose result or error is the one reported."""
    feeds = [_feeds(inputs, input_infos) for inputs in samples]
    names = [o.name for o in output_infos] + [_fetch_tensor(f) for f in fetch]
    work = copy_graph(graph_def)
    fed = _weights_as_placeholders(work, weights)
    restore_weights(work, {k: v for k, v in weights.items() if k not in fed})
    make_tf_runnable(work)
    try:
        runs = _run(work, names, [{**fed, **feed} for feed in feeds])
    except Exception as exc:  # noqa: BLE001 - retried below the way it always ran; that error is the one raised
        if not fed:
            raise ConversionError(f"replaying the TF.js graph in TensorFlow failed: {exc}", stage=STAGE) from exc
        del work
        work = copy_graph(graph_def)
        restore_weights(work, weights)
        make_tf_runnable(work)
        try:
            runs = _run(work, names, feeds)
        except Exception as exc2:  # import and run errors come in many TF types
            raise ConversionError(f"replaying the TF.js graph in TensorFlow failed: {exc2}", stage=STAGE) from exc2
    results = []
    for values in runs:
        result = {o.key: np.asarray(v) for o, v in zip(output_infos, values)}
        result.update({f: np.asarray(v) for f, v in zip(fetch, values[len(output_infos):])})
        results.append(result)
    return results


# A float weight at least this large is fed rather than stored in its Const node; smaller Consts cost nothing to
# hold a few times, and leaving them Consts keeps grappler's constant folding where it used to apply.
PLACEHOLDER_MIN_BYTES = 64 * 1024
_FED_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _weights_as_placeholders(graph_def: Any, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn each top-level float Const whose weight holds at least PLACEHOLDER_MIN_BYTES into a Placeholder of the
    same name, dtype and shape, in place; returns the feeds (tensor name -> array in the Const's dtype). Consts
    with control inputs (e.g. inside a lowered loop's frame) stay Consts."""
    import tensorflow as tf
    from tensorflow.core.framework import node_def_pb2

    fed: dict[str, np.ndarray] = {}
    for i, node in enumerate(graph_def.node):
        if node.op != "Const" or node.name not in weights or len(node.input):
            continue
        dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
        if dtype.name not in _FED_DTYPES:
            continue
        value = np.asarray(weights[node.name])
        if value.dtype.kind != "f" or value.size * dtype.size < PLACEHOLDER_MIN_BYTES:
            continue
        array = value.astype(dtype.as_numpy_dtype, copy=False)
        placeholder = node_def_pb2.NodeDef(name=node.name, op="Placeholder", device=node.device)
        placeholder.attr["dtype"].type = dtype.as_datatype_enum
        placeholder.attr["shape"].shape.CopyFrom(tf.TensorShape(array.shape).as_proto())
        graph_def.node[i].CopyFrom(placeholder)
        fed[f"{node.name}:0"] = array
    return fed


def _run(work: Any, names: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]]) -> list[list[Any]]:
    """Import `work` into a fresh graph and run `names` once per feed dict."""
    import tensorflow as tf

    graph = tf.Graph()
    with quiet_tf(), graph.as_default():
        tf.import_graph_def(work, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return [session.run(names, feed_dict=feed) for feed in feeds]


def _feeds(inputs: Mapping[str, np.ndarray], input_infos: Sequence[TensorInfo]) -> dict[str, np.ndarray]:
    """One input set as a feed dict keyed by tensor name, in each input's declared dtype."""
    import tensorflow as tf

    feeds: dict[str, np.ndarray] = {}
    for info in input_infos:
        value = inputs.get(info.key, inputs.get(info.name))
        if value is None:
            raise ConversionError(f"replay: no value for input {info.key!r} ({info.name})", stage=STAGE)
        feeds[info.name] = np.asarray(value).astype(tf.dtypes.as_dtype(_dtype_enum(info.dtype)).as_numpy_dtype)
    return feeds


def _dtype_enum(name: str) -> int:
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Value(name)
