"""Run a written TF.js graph back in TensorFlow, to check the graph passes without the JS runtime.

TF.js-only ops are split into TF ops first: FusedDepthwiseConv2dNative, every fused contraction (so the fused_ops
semantics used are bridge's own, the same the JS runtime implements) and Prelu (``relu(x) - alpha * relu(-x)``).
Const values come from `weights` (what the weight shards hold), cast back to each Const's declared dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bridge.errors import ConversionError
from bridge.tfjs.freeze import TensorInfo, quiet_tf
from bridge.tfjs.fusions import FUSED_BASE_OP, prelu_as_tf_ops, unfuse_node
from bridge.tfjs.graph_names import ChainBuilder, data_inputs, format_ref, make_const, parse_ref

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
    """`replay_graph` for several input sets: the weights are restored and the graph imported once (on a large model
    that is most of the work, and each import holds the weights several times over), then run per set."""
    import tensorflow as tf
    from tensorflow.core.framework import graph_pb2

    work = graph_pb2.GraphDef()
    work.CopyFrom(graph_def)
    restore_weights(work, weights)
    make_tf_runnable(work)
    feeds = [_feeds(inputs, input_infos) for inputs in samples]
    names = [o.name for o in output_infos] + [_fetch_tensor(f) for f in fetch]
    graph = tf.Graph()
    try:
        with quiet_tf(), graph.as_default():
            tf.import_graph_def(work, name="")
            del work  # the graph holds the weights now
            with tf.compat.v1.Session(graph=graph) as session:
                runs = [session.run(names, feed_dict=feed) for feed in feeds]
    except Exception as exc:  # import and run errors come in many TF types
        raise ConversionError(f"replaying the TF.js graph in TensorFlow failed: {exc}", stage=STAGE) from exc
    results = []
    for values in runs:
        result = {o.key: np.asarray(v) for o, v in zip(output_infos, values)}
        result.update({f: np.asarray(v) for f, v in zip(fetch, values[len(output_infos):])})
        results.append(result)
    return results


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
